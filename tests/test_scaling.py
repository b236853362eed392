"""Several processes sharing one database and one Redis, as docs/deploy.md "Scaling"
describes: two uvicorn processes on two loopback ports (two replicas behind
a load balancer), `uvicorn --workers 2`, and a Redis that restarts.

On PostgreSQL when TEST_DATABASE_URL is set (.ci/run does), else on one
SQLite file; Redis from TEST_REDIS_URL, or a private redis-server.
"""

import re
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest
import redis

from config import settings
from tests.server import (
    PASSWORD,
    REDIS_URL,
    Headers,
    Server,
    close_code,
    group,
    needs_redis,
    next_event,
    open_socket,
    post,
    unique_channel,
)

SENDS = 200


def send_many(
    targets: list[tuple[Server, Headers]], conversation_id: int, count: int
) -> list[tuple[int, int, str]]:
    """`count` messages sent at once, 16 at a time, the i-th through
    targets[i % len(targets)]: (status, id, content) of each."""

    def send(i: int) -> tuple[int, int, str]:
        server, headers = targets[i % len(targets)]
        content = f"message {i}"
        response = httpx.post(
            f"{server.url}/conversations/{conversation_id}/messages",
            json={"content": content, "client_id": f"send-{i}"},
            headers=headers,
            timeout=30,
        )
        return response.status_code, response.json().get("id", -1), content

    with ThreadPoolExecutor(16) as pool:
        return list(pool.map(send, range(count)))


def created_ids(ws: Any, count: int, timeout: float = 30) -> list[int]:
    """The ids of the next `count` message.created events on the socket."""
    ids: list[int] = []
    deadline = time.monotonic() + timeout
    while len(ids) < count and time.monotonic() < deadline:
        event = next_event(ws, timeout=deadline - time.monotonic())
        if event["type"] == "message.created":
            ids.append(event["message"]["id"])
    return ids


def all_history(server: Server, headers: Headers, conversation_id: int) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    with httpx.Client(base_url=server.url) as http:
        while True:
            after = messages[-1]["id"] if messages else 0
            page = http.get(
                f"/conversations/{conversation_id}/messages",
                params={"after": after, "limit": 100},
                headers=headers,
            ).json()
            messages += page
            if len(page) < 100:
                return messages


@needs_redis
def test_concurrent_sends_through_two_processes_lose_nothing(
    two_servers: tuple[Server, Server],
) -> None:
    """200 sends at once, spread over both processes: every 201 is stored
    exactly once, and a socket on each process gets every one exactly once."""
    one, two = two_servers
    senders = [one.user(f"sender{i}") for i in range(4)]
    reader = one.user("reader")
    with httpx.Client(base_url=two.url) as http:
        team = group(http, senders[0], "sender1", "sender2", "sender3", "reader")
    targets = [(server, headers) for headers in senders for server in (one, two)]

    with open_socket(one, reader) as ws_one, open_socket(two, reader) as ws_two:
        results = send_many(targets, team, SENDS)
        assert [status for status, _, _ in results] == [201] * SENDS
        sent = sorted(message_id for _, message_id, _ in results)
        assert sorted(created_ids(ws_one, SENDS)) == sent
        assert sorted(created_ids(ws_two, SENDS)) == sent

    stored = all_history(two, reader, team)
    assert sorted((m["id"], m["content"]) for m in stored) == sorted(
        (message_id, content) for _, message_id, content in results
    )


@needs_redis
def test_retried_client_id_through_the_other_process_is_stored_once(
    two_servers: tuple[Server, Server],
) -> None:
    one, two = two_servers
    alice = one.user("alice")
    body = {"content": "sent over a flaky network", "client_id": "retry-1"}
    first = httpx.post(f"{one.url}/conversations/1/messages", json=body, headers=alice)
    retry = httpx.post(f"{two.url}/conversations/1/messages", json=body, headers=alice)
    assert (first.status_code, retry.status_code) == (201, 200)
    assert retry.json()["id"] == first.json()["id"]

    # Retries racing each other through both processes: one message.
    racing = {"content": "raced", "client_id": "retry-2"}

    def send(i: int) -> tuple[int, int]:
        server = (one, two)[i % 2]
        response = httpx.post(
            f"{server.url}/conversations/1/messages", json=racing, headers=alice, timeout=30
        )
        return response.status_code, response.json()["id"]

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(send, range(16)))
    assert sorted(status for status, _ in results) == [200] * 15 + [201]
    assert len({message_id for _, message_id in results}) == 1
    contents = [m["content"] for m in all_history(two, alice, 1)]
    assert contents == ["sent over a flaky network", "raced"]


@needs_redis
def test_logout_through_one_process_is_honoured_by_the_other(
    two_servers: tuple[Server, Server],
) -> None:
    one, two = two_servers
    alice = one.user("alice")
    with open_socket(two, alice) as ws:
        assert httpx.get(f"{two.url}/users/me", headers=alice).status_code == 200
        assert httpx.post(f"{one.url}/logout", headers=alice).status_code == 204
        assert close_code(ws) == 4401  # the socket on the other process
    assert httpx.get(f"{two.url}/users/me", headers=alice).status_code == 401
    with open_socket(one, one.user("alice")):  # a new login works on either
        pass


