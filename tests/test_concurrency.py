"""Many clients at once against one real SQLite file: nothing lost, nothing doubled."""

import threading
from concurrent.futures import ThreadPoolExecutor

import httpx2 as httpx
import pytest
from fastapi.testclient import TestClient

import auth
from tests.helpers import PASSWORD, create_conversation, general_id, history, new_user

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


def test_messages_are_sent_while_a_login_hashes(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A login's password check takes tens of milliseconds on purpose; writes
    must not wait for it (on SQLite, a login once held the writer's turn)."""
    alice = new_user(client, "alice")
    general = general_id(client, alice)
    hashing, release = threading.Event(), threading.Event()
    real_verify = auth.verify_password

    def slow_verify(password: str, hashed: str) -> bool:
        hashing.set()
        release.wait(timeout=30)  # a hash that lasts until the test says
        return real_verify(password, hashed)

    monkeypatch.setattr(auth, "verify_password", slow_verify)
    with ThreadPoolExecutor(1) as pool:
        login = pool.submit(login_response, client, "alice")
        assert hashing.wait(timeout=10)
        sent = client.post(
            f"/conversations/{general}/messages", json={"content": "hi"}, headers=alice
        )
        still_hashing = not login.done()
        release.set()
        assert login.result().status_code == 200
    assert sent.status_code == 201
    assert still_hashing  # the message went through while the login was hashing
