"""mention, message.mentions and membership.notifications: @mentions and
notification levels.

Revision ID: 0011
Revises: 0010
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "mention",
        sa.Column("message_id", ID, sa.ForeignKey("message.id"), nullable=False),
        sa.Column("user_id", ID, sa.ForeignKey("user.id"), nullable=False),
        sa.Column("conversation_id", ID, sa.ForeignKey("conversation.id"), nullable=False),
        sa.PrimaryKeyConstraint("message_id", "user_id"),
    )
    op.create_index("ix_mention_user_id_message_id", "mention", ["user_id", "message_id"])
    op.create_index(
        "ix_mention_user_id_conversation_id_message_id",
        "mention",
        ["user_id", "conversation_id", "message_id"],
    )
    # Plain nullable columns: no table rebuild on SQLite.
    op.add_column("message", sa.Column("mentions", sa.String(), nullable=True))
    op.add_column("membership", sa.Column("notifications", sa.String(length=8), nullable=True))


def downgrade() -> None:
    op.drop_column("membership", "notifications")
    op.drop_column("message", "mentions")
    op.drop_index("ix_mention_user_id_conversation_id_message_id", table_name="mention")
    op.drop_index("ix_mention_user_id_message_id", table_name="mention")
    op.drop_table("mention")
