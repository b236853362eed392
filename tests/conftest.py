"""Fixtures: a fresh database per test (SQLite, or PostgreSQL: see
tests/database.py), and a TestClient wired to it."""

import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

# Settings are read when the app is imported, so set them first: the app's
# own default database and key file go to a throwaway folder.
os.environ["DATA_DIR"] = tempfile.mkdtemp(prefix="messageapp-test-")
os.environ.pop("DATABASE_URL", None)
os.environ.pop("SECRET_KEY", None)
# Tests sign up, fail logins, send and open sockets far faster than people
# do; the per-address and per-user limits have tests of their own, which
# lower these again. (Servers the tests start inherit them too.)
os.environ["SIGNUP_MAX_PER_IP"] = "1000000"
os.environ["LOGIN_MAX_FAILURES_PER_IP"] = "1000000"
os.environ["SEND_MAX_PER_MINUTE"] = "1000000"
os.environ["WS_MAX_PER_USER"] = "1000000"
# Metrics on, as an operator who scrapes them runs the service: the tests
# read /metrics with this token (tests/helpers.py), and so can those of
# servers they start.
os.environ["METRICS_TOKEN"] = "test-metrics-token-" + os.urandom(8).hex()
os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
os.environ.pop("LOG_FORMAT", None)

import pytest  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402
from sqlalchemy import Engine  # noqa: E402

import db  # noqa: E402
from main import app  # noqa: E402
from tests import database  # noqa: E402
from tests.server import REDIS_URL, Server, running, unique_channel  # noqa: E402


def pytest_sessionfinish() -> None:
    database.drop_postgres_database()


@pytest.fixture(autouse=True)
def fresh_postgres(request: pytest.FixtureRequest) -> None:
    """On PostgreSQL, every test (and every server it starts) begins on empty
    tables; but for the browser tests, which share a server per module and
    tell their data apart by username. (Emptied under `web`'s server, its
    `general` channel would be gone for the tests after: new users would land
    nowhere.)"""
    if database.POSTGRES and not {"web", "quick_expiry"} & set(request.fixturenames):
        database.empty_postgres()


@pytest.fixture(scope="session")
def template_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("template")


@pytest.fixture
def engine(
    tmp_path: Path, template_folder: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Engine]:
    """A fresh database: a SQLite file with the production pragmas (WAL,
    foreign keys, busy timeout), or this run's PostgreSQL database, emptied.

    It replaces the app's one engine for the test, so the routes, the
    WebSocket handshake and the real-time hub all use it.
    """
    if database.POSTGRES:
        url = database.postgres_url()
    else:
        url = database.sqlite_copy(tmp_path / "test.db", template_folder)
    engine = db.create_db_engine(url)
    db.init_db(engine)
    monkeypatch.setattr(db, "engine", engine)
    yield engine
    engine.dispose()


@pytest.fixture
def client(engine: Engine) -> Iterator[TestClient]:
    with TestClient(app) as client:  # `with` runs the lifespan
        yield client


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    """uvicorn in its own process, on a fresh DATA_DIR and a free loopback port."""
    with running(tmp_path / "data") as server:
        yield server


@pytest.fixture
def two_servers(tmp_path: Path) -> Iterator[tuple[Server, Server]]:
    """Two processes on one database and one Redis channel, as two replicas."""
    channel = unique_channel()
    servers = (
        Server(tmp_path / "data", REDIS_URL=REDIS_URL, REDIS_CHANNEL=channel),
        Server(tmp_path / "data", REDIS_URL=REDIS_URL, REDIS_CHANNEL=channel),
    )
    try:
        for server in servers:
            server.start()
        yield servers
    finally:
        for server in servers:
            server.kill()


# Figures that slow tests measure (inputs tried, crashes, latencies), printed
# at the end of the run for docs/development.md, "Reliability".
FIGURES: list[str] = []


@pytest.fixture
def report() -> Callable[[str], None]:
    return FIGURES.append


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if FIGURES:
        terminalreporter.section("figures")
        for line in FIGURES:
            terminalreporter.write_line(line)
