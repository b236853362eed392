"""Hostile input: odd bodies and URLs, slow and oversized requests, floods.

Each gets a clear 4xx (or a closed connection), changes nothing, and leaves
the service serving everybody else. The socket-level tests run a real
uvicorn with the flags `make run` and the image use (tests/server.py).
"""

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx2 as httpx
import pytest
from fastapi.testclient import TestClient
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

import realtime
from config import settings
from tests.helpers import general_id, history, new_user
from tests.server import Server, running

# --- Bodies ------------------------------------------------------------------


def post_raw(client: TestClient, headers: dict[str, str], url: str, body: bytes) -> httpx.Response:
    return client.post(url, content=body, headers=headers | {"Content-Type": "application/json"})


def test_deeply_nested_json_is_400(client: TestClient) -> None:
    headers = new_user(client, "alice")
    general = general_id(client, headers)
    body = b'{"content": ' + b"[" * 30_000 + b"]" * 30_000 + b"}"  # under 64 KiB
    response = post_raw(client, headers, f"/conversations/{general}/messages", body)
    assert response.status_code == 400
    assert response.json() == {"detail": "There was an error parsing the body"}
    assert history(client, headers, general) == []


def test_huge_member_list_is_422(client: TestClient) -> None:
    headers = new_user(client, "alice")
    members = [f"user{n}" for n in range(5_000)]
    response = client.post(
        "/conversations",
        json={"kind": "group", "title": "all", "members": members},
        headers=headers,
    )
    assert response.status_code == 422
    assert len(client.get("/conversations", headers=headers).json()) == 1  # only general


def test_invalid_utf8_body_is_400(client: TestClient) -> None:
    headers = new_user(client, "alice")
    general = general_id(client, headers)
    response = post_raw(
        client, headers, f"/conversations/{general}/messages", b'{"content": "\xff\xfe"}'
    )
    assert response.status_code == 400
    assert history(client, headers, general) == []


def test_lone_surrogate_is_422(client: TestClient) -> None:
    """Valid JSON, not text; its validation error once crashed the error page (500)."""
    headers = new_user(client, "alice")
    general = general_id(client, headers)
    body = b'{"content": "\\ud800"}'
    response = post_raw(client, headers, f"/conversations/{general}/messages", body)
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "content"]


@pytest.mark.parametrize(
    ("method", "url", "body"),
    [
        ("POST", "/conversations/{general}/messages", {"content": "a\x00b"}),
        ("POST", "/conversations/{general}/messages", {"content": "ok", "client_id": "\x00"}),
        ("PATCH", "/users/me", {"display_name": "Al\x00ice"}),
        ("POST", "/conversations", {"kind": "channel", "title": "nul\x00"}),
        ("POST", "/users", {"username": "nul\x00", "password": "correct horse battery staple"}),
    ],
)
def test_nul_in_text_is_422(
    client: TestClient, method: str, url: str, body: dict[str, str]
) -> None:
    headers = new_user(client, "alice")
    general = general_id(client, headers)
    response = client.request(method, url.format(general=general), json=body, headers=headers)
    assert response.status_code == 422
    assert history(client, headers, general) == []
    assert client.get("/users/me", headers=headers).json()["display_name"] is None


@pytest.mark.parametrize("url", ["/search/messages?q=%00", "/users?q=%00", "/users/a%00b"])
def test_nul_in_urls_is_422(client: TestClient, url: str) -> None:
    # PostgreSQL refuses NUL in text: without this check, a 500 there.
    response = client.get(url, headers=new_user(client, "alice"))
    assert response.status_code == 422
    assert "NUL" in response.text


@pytest.mark.parametrize("url", ["/users?q=%ED%A0%80", "/users?q=%ff", "/users/%ff%fe"])
def test_odd_bytes_in_urls_are_harmless(client: TestClient, url: str) -> None:
    headers = new_user(client, "alice")
    response = client.get(url, headers=headers)
    assert response.status_code in (200, 404)
    assert response.json() in ([], {"detail": "User not found"})


# --- Sign-up and login floods ----------------------------------------------


