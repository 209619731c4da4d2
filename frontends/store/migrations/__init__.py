"""Alembic's script directory for the store (shipped inside the package; see `migrate`)."""
