"""Accounts: sign up, profile, password change, the user directory."""

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from fastapi.testclient import TestClient

from config import settings
from tests.helpers import PASSWORD, bearer, login, new_user, signup


def test_create_user(client: TestClient) -> None:
    response = client.post(
        "/users", json={"username": "Alice", "password": PASSWORD, "display_name": " Al "}
    )
    assert response.status_code == 201
    user = response.json()
    assert set(user) == {"id", "username", "display_name", "role", "created_at"}
    assert user["username"] == "Alice"  # kept as typed
    assert user["display_name"] == "Al"  # trimmed
    assert user["role"] == "member"
    assert user["created_at"].endswith(("Z", "+00:00"))


def test_create_user_without_display_name(client: TestClient) -> None:
    assert signup(client, "alice")["display_name"] is None


def test_create_user_joins_general(client: TestClient) -> None:
    headers = new_user(client, "alice")
    conversations = client.get("/conversations", headers=headers).json()
    assert [(c["kind"], c["title"]) for c in conversations] == [("channel", "general")]


def test_create_user_taken_ignoring_case(client: TestClient) -> None:
    signup(client, "Alice")
    response = client.post("/users", json={"username": "aLICE", "password": PASSWORD})
    assert response.status_code == 409
    assert response.json() == {"detail": "Username already taken"}


@pytest.mark.parametrize(
    "body",
    [
        {"username": "al", "password": PASSWORD},  # too short
        {"username": "a" * 33, "password": PASSWORD},  # too long
        {"username": "al ice", "password": PASSWORD},
        {"username": "al@ice", "password": PASSWORD},
        {"username": "zoë", "password": PASSWORD},
        {"username": "alice", "password": "short"},
        {"username": "alice", "password": " " * 12},  # only whitespace
        {"username": "alice", "password": "x" * 129},
        {"username": "alice", "password": PASSWORD, "display_name": "   "},
        {"username": "alice", "password": PASSWORD, "display_name": "x" * 65},
        {"username": "alice"},
        {"password": PASSWORD},
    ],
)
def test_create_user_invalid(client: TestClient, body: dict[str, str]) -> None:
    response = client.post("/users", json=body)
    assert response.status_code == 422
    # Nothing was created: the name is still free.
    assert (
        client.post("/users", json={"username": "alice", "password": PASSWORD}).status_code == 201
    )


def test_create_user_allowed_characters(client: TestClient) -> None:
    assert signup(client, "a.b_c-9")["username"] == "a.b_c-9"
    assert signup(client, "x" * 32)["username"] == "x" * 32


def test_create_user_unicode_password(client: TestClient) -> None:
    signup(client, "alice", password="пароль-密码-🔑🔑")
    assert login(client, "alice", password="пароль-密码-🔑🔑")


def test_read_user_me(client: TestClient) -> None:
    headers = new_user(client, "alice")
    response = client.get("/users/me", headers=headers)
    assert response.status_code == 200
    assert response.json()["username"] == "alice"
    assert "hashed_password" not in response.text


def test_read_user_me_unauthenticated(client: TestClient) -> None:
    response = client.get("/users/me")
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"


def test_update_user_me(client: TestClient) -> None:
    headers = new_user(client, "alice")
    response = client.patch("/users/me", json={"display_name": "  Alice L.  "}, headers=headers)
    assert response.status_code == 200
    assert response.json()["display_name"] == "Alice L."
    assert client.get("/users/me", headers=headers).json()["display_name"] == "Alice L."


def test_update_user_me_clear_display_name(client: TestClient) -> None:
    headers = new_user(client, "alice")
    client.patch("/users/me", json={"display_name": "Al"}, headers=headers)
    response = client.patch("/users/me", json={"display_name": None}, headers=headers)
    assert response.status_code == 200
    assert response.json()["display_name"] is None


@pytest.mark.parametrize("display_name", ["", "   ", "x" * 65, 42])
def test_update_user_me_invalid(client: TestClient, display_name: object) -> None:
    headers = new_user(client, "alice")
    client.patch("/users/me", json={"display_name": "Al"}, headers=headers)
    response = client.patch("/users/me", json={"display_name": display_name}, headers=headers)
    assert response.status_code == 422
    assert client.get("/users/me", headers=headers).json()["display_name"] == "Al"


