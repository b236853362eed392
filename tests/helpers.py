"""Small factories for tests: each call does one thing through the public API."""

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from fastapi.testclient import TestClient
from starlette.testclient import WebSocketTestSession
from starlette.websockets import WebSocketDisconnect

import manage
import push
from hub import CLOSE_UNAUTHORIZED
from tests.server import METRICS_AUTH, Metrics

PASSWORD = "correct horse battery staple"
# POST /token's 401, the same for an unknown user and a wrong password.
WRONG_CREDENTIALS = {
    "detail": "Incorrect username or password",
    "error": "invalid_grant",
    "error_description": "Incorrect username or password",
}
Headers = dict[str, str]


def signup(client: TestClient, username: str, password: str = PASSWORD) -> dict[str, Any]:
    response = client.post("/users", json={"username": username, "password": password})
    assert response.status_code == 201, response.text
    return response.json()


def login(
    client: TestClient, username: str, password: str = PASSWORD, scope: str | None = None
) -> str:
    form = {"username": username, "password": password}
    if scope is not None:
        form["scope"] = scope
    response = client.post("/token", data=form)
    assert response.status_code == 200, response.text
    return response.json()["access_token"]


def bearer(token: str) -> Headers:
    return {"Authorization": f"Bearer {token}"}


def new_user(client: TestClient, username: str) -> Headers:
    """Sign up `username` and return headers carrying a fresh token."""
    signup(client, username)
    return bearer(login(client, username))


def new_admin(client: TestClient, username: str) -> Headers:
    """Sign up `username`, make them an admin as an operator does (`python -m
    manage create-admin`), and return headers carrying a token with `admin`."""
    signup(client, username)
    assert manage.main(["create-admin", username]) == 0
    return bearer(login(client, username))


def create_conversation(client: TestClient, headers: Headers, **body: Any) -> dict[str, Any]:
    response = client.post("/conversations", json=body, headers=headers)
    assert response.status_code in (200, 201), response.text
    return response.json()


def send(
    client: TestClient, headers: Headers, conversation_id: int, content: str, **extra: Any
) -> dict[str, Any]:
    response = client.post(
        f"/conversations/{conversation_id}/messages",
        json={"content": content, **extra},
        headers=headers,
    )
    assert response.status_code == 201, response.text
    return response.json()


def history(
    client: TestClient, headers: Headers, conversation_id: int, **params: Any
) -> list[dict[str, Any]]:
    response = client.get(
        f"/conversations/{conversation_id}/messages", params=params, headers=headers
    )
    assert response.status_code == 200, response.text
    return response.json()


def general_id(client: TestClient, headers: Headers) -> int:
    channels = client.get("/channels", headers=headers).json()
    return next(c["id"] for c in channels if c["title"] == "general")


def token_of(headers: Headers) -> str:
    return headers["Authorization"].removeprefix("Bearer ")


@contextmanager
def live(client: TestClient, headers: Headers) -> Iterator[WebSocketTestSession]:
    """An authenticated WebSocket: connected, `auth` sent, `ready` received."""
    with client.websocket_connect("/ws") as ws:
        ws.send_json({"type": "auth", "token": token_of(headers)})
        assert ws.receive_json()["type"] == "ready"
        yield ws


def assert_closed(ws: WebSocketTestSession, code: int = CLOSE_UNAUTHORIZED) -> None:
    """The server closes the socket with `code` before sending anything else."""
    with pytest.raises(WebSocketDisconnect) as closed:
        ws.receive_json()
    assert closed.value.code == code


def read_metrics(client: TestClient) -> Metrics:
    """GET /metrics with the token the tests run with (tests/conftest.py)."""
    response = client.get("/metrics", headers=METRICS_AUTH)
    assert response.status_code == 200, response.text
    return Metrics(response.text)


def settle(timeout: float = 10) -> None:
    """Wait until every push queued so far has been sent (or not): the push
    workers query the database in the background after a message commits."""
    deadline = time.monotonic() + timeout
    while not push.pusher.idle():
        assert time.monotonic() < deadline, "pushes still going"
        time.sleep(0.01)
