"""`python -m manage backup` and `restore`: a copy taken while the service
writes holds every message acknowledged before it began, restores to a
database that passes SQLite's integrity check, and a restore never runs
while the service does. On PostgreSQL both point to pg_dump and pg_restore.
"""

import fcntl
import os
import sqlite3
import stat
import threading
import time
from pathlib import Path

import httpx2 as httpx
import pytest

from tests import database
from tests.server import Server, manage, running

sqlite_only = pytest.mark.skipif(
    database.POSTGRES, reason="SQLite's own backup; PostgreSQL's is pg_dump (tested below)"
)
WRITERS = 4


class Writer:
    """A client sending messages without pause until told to stop; keeps the
    id of each message acknowledged (201) and when its answer came."""

    def __init__(self, server: Server, headers: dict[str, str], index: int) -> None:
        self.server, self.headers, self.index = server, headers, index
        self.acknowledged: list[tuple[float, int]] = []  # (monotonic time, message id)
        self.stop = threading.Event()

    def run(self) -> None:
        with httpx.Client(base_url=self.server.url, headers=self.headers, timeout=30) as http:
            n = 0
            while not self.stop.is_set():
                response = http.post(
                    "/conversations/1/messages", json={"content": f"{self.index}-{n}"}
                )
                assert response.status_code == 201, response.text
                self.acknowledged.append((time.monotonic(), response.json()["id"]))
                n += 1


def integrity_check(path: Path) -> str:
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as connection:
        return str(connection.execute("PRAGMA integrity_check").fetchone()[0])


def message_ids(server: Server, headers: dict[str, str]) -> set[int]:
    ids: set[int] = set()
    after = 0
    with httpx.Client(base_url=server.url, headers=headers) as http:
        while True:
            page = http.get("/conversations/1/messages", params={"after": after, "limit": 200})
            assert page.status_code == 200
            if not page.json():
                return ids
            ids |= {m["id"] for m in page.json()}
            after = page.json()[-1]["id"]


@sqlite_only
def test_backup_under_write_load_restores_every_acknowledged_message(tmp_path: Path) -> None:
    data, copy, restored = tmp_path / "data", tmp_path / "backup", tmp_path / "restored"
    server = Server(data)
    server.start()
    try:
        writers = [Writer(server, server.user(f"writer{i}"), i) for i in range(WRITERS)]
        threads = [threading.Thread(target=w.run) for w in writers]
        for thread in threads:
            thread.start()
        time.sleep(1.5)  # the writers are in full flow
        began = time.monotonic()
        done = manage(data, "backup", str(copy))  # while they keep writing
        time.sleep(0.5)
        for writer in writers:
            writer.stop.set()
        for thread in threads:
            thread.join(timeout=30)
        assert done.returncode == 0, done.stderr
        assert "Backed up" in done.stdout
        server.stop()
    finally:
        server.kill()
    before = {i for w in writers for t, i in w.acknowledged if t < began}
    during = {i for w in writers for t, i in w.acknowledged if t >= began}
    assert len(before) > 20 and during  # the copy was taken under load

    done = manage(restored, "restore", str(copy))
    assert done.returncode == 0, done.stderr
    assert "Integrity check: ok" in done.stdout
    assert integrity_check(restored / "messageapp.db") == "ok"
    with running(restored) as server:
        # The key came along: a token issued before the backup still works.
        stored = message_ids(server, writers[0].headers)
    assert before <= stored
    assert stored <= before | during  # and nothing that nobody sent


@sqlite_only
def test_backup_holds_writes_still_in_the_wal(tmp_path: Path) -> None:
    """The latest commits are in the -wal file until SQLite copies them into
    the database file: copying that file alone would miss them."""
    data, copy = tmp_path / "data", tmp_path / "backup"
    with running(data) as server, httpx.Client(base_url=server.url) as http:
        headers = server.user("alice")
        for n in range(5):
            sent = http.post(
                "/conversations/1/messages", json={"content": f"m{n}"}, headers=headers
            )
            assert sent.status_code == 201
        assert (data / "messageapp.db-wal").stat().st_size > 0
        assert manage(data, "backup", str(copy)).returncode == 0
    with sqlite3.connect(copy / "messageapp.db") as backup:
        contents = {row[0] for row in backup.execute("SELECT content FROM message")}
    assert contents == {f"m{n}" for n in range(5)}