def test_change_password(client: TestClient) -> None:
    signup(client, "alice")
    old_token = login(client, "alice")
    other_old_token = login(client, "alice")
    response = client.put(
        "/users/me/password",
        json={"current_password": PASSWORD, "new_password": "a brand new passphrase"},
        headers=bearer(old_token),
    )
    assert response.status_code == 204
    # Every token issued before the change is rejected...
    assert client.get("/users/me", headers=bearer(old_token)).status_code == 401
    assert client.get("/users/me", headers=bearer(other_old_token)).status_code == 401
    # ...the old password no longer logs in, and a token issued a moment later works.
    assert (
        client.post("/token", data={"username": "alice", "password": PASSWORD}).status_code == 401
    )
    new_token = login(client, "alice", password="a brand new passphrase")
    assert client.get("/users/me", headers=bearer(new_token)).status_code == 200


def test_change_password_concurrently_only_one_wins(client: TestClient) -> None:
    signup(client, "alice")
    headers = bearer(login(client, "alice"))
    new_passwords = [f"new passphrase number {i}" for i in range(4)]

    def change(new_password: str) -> int:
        body = {"current_password": PASSWORD, "new_password": new_password}
        return client.put("/users/me/password", json=body, headers=headers).status_code

    with ThreadPoolExecutor(4) as pool:
        statuses = list(pool.map(change, new_passwords))
    # The first change revokes the token the others carry: they must not succeed.
    assert sorted(statuses) == [204, 401, 401, 401]
    winner = new_passwords[statuses.index(204)]
    for new_password in new_passwords:
        response = client.post("/token", data={"username": "alice", "password": new_password})
        assert response.status_code == (200 if new_password == winner else 401)


def test_change_password_wrong_current(client: TestClient) -> None:
    headers = new_user(client, "alice")
    response = client.put(
        "/users/me/password",
        json={"current_password": "not my password", "new_password": "a brand new passphrase"},
        headers=headers,
    )
    assert response.status_code == 400
    assert response.json() == {"detail": "Wrong current password"}
    assert client.get("/users/me", headers=headers).status_code == 200
    assert login(client, "alice")


@pytest.mark.parametrize("new_password", ["short", " " * 10, "x" * 129])
def test_change_password_invalid(client: TestClient, new_password: str) -> None:
    headers = new_user(client, "alice")
    response = client.put(
        "/users/me/password",
        json={"current_password": PASSWORD, "new_password": new_password},
        headers=headers,
    )
    assert response.status_code == 422
    assert client.get("/users/me", headers=headers).status_code == 200
    assert login(client, "alice")


def test_read_users_prefix_ignoring_case(client: TestClient) -> None:
    headers = new_user(client, "alice")
    for name in ("Albert", "bob", "ALINE"):
        signup(client, name)
    response = client.get("/users", params={"q": "AL"}, headers=headers)
    assert response.status_code == 200
    assert [u["username"] for u in response.json()] == ["Albert", "alice", "ALINE"]


def test_read_users_limit_and_all(client: TestClient) -> None:
    headers = new_user(client, "alice")
    for name in ("bob", "carol", "dave"):
        signup(client, name)
    assert len(client.get("/users", headers=headers).json()) == 4
    assert len(client.get("/users", params={"limit": 2}, headers=headers).json()) == 2
    assert client.get("/users", params={"limit": 0}, headers=headers).status_code == 422
    assert client.get("/users", params={"limit": 101}, headers=headers).status_code == 422


def test_read_users_wildcards_are_literal(client: TestClient) -> None:
    headers = new_user(client, "alice")
    signup(client, "a_b")
    assert [
        u["username"] for u in client.get("/users", params={"q": "a_"}, headers=headers).json()
    ] == ["a_b"]
    assert client.get("/users", params={"q": "%"}, headers=headers).json() == []


def test_read_users_unauthenticated(client: TestClient) -> None:
    assert client.get("/users").status_code == 401


def test_read_user(client: TestClient) -> None:
    headers = new_user(client, "alice")
    signup(client, "Bob")
    response = client.get("/users/bOB", headers=headers)
    assert response.status_code == 200
    assert response.json()["username"] == "Bob"


