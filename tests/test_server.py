"""The real thing: uvicorn in its own process, spoken to over a loopback socket."""

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx2 as httpx
import pytest

ROOT = Path(__file__).resolve().parent.parent
PASSWORD = "correct horse battery staple"


class Server:
    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.process: subprocess.Popen[bytes] | None = None
        self.log = data_dir.parent / "server.log"
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if k not in ("SECRET_KEY", "DATABASE_URL")}
        env["DATA_DIR"] = str(self.data_dir)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "main:app", "--port", str(self.port)],
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


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    server = Server(tmp_path / "data")
    server.start()
    yield server
    if server.process is not None and server.process.poll() is None:
        server.process.kill()
        server.process.wait()


def test_readme_walkthrough(server: Server) -> None:
    with httpx.Client(base_url=server.url) as http:
        created = http.post("/users", json={"username": "alice", "password": PASSWORD})
        assert created.status_code == 201
        token = http.post("/token", data={"username": "alice", "password": PASSWORD})
        headers = {"Authorization": f"Bearer {token.json()['access_token']}"}
        general = http.get("/conversations", headers=headers).json()[0]
        assert general["title"] == "general"
        sent = http.post(
            f"/conversations/{general['id']}/messages", json={"content": "Hello!"}, headers=headers
        )
        assert sent.status_code == 201
        page = http.get(f"/conversations/{general['id']}/messages", headers=headers).json()
        assert [m["content"] for m in page] == ["Hello!"]


def test_restart_keeps_data_and_tokens(server: Server) -> None:
    with httpx.Client(base_url=server.url) as http:
        http.post("/users", json={"username": "alice", "password": PASSWORD})
        token = http.post("/token", data={"username": "alice", "password": PASSWORD})
        headers = {"Authorization": f"Bearer {token.json()['access_token']}"}
        http.post("/conversations/1/messages", json={"content": "still here?"}, headers=headers)

    started = time.monotonic()
    server.stop()
    assert time.monotonic() - started < 5
    assert (server.data_dir / "messageapp.db").exists()
    assert oct((server.data_dir / "secret_key").stat().st_mode & 0o777) == "0o600"

    server.start()
    with httpx.Client(base_url=server.url) as http:
        # The key was kept in DATA_DIR, so the token from before still works.
        page = http.get("/conversations/1/messages", headers=headers)
        assert page.status_code == 200
        assert [m["content"] for m in page.json()] == ["still here?"]


def test_oversized_body_refused_before_it_is_sent(server: Server) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(
            b"POST /users HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 10000000\r\n\r\n"
        )
        assert sock.recv(4096).startswith(b"HTTP/1.1 413")  # not one byte of the body sent


def test_oversized_chunked_body_cut_short(server: Server) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(
            b"POST /users HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
        )
        chunk = b"x" * 8192
        for _ in range(10):  # 80 KiB, past the 64 KiB limit, and the body never ends
            sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        assert sock.recv(4096).startswith(b"HTTP/1.1 413")
