"""DICOMweb and the admin API over ASGI (Starlette).

May import ``archive``, ``query`` (types and front-door parsers), ``model``, ``errors``,
starlette and pydicom; never ``index``, ``store`` or SQLAlchemy.
"""
