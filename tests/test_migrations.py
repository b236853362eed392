"""Migrations: the first one is the schema from before migrations, a
database from that time is upgraded without losing anything, the last one
matches the models, and processes starting together migrate once."""

import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from fastapi.testclient import TestClient
from sqlalchemy import Connection, Engine, inspect, text
from sqlmodel import SQLModel

import auth
import db
from main import app
from tests import database
from tests.helpers import PASSWORD, bearer, history, login, send
from tests.server import ROOT

# SQLite's reflection cannot read the lower(username) index; schema_of
# compares SQLite's own CREATE statements instead, which include it.
pytestmark = pytest.mark.filterwarnings("ignore:.*expression-based index")

LEGACY_SCHEMA = Path(__file__).parent / "legacy_schema"
HEAD = ScriptDirectory.from_config(db.alembic_config()).get_current_head()


@pytest.fixture
def scratch(tmp_path: Path) -> Iterator[Engine]:
    """An engine on a new database with no tables at all."""
    with database.scratch_url(tmp_path) as url:
        engine = db.create_db_engine(url)
        yield engine
        engine.dispose()


def create_legacy_schema(engine: Engine) -> None:
    """The tables as MessageApp made them before it had migrations."""
    ddl = (LEGACY_SCHEMA / f"{engine.dialect.name}.sql").read_text()
    statements = [s for s in ddl.split(";") if s.strip().removeprefix("--").strip()]
    with engine.begin() as connection:
        for statement in statements:
            connection.exec_driver_sql(statement)


def upgrade(engine: Engine, revision: str) -> None:
    with db.migration_lock(engine) as connection:
        command.upgrade(db.alembic_config(connection), revision)


def schema_of(engine: Engine) -> dict[str, Any]:
    """Every table, column, constraint and index, as the database describes them."""
    with engine.connect() as connection:
        if engine.dialect.name == "sqlite":
            # SQLite keeps each object's CREATE statement: compare those.
            rows = connection.exec_driver_sql(
                "SELECT name, sql FROM sqlite_master WHERE sql IS NOT NULL"
                " AND name NOT IN ('alembic_version', 'sqlite_sequence')"
            )
            return {name: " ".join(sql.split()) for name, sql in rows}
        inspector = inspect(connection)
        tables = set(inspector.get_table_names()) - {"alembic_version"}
        schema: dict[str, Any] = {
            table: {
                "columns": [
                    (c["name"], str(c["type"]), c["nullable"], c.get("default"))
                    for c in inspector.get_columns(table)
                ],
                "primary_key": inspector.get_pk_constraint(table),
                "foreign_keys": inspector.get_foreign_keys(table),
                "unique": inspector.get_unique_constraints(table),
            }
            for table in sorted(tables)
        }
        indexes = connection.exec_driver_sql(
            "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'public'"
            " AND tablename != 'alembic_version'"
        )
        schema["indexes"] = dict(indexes.all())
        return schema


def test_first_migration_is_the_schema_from_before_migrations(tmp_path: Path) -> None:
    (tmp_path / "old").mkdir()
    with database.scratch_url(tmp_path / "old") as old_url:
        old = db.create_db_engine(old_url)
        create_legacy_schema(old)
        expected = schema_of(old)
        assert "message" in expected
        old.dispose()
    with database.scratch_url(tmp_path) as url:
        migrated = db.create_db_engine(url)
        upgrade(migrated, db.FIRST_REVISION)
        assert schema_of(migrated) == expected
        migrated.dispose()


def test_migrations_build_what_the_models_describe(scratch: Engine) -> None:
    upgrade(scratch, "head")

    def include(name: str | None, type_: str, _: object) -> bool:
        # The search indexes are the migrations' alone (see 0002).
        return not (name or "").startswith(("message_search", "ix_message_search_text"))

    with scratch.connect() as connection:
        context = MigrationContext.configure(connection, opts={"include_name": include})
        assert compare_metadata(context, SQLModel.metadata) == []


def test_downgrade_to_the_start_and_up_again(scratch: Engine) -> None:
    upgrade(scratch, "head")
    with db.migration_lock(scratch) as connection:
        command.downgrade(db.alembic_config(connection), "base")
    with scratch.connect() as connection:
        assert set(inspect(connection).get_table_names()) <= {"alembic_version"}
    upgrade(scratch, "head")


def _count_rows(connection: Connection) -> dict[str, int]:
    """Rows per table of the models, for the tables this database has so far."""
    present = set(inspect(connection).get_table_names())
    return {
        table.name: connection.execute(text(f'SELECT count(*) FROM "{table.name}"')).scalar_one()
        for table in SQLModel.metadata.sorted_tables
        if table.name in present
    }


