"""How Alembic reaches the database.

The app migrates at start through db.init_db, which passes its connection
(already holding the migration lock) in `config.attributes`. From the
command line (`alembic upgrade head`), the same lock is taken here on the
app's own engine, so a migration by hand cannot race a starting server.
"""

from alembic import context
from sqlalchemy import Connection
from sqlmodel import SQLModel

import db
import models  # noqa: F401  (registers every table on SQLModel.metadata)


def include_name(name: str | None, type_: str, _: object) -> bool:
    # Autogenerate: SQLite's full-text search tables are made by migration
    # 0002, not by the models, so they are not "tables to drop".
    return not (type_ == "table" and name is not None and name.startswith("message_search"))


def run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=SQLModel.metadata,
        include_name=include_name,
        render_as_batch=db.is_sqlite(connection),  # SQLite alters a table by copying it
    )
    with context.begin_transaction():
        context.run_migrations()


given = context.config.attributes.get("connection")
if given is not None:
    run(given)
else:
    with db.migration_lock(db.engine) as connection:
        run(connection)
