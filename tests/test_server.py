"""The real thing: uvicorn in its own process, spoken to over a loopback socket."""

import socket
import time

import httpx2 as httpx

from tests import database
from tests.server import PASSWORD, Server


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
    if not database.POSTGRES:
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
