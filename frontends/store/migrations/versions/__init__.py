"""The store's migrations, oldest first; Alembic reads them by file, not by import."""
