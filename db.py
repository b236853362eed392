"""The database engine, the per-request session, and start-up set-up.

Two databases, chosen by `DATABASE_URL`, each set up here for what it is:

- **SQLite** (the default: a file in DATA_DIR, no server). One file, one
  writer at a time: the pragmas below make it durable and concurrent enough
  for one machine, and writers take turns as described below.
- **PostgreSQL** (`postgresql+psycopg://user:password@host/db`), for several
  replicas. It locks rows itself, so a pool of connections is all it needs.

Every query works on both. The schema comes from the migrations in
alembic/, which `init_db` applies at start on either database.

How writers take turns on SQLite, the whole scheme:

1. A request that writes first waits for its process's writer's turn, on
   the event loop, first come first served (`Turns`, taken in
   `get_session`), before any of its code runs in a worker thread. Waiting
   there holds no thread.
2. Every write transaction, a request's or not, begins by taking SQLite's
   write lock (`BEGIN IMMEDIATE`, in `on_begin`). That is what orders the
   writers of different processes, and the few writes made outside a
   request's session (a login's rows after its hash, the command line,
   start-up): `begin_immediate` tries for the lock every millisecond.

Past SQLITE_BUSY_TIMEOUT_SECONDS either wait is a 503 with Retry-After.
Readers never wait for a writer (WAL). The rest of the code knows none of
this: a route takes `SessionDep` to write, `ReadSessionDep` to only read.
"""

import fcntl
import logging
import os
import sqlite3
import time
import unicodedata
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Annotated, Any

import anyio
from alembic import command
from alembic.config import Config
from fastapi import Depends, Request
from sqlalchemy import Connection, Engine, event, func, inspect, make_url, update
from sqlalchemy.exc import OperationalError
from sqlmodel import Session, create_engine, select

import metrics
from config import settings
from models import Conversation, ConversationKind, Role, User

logger = logging.getLogger("messageapp.db")

GENERAL_CHANNEL = "general"
READ_METHODS = {"GET", "HEAD", "OPTIONS"}
# Connections per process: the pool keeps POOL_SIZE open and opens up to
# POOL_OVERFLOW more under load. Requests may use all but a few of them at
# once (see Turns); the rest serve the WebSocket hub and handshakes.
POOL_SIZE, POOL_OVERFLOW = 5, 10
REQUEST_CONNECTIONS = POOL_SIZE + POOL_OVERFLOW - 3
ALEMBIC_INI = Path(__file__).parent / "alembic.ini"
# The schema that databases made before migrations existed have (see `migrate`).
FIRST_REVISION = "0001"
# Any fixed number: the PostgreSQL advisory lock that migrating processes share.
MIGRATION_LOCK_ID = 7_164_285_331
# How long a process starting on SQLite waits for another one's migration.
MIGRATION_WAIT_SECONDS = 600


def fold(text: str) -> str:
    """Text as search and channel titles compare it: case-folded for every
    language (MÜNCHEN and München match) and Unicode-normalized (é typed as
    one or as two code points match)."""
    return unicodedata.normalize("NFKC", text.casefold())


def is_sqlite(bind: Engine | Connection) -> bool:
    return bind.dialect.name == "sqlite"


def locked(where: str) -> OperationalError:
    """The error a write gets when SQLite's lock stays taken (errors.py: 503)."""
    cause = sqlite3.OperationalError(f"database is locked ({where})")
    return OperationalError("BEGIN IMMEDIATE", None, cause)


def begin_immediate(connection: Any, deadline: float) -> None:
    """BEGIN IMMEDIATE, trying every millisecond until `deadline`.

    SQLite's busy timeout sleeps up to 100 ms between tries, and a busy
    process is idle for well under that between two writes: another
    process's writer would wait for seconds. Trying often evens the odds.
    """
    connection.execute("PRAGMA busy_timeout=0")
    try:
        while True:
            try:
                connection.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) and "busy" not in str(exc):
                    raise OperationalError("BEGIN IMMEDIATE", None, exc) from exc
                if time.monotonic() >= deadline:
                    raise locked("another process") from exc
            time.sleep(0.001)
    finally:
        busy_ms = int(settings.SQLITE_BUSY_TIMEOUT_SECONDS * 1000)
        connection.execute(f"PRAGMA busy_timeout={busy_ms}")


