"""The SQL index: schema, engine, migrations, transactions and the statements on them.

May import ``pypacs.model``, ``pypacs.errors`` and SQLAlchemy Core (never the ORM).
"""