@pytest.mark.parametrize("with_active", [False, True], ids=["before-roles", "after-roles"])
def test_database_from_before_migrations_is_upgraded_with_its_data(
    scratch: Engine, monkeypatch: pytest.MonkeyPatch, with_active: bool
) -> None:
    """Tables made by create_all, full of data, and no alembic_version: the
    app recognises the schema, marks it as 0001, upgrades it, loses nothing.
    Both kinds of such databases: from before roles and scopes, and from
    after (when the code of the time had added `user.active`)."""
    create_legacy_schema(scratch)
    if with_active:
        default = "1" if scratch.dialect.name == "sqlite" else "true"
        with scratch.begin() as connection:
            connection.exec_driver_sql(
                f'ALTER TABLE "user" ADD COLUMN active BOOLEAN DEFAULT {default} NOT NULL'
            )
    now = datetime.now(UTC)
    rows: dict[str, list[dict[str, Any]]] = {
        "user": [
            {"id": 1, "username": "Alice", "hashed_password": auth.hash_password(PASSWORD)},
            {"id": 2, "username": "bob", "hashed_password": auth.hash_password(PASSWORD)},
        ],
        "conversation": [
            {"id": 1, "kind": "channel", "title": "general", "channel_key": "general"},
            {"id": 2, "kind": "direct", "title": None, "direct_key": "1:2"},
        ],
        "membership": [
            {"conversation_id": c, "user_id": u, "last_read_message_id": 0}
            for c in (1, 2)
            for u in (1, 2)
        ],
        "message": [
            {"id": 1, "conversation_id": 2, "author_id": 1, "content": "Grüße aus MÜNCHEN"},
            {"id": 2, "conversation_id": 2, "author_id": 2, "content": None, "deleted": True},
            {"id": 3, "conversation_id": 2, "author_id": 2, "content": "ok", "client_id": "c-1"},
            {"id": 4, "conversation_id": 1, "author_id": 1, "content": "hello, general"},
        ],
        "revokedtoken": [{"jti": "old-token", "expires_at": now + timedelta(hours=1)}],
        "loginfailure": [{"id": 1, "username_key": "bob", "failed_at": now}],
    }
    defaults: dict[str, dict[str, Any]] = {
        "user": {"display_name": None, "role": "member", "token_version": 0, "created_at": now},
        "conversation": {"direct_key": None, "channel_key": None, "created_at": now},
        "membership": {"joined_at": now},
        "message": {"client_id": None, "created_at": now, "edited_at": None, "deleted": False},
    }
    with scratch.begin() as connection:
        for table, table_rows in rows.items():
            for row in table_rows:
                row = defaults.get(table, {}) | row
                columns = ", ".join(row)
                values = ", ".join(f":{name}" for name in row)
                connection.execute(
                    text(f'INSERT INTO "{table}" ({columns}) VALUES ({values})'), row
                )
        if scratch.dialect.name == "postgresql":  # rows given ids by hand: move the sequences on
            for table in ("user", "conversation", "message", "loginfailure"):
                connection.execute(
                    text(f"SELECT setval(pg_get_serial_sequence('\"{table}\"', 'id'), 10)")
                )
        before = _count_rows(connection)

    monkeypatch.setattr(db, "engine", scratch)
    with TestClient(app) as client:  # starting the app migrates
        with scratch.connect() as connection:
            # Every row is still there (tables added since start out empty).
            assert _count_rows(connection).items() >= before.items()
            version = connection.execute(text("SELECT version_num FROM alembic_version"))
            assert version.scalars().all() == [HEAD]

        alice = bearer(login(client, "alice"))  # the stored hash still works
        page = history(client, alice, 2)
        assert [(m["id"], m["content"], m["deleted"]) for m in page] == [
            (1, "Grüße aus MÜNCHEN", False),
            (2, None, True),
            (3, "ok", False),
        ]
        # Old messages are in the new search index.
        found = client.get("/search/messages", params={"q": "münchen"}, headers=alice).json()
        assert [m["id"] for m in found] == [1]
        # A retry of an old client_id still finds the old message.
        bob = bearer(login(client, "bob"))
        retry = client.post(
            "/conversations/2/messages", json={"content": "ok", "client_id": "c-1"}, headers=bob
        )
        assert (retry.status_code, retry.json()["id"]) == (200, 3)
        # Old messages were numbered (0008): unread counts stay right, for
        # them and for one sent now. Alice wrote 1, Bob 2 (deleted) and 3.
        unread = {
            c["id"]: c["unread_count"] for c in client.get("/conversations", headers=alice).json()
        }
        assert unread == {1: 0, 2: 1}
        new = send(client, bob, 2, "after the upgrade")
        assert new["id"] > 4
        unread = {
            c["id"]: c["unread_count"] for c in client.get("/conversations", headers=alice).json()
        }
        assert unread == {1: 0, 2: 2}
        assert (
            client.post("/conversations/2/read", json={"message_id": 1}, headers=alice).status_code
            == 204
        )
        assert client.get("/conversations/2", headers=alice).json()["unread_count"] == 2
        assert (
            client.post("/conversations/2/read", json={"message_id": 3}, headers=alice).status_code
            == 204
        )
        assert client.get("/conversations/2", headers=alice).json()["unread_count"] == 1
        found = client.get("/search/messages", params={"q": "UPGRADE"}, headers=alice).json()
        assert [m["id"] for m in found] == [new["id"]]
        general = client.get("/channels", headers=alice).json()
        assert [c["id"] for c in general] == [1]  # not a second `general`


