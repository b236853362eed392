"""64-bit ids on PostgreSQL.

The API accepts ids up to 2**63 - 1, and SQLAlchemy sends a compared id as
the column's type: with 32-bit columns, PostgreSQL refused such a number
("integer out of range") instead of finding nothing. SQLite's INTEGER is
64-bit already: nothing changes there.

Revision ID: 0003
Revises: 0002
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ID_COLUMNS = [
    ("user", "id"),
    ("conversation", "id"),
    ("message", "id"),
    ("message", "conversation_id"),
    ("message", "author_id"),
    ("membership", "conversation_id"),
    ("membership", "user_id"),
    ("membership", "last_read_message_id"),
    ("loginfailure", "id"),
]
SEQUENCES = ["user_id_seq", "conversation_id_seq", "message_id_seq", "loginfailure_id_seq"]


def upgrade() -> None:
    change_to(sa.BigInteger(), "bigint")


def downgrade() -> None:
    change_to(sa.Integer(), "integer")


def change_to(type_: sa.types.TypeEngine[int], sql_name: str) -> None:
    if op.get_bind().dialect.name == "sqlite":
        return
    for table, column in ID_COLUMNS:
        op.alter_column(table, column, type_=type_)
    for sequence in SEQUENCES:
        # Its largest value follows the type's, as it is still the default.
        op.execute(f'ALTER SEQUENCE "{sequence}" AS {sql_name}')
