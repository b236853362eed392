"""Real time against a real uvicorn process, with the `websockets` client."""

import base64
import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from tests.server import (
    REDIS_URL,
    Server,
    close_code,
    group,
    needs_redis,
    next_event,
    open_socket,
    post,
    running,
    token_of,
    unique_channel,
)


def test_live_message_between_two_users(server: Server) -> None:
    alice, bob = server.user("alice"), server.user("bob")
    with httpx.Client(base_url=server.url) as http, open_socket(server, bob) as ws:
        team = group(http, alice, "bob")
        assert next_event(ws)["type"] == "conversation.joined"
        message_id = post(http, alice, team, "hello over the wire")
        event = next_event(ws)
    assert event["type"] == "message.created"
    assert event["message"]["id"] == message_id
    assert event["message"]["author"]["username"] == "alice"


@pytest.mark.parametrize("token", ["garbage", ""])
def test_bad_token_closes_with_4401(server: Server, token: str) -> None:
    with connect(server.ws_url) as ws:
        ws.send(json.dumps({"type": "auth", "token": token}))
        assert close_code(ws) == 4401


def test_ping_and_malformed_frames(server: Server) -> None:
    with open_socket(server, server.user("alice")) as ws:
        ws.send("{not json")
        assert next_event(ws)["type"] == "error"
        ws.send(json.dumps({"type": "ping"}))
        assert next_event(ws) == {"type": "pong"}


def test_reconnect_and_catch_up_loses_nothing(server: Server) -> None:
    """Messages keep coming while bob's socket drops twice; live events plus
    `after=` pages give him every message exactly once, in order."""
    alice, bob = server.user("alice"), server.user("bob")
    with httpx.Client(base_url=server.url) as http:
        team = group(http, alice, "bob")
    posted: list[int] = []

    def keep_posting() -> None:
        with httpx.Client(base_url=server.url) as http:
            for i in range(150):
                posted.append(post(http, alice, team, f"message {i}"))

    writer = threading.Thread(target=keep_posting)
    seen: list[int] = []
    with httpx.Client(base_url=server.url) as http:
        writer.start()
        for _ in range(3):
            with open_socket(server, bob) as ws:
                # Anything sent before this socket was ready is in the history.
                after = seen[-1] if seen else 0
                while True:
                    page = http.get(
                        f"/conversations/{team}/messages",
                        params={"after": after, "limit": 200},
                        headers=bob,
                    ).json()
                    seen.extend(m["id"] for m in page if m["id"] not in seen)
                    if len(page) < 200:
                        break
                    after = page[-1]["id"]
                # Then live, until the socket drops (we close it) mid-stream.
                for _ in range(20):
                    try:
                        event = next_event(ws, timeout=2)
                    except TimeoutError:
                        break
                    if event["type"] == "message.created" and event["message"]["id"] not in seen:
                        seen.append(event["message"]["id"])
        writer.join()
        final = http.get(
            f"/conversations/{team}/messages",
            params={"after": seen[-1], "limit": 200},
            headers=bob,
        ).json()
    seen.extend(m["id"] for m in final)
    assert seen == posted


