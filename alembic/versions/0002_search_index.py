"""An index for message search on each database.

Search finds messages whose folded text (db.fold: case-folded, Unicode
NFKC) contains the folded query. The folding is Python's, so both databases
match exactly alike: the folded text is stored in message.search_text and
indexed there.

- SQLite: an FTS5 table with the trigram tokenizer over that column, kept
  in step by triggers. Its phrase queries are substring matches.
- PostgreSQL: a GIN index with pg_trgm's trigram operators, which serves
  `LIKE '%...%'`. pg_trgm ships with PostgreSQL; creating it needs the
  CREATE privilege on the database (it is a trusted extension).

Revision ID: 0002
Revises: 0001
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from db import fold

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BATCH = 1000

SQLITE_UP = [
    # External content: the table stores only the index, the text stays in message.
    """CREATE VIRTUAL TABLE message_search USING fts5(
        search_text, content='message', content_rowid='id',
        tokenize='trigram case_sensitive 1')""",
    """CREATE TRIGGER message_search_insert AFTER INSERT ON message BEGIN
        INSERT INTO message_search(rowid, search_text) VALUES (new.id, new.search_text);
    END""",
    """CREATE TRIGGER message_search_delete AFTER DELETE ON message BEGIN
        INSERT INTO message_search(message_search, rowid, search_text)
        VALUES ('delete', old.id, old.search_text);
    END""",
    """CREATE TRIGGER message_search_update AFTER UPDATE OF search_text ON message BEGIN
        INSERT INTO message_search(message_search, rowid, search_text)
        VALUES ('delete', old.id, old.search_text);
        INSERT INTO message_search(rowid, search_text) VALUES (new.id, new.search_text);
    END""",
    # Index what the backfill wrote.
    "INSERT INTO message_search(message_search) VALUES ('rebuild')",
]
POSTGRESQL_UP = [
    "CREATE EXTENSION IF NOT EXISTS pg_trgm",
    "CREATE INDEX ix_message_search_text_trgm ON message USING gin (search_text gin_trgm_ops)",
]


def upgrade() -> None:
    op.add_column("message", sa.Column("search_text", sa.String(), nullable=True))
    backfill()
    sqlite = op.get_bind().dialect.name == "sqlite"
    for statement in SQLITE_UP if sqlite else POSTGRESQL_UP:
        op.execute(statement)


def backfill() -> None:
    """Fold the text of every message there already is, a batch at a time."""
    message = sa.table("message", sa.column("id"), sa.column("content"), sa.column("search_text"))
    connection = op.get_bind()
    last_id = 0
    while True:
        rows = connection.execute(
            sa.select(message.c.id, message.c.content)
            .where(message.c.id > last_id, message.c.content.is_not(None))
            .order_by(message.c.id)
            .limit(BATCH)
        ).all()
        if not rows:
            return
        connection.execute(
            message.update().where(message.c.id == sa.bindparam("row_id")),
            [{"row_id": row_id, "search_text": fold(content)} for row_id, content in rows],
        )
        last_id = rows[-1][0]


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        for trigger in ("insert", "delete", "update"):
            op.execute(f"DROP TRIGGER message_search_{trigger}")
        op.execute("DROP TABLE message_search")
    else:
        op.execute("DROP INDEX ix_message_search_text_trgm")
    # SQLite has dropped columns itself since 3.35 (no table copy, which its
    # foreign keys would refuse).
    op.drop_column("message", "search_text")
