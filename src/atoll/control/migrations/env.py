"""Alembic's environment: run the migrations on the connection atoll passes in.

``atoll.control.db.Database.upgrade`` opens the connection (and on PostgreSQL takes
the migration lock); this file only runs the scripts in it. SQLite changes tables in
"batch" mode (copy and move), since its ALTER TABLE cannot do most changes.
"""

from __future__ import annotations

from alembic import context

from atoll.control.models import Base

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=Base.metadata,
                  render_as_batch=True, compare_type=True)
with context.begin_transaction():
    context.run_migrations()
