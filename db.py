"""The database engine, the per-request session, and start-up set-up.

Two databases, chosen by `DATABASE_URL`, each set up here for what it is:

- **SQLite** (the default: a file in DATA_DIR, no server). One file, one
  writer at a time: the pragmas below make it durable and concurrent enough
  for one machine, and writers queue for the lock up front (BEGIN IMMEDIATE).
- **PostgreSQL** (`postgresql+psycopg://user:password@host/db`), for several
  replicas. It locks rows itself, so a pool of connections is all it needs.

Every query works on both. The schema comes from the migrations in
alembic/, which `init_db` applies at start on either database.
"""

import sqlite3
import threading
import time
import unicodedata
from collections import deque
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from pathlib import Path
from typing import Annotated, Any

import anyio
from alembic import command
from alembic.config import Config
from fastapi import Depends, Request
from sqlalchemy import Connection, Engine, event, func, inspect, make_url, update
from sqlalchemy.exc import OperationalError
from sqlmodel import Session, create_engine, select

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


class FairLock:
    """A lock handed to waiting threads in the order they asked for it.

    SQLite's own wait for its write lock is a sleep-and-retry loop: under many
    writers a newcomer often wins over one that has waited for seconds, and
    that one ends with "database is locked" (here a 503). Writers of one
    process queue here first, first come first served, so only one of them at
    a time asks SQLite (and begin_immediate evens the odds between processes).
    Requests now take their turn on the event loop first (Turns), so this
    mostly orders what writes outside a request, such as the migrations.
    """

    def __init__(self) -> None:
        self.mutex = threading.Lock()
        self.waiting: deque[threading.Event] = deque()
        self.held = False

    def acquire(self, timeout: float) -> bool:
        turn = threading.Event()
        with self.mutex:
            if not self.held and not self.waiting:
                self.held = True
                return True
            self.waiting.append(turn)
        if turn.wait(timeout):
            return True
        with self.mutex:
            if turn.is_set():  # handed over just as the wait ran out: keep it
                return True
            self.waiting.remove(turn)
            return False

    def release(self) -> None:
        with self.mutex:
            if self.waiting:
                self.waiting.popleft().set()  # held passes straight to the next
            else:
                self.held = False


def locked(where: str) -> OperationalError:
    """The error a write gets when SQLite's lock stays taken (main.py: 503)."""
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

    writers = FairLock()

    @event.listens_for(engine, "begin")
    def on_begin(connection: Connection) -> None:
        # A transaction that reads and then writes can fail at once with
        # "database is locked" if another one wrote in between, and SQLite's
        # busy timeout does not help. Writers therefore take the write lock
        # first (BEGIN IMMEDIATE) and wait their turn for it, in line.
        options = connection.get_execution_options()
        mode = options.get("sqlite_begin", "DEFERRED")
        if mode != "IMMEDIATE":
            connection.exec_driver_sql(f"BEGIN {mode}")
            return
        wait = options.get("sqlite_lock_wait", settings.SQLITE_BUSY_TIMEOUT_SECONDS)
        deadline = time.monotonic() + wait
        if not writers.acquire(timeout=wait):
            raise locked("waited in this process")
        try:
            begin_immediate(connection.connection.driver_connection, deadline)
        except BaseException:
            writers.release()
            raise
        connection.info["holds_write_lock"] = True

    @event.listens_for(engine, "commit")
    @event.listens_for(engine, "rollback")
    def on_end(connection: Connection) -> None:
        if connection.info.pop("holds_write_lock", False):
            writers.release()

    @event.listens_for(engine, "checkin")
    def on_checkin(_: sqlite3.Connection, record: Any) -> None:
        # A connection returned with its transaction never ended (the pool
        # rolls it back): its place in line must not stay taken.
        if record is not None and record.info.pop("holds_write_lock", False):
            writers.release()

    return engine


engine = create_db_engine(settings.DATABASE_URL)


def open_session(bind: Engine, *, write: bool) -> Session:
    """A session; one meant for writing locks SQLite when its transaction begins
    (PostgreSQL needs no such thing: it locks the rows a transaction writes)."""
    # What SQLAlchemy's `sessionmaker` does elsewhere; a function, because
    # writing and reading sessions differ.
    if write:
        bind = bind.execution_options(sqlite_begin="IMMEDIATE")
    # Objects stay readable after commit, so a handler can build its response
    # without a second round trip (and a second lock) per object.
    return Session(bind, expire_on_commit=False)


class Turns:
    """What a request waits for on the event loop before its first query.

    A request keeps its connection (and, writing to SQLite, the write lock)
    from its first query to its last, across several worker threads: each
    `def` dependency and the route run in whichever one is free. Were it to wait for them
    *in* a worker thread, enough waiters would take every thread, and those
    holding a connection could never take the next one to finish: the service
    would hang until timeouts fired. Waiting here holds no thread. Made in
    the app's lifespan: the semaphores belong to its event loop.
    """

    def __init__(self) -> None:
        self.connections = anyio.Semaphore(REQUEST_CONNECTIONS)
        self.sqlite_writer = anyio.Semaphore(1)  # SQLite has one writer at a time


@asynccontextmanager
async def request_session(request: Request, *, write: bool) -> AsyncIterator[Session]:
    """A request's session. It first waits for a connection (and to write on
    SQLite, for the writer's turn): see Turns. A request that cannot have them
    within SQLITE_BUSY_TIMEOUT_SECONDS gets 503."""
    turns: Turns = request.app.state.turns
    async with AsyncExitStack() as held:  # gives back whatever was taken
        try:
            with anyio.fail_after(settings.SQLITE_BUSY_TIMEOUT_SECONDS):
                if write and is_sqlite(engine):
                    await held.enter_async_context(turns.sqlite_writer)
                await held.enter_async_context(turns.connections)
        except TimeoutError:
            raise locked("waited in this process") from None
        session = open_session(engine, write=write)
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


async def get_session(request: Request) -> AsyncIterator[Session]:
    """One session per request; anything but GET, HEAD and OPTIONS counts as a write.

    `async def`, although the session is used from `def` code in worker
    threads: making a session does no I/O (it connects at its first query, in
    the thread of the first `def` that queries), and a `def` generator would
    cost two hops to a worker thread and back, in and out, about a fifth of a
    history page's time.
    """
    async with request_session(request, write=request.method not in READ_METHODS) as session:
        yield session


async def get_read_session(request: Request) -> AsyncIterator[Session]:
    """A session that only reads, for a POST that must not hold the writer's
    turn while it works: POST /token hashes for tens of milliseconds, and
    writes its few rows afterwards in short sessions of its own."""
    async with request_session(request, write=False) as session:
        yield session


# scope="function": close the session (and end its transaction) as soon as the
# route returns, not after the response has been sent.
SessionDep = Annotated[Session, Depends(get_session, scope="function")]
ReadSessionDep = Annotated[Session, Depends(get_read_session, scope="function")]


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
