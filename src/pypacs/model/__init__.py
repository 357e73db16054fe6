"""Pure DICOM knowledge: levels, information models, keys, VR facts, SOP classes.

No I/O. May import pydicom (dictionary, UIDs) and the standard library only.
"""
