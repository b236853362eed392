"""Many clients at once against one real SQLite file: nothing lost, nothing doubled."""

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from types import ModuleType
from typing import Any

import httpx2 as httpx
import pytest
from fastapi.testclient import TestClient

import sessions
import users
from tests.helpers import PASSWORD, Headers, create_conversation, general_id, history, new_user

THREADS = 8
PER_THREAD = 25


def login_response(client: TestClient, username: str) -> httpx.Response:
    return client.post("/token", data={"username": username, "password": PASSWORD})


def test_concurrent_sends_lose_nothing(client: TestClient) -> None:
    senders = [new_user(client, f"sender{i}") for i in range(THREADS)]
    general = general_id(client, senders[0])

    def send_all(index: int) -> list[int]:
        statuses = []
        for n in range(PER_THREAD):
            response = client.post(
                f"/conversations/{general}/messages",
                json={"content": f"{index}-{n}", "client_id": f"{index}-{n}"},
                headers=senders[index],
            )
            statuses.append(response.status_code)
        return statuses

    with ThreadPoolExecutor(THREADS) as pool:
        statuses = [s for result in pool.map(send_all, range(THREADS)) for s in result]

    assert statuses == [201] * THREADS * PER_THREAD  # no 500, no "database is locked"
    stored = history(client, senders[0], general, limit=200, after=0)
    stored += history(client, senders[0], general, limit=200, after=stored[-1]["id"])
    contents = sorted(m["content"] for m in stored)
    expected = sorted(f"{i}-{n}" for i in range(THREADS) for n in range(PER_THREAD))
    assert contents == expected  # every message once
    ids = [m["id"] for m in stored]
    assert ids == sorted(ids)


def test_concurrent_retries_store_one_message(client: TestClient) -> None:
    alice = new_user(client, "alice")
    general = general_id(client, alice)
    body = {"content": "sent over a flaky network", "client_id": "retry-me"}

    def post(_: int) -> tuple[int, int]:
        response = client.post(f"/conversations/{general}/messages", json=body, headers=alice)
        return response.status_code, response.json()["id"]

    with ThreadPoolExecutor(THREADS) as pool:
        results = list(pool.map(post, range(THREADS * 2)))

    assert sorted(status for status, _ in results) == [200] * (THREADS * 2 - 1) + [201]
    assert len({message_id for _, message_id in results}) == 1
    assert len(history(client, alice, general)) == 1


def test_concurrent_direct_conversation_from_both_sides(client: TestClient) -> None:
    alice = new_user(client, "alice")
    bob = new_user(client, "bob")

    def start(index: int) -> int:
        headers, other = (alice, "bob") if index % 2 else (bob, "alice")
        return create_conversation(client, headers, kind="direct", members=[other])["id"]

    with ThreadPoolExecutor(THREADS) as pool:
        ids = set(pool.map(start, range(THREADS * 2)))
    assert len(ids) == 1
    kinds = [c["kind"] for c in client.get("/conversations", headers=alice).json()]
    assert kinds.count("direct") == 1


def test_more_requests_at_once_than_worker_threads(client: TestClient) -> None:
    """120 requests in flight, writes and reads mixed, against FastAPI's 40
    worker threads: a request must not wait for a connection or for SQLite's
    write lock inside a worker thread, or those holding them never get a
    thread to finish on (the service hung, then answered 503s and 500s)."""
    alice = new_user(client, "alice")
    general = general_id(client, alice)

    def write_then_read(n: int) -> list[int]:
        sent = client.post(
            f"/conversations/{general}/messages", json={"content": f"m{n}"}, headers=alice
        )
        page = client.get(f"/conversations/{general}/messages", headers=alice)
        return [sent.status_code, page.status_code]

    with ThreadPoolExecutor(120) as pool:
        statuses = [s for pair in pool.map(write_then_read, range(120)) for s in pair]

    assert statuses == [201, 200] * 120
    assert len(history(client, alice, general, limit=200, after=0)) == 120


def sign_up_carol(client: TestClient, _: Headers) -> Any:
    return client.post("/users", json={"username": "carol", "password": PASSWORD})


def change_bobs_password(client: TestClient, bob: Headers) -> Any:
    body = {"current_password": PASSWORD, "new_password": "a brand new passphrase"}
    return client.put("/users/me/password", json=body, headers=bob)


def log_bob_in(client: TestClient, _: Headers) -> Any:
    return login_response(client, "bob")


@pytest.mark.parametrize(
    ("hashing_route", "module", "function", "status"),
    [
        (log_bob_in, sessions, "verify_password", 200),
        (sign_up_carol, users, "hash_password", 201),
        (change_bobs_password, users, "verify_password", 204),
    ],
)
def test_messages_are_sent_while_a_password_hashes(
    client: TestClient,
    monkeypatch: pytest.MonkeyPatch,
    hashing_route: Callable[[TestClient, Headers], Any],
    module: ModuleType,
    function: str,
    status: int,
) -> None:
    """A password hash takes tens of milliseconds on purpose; on SQLite,
    writes must not wait for it (logins, then sign-ups and password changes,
    once held the writer's turn while hashing)."""
    alice, bob = new_user(client, "alice"), new_user(client, "bob")
    general = general_id(client, alice)
    hashing, release = threading.Event(), threading.Event()
    real = getattr(module, function)

    def slow_hash(*args: str) -> Any:
        hashing.set()
        release.wait(timeout=30)  # a hash that lasts until the test says
        return real(*args)

    monkeypatch.setattr(module, function, slow_hash)
    with ThreadPoolExecutor(1) as pool:
        hashing_request = pool.submit(hashing_route, client, bob)
        assert hashing.wait(timeout=10)
        sent = client.post(
            f"/conversations/{general}/messages", json={"content": "hi"}, headers=alice
        )
        still_hashing = not hashing_request.done()
        release.set()
        assert hashing_request.result().status_code == status
    assert sent.status_code == 201
    assert still_hashing  # the message went through while the password was hashing
