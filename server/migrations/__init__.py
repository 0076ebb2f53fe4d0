"""Alembic migrations of the job store (SQLite and PostgreSQL): run by ``server.store.migrate`` at start."""