def make_private(database: Path) -> None:
    """The database and its WAL files, readable by the service's user only
    (600). SQLite gives the -wal and -shm files it creates the database
    file's mode; files made before (with the usual umask, 644) are fixed here."""
    for path in (
        database,
        database.with_name(f"{database.name}-wal"),
        database.with_name(f"{database.name}-shm"),
    ):
        try:
            path.chmod(0o600)
        except FileNotFoundError:
            pass
        except PermissionError:
            logger.warning("Cannot make %s private (chmod 600)", path)


def create_db_engine(url: str) -> Engine:
    """An engine for `url`, SQLite or PostgreSQL, set up for a concurrent server."""
    if not url.startswith("sqlite"):
        # pool_pre_ping: a connection the server dropped (restart, failover) is
        # replaced before a request gets it, instead of failing that request.
        return create_engine(
            url, pool_pre_ping=True, pool_size=POOL_SIZE, max_overflow=POOL_OVERFLOW
        )

    # A connection serves one request at a time, but not one thread: FastAPI
    # runs each `def` dependency and the route in whichever worker thread is
    # free, so a connection made in one thread is used in others.
    engine = create_engine(
        url,
        connect_args={"check_same_thread": False},
        pool_size=POOL_SIZE,
        max_overflow=POOL_OVERFLOW,
    )

    database = make_url(url).database

    @event.listens_for(engine, "connect")
    def on_connect(dbapi_connection: sqlite3.Connection, _: Any) -> None:
        if database and database != ":memory:":
            make_private(Path(database))
        # Let SQLAlchemy issue BEGIN itself (see on_begin), not the sqlite3 module.
        dbapi_connection.isolation_level = None
        busy_ms = int(settings.SQLITE_BUSY_TIMEOUT_SECONDS * 1000)
        for pragma in (
            "journal_mode=WAL",  # readers never wait for the writer
            "synchronous=FULL",  # a committed message survives a power cut
            "foreign_keys=ON",
            f"busy_timeout={busy_ms}",  # wait for the write lock instead of failing
        ):
            dbapi_connection.execute(f"PRAGMA {pragma}")

    @event.listens_for(engine, "begin")
    def on_begin(connection: Connection) -> None:
        # A transaction that reads and then writes can fail at once with
        # "database is locked" if another one wrote in between, and SQLite's
        # busy timeout does not help. Writers therefore take the write lock
        # first (BEGIN IMMEDIATE).
        options = connection.get_execution_options()
        if options.get("sqlite_begin") != "IMMEDIATE":
            connection.exec_driver_sql("BEGIN")
            return
        wait = options.get("sqlite_lock_wait", settings.SQLITE_BUSY_TIMEOUT_SECONDS)
        begin_immediate(connection.connection.driver_connection, time.monotonic() + wait)

    return engine


engine = create_db_engine(settings.DATABASE_URL)


# --- Who is using the SQLite file ----------------------------------------------


def sqlite_file(bind: Engine) -> Path | None:
    """The SQLite database's file; None on PostgreSQL (or SQLite in memory)."""
    database = bind.url.database
    if not is_sqlite(bind) or not database or database == ":memory:":
        return None
    return Path(database)


