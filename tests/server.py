"""A real uvicorn process on a loopback port, for tests that need the real thing."""

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx2 as httpx

ROOT = Path(__file__).resolve().parent.parent
PASSWORD = "correct horse battery staple"
# The flags `make run` and the Dockerfile give uvicorn (test_dockerfile.py
# checks they agree): request deadlines and size caps, no WebSocket deflate.
SERVER_FLAGS = [
    "--http", "middleware:TimedH11Protocol",
    "--h11-max-incomplete-event-size", "16384",
    "--ws-max-size", "65536",
    "--ws-per-message-deflate", "false",
]  # fmt: skip


class Server:
    def __init__(self, data_dir: Path, **env: str) -> None:
        self.data_dir = data_dir
        self.env = env  # settings for this server, e.g. REDIS_URL
        self.process: subprocess.Popen[bytes] | None = None
        self.log = data_dir.parent / f"server-{id(self)}.log"
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.ws_url = f"ws://127.0.0.1:{self.port}/ws"

    def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if k not in ("SECRET_KEY", "DATABASE_URL")}
        env["DATA_DIR"] = str(self.data_dir)
        env.update(self.env)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "main:app", "--port", str(self.port), *SERVER_FLAGS],
            cwd=ROOT,
            env=env,
            stdout=self.log.open("ab"),
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
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
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def user(self, username: str) -> dict[str, str]:
        """Sign `username` up (if new) and log in: headers carrying the token."""
        with httpx.Client(base_url=self.url) as http:
            http.post("/users", json={"username": username, "password": PASSWORD})
            token = http.post("/token", data={"username": username, "password": PASSWORD})
            assert token.status_code == 200, token.text
        return {"Authorization": f"Bearer {token.json()['access_token']}"}


@contextmanager
def running(data_dir: Path, **env: str) -> Iterator[Server]:
    """A Server with these settings, started, and killed when done."""
    server = Server(data_dir, **env)
    server.start()
    try:
        yield server
    finally:
        server.kill()