def test_signup_flood_from_one_address_is_429(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    headers = new_user(client, "alice")  # the first of three sign-ups from here
    monkeypatch.setattr(settings, "SIGNUP_MAX_PER_IP", 3)
    body = {"password": "correct horse battery staple"}
    statuses = [
        client.post("/users", json=body | {"username": f"bot{n}"}).status_code for n in range(4)
    ]
    assert statuses == [201, 201, 429, 429]
    refused = client.post("/users", json=body | {"username": "bot9"})
    assert 0 < int(refused.headers["retry-after"]) <= settings.SIGNUP_WINDOW_SECONDS
    assert client.get("/users/bot2", headers=headers).status_code == 404


def elsewhere(client: TestClient) -> TestClient:
    """The same app, seen from another client address."""
    return TestClient(client.app, client=("203.0.113.9", 50000))


def test_signup_limit_is_per_address(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(settings, "SIGNUP_MAX_PER_IP", 1)
    body = {"password": "correct horse battery staple"}
    assert client.post("/users", json=body | {"username": "first"}).status_code == 201
    assert client.post("/users", json=body | {"username": "second"}).status_code == 429
    other = elsewhere(client)
    assert other.post("/users", json=body | {"username": "third"}).status_code == 201


def test_login_spraying_from_one_address_is_429(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One password tried on many usernames: no username reaches its own
    limit, the address does."""
    new_user(client, "alice")
    monkeypatch.setattr(settings, "LOGIN_MAX_FAILURES_PER_IP", 5)
    statuses = [
        client.post("/token", data={"username": f"user{n}", "password": "Summer2026!"}).status_code
        for n in range(7)
    ]
    assert statuses == [401] * 5 + [429] * 2
    # Even the right password for a real account waits, from this address ...
    right = client.post(
        "/token", data={"username": "alice", "password": "correct horse battery staple"}
    )
    assert right.status_code == 429
    assert int(right.headers["retry-after"]) > 0
    # ... but not from another one.
    other = elsewhere(client)
    right = other.post(
        "/token", data={"username": "alice", "password": "correct horse battery staple"}
    )
    assert right.status_code == 200


def test_login_success_does_not_reset_the_address_count(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Otherwise an attacker with one account logs into it between guesses."""
    new_user(client, "mallory")
    monkeypatch.setattr(settings, "LOGIN_MAX_FAILURES_PER_IP", 4)
    good = {"username": "mallory", "password": "correct horse battery staple"}
    statuses = []
    for n in range(6):
        statuses.append(
            client.post("/token", data={"username": f"v{n}", "password": "x"}).status_code
        )
        client.post("/token", data=good)
    assert statuses == [401] * 4 + [429] * 2


# --- A real server: slow, oversized and malformed requests -----------------

TIMEOUT = 1  # seconds, for the head and body deadlines of this server
MIB = 1024 * 1024


@pytest.fixture
def strict_server(tmp_path: Path) -> Iterator[Server]:
    timeouts = {
        "REQUEST_HEAD_TIMEOUT_SECONDS": str(TIMEOUT),
        "REQUEST_BODY_TIMEOUT_SECONDS": str(TIMEOUT),
    }
    with running(tmp_path / "data", **timeouts) as server:
        yield server


def raw(server: Server) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT * 10)


def read_all(sock: socket.socket) -> bytes:
    """Everything until the server closes the connection. A server that
    closes with our bytes unread resets it: what came before still counts."""
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except ConnectionResetError:
        pass
    return data


def still_serving(server: Server) -> bool:
    return httpx.get(f"{server.url}/healthz").status_code == 200


def test_idle_connection_is_closed(strict_server: Server) -> None:
    with raw(strict_server) as sock:
        assert read_all(sock) == b""  # closed, not kept forever


def test_slow_loris_headers_are_cut_off(strict_server: Server) -> None:
    with raw(strict_server) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        with pytest.raises((BrokenPipeError, ConnectionResetError)):
            for _ in range(TIMEOUT * 20):  # one header line every 0.2 s, never done
                sock.sendall(b"X-Slow: 1\r\n")
                time.sleep(0.2)
    assert still_serving(strict_server)


def test_slow_body_gets_408(strict_server: Server) -> None:
    with raw(strict_server) as sock:
        sock.sendall(
            b"POST /users HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b'Content-Length: 100\r\n\r\n{"username"'
        )
        answer = read_all(sock)
    assert answer.startswith(b"HTTP/1.1 408")
    assert b"Request body not received in time" in answer


def test_keep_alive_and_pipelining_still_work(strict_server: Server) -> None:
    request = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
    with raw(strict_server) as sock:
        sock.sendall(request * 2)  # two at once (pipelined)
        time.sleep(TIMEOUT / 2)
        sock.sendall(request + b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert read_all(sock).count(b"HTTP/1.1 200") == 4


def test_websocket_outlives_the_head_deadline(strict_server: Server) -> None:
    """The deadline is for the request head; an open socket is not cut."""
    headers = strict_server.user("alice")
    with connect(strict_server.ws_url) as ws:
        ws.send(json.dumps({"type": "auth", "token": headers["Authorization"][7:]}))
        assert json.loads(ws.recv(timeout=5))["type"] == "ready"
        time.sleep(TIMEOUT * 2)
        ws.send(json.dumps({"type": "ping"}))
        assert json.loads(ws.recv(timeout=5)) == {"type": "pong"}


@pytest.mark.parametrize(
    "request_head",
    [
        b"GET /users?q=" + b"a" * MIB + b" HTTP/1.1\r\nHost: x\r\n\r\n",  # long query
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * MIB + b"\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + b"X-Many: 1\r\n" * (MIB // 11) + b"\r\n",
    ],
    ids=["long-query", "long-header", "many-headers"],
)
def test_oversized_request_head_is_refused(strict_server: Server, request_head: bytes) -> None:
    """h11 keeps at most 16 KiB of an unfinished head (a whole head that
    arrives in one read of the socket may be larger); the server answers 400
    long before a megabyte has arrived, and closes the connection."""
    with raw(strict_server) as sock:
        try:
            sock.sendall(request_head)
        except (BrokenPipeError, ConnectionResetError):
            pass  # closed while we were still sending: refused all the same
        answer = read_all(sock)
    assert answer.startswith(b"HTTP/1.1 400") or answer == b""
    assert still_serving(strict_server)


def test_websocket_frame_over_the_server_cap_is_closed(strict_server: Server) -> None:
    """uvicorn refuses a frame over --ws-max-size (64 KiB) before the app sees it."""
    headers = strict_server.user("alice")
    with connect(strict_server.ws_url, max_size=None) as ws:
        ws.send(json.dumps({"type": "auth", "token": headers["Authorization"][7:]}))
        assert json.loads(ws.recv(timeout=5))["type"] == "ready"
        ws.send("x" * (1024 * 1024))
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=5)
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == realtime.CLOSE_TOO_BIG


def test_websocket_flood_closes_only_the_flooder(strict_server: Server) -> None:
    alice = strict_server.user("alice")
    bob = strict_server.user("bob")
    with connect(strict_server.ws_url) as flooder, connect(strict_server.ws_url) as calm:
        for ws, headers in ((flooder, alice), (calm, bob)):
            ws.send(json.dumps({"type": "auth", "token": headers["Authorization"][7:]}))
            assert json.loads(ws.recv(timeout=5))["type"] == "ready"
        with pytest.raises(ConnectionClosed) as closed:
            for _ in range(10_000):
                flooder.send('{"type": "ping"}')
            while True:
                flooder.recv(timeout=5)
        assert closed.value.rcvd is not None
        assert closed.value.rcvd.code == realtime.CLOSE_POLICY
        calm.send('{"type": "ping"}')
        assert json.loads(calm.recv(timeout=5)) == {"type": "pong"}
        with httpx.Client(base_url=strict_server.url) as http:
            sent = http.post("/conversations/1/messages", json={"content": "hi"}, headers=alice)
            assert sent.status_code == 201
        assert json.loads(calm.recv(timeout=5))["type"] == "message.created"
