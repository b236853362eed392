"""A real uvicorn process on a loopback port, for tests that need the real thing."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from tests import database

ROOT = Path(__file__).resolve().parent.parent
PASSWORD = "correct horse battery staple"
# Tests of several processes sharing Redis run when this is set (.ci/run sets it).
REDIS_URL = os.environ.get("TEST_REDIS_URL", "")
needs_redis = pytest.mark.skipif(not REDIS_URL, reason="set TEST_REDIS_URL to run")


class Server:
    def __init__(self, data_dir: Path, *args: str, **env: str) -> None:
        self.data_dir = data_dir
        self.args = args  # more uvicorn options, e.g. "--workers", "2"
        self.env = env  # settings for this server, e.g. REDIS_URL
        self.process: subprocess.Popen[bytes] | None = None
        self.log = data_dir.parent / f"server-{id(self)}.log"
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.ws_url = f"ws://127.0.0.1:{self.port}/ws"

    def start(self) -> None:
        env = environment(self.data_dir, **self.env)
        self.process = subprocess.Popen(
            [
                # As `make run` and the image start it: serve.py adds uvicorn's flags.
                *(sys.executable, "-m", "serve", "--port", str(self.port)),
                *self.args,
            ],
            cwd=ROOT,
            start_new_session=True,  # its own process group, workers included (see kill)
            env=env,
            stdout=self.log.open("ab"),
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited at start (see {self.log})")
            try:
                if httpx.get(f"{self.url}/healthz").status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.1)
        raise RuntimeError("the server did not start")

    def stop(self) -> None:
        """SIGTERM, as `docker stop` sends: the server must shut down cleanly."""
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        # uvicorn finishes its shutdown, then exits by the same signal.
        assert self.process.wait(timeout=10) in (0, -signal.SIGTERM)
        assert "Application shutdown complete" in self.log.read_text()

    def kill(self) -> None:
        if self.process is None:
            return
        try:  # the whole group: with --workers, the worker processes too
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass  # gone already
        self.process.wait()

    def metrics(self) -> "Metrics":
        """GET /metrics, with the token the tests run servers with."""
        response = httpx.get(f"{self.url}/metrics", headers=METRICS_AUTH)
        assert response.status_code == 200, response.text
        return Metrics(response.text)

    def user(self, username: str) -> dict[str, str]:
        """Sign `username` up (if new) and log in: headers carrying the token."""
        with httpx.Client(base_url=self.url) as http:
            http.post("/users", json={"username": username, "password": PASSWORD})
            token = http.post("/token", data={"username": username, "password": PASSWORD})
            assert token.status_code == 200, token.text
        return {"Authorization": f"Bearer {token.json()['access_token']}"}


# tests/conftest.py sets METRICS_TOKEN, for the app and the servers alike.
METRICS_AUTH = {"Authorization": f"Bearer {os.environ.get('METRICS_TOKEN', '')}"}


class Metrics:
    """A /metrics page, parsed: a sample's value by its name and labels."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.samples = {
            (sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        }

    def __call__(self, name: str, **labels: str) -> float:
        """The sample's value; 0 for one not there yet."""
        return self.samples.get((name, frozenset(labels.items())), 0.0)


def environment(data_dir: Path, **settings: str) -> dict[str, str]:
    """The environment of a server (or a command) on `data_dir`, and on this
    run's PostgreSQL database when the tests run on PostgreSQL."""
    env = {k: v for k, v in os.environ.items() if k not in ("SECRET_KEY", "DATABASE_URL")}
    env["DATA_DIR"] = str(data_dir)
    if database.POSTGRES:
        env["DATABASE_URL"] = database.postgres_url()
    return env | settings


def manage(
    data_dir: Path, *args: str, stdin: str = "", **env: str
) -> subprocess.CompletedProcess[str]:
    """`python -m manage ARGS` on `data_dir` (with these settings), as an
    operator runs it beside the server (or with `docker exec`), its standard
    input not a terminal."""
    return subprocess.run(
        [sys.executable, "-m", "manage", *args],
        cwd=ROOT,
        env=environment(data_dir, **env),
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )


@contextmanager
def running(data_dir: Path, **env: str) -> Iterator[Server]:
    """A Server with these settings, started, and killed when done."""
    server = Server(data_dir, **env)
    server.start()
    try:
        yield server
    finally:
        server.kill()


def unique_channel() -> str:
    """A Redis channel of its own: test runs sharing one Redis stay apart."""
    return f"messageapp-test:{uuid.uuid4().hex}"


# --- Talking to it -------------------------------------------------------------

Headers = dict[str, str]


def token_of(headers: Headers) -> str:
    return headers["Authorization"].removeprefix("Bearer ")


@contextmanager
def open_socket(server: Server, headers: Headers) -> Iterator[ClientConnection]:
    with connect(server.ws_url) as ws:
        ws.send(json.dumps({"type": "auth", "token": token_of(headers)}))
        assert json.loads(ws.recv(timeout=5))["type"] == "ready"
        yield ws


def next_event(ws: ClientConnection, timeout: float = 5) -> dict[str, Any]:
    return json.loads(ws.recv(timeout=timeout))


def close_code(ws: ClientConnection, timeout: float = 10) -> int | None:
    """Read until the server closes the socket; its close code."""
    deadline = time.monotonic() + timeout
    with pytest.raises(ConnectionClosed) as closed:
        while time.monotonic() < deadline:
            ws.recv(timeout=deadline - time.monotonic())
    return closed.value.rcvd.code if closed.value.rcvd else None


def group(http: httpx.Client, owner: Headers, *members: str) -> int:
    body = {"kind": "group", "title": "team", "members": list(members)}
    response = http.post("/conversations", json=body, headers=owner)
    assert response.status_code == 201, response.text
    return int(response.json()["id"])


def post(http: httpx.Client, headers: Headers, conversation_id: int, content: str) -> int:
    response = http.post(
        f"/conversations/{conversation_id}/messages", json={"content": content}, headers=headers
    )
    assert response.status_code == 201, response.text
    return int(response.json()["id"])
