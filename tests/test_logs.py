"""Logs: the request id on every answer and every line of its request, the
access line of each request, and LOG_FORMAT=json read line by line. (What
logs must never hold is in test_security.py.)"""

import json
import re
import time
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine

import pages
from config import settings
from main import app
from tests.helpers import PASSWORD, create_conversation, new_user
from tests.server import Server, running

HEX_ID = re.compile(r"[0-9a-f]{32}")


# --- X-Request-ID -----------------------------------------------------------------


def test_request_id_made_when_none_is_sent(client: TestClient) -> None:
    first, second = client.get("/healthz"), client.get("/healthz")
    assert HEX_ID.fullmatch(first.headers["x-request-id"])
    assert first.headers["x-request-id"] != second.headers["x-request-id"]


@pytest.mark.parametrize(
    "request_id",
    ["3f2b9c1e-0001-4c2d-9e55-0a1b2c3d4e5f", "abc123", "Root=1-5e1b:a+b/c=", "x" * 128],
)
def test_request_id_sent_is_returned(client: TestClient, request_id: str) -> None:
    response = client.get("/healthz", headers={"X-Request-ID": request_id})
    assert response.headers["x-request-id"] == request_id


@pytest.mark.parametrize(
    "request_id",
    ["has space", 'quote"', "x" * 129, "é-accent", "", "line\tbreak"],
)
def test_odd_request_id_is_replaced(client: TestClient, request_id: str) -> None:
    """An id that could forge a log line or a header, or is too long, is not
    repeated: the answer carries a new one."""
    response = client.get("/healthz", headers={b"X-Request-ID": request_id.encode()})
    assert HEX_ID.fullmatch(response.headers["x-request-id"])


def test_request_id_on_refusals(client: TestClient) -> None:
    """404, 405, 401, 422, and a 413 answered before the body was read."""
    too_large = {"Content-Length": str(settings.MAX_BODY_BYTES + 1)}
    answers = [
        client.get("/nope"),
        client.post("/healthz"),
        client.get("/users/me"),
        client.post("/users", json={}),
        client.post("/users", content=b"x" * (settings.MAX_BODY_BYTES + 1), headers=too_large),
    ]
    assert [a.status_code for a in answers] == [404, 405, 401, 422, 413]
    for answer in answers:
        assert HEX_ID.fullmatch(answer.headers["x-request-id"])


def test_request_id_on_an_unexpected_error(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    """A bug's 500 carries the id too: the one answer a user would report."""

    def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(pages, "message_history", broken)
    with TestClient(app, raise_server_exceptions=False) as client:
        alice = new_user(client, "alice")
        channel = create_conversation(client, alice, kind="channel", title="c")["id"]
        response = client.get(
            f"/conversations/{channel}/messages", headers=alice | {"X-Request-ID": "bug-report-1"}
        )
    assert response.status_code == 500
    assert response.headers["x-request-id"] == "bug-report-1"


def test_request_id_on_the_socket_handshake(client: TestClient) -> None:
    with client.websocket_connect("/ws", headers={"X-Request-ID": "socket-1"}) as ws:
        assert ws.extra_headers is not None
        assert (b"x-request-id", b"socket-1") in ws.extra_headers


# --- The lines of a real server -----------------------------------------------------


def wait_for_line(log: Path, text: str) -> None:
    """Until `text` is in the log: a request's access line is written once its
    answer has gone, so the client may have it a moment before."""
    deadline = time.monotonic() + 10
    while text not in log.read_text():
        assert time.monotonic() < deadline, f"never logged: {text}"
        time.sleep(0.05)


def log_lines(log: Path) -> list[dict[str, Any]]:
    """Every line of a LOG_FORMAT=json server's output, parsed (each must be)."""
    return [json.loads(line) for line in log.read_text().splitlines()]


def test_json_logs_one_object_per_line_with_the_request_id(tmp_path: Path) -> None:
    with running(tmp_path / "data", LOG_FORMAT="json") as server:
        headers = server.user("alice")
        me = httpx.get(
            f"{server.url}/users/me", headers=headers | {"X-Request-ID": "req-me-1"}
        ).json()
        wrong = {"username": "alice", "password": "not the password"}
        refused = httpx.post(
            f"{server.url}/token", data=wrong, headers={"X-Request-ID": "req-login-2"}
        )
        assert refused.status_code == 401
        wait_for_line(server.log, '"status": 401')  # the access line of the refusal
    lines = log_lines(server.log)
    for line in lines:
        assert {"time", "level", "logger", "message"} <= line.keys()
    access = next(line for line in lines if line.get("request_id") == "req-me-1")
    assert access["logger"] == "messageapp.access"
    assert access["method"] == "GET"
    assert access["route"] == "/users/me"
    assert access["status"] == 200
    assert access["user_id"] == me["id"]
    assert isinstance(access["duration_ms"], float)
    assert access["time"].endswith("+00:00")
    # Every line of the failed login has its id: the app's own, and the access line.
    login_lines = [line for line in lines if line.get("request_id") == "req-login-2"]
    assert [line["logger"] for line in login_lines] == ["messageapp.sessions", "messageapp.access"]
    assert login_lines[0]["message"] == "Failed login for 'alice'"
    assert "user_id" not in login_lines[1]  # nobody was logged in
    assert PASSWORD not in server.log.read_text()


def test_text_logs_end_lines_with_the_request_id(tmp_path: Path) -> None:
    with running(tmp_path / "data") as server:
        server.user("alice")
        wrong = {"username": "alice", "password": "not the password"}
        httpx.post(f"{server.url}/token", data=wrong, headers={"X-Request-ID": "req-3"})
        wait_for_line(server.log, '"POST /token" 401')
    log = server.log.read_text()
    assert "INFO:     messageapp.sessions: Failed login for 'alice' [req-3]" in log
    assert 'INFO:     messageapp.access: 127.0.0.1 "POST /token" 401 ' in log


def test_no_access_log_turns_the_access_lines_off(tmp_path: Path) -> None:
    """uvicorn's --no-access-log, as before the app wrote its own."""
    server = Server(tmp_path / "data", "--no-access-log")
    try:
        server.start()
        httpx.get(f"{server.url}/healthz", headers={"X-Request-ID": "req-4"})
        httpx.get(f"{server.url}/users/me", headers={"X-Request-ID": "req-5"})  # logs a 401
        time.sleep(0.5)  # what would have been written has been
    finally:
        server.kill()
    log = server.log.read_text()
    assert "Application startup complete" in log
    assert "messageapp.access" not in log
