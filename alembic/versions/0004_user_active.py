"""user.active: False once an admin deactivates the account.

Everyone there already is stays active. A database made by create_all
between roles and scopes and the first migrations has the column already
(created with the table, or added at start by the code that bridged the
gap); it is left as it is.

Revision ID: 0004
Revises: 0003
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    columns = {column["name"] for column in sa.inspect(op.get_bind()).get_columns("user")}
    if "active" not in columns:
        op.add_column(
            "user", sa.Column("active", sa.Boolean(), server_default=sa.true(), nullable=False)
        )


def downgrade() -> None:
    # SQLite has dropped columns itself since 3.35 (no table copy, which its
    # foreign keys would refuse).
    op.drop_column("user", "active")
