"""The database the tests run on.

SQLite by default: each test gets a fresh file, copied from one that the
migrations built once per run. With TEST_DATABASE_URL set to a PostgreSQL
server (postgresql+psycopg://user@host:port/anydb), this run creates a
database of its own there (other runs and people may be testing on the same
server at the same time), empties it before each test, and drops it at the end.
"""

import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path

from sqlalchemy import create_engine, make_url
from sqlmodel import SQLModel

import db

SERVER_URL = os.environ.get("TEST_DATABASE_URL", "")
POSTGRES = bool(SERVER_URL)


@cache
def postgres_url() -> str:
    """The URL of this run's own database, created on first use."""
    url = _create_postgres_database()
    migrated = db.create_db_engine(url)
    db.init_db(migrated)
    migrated.dispose()
    return url


def drop_postgres_database() -> None:
    if POSTGRES and postgres_url.cache_info().currsize:
        _drop_postgres_database(postgres_url())


@contextmanager
def scratch_url(tmp_path: Path) -> Iterator[str]:
    """A new, empty database (no tables at all), dropped afterwards."""
    if not POSTGRES:
        yield f"sqlite:///{tmp_path}/scratch.db"
        return
    url = _create_postgres_database()
    try:
        yield url
    finally:
        _drop_postgres_database(url)


def _create_postgres_database() -> str:
    name = f"messageapp_test_{uuid.uuid4().hex[:16]}"
    _on_server(f'CREATE DATABASE "{name}"')
    return make_url(SERVER_URL).set(database=name).render_as_string(hide_password=False)


def _drop_postgres_database(url: str) -> None:
    # FORCE: a server process a failed test left behind may still be connected.
    _on_server(f'DROP DATABASE IF EXISTS "{make_url(url).database}" WITH (FORCE)')


def _on_server(statement: str) -> None:
    # CREATE and DROP DATABASE cannot run inside a transaction.
    admin = create_engine(SERVER_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.exec_driver_sql(statement)
    admin.dispose()


@cache
def _migrated_sqlite_file(folder: Path) -> Path:
    path = folder / "migrated.db"
    engine = db.create_db_engine(f"sqlite:///{path}")
    db.init_db(engine)
    engine.dispose()  # the last connection out folds the WAL into the file
    return path


def sqlite_copy(path: Path, template_folder: Path) -> str:
    """A fresh database at `path`: a copy of the migrated one (faster than migrating)."""
    shutil.copy(_migrated_sqlite_file(template_folder), path)
    return f"sqlite:///{path}"


def empty_postgres() -> None:
    """Every table emptied and its ids restarted from 1, as on a new database."""
    engine = create_engine(postgres_url())
    tables = ", ".join(f'"{table.name}"' for table in SQLModel.metadata.sorted_tables)
    with engine.begin() as connection:
        # Fail rather than wait forever behind a connection a test leaked.
        connection.exec_driver_sql("SET LOCAL lock_timeout = '10s'")
        connection.exec_driver_sql(f"TRUNCATE {tables} RESTART IDENTITY CASCADE")
    engine.dispose()