@needs_redis
def test_ending_a_session_through_one_process_is_honoured_by_the_other(
    two_servers: tuple[Server, Server],
) -> None:
    """Sessions live in the database: a session ended through one process is
    ended in the other at once, its socket there included; a refresh token
    rotated through one is a reuse through the other."""
    one, two = two_servers
    one.user("alice")
    form = {"username": "alice", "password": PASSWORD}
    phone = httpx.post(f"{one.url}/token", data=form).json()
    laptop = httpx.post(f"{two.url}/token", data=form).json()
    phone_auth = {"Authorization": f"Bearer {phone['access_token']}"}
    laptop_auth = {"Authorization": f"Bearer {laptop['access_token']}"}
    sessions = httpx.get(f"{two.url}/sessions", headers=laptop_auth).json()
    phone_session = next(s["id"] for s in sessions if not s["current"])
    with open_socket(one, phone_auth) as ws:
        ended = httpx.delete(f"{two.url}/sessions/{phone_session}", headers=laptop_auth)
        assert ended.status_code == 204
        assert close_code(ws) == 4401  # the socket on the other process
    assert httpx.get(f"{one.url}/users/me", headers=phone_auth).status_code == 401
    refresh = {"grant_type": "refresh_token", "refresh_token": laptop["refresh_token"]}
    assert httpx.post(f"{one.url}/token", data=refresh).status_code == 200
    reused = httpx.post(f"{two.url}/token", data=refresh)
    assert reused.status_code == 400
    assert reused.json()["error"] == "invalid_grant"
    assert httpx.get(f"{one.url}/users/me", headers=laptop_auth).status_code == 401


@needs_redis
def test_login_limit_is_shared_by_the_processes(two_servers: tuple[Server, Server]) -> None:
    one, two = two_servers
    one.user("alice")
    for i in range(settings.LOGIN_MAX_FAILURES):  # half through each process
        server = (one, two)[i % 2]
        wrong = httpx.post(f"{server.url}/token", data={"username": "alice", "password": "no!"})
        assert wrong.status_code == 401
    for server in (one, two):
        right = httpx.post(f"{server.url}/token", data={"username": "alice", "password": PASSWORD})
        assert right.status_code == 429


@needs_redis
def test_uvicorn_with_two_workers(tmp_path: Path) -> None:
    """`uvicorn main:app --workers 2`: both workers start (migrating once),
    sockets on either get every event, and SIGTERM stops them all."""
    server = Server(
        tmp_path / "data", "--workers", "2", REDIS_URL=REDIS_URL, REDIS_CHANNEL=unique_channel()
    )
    try:
        server.start()
        alice, bob = server.user("alice"), server.user("bob")
        with httpx.Client(base_url=server.url) as http:
            team = group(http, alice, "bob")
        with ExitStack() as stack:
            # Each socket is a new connection; the workers share them out.
            sockets = [stack.enter_context(open_socket(server, bob)) for _ in range(6)]
            results = send_many([(server, alice)], team, 40)
            assert [status for status, _, _ in results] == [201] * 40
            sent = sorted(message_id for _, message_id, _ in results)
            for ws in sockets:
                assert sorted(created_ids(ws, 40)) == sent
        workers = set(re.findall(r"Started server process \[(\d+)\]", server.log.read_text()))
        assert len(workers) == 2
        server.stop()
    finally:
        server.kill()


class RedisServer:
    """A redis-server of this test's own, on a free port, to kill and restart."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""],
            cwd=self.folder,
            stdout=subprocess.DEVNULL,
        )
        client = redis.Redis(port=self.port)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                assert time.monotonic() < deadline, "redis-server did not start"
                time.sleep(0.05)
        client.close()

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[RedisServer]:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed (.ci/run installs it)")
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.kill()


def test_redis_restart_is_survived_without_restarting_the_app(
    tmp_path: Path, private_redis: RedisServer
) -> None:
    """Redis dies mid-test: HTTP keeps working on both processes. Redis comes
    back on the same port: the sockets that may have missed events are closed
    (1013) so their clients catch up, and events flow again between the
    processes, all without restarting them."""
    channel = unique_channel()
    one, two = (
        Server(tmp_path / "data", REDIS_URL=private_redis.url, REDIS_CHANNEL=channel)
        for _ in range(2)
    )
    try:
        one.start()
        two.start()
        alice, bob = one.user("alice"), one.user("bob")
        with httpx.Client(base_url=two.url) as http, open_socket(one, bob) as ws:
            team = group(http, alice, "bob")
            assert next_event(ws)["type"] == "conversation.joined"
            first = post(http, alice, team, "before the restart")
            assert next_event(ws)["message"]["id"] == first

            private_redis.kill()
            post(http, alice, team, "while Redis is down, through two")
            with httpx.Client(base_url=one.url) as http_one:
                post(http_one, alice, team, "while Redis is down, through one")
            private_redis.start()
            assert close_code(ws, timeout=30) == 1013

        with httpx.Client(base_url=two.url) as http, open_socket(one, bob) as ws:
            missed = http.get(
                f"/conversations/{team}/messages", params={"after": first}, headers=bob
            ).json()
            assert [m["content"] for m in missed] == [
                "while Redis is down, through two",
                "while Redis is down, through one",
            ]
            # Process two's publisher reconnects on its next send; until it
            # has, an event may still be lost, so try a few times.
            deadline = time.monotonic() + 30
            while True:
                sent = post(http, alice, team, "after the restart")
                try:
                    if created_ids(ws, 1, timeout=2) == [sent]:
                        break
                except TimeoutError:
                    pass
                assert time.monotonic() < deadline, "events never flowed again"
    finally:
        one.kill()
        two.kill()
