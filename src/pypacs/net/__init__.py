"""DIMSE on pynetdicom: the application entity, its handlers, statuses, remotes, the SCU.

May import ``archive``, ``query`` (types and front-door parsers), ``model``, ``errors``,
pynetdicom and pydicom; never ``index``, ``store`` or SQLAlchemy.
"""
