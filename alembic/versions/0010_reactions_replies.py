"""reaction, and message.reply_to_id: emoji on messages, and replies.

Revision ID: 0010
Revises: 0009
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "reaction",
        sa.Column("message_id", ID, sa.ForeignKey("message.id"), nullable=False),
        sa.Column("user_id", ID, sa.ForeignKey("user.id"), nullable=False),
        sa.Column("emoji", sa.String(length=32), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("message_id", "user_id", "emoji"),
    )
    # No foreign key (see models.Message.reply_to_id), so no table rebuild on SQLite.
    op.add_column("message", sa.Column("reply_to_id", ID, nullable=True))


def downgrade() -> None:
    op.drop_column("message", "reply_to_id")
    op.drop_table("reaction")
