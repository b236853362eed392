"""conversation.last_message_at: when its newest message was sent, so that
GET /conversations orders the user's conversations by one column rather than
by a lookup of each one's newest message.

Revision ID: 0013
Revises: 0012
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # A plain nullable column: no table rebuild on SQLite.
    op.add_column(
        "conversation", sa.Column("last_message_at", sa.DateTime(timezone=True), nullable=True)
    )
    # The newest message by id, deleted or not, as the list ordered by until
    # now: one index lookup per conversation (message(conversation_id, id)).
    op.execute(
        """UPDATE conversation SET last_message_at = (
            SELECT created_at FROM message WHERE message.conversation_id = conversation.id
            ORDER BY id DESC LIMIT 1)"""
    )


def downgrade() -> None:
    op.drop_column("conversation", "last_message_at")
