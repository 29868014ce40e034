"""The store: SQLAlchemy 2 (async), SQLite by default, PostgreSQL through a URL."""

from cj_runner.storage.engine import Store, open_store, resolve_db_url

__all__ = ["Store", "open_store", "resolve_db_url"]