@sqlite_only
def test_backup_is_private(tmp_path: Path) -> None:
    data, copy = tmp_path / "data", tmp_path / "backup"
    with running(data) as server:
        server.user("alice")
        assert manage(data, "backup", str(copy)).returncode == 0
    assert stat.S_IMODE(copy.stat().st_mode) == 0o700
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in copy.iterdir()}
    keys = {"secret_key", "vapid_private_key.pem"}
    assert modes == {"messageapp.db": 0o600} | dict.fromkeys(keys, 0o600)
    for key in keys:
        assert (copy / key).read_text() == (data / key).read_text()
    assert integrity_check(copy / "messageapp.db") == "ok"


@sqlite_only
def test_restore_refuses_while_the_service_runs(tmp_path: Path) -> None:
    data, copy = tmp_path / "data", tmp_path / "backup"
    with running(data) as server:
        headers = server.user("alice")
        assert manage(data, "backup", str(copy)).returncode == 0
        done = manage(data, "restore", str(copy))
        assert done.returncode == 2
        assert "The service is running" in done.stderr
        assert httpx.get(f"{server.url}/users/me", headers=headers).status_code == 200
    assert sorted(p.name for p in data.glob("messageapp.db*")) == [
        "messageapp.db",
        "messageapp.db-shm",
        "messageapp.db-wal",
        "messageapp.db.lock",
    ]  # nothing set aside, nothing replaced


@sqlite_only
def test_restore_after_the_service_was_killed(tmp_path: Path) -> None:
    """SIGKILL leaves no lock behind (the kernel drops it): restore goes ahead,
    and keeps the database it replaces, WAL and all."""
    data, copy = tmp_path / "data", tmp_path / "backup"
    with running(data) as server:
        server.user("alice")
        assert manage(data, "backup", str(copy)).returncode == 0
        server.user("bob")  # after the backup: only in the database replaced
    done = manage(data, "restore", str(copy))  # `running` ended with SIGKILL
    assert done.returncode == 0, done.stderr
    kept = next(data.glob("messageapp.db.before-restore-*[0-9Z]"))
    assert f"kept as {kept}" in done.stdout
    with sqlite3.connect(kept) as old:
        assert {"alice", "bob"} <= {row[0] for row in old.execute("SELECT username FROM user")}
    with running(data) as server:
        assert (
            httpx.post(
                f"{server.url}/token", data={"username": "bob", "password": "whatever"}
            ).status_code
            == 401
        )  # bob is not in the backup
        server.user("alice")


@sqlite_only
def test_server_does_not_start_during_a_restore(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir(mode=0o700)
    # What `restore` holds while it works: the lock beside the database, alone.
    with open(data / "messageapp.db.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        server = Server(data)
        with pytest.raises(RuntimeError, match="exited at start"):
            server.start()
    assert "is being restored" in server.log.read_text()


@sqlite_only
def test_backup_refuses_a_folder_that_exists(tmp_path: Path) -> None:
    data, copy = tmp_path / "data", tmp_path / "backup"
    with running(data):
        copy.mkdir()
        done = manage(data, "backup", str(copy))
    assert done.returncode == 2
    assert "exists already" in done.stderr
    assert list(copy.iterdir()) == []


@sqlite_only
def test_restore_refuses_what_is_not_a_backup(tmp_path: Path) -> None:
    data, folder = tmp_path / "data", tmp_path / "folder"
    folder.mkdir()
    done = manage(data, "restore", str(folder))
    assert done.returncode == 2
    assert "holds no messageapp.db" in done.stderr


@sqlite_only
def test_restore_refuses_a_damaged_backup(tmp_path: Path) -> None:
    data, copy = tmp_path / "data", tmp_path / "backup"
    with running(data) as server:
        server.user("alice")
        assert manage(data, "backup", str(copy)).returncode == 0
    damaged = bytearray((copy / "messageapp.db").read_bytes())
    damaged[4096 * 2 : 4096 * 2 + 64] = os.urandom(64)  # a page of a table, scrambled
    (copy / "messageapp.db").write_bytes(bytes(damaged))
    before = (data / "messageapp.db").read_bytes()
    done = manage(data, "restore", str(copy))
    assert done.returncode in (1, 2), done.stdout
    assert "error:" in done.stderr
    assert (data / "messageapp.db").read_bytes() == before  # nothing changed


@pytest.mark.parametrize(("command", "tool"), [("backup", "pg_dump"), ("restore", "pg_restore")])
def test_postgresql_gets_the_recipe(tmp_path: Path, command: str, tool: str) -> None:
    url = "postgresql+psycopg://messageapp:s3cret-pw@db.example:5432/messageapp"
    done = manage(tmp_path / "data", command, str(tmp_path / "backup"), DATABASE_URL=url)
    assert done.returncode == 2
    assert tool in done.stderr
    assert "postgresql://messageapp:***@db.example:5432/messageapp" in done.stderr
    assert "s3cret-pw" not in done.stderr
    assert not (tmp_path / "backup").exists()
