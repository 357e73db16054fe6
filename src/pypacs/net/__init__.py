"""The DICOM port, ours: the upper layer (pdu, association, acceptor, transport), the DIMSE
layer (dimse, pdata), the services pypacs provides (services, retrieve, negotiation) and
the requestor side (requestor, sending, scu, export), with data sets carried as bytes.

May import ``archive``, ``query`` (types and front-door parsers), ``model``, ``remote``,
``errors`` and pydicom; never ``index``, ``store``, SQLAlchemy or pynetdicom.
"""
