"""Crash durability: clients send messages while the server is killed with
SIGKILL (no shutdown, no flush), again and again. After every restart on the
same DATA_DIR, each message whose 201 a client received is there exactly
once, and the database file passes SQLite's integrity check."""

import random
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest

from tests.server import Server

pytestmark = pytest.mark.slow

CLIENTS = 4
CRASHES = 5


class Sender:
    """One client: sends numbered messages with a client_id until the server
    dies; remembers what was acknowledged and what was in flight."""

    def __init__(self, server: Server, index: int, headers: dict[str, str]) -> None:
        self.server = server
        self.index = index
        self.headers = headers
        self.acknowledged: dict[str, int] = {}  # client_id -> message id
        self.in_flight: list[str] = []  # sent, no answer: maybe saved, maybe not
        self.unexpected: list[str] = []  # any answer but 201 (checked by the test)
        self.next = 0

    def body(self, client_id: str) -> dict[str, str]:
        return {"content": f"message {client_id}", "client_id": client_id}

    def send_until_the_server_dies(self) -> None:
        with httpx.Client(base_url=self.server.url, headers=self.headers, timeout=10) as http:
            while True:
                client_id = f"{self.index}-{self.next}"
                self.next += 1
                try:
                    response = http.post("/conversations/1/messages", json=self.body(client_id))
                except httpx.TransportError:
                    self.in_flight.append(client_id)
                    return
                if response.status_code != 201:
                    self.unexpected.append(f"{response.status_code} {response.text}")
                    return
                self.acknowledged[client_id] = response.json()["id"]

    def retry_in_flight(self) -> tuple[int, int]:
        """Send the unanswered ones again, as a client would: (saved before, new)."""
        saved_before = new = 0
        with httpx.Client(base_url=self.server.url, headers=self.headers) as http:
            for client_id in self.in_flight:
                response = http.post("/conversations/1/messages", json=self.body(client_id))
                assert response.status_code in (200, 201), response.text
                saved_before += response.status_code == 200
                new += response.status_code == 201
                self.acknowledged[client_id] = response.json()["id"]
        self.in_flight.clear()
        return saved_before, new


def all_messages(server: Server, headers: dict[str, str]) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    with httpx.Client(base_url=server.url, headers=headers) as http:
        while True:
            after = messages[-1]["id"] if messages else 0
            page = http.get("/conversations/1/messages", params={"after": after, "limit": 200})
            assert page.status_code == 200
            if not page.json():
                return messages
            messages += page.json()


def integrity_check(database: Path) -> str:
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as connection:
        return str(connection.execute("PRAGMA integrity_check").fetchone()[0])


def test_sigkill_mid_stream_loses_no_acknowledged_message(
    tmp_path: Path, report: Callable[[str], None]
) -> None:
    server = Server(tmp_path / "data")
    server.start()
    senders = [Sender(server, i, server.user(f"sender{i}")) for i in range(CLIENTS)]
    rng = random.Random(8)  # the same kill moments on every run
    saved_before = retried_new = 0
    try:
        for _ in range(CRASHES):
            threads = [threading.Thread(target=s.send_until_the_server_dies) for s in senders]
            for thread in threads:
                thread.start()
            threading.Event().wait(rng.uniform(0.5, 1.5))
            server.kill()  # SIGKILL, mid-stream
            for thread in threads:
                thread.join(timeout=30)
            assert [s.unexpected for s in senders] == [[]] * CLIENTS
            assert integrity_check(server.data_dir / "messageapp.db") == "ok"

            server.start()
            for sender in senders:
                before, new = sender.retry_in_flight()
                saved_before += before
                retried_new += new
            stored = all_messages(server, senders[0].headers)
            client_ids = [m["client_id"] for m in stored]
            assert len(client_ids) == len(set(client_ids))  # nothing twice
            by_client_id = {m["client_id"]: m for m in stored}
            for sender in senders:
                for client_id, message_id in sender.acknowledged.items():
                    assert by_client_id[client_id]["id"] == message_id  # nothing lost
                    assert by_client_id[client_id]["content"] == f"message {client_id}"
        acknowledged = sum(len(s.acknowledged) for s in senders)
        assert len(stored) == acknowledged  # and nothing that nobody sent
    finally:
        server.kill()
    assert integrity_check(server.data_dir / "messageapp.db") == "ok"
    report(
        f"Crashes: {CRASHES} SIGKILLs under {CLIENTS} senders; {acknowledged} messages "
        f"acknowledged, 0 lost, 0 doubled; of the requests cut off by a kill, "
        f"{saved_before} had been saved (the retry got 200), {retried_new} had not (201)"
    )
