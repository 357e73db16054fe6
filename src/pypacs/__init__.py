"""pypacs: a DICOM archive whose core is the Query/Retrieve service."""

__version__ = "0.1.0"
