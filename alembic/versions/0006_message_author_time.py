"""message(author_id, created_at): the messages one user sent lately, for
SEND_MAX_PER_MINUTE, found without reading the whole table.

Revision ID: 0006
Revises: 0005
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_message_author_id_created_at", "message", ["author_id", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_message_author_id_created_at", "message")
