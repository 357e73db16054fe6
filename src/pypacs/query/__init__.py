"""The matching engine: identifiers and query strings become a typed Query, compiled to SQL.

May import ``model``, ``index.schema``, ``errors``, SQLAlchemy Core and pydicom.
"""

from pypacs.query.types import InvalidQuery, Match, Query, QueryOptions

__all__ = ["InvalidQuery", "Match", "Query", "QueryOptions"]
