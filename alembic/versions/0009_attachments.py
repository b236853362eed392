"""attachment: files uploaded to conversations, their bytes in
DATA_DIR/attachments; and message.attachment_count, so that a page of
messages without attachments needs no query for them.

Revision ID: 0009
Revises: 0008
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.add_column(
        "message", sa.Column("attachment_count", sa.Integer(), nullable=False, server_default="0")
    )
    op.create_table(
        "attachment",
        sa.Column("id", ID, nullable=False),
        sa.Column("conversation_id", ID, sa.ForeignKey("conversation.id"), nullable=False),
        sa.Column("uploader_id", ID, sa.ForeignKey("user.id"), nullable=False),
        sa.Column("message_id", ID, sa.ForeignKey("message.id"), nullable=True),
        sa.Column("storage_key", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("content_type", sa.String(length=100), nullable=False),
        sa.Column("size", ID, nullable=False),
        sa.Column("stored_bytes", ID, nullable=False),
        sa.Column("width", sa.Integer(), nullable=True),
        sa.Column("height", sa.Integer(), nullable=True),
        sa.Column("has_thumbnail", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("storage_key"),
    )
    op.create_index(
        "ix_attachment_message_id_created_at", "attachment", ["message_id", "created_at"]
    )
    op.create_index("ix_attachment_uploader_id", "attachment", ["uploader_id"])


def downgrade() -> None:
    op.drop_table("attachment")
    op.drop_column("message", "attachment_count")
