"""authsession and refreshtoken: a session per login, and the hashes of the
refresh tokens it was given (rotated ones kept, to recognise a reuse).

Revision ID: 0007
Revises: 0006
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "authsession",
        sa.Column("id", ID, nullable=False),
        sa.Column("user_id", ID, sa.ForeignKey("user.id"), nullable=False),
        sa.Column("scope", sa.String(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("client_ip", sa.String(length=64), nullable=False),
        sa.Column("user_agent", sa.String(length=256), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_authsession_user_id", "authsession", ["user_id"])
    op.create_table(
        "refreshtoken",
        sa.Column("token_hash", sa.String(), nullable=False),
        sa.Column("session_id", ID, sa.ForeignKey("authsession.id"), nullable=False),
        sa.Column("used_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("token_hash"),
    )
    op.create_index("ix_refreshtoken_session_id", "refreshtoken", ["session_id"])


def downgrade() -> None:
    op.drop_table("refreshtoken")
    op.drop_table("authsession")
