"""message.seq and conversation.message_seq: a message's place in its
conversation, so that an unread count is a subtraction rather than a count of
every unread message; and the two indexes that count what it leaves out (the
reader's own messages and deleted ones).

Revision ID: 0008
Revises: 0007
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.add_column("message", sa.Column("seq", ID, nullable=False, server_default="0"))
    op.add_column("conversation", sa.Column("message_seq", ID, nullable=False, server_default="0"))
    # Number the messages there are, in id order within each conversation
    # (one pass over the table; SQLite 3.33+ and PostgreSQL both read this).
    op.execute(
        """UPDATE message SET seq = numbered.n FROM (
            SELECT id, row_number() OVER (PARTITION BY conversation_id ORDER BY id) AS n
            FROM message) AS numbered
        WHERE message.id = numbered.id"""
    )
    op.execute(
        """UPDATE conversation SET message_seq = coalesce(
            (SELECT max(seq) FROM message WHERE message.conversation_id = conversation.id), 0)"""
    )
    op.create_index(
        "ix_message_conversation_id_author_id_id", "message", ["conversation_id", "author_id", "id"]
    )
    op.create_index(
        "ix_message_deleted_conversation_id_id",
        "message",
        ["conversation_id", "id"],
        sqlite_where=sa.text("deleted = 1"),
        postgresql_where=sa.text("deleted"),
    )


def downgrade() -> None:
    op.drop_index("ix_message_deleted_conversation_id_id", "message")
    op.drop_index("ix_message_conversation_id_author_id_id", "message")
    op.drop_column("conversation", "message_seq")
    op.drop_column("message", "seq")