@contextmanager
def _lock_file(database: Path) -> Iterator[int]:
    fd = os.open(database.with_name(f"{database.name}.lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        yield fd
    finally:
        os.close(fd)  # and with it the lock


@contextmanager
def in_use(bind: Engine) -> Iterator[None]:
    """Mark the SQLite file as in use for as long as the block runs: each
    server process does while it runs (main.py's lifespan), and `manage
    backup` while it copies. `manage restore` needs the file to itself (`alone`).

    The mark is a shared lock (flock) on a file beside the database. The
    kernel drops a process's locks when it ends, however it ends (SIGKILL
    included), so no stale mark is ever left to clean up. PostgreSQL needs
    none: it is restored with its own tools.
    """
    database = sqlite_file(bind)
    if database is None:
        yield
        return
    with _lock_file(database) as fd:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RuntimeError(
                f"{database} is being restored (python -m manage restore): "
                "start again once that has finished"
            ) from None
        yield


@contextmanager
def alone(bind: Engine) -> Iterator[bool]:
    """Whether nothing else is using the SQLite file (see `in_use`); if so, it
    stays that way until the block ends: a server starting meanwhile refuses."""
    database = sqlite_file(bind)
    assert database is not None, "only SQLite files are restored this way"
    with _lock_file(database) as fd:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True


def writing(bind: Engine) -> Engine:
    """`bind`, beginning its transactions with SQLite's write lock taken
    (PostgreSQL ignores it: it locks the rows a transaction writes)."""
    return bind.execution_options(sqlite_begin="IMMEDIATE")


# Sessions outside a request. Objects stay readable after commit
# (expire_on_commit=False), so their fields need no second query.


def write_session() -> Session:
    """A short session that writes, outside a request's own session: a route
    that hashed a password first, the command line, the demo data. It waits
    for SQLite's lock as another process would (see begin_immediate)."""
    return Session(writing(engine), expire_on_commit=False)


def read_session() -> Session:
    """A session that only reads, outside a request (the WebSocket, the hub)."""
    return Session(engine, expire_on_commit=False)


class Turns:
    """What a request waits for on the event loop before its first query: a
    connection, and to write on SQLite, the writer's turn.

    A request keeps its connection (and, writing to SQLite, the write lock)
    from its first query to its last, across several worker threads: each
    `def` dependency and the route run in whichever one is free. Were it to
    wait for them *in* a worker thread, enough waiters would take every
    thread, and those holding a connection could never take the next one to
    finish: the service would hang until timeouts fired. Waiting here holds
    no thread, and the semaphores hand turns out first come, first served.
    """

    def __init__(self) -> None:
        self.connections = anyio.Semaphore(REQUEST_CONNECTIONS)
        self.writer = anyio.Semaphore(1)  # SQLite has one writer at a time


# Made while the app runs (see `serving`): semaphores belong to one event loop.
_turns: Turns | None = None


@asynccontextmanager
async def serving() -> AsyncIterator[None]:
    """Take requests while the app runs; main.py's lifespan enters this."""
    global _turns
    _turns = Turns()
    try:
        yield
    finally:
        _turns = None


def _started() -> Turns:
    if _turns is None:  # a request that came before (or while) the lifespan ran
        raise unavailable("the app has not started yet")
    return _turns


def unavailable(why: str) -> OperationalError:
    """An error errors.py answers with 503 and Retry-After."""
    return OperationalError(why, None, sqlite3.OperationalError(why))


async def _take(semaphore: anyio.Semaphore, turn: metrics.Turn) -> None:
    """Wait for a turn; one not had within SQLITE_BUSY_TIMEOUT_SECONDS is a 503.
    How long each wait took goes to metrics, by turn."""
    started = time.perf_counter()
    try:
        with anyio.fail_after(settings.SQLITE_BUSY_TIMEOUT_SECONDS):
            await semaphore.acquire()
    except TimeoutError:
        raise locked("waited in this process") from None
    finally:
        metrics.DB_WAITS[turn].observe(time.perf_counter() - started)


async def get_read_session() -> AsyncIterator[Session]:
    """One session per request, once a connection is free (see Turns).

    `async def`, although the session is used from `def` code in worker
    threads: making a session does no I/O (it connects at its first query, in
    the thread of the first `def` that queries), and a `def` generator would
    cost two hops to a worker thread and back, in and out.
    """
    turns = _started()
    await _take(turns.connections, "connection")
    session = read_session()
    try:
        yield session  # the route runs while this waits here
    finally:
        # Closing rolls back whatever was not committed and hands the
        # connection back to the pool. On SQLite that is a quick call into
        # the library; on PostgreSQL a round trip, which waits in a worker
        # thread rather than on the event loop.
        if is_sqlite(engine):
            session.close()
        else:
            await anyio.to_thread.run_sync(session.close)
        turns.connections.release()


# scope="function": close the session (and end its transaction) as soon as the
# route returns, not after the response has been sent.
ReadSessionDep = Annotated[Session, Depends(get_read_session, scope="function")]


async def get_session(request: Request, session: ReadSessionDep) -> AsyncIterator[Session]:
    """The request's session, ready to write unless the method only reads
    (GET, HEAD, OPTIONS). On SQLite, writing waits for the writer's turn
    first; PostgreSQL locks the rows a transaction writes, and needs none.

    The token check before it (auth.py) reads through the same session
    without any turn, so a route that hashes a password can check the token,
    hash, and only then write (see `write_session`).
    """
    if request.method in READ_METHODS or not is_sqlite(engine):
        yield session
        return
    turns = _started()
    await _take(turns.writer, "writer")
    try:
        # Whatever was read so far ends here; the next transaction holds
        # SQLite's write lock from its first statement (see on_begin).
        session.commit()
        session.bind = writing(engine)
        yield session
    finally:
        session.close()  # ends the transaction, so the next writer finds the lock free
        turns.writer.release()


SessionDep = Annotated[Session, Depends(get_session, scope="function")]


# --- Migrations --------------------------------------------------------------


@contextmanager
def migration_lock(bind: Engine) -> Iterator[Connection]:
    """A connection in a transaction that no other process can be migrating
    in at the same time: workers and replicas starting together take turns,
    and the ones after the first find nothing left to do."""
    if is_sqlite(bind):
        # SQLite: the write lock, held for the whole transaction (DDL included),
        # waited for longer than a request would: another process may be
        # migrating a large database.
        waiting = bind.execution_options(
            sqlite_begin="IMMEDIATE", sqlite_lock_wait=MIGRATION_WAIT_SECONDS
        )
        with waiting.connect() as connection, connection.begin():
            yield connection
    else:
        # PostgreSQL: an advisory lock, released when the transaction ends.
        with bind.connect() as connection, connection.begin():
            connection.execute(select(func.pg_advisory_xact_lock(MIGRATION_LOCK_ID)))
            yield connection


def alembic_config(connection: Connection | None = None) -> Config:
    """Alembic's settings; alembic/env.py migrates through `connection` if given."""
    config = Config(ALEMBIC_INI)
    config.attributes["connection"] = connection
    return config


def migrate(connection: Connection) -> None:
    """Bring the schema up to date: create it on an empty database, upgrade an
    older one. Call it inside `migration_lock`: all of it is one transaction,
    so a failed migration leaves nothing half-done."""
    config = alembic_config(connection)
    tables = inspect(connection).get_table_names()
    if "message" in tables and "alembic_version" not in tables:
        # Made by a MessageApp from before migrations (tables created
        # directly): its schema is the first migration's.
        command.stamp(config, FIRST_REVISION)
    command.upgrade(config, "head")


def init_db(bind: Engine) -> None:
    """Migrate, create the `general` channel, and make the accounts named in
    ADMIN_USERNAMES active admins: all under the migration lock, so processes
    starting together take turns."""
    with migration_lock(bind) as connection:
        migrate(connection)
        # Joins the lock's transaction, which commits when the block ends.
        with Session(connection) as session:
            _set_up_data(session)


def _set_up_data(session: Session) -> None:
    general = session.exec(
        select(Conversation).where(Conversation.channel_key == GENERAL_CHANNEL)
    ).first()
    if general is None:
        session.add(
            Conversation(
                kind=ConversationKind.channel,
                title=GENERAL_CHANNEL,
                channel_key=GENERAL_CHANNEL,
            )
        )
    # Only accounts that exist: were a listed name granted admin at sign-up,
    # whoever registered it first on a new server would own it. A listed
    # admin is active again too: an operator locked out by another admin
    # lists themselves and restarts.
    listed = settings.admin_usernames
    if listed:
        is_listed = func.lower(User.username).in_(listed)
        session.exec(update(User).where(is_listed).values(role=Role.admin, active=True))
        found = set(session.exec(select(func.lower(User.username)).where(is_listed)))
        for name in sorted(listed - found):
            logger.warning(
                "ADMIN_USERNAMES names %r, which has no account: create it with "
                "`python -m manage create-admin %s`",
                name,
                name,
            )
    session.flush()