def test_read_user_not_found(client: TestClient) -> None:
    headers = new_user(client, "alice")
    response = client.get("/users/nobody", headers=headers)
    assert response.status_code == 404
    assert response.json() == {"detail": "User not found"}


def wrong_current_password(client: TestClient, headers: dict[str, str]) -> Any:
    body = {"current_password": "a wrong guess 123", "new_password": "a brand new passphrase"}
    return client.put("/users/me/password", json=body, headers=headers)


def test_change_password_guesses_are_limited(client: TestClient) -> None:
    """A stolen token must not let its holder guess the password at full
    speed: wrong current passwords count as failed logins for the username."""
    headers = new_user(client, "alice")
    for _ in range(settings.LOGIN_MAX_FAILURES):
        assert wrong_current_password(client, headers).status_code == 400
    refused = wrong_current_password(client, headers)
    assert refused.status_code == 429
    assert int(refused.headers["retry-after"]) >= 1
    right = {"current_password": PASSWORD, "new_password": "a brand new passphrase"}
    assert client.put("/users/me/password", json=right, headers=headers).status_code == 429
    # The same count as logins: the right password does not log in either.
    response = client.post("/token", data={"username": "alice", "password": PASSWORD})
    assert response.status_code == 429
    assert client.get("/users/me", headers=headers).status_code == 200  # nothing changed


def test_change_password_blocked_by_failed_logins(client: TestClient) -> None:
    headers = new_user(client, "alice")
    for _ in range(settings.LOGIN_MAX_FAILURES):
        client.post("/token", data={"username": "alice", "password": "a wrong guess 123"})
    right = {"current_password": PASSWORD, "new_password": "a brand new passphrase"}
    response = client.put("/users/me/password", json=right, headers=headers)
    assert response.status_code == 429
    assert "retry-after" in response.headers


# Controls, bidirectional overrides and isolates, and invisible characters.
MISLEADING_NAMES = [
    "bob\u202e",  # right-to-left override
    "\u202abob\u202c",
    "bob\u2066x\u2069",  # isolates
    "b\u200bob",  # zero width space
    "b\u2060ob",  # word joiner
    "\ufeffbob",
    "b\u00adob",  # soft hyphen
    "bob\x07",
    "bob\x1b[31m",
    "bob\nadmin",
    "bob\x00",
]
# Joiners stay: emoji and several scripts need them.
FAIR_NAMES = [
    "👩\u200d💻 Ada",
    "मनी\u200cषा",
    "🏴\U000e0067\U000e0062\U000e0065\U000e006e\U000e0067\U000e007f",
    "Zoë",
]


@pytest.mark.parametrize("display_name", MISLEADING_NAMES)
def test_display_name_refuses_misleading_characters(client: TestClient, display_name: str) -> None:
    headers = new_user(client, "alice")
    response = client.patch("/users/me", json={"display_name": display_name}, headers=headers)
    assert response.status_code == 422
    assert client.get("/users/me", headers=headers).json()["display_name"] is None
    body = {"username": "mallory", "password": PASSWORD, "display_name": display_name}
    assert client.post("/users", json=body).status_code == 422


@pytest.mark.parametrize("display_name", FAIR_NAMES)
def test_display_name_keeps_joiners(client: TestClient, display_name: str) -> None:
    headers = new_user(client, "alice")
    response = client.patch("/users/me", json={"display_name": display_name}, headers=headers)
    assert response.status_code == 200
    assert response.json()["display_name"] == display_name


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/users", {"username": "bob", "password": "pass\x00word 123"}),
        ("/users", {"username": "bob", "password": PASSWORD, "display_name": "B\x00b"}),
        ("/users/me/password", {"current_password": "x\x00", "new_password": "a new passphrase"}),
        ("/users/me/password", {"current_password": PASSWORD, "new_password": "new\x00passphrase"}),
    ],
)
def test_text_with_nul_is_422(client: TestClient, path: str, body: dict[str, str]) -> None:
    """PostgreSQL refuses NUL in text (a 500 there once): refused on both."""
    headers = new_user(client, "alice")
    method = "PUT" if path.endswith("password") else "POST"
    assert client.request(method, path, json=body, headers=headers).status_code == 422
    assert login(client, "alice")  # the password did not change
