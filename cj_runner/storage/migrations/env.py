"""Alembic environment: migrations run on the connection handed over by the store."""

from __future__ import annotations

from alembic import context

from cj_runner.storage.schema import Base

connection = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - only used through cj_runner.storage.engine
    raise RuntimeError("cj-runner migrations run through cj_runner.storage.open_store")

context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
