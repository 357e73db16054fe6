"""The DICOMweb resources (PS3.18): QIDO-RS, WADO-RS (instances, metadata, frames, bulk data,
rendered), WADO-URI, STOW-RS and DELETE."""