def _raw_websocket(server: Server, token: str) -> socket.socket:
    """A client that authenticates, then never reads again: its tiny receive
    buffer fills, and the server's sends to it stall."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", server.port))
    key = base64.b64encode(os.urandom(16))
    sock.sendall(
        b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
        b"Connection: Upgrade\r\nSec-WebSocket-Key: " + key + b"\r\n"
        b"Sec-WebSocket-Version: 13\r\n\r\n"
    )
    response = b""
    while b"\r\n\r\n" not in response:
        response += sock.recv(1)
    assert response.startswith(b"HTTP/1.1 101")
    payload = json.dumps({"type": "auth", "token": token}).encode()
    mask = os.urandom(4)
    assert 126 <= len(payload) < 65536
    header = bytes([0x81, 0x80 | 126]) + len(payload).to_bytes(2, "big") + mask
    sock.sendall(header + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))
    return sock


@pytest.fixture
def small_queue_server(tmp_path: Path) -> Iterator[Server]:
    with running(tmp_path / "data", WS_SEND_QUEUE="8") as server:
        yield server


def test_stalled_client_does_not_delay_others(small_queue_server: Server) -> None:
    """carol's client stops reading; bob's keeps up. Messages are posted until
    the server gives up on carol: bob gets every one, and quickly."""
    server = small_queue_server
    alice, bob, carol = server.user("alice"), server.user("bob"), server.user("carol")
    received: list[int] = []
    latest_arrival = [0.0]

    def read_events(ws: ClientConnection) -> None:
        try:
            while True:
                event = json.loads(ws.recv(timeout=30))
                if event["type"] == "message.created":
                    received.append(event["message"]["id"])
                    latest_arrival[0] = time.monotonic()
        except (ConnectionClosed, TimeoutError):
            pass

    with httpx.Client(base_url=server.url) as http:
        team = group(http, alice, "bob", "carol")
        stalled = _raw_websocket(server, token_of(carol))
        with open_socket(server, bob) as ws:
            reader = threading.Thread(target=read_events, args=(ws,))
            reader.start()
            big = "x" * 3900  # the kernel buffers a few MB before sends stall
            ids: list[int] = []
            while "fell too far behind" not in server.log.read_text():
                assert len(ids) < 5000, "the stalled socket was never closed"
                ids += [post(http, alice, team, f"{i} {big}") for i in range(50)]
            # carol is gone; one more message, timed from its 201 to bob's socket.
            sent_at = time.monotonic()
            ids.append(post(http, alice, team, "after carol"))
            deadline = sent_at + 10
            while len(received) < len(ids) and time.monotonic() < deadline:
                time.sleep(0.01)
            ws.close()
            reader.join()
        stalled.close()
    assert received == ids
    assert latest_arrival[0] - sent_at < 2
    # The event carol's queue had no room for is counted as dropped.
    assert server.metrics()("messageapp_events_dropped_total", reason="socket_behind") >= 1


def test_sigterm_closes_sockets_and_stops_promptly(server: Server) -> None:
    with ExitStack() as stack:
        sockets = [
            stack.enter_context(open_socket(server, server.user(name)))
            for name in ("alice", "bob", "carol")
        ]
        started = time.monotonic()
        server.stop()
        assert time.monotonic() - started < 5
        for ws in sockets:
            assert close_code(ws) == 1012  # "service restart": reconnect later


# --- Several processes through Redis -----------------------------------------


@needs_redis
def test_redis_event_reaches_a_socket_on_another_process(
    two_servers: tuple[Server, Server],
) -> None:
    one, two = two_servers
    alice, bob = one.user("alice"), one.user("bob")
    with httpx.Client(base_url=two.url) as http, open_socket(one, bob) as ws:
        team = group(http, alice, "bob")  # created through process two...
        assert next_event(ws)["type"] == "conversation.joined"  # ...seen on process one
        message_id = post(http, alice, team, "across processes")
        event = next_event(ws)
        assert event["type"] == "message.created"
        assert event["message"]["id"] == message_id
        with open_socket(two, alice) as alice_ws:
            ws.send(json.dumps({"type": "typing", "conversation_id": team}))
            typing = next_event(alice_ws)
        assert typing["type"] == "typing"
        assert typing["user"]["username"] == "bob"


@needs_redis
def test_redis_password_change_closes_sockets_on_every_process(
    two_servers: tuple[Server, Server],
) -> None:
    one, two = two_servers
    bob = one.user("bob")
    with open_socket(one, bob) as ws, httpx.Client(base_url=two.url) as http:
        change = {"current_password": "correct horse battery staple", "new_password": "z" * 12}
        assert http.put("/users/me/password", json=change, headers=bob).status_code == 204
        assert close_code(ws) == 4401


class FreezingProxy:
    """A TCP proxy to Redis that can stop forwarding on the connections it
    has, while still forwarding new ones: a network cut, as an open
    connection sees it."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.frozen: set[socket.socket] = set()
        self.open: set[socket.socket] = set()
        threading.Thread(target=self.accept, daemon=True).start()

    def accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            self.open |= {client, upstream}
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self.pipe, args=(a, b), daemon=True).start()

    def pipe(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                if source in self.frozen:
                    continue  # swallowed: nothing comes through, no error either
                sink.sendall(data)
        except OSError:
            pass

    def freeze(self) -> None:
        self.frozen |= self.open

    def close(self) -> None:
        self.listener.close()
        for sock in self.open:
            sock.close()


def next_message(ws: ClientConnection, timeout: float = 5) -> dict[str, Any]:
    """The next message.created on the socket. The group's conversation.joined,
    published through Redis before the socket opened, may still arrive first."""
    while (event := next_event(ws, timeout))["type"] != "message.created":
        pass
    message: dict[str, Any] = event["message"]
    return message


@needs_redis
def test_redis_listener_notices_a_silent_cut_and_clients_catch_up(tmp_path: Path) -> None:
    """Process one reaches Redis through a proxy that goes silent. Within a
    few heartbeats it reconnects and closes its sockets (1013), so clients
    reconnect and catch up; afterwards events flow again."""
    host, port = REDIS_URL.removeprefix("redis://").split("/")[0].split(":")
    proxy = FreezingProxy((host, int(port)))
    channel = unique_channel()
    one = Server(
        tmp_path / "data",
        REDIS_URL=f"redis://127.0.0.1:{proxy.port}/0",
        REDIS_CHANNEL=channel,
    )
    two = Server(tmp_path / "data", REDIS_URL=REDIS_URL, REDIS_CHANNEL=channel)
    try:
        one.start()
        two.start()
        alice, bob = one.user("alice"), one.user("bob")
        with httpx.Client(base_url=two.url) as http:
            team = group(http, alice, "bob")
            with open_socket(one, bob) as ws:
                first = post(http, alice, team, "before the cut")
                assert next_message(ws)["id"] == first
                proxy.freeze()
                post(http, alice, team, "lost in the cut")
                assert close_code(ws, timeout=30) == 1013
            with open_socket(one, bob) as ws:
                missed = http.get(
                    f"/conversations/{team}/messages", params={"after": first}, headers=bob
                ).json()
                assert [m["content"] for m in missed] == ["lost in the cut"]
                after = post(http, alice, team, "after the cut")
                assert next_message(ws, timeout=10)["id"] == after
    finally:
        one.kill()
        two.kill()
        proxy.close()


def test_logout_closes_the_socket_while_redis_is_down(tmp_path: Path) -> None:
    server = Server(tmp_path / "data", REDIS_URL="redis://127.0.0.1:1/0")
    server.start()
    try:
        alice = server.user("alice")
        with httpx.Client(base_url=server.url) as http, open_socket(server, alice) as ws:
            assert http.post("/logout", headers=alice).status_code == 204
            assert close_code(ws, timeout=5) == 4401
    finally:
        server.kill()


def test_http_does_not_wait_for_a_redis_that_hangs(tmp_path: Path) -> None:
    """A "Redis" that accepts connections and never answers: requests must
    not wait for it."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        port = silent.getsockname()[1]
        server = Server(tmp_path / "data", REDIS_URL=f"redis://127.0.0.1:{port}/0")
        server.start()
        try:
            alice = server.user("alice")
            with httpx.Client(base_url=server.url) as http:
                durations = []
                for i in range(5):
                    started = time.monotonic()
                    post(http, alice, 1, f"message {i}")
                    durations.append(time.monotonic() - started)
            assert max(durations) < 1, durations
        finally:
            server.kill()


def test_http_keeps_working_when_redis_is_down(tmp_path: Path) -> None:
    # Nothing listens on port 1: every publish fails, fast.
    server = Server(tmp_path / "data", REDIS_URL="redis://127.0.0.1:1/0")
    server.start()
    try:
        alice = server.user("alice")
        with httpx.Client(base_url=server.url) as http, open_socket(server, alice):
            started = time.monotonic()
            post(http, alice, 1, "Redis is down, the message is not")
            assert time.monotonic() - started < 3
            page = http.get("/conversations/1/messages", headers=alice).json()
        assert [m["content"] for m in page] == ["Redis is down, the message is not"]
        assert "Redis unavailable" in server.log.read_text()
    finally:
        server.kill()