def test_processes_starting_together_migrate_once(tmp_path: Path) -> None:
    """Four processes start on an empty database at the same moment (as the
    workers and replicas of a deployment do): one migrates, the others wait
    for it and find nothing left to do."""
    with database.scratch_url(tmp_path) as url:
        env = {"DATABASE_URL": url, "DATA_DIR": str(tmp_path / "data")}
        starts = [
            subprocess.Popen(
                [sys.executable, "-c", "import db; db.init_db(db.engine)"],
                cwd=ROOT,
                env=env | {"PATH": "/usr/bin:/bin"},
                stderr=subprocess.PIPE,
            )
            for _ in range(4)
        ]
        for start in starts:
            _, errors = start.communicate(timeout=120)
            assert start.returncode == 0, errors.decode()
        engine = db.create_db_engine(url)
        with engine.connect() as connection:
            versions = connection.execute(text("SELECT version_num FROM alembic_version"))
            assert versions.scalars().all() == [HEAD]
            channels = connection.execute(text("SELECT title FROM conversation"))
            assert channels.scalars().all() == ["general"]
        engine.dispose()


def test_last_message_at_keeps_the_order_of_the_list(scratch: Engine) -> None:
    """0013 fills conversation.last_message_at from each conversation's newest
    message by id (deleted or not), so the list orders as it did when it
    looked that message up: by its time, else the conversation's creation."""
    upgrade(scratch, "0012")
    start = datetime(2026, 1, 1, tzinfo=UTC)

    def at(minutes: int) -> datetime:
        return start + timedelta(minutes=minutes)

    # (id, created at, [(message created at, deleted)] in id order)
    conversations = [
        (1, at(0), [(at(1), False), (at(50), False)]),
        (2, at(2), [(at(3), False)]),
        (3, at(40), []),  # newer than 2's message, older than 1's
        (4, at(5), [(at(60), False), (at(6), True)]),  # newest by id: the deleted one, at 6
        (5, at(40), []),  # ties with 3: the higher id first
    ]
    with scratch.begin() as connection:
        connection.execute(
            text(
                'INSERT INTO "user" (id, username, hashed_password, display_name, role,'
                " token_version, created_at, active) VALUES (1, 'alice', 'x', NULL, 'member',"
                " 0, :at, :active)"
            ),
            {"at": start, "active": True},
        )
        message_id = 0
        for conversation_id, created_at, messages in conversations:
            connection.execute(
                text(
                    "INSERT INTO conversation (id, kind, title, created_at, message_seq)"
                    " VALUES (:id, 'group', :title, :at, :seq)"
                ),
                {"id": conversation_id, "title": f"g{conversation_id}", "at": created_at, "seq": 0},
            )
            connection.execute(
                text(
                    "INSERT INTO membership (conversation_id, user_id, joined_at,"
                    " last_read_message_id) VALUES (:id, 1, :at, 0)"
                ),
                {"id": conversation_id, "at": created_at},
            )
            for sent_at, deleted in messages:
                message_id += 1
                connection.execute(
                    text(
                        "INSERT INTO message (id, conversation_id, author_id, content, created_at,"
                        " deleted) VALUES (:id, :conversation, 1, 'hi', :at, :deleted)"
                    ),
                    {
                        "id": message_id,
                        "conversation": conversation_id,
                        "at": sent_at,
                        "deleted": deleted,
                    },
                )
        # The list's order before 0013 (pages.MY_CONVERSATIONS of 0012's time).
        before = connection.execute(
            text(
                "SELECT id FROM conversation ORDER BY coalesce((SELECT created_at FROM message"
                " WHERE message.conversation_id = conversation.id ORDER BY id DESC LIMIT 1),"
                " created_at) DESC, id DESC"
            )
        )
        assert before.scalars().all() == [1, 5, 3, 4, 2]
    upgrade(scratch, "head")
    with scratch.connect() as connection:
        after = connection.execute(
            text(
                "SELECT id FROM conversation ORDER BY coalesce(last_message_at, created_at) DESC,"
                " id DESC"
            )
        )
        assert after.scalars().all() == [1, 5, 3, 4, 2]
        filled = connection.execute(
            text("SELECT id, last_message_at IS NULL FROM conversation ORDER BY id")
        )
        assert filled.all() == [(1, False), (2, False), (3, True), (4, False), (5, True)]
