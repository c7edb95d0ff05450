"""The Alembic migration scripts, shipped inside the package as ``dialtone.migrations``."""
