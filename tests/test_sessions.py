"""Sessions: a login is a session with a refresh token that rotates; reuse
ends the session; sessions are listed and ended; a password change and a
deactivation end them; tokens from before sessions keep working."""

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from fastapi.testclient import TestClient

import auth
from config import settings
from models import User
from tests.helpers import (
    PASSWORD,
    Headers,
    assert_closed,
    bearer,
    live,
    new_admin,
    signup,
)

READ_ONLY = "messages:read"


def log_in(client: TestClient, username: str = "alice", **form: str) -> dict[str, Any]:
    response = client.post("/token", data={"username": username, "password": PASSWORD, **form})
    assert response.status_code == 200, response.text
    return response.json()


def refresh(client: TestClient, refresh_token: str, **form: str) -> Any:
    return client.post(
        "/token", data={"grant_type": "refresh_token", "refresh_token": refresh_token, **form}
    )


def headers(tokens: dict[str, Any]) -> Headers:
    return bearer(tokens["access_token"])


def assert_invalid_grant(response: Any) -> None:
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_grant"
    assert response.headers["cache-control"] == "no-store"


def sessions(client: TestClient, tokens: dict[str, Any]) -> list[dict[str, Any]]:
    response = client.get("/sessions", headers=headers(tokens))
    assert response.status_code == 200, response.text
    return response.json()


def test_login_gives_an_access_and_a_refresh_token(client: TestClient) -> None:
    signup(client, "alice")
    tokens = log_in(client)
    assert tokens["expires_in"] == 15 * 60  # short, by default
    days = 24 * 3600
    assert 14 * days - 5 <= tokens["refresh_expires_in"] <= 14 * days  # idle timeout, by default
    assert len(tokens["refresh_token"]) >= 43  # 256 random bits
    assert "." not in tokens["refresh_token"]  # not a JWT
    assert client.get("/users/me", headers=headers(tokens)).status_code == 200


def test_refresh_rotates_the_refresh_token(client: TestClient) -> None:
    signup(client, "alice")
    first = log_in(client)
    response = refresh(client, first["refresh_token"])
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    second = response.json()
    assert second["refresh_token"] != first["refresh_token"]
    assert second["access_token"] != first["access_token"]
    assert second["scope"] == first["scope"]
    assert client.get("/users/me", headers=headers(second)).status_code == 200
    assert refresh(client, second["refresh_token"]).status_code == 200


def test_reused_refresh_token_ends_the_session(client: TestClient) -> None:
    """Either the client or a thief holds a copy of a rotated token: the
    whole session ends, its access tokens and sockets included."""
    signup(client, "alice")
    first = log_in(client)
    second = refresh(client, first["refresh_token"]).json()
    other = log_in(client)  # another device of alice's: it goes on
    with live(client, headers(second)) as socket:
        assert_invalid_grant(refresh(client, first["refresh_token"]))
        assert_closed(socket)  # at once
    assert client.get("/users/me", headers=headers(second)).status_code == 401
    assert_invalid_grant(refresh(client, second["refresh_token"]))
    assert client.get("/users/me", headers=headers(other)).status_code == 200
    assert refresh(client, other["refresh_token"]).status_code == 200


def test_two_refreshes_racing_with_one_token_cannot_both_succeed(client: TestClient) -> None:
    signup(client, "alice")
    token = log_in(client)["refresh_token"]
    start = threading.Barrier(4)

    def race(_: int) -> Any:
        start.wait()
        return refresh(client, token)

    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(race, range(4)))
    assert sorted(a.status_code for a in answers) == [200, 400, 400, 400]
    # The losers presented a token exchanged already: a reuse, which ends the
    # session, so the winner's new pair stops working too.
    winner = next(a.json() for a in answers if a.status_code == 200)
    assert client.get("/users/me", headers=headers(winner)).status_code == 401
    assert_invalid_grant(refresh(client, winner["refresh_token"]))


def test_refresh_token_expires_when_idle(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(settings, "REFRESH_TOKEN_IDLE_DAYS", 0.5 / 86400)  # half a second
    signup(client, "alice")
    tokens = log_in(client)
    time.sleep(0.6)
    assert_invalid_grant(refresh(client, tokens["refresh_token"]))


def test_refresh_token_expires_after_its_lifetime_however_used(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(settings, "REFRESH_TOKEN_LIFETIME_DAYS", 1.0 / 86400)  # one second
    signup(client, "alice")
    tokens = log_in(client)
    assert tokens["refresh_expires_in"] <= 1
    time.sleep(0.5)
    response = refresh(client, tokens["refresh_token"])
    assert response.status_code == 200  # used: but the lifetime still counts from the login
    time.sleep(0.7)
    assert_invalid_grant(refresh(client, response.json()["refresh_token"]))


def test_refresh_may_narrow_the_scope_never_widen_it(client: TestClient) -> None:
    signup(client, "alice")
    full = log_in(client)
    narrowed = refresh(client, full["refresh_token"], scope=READ_ONLY)
    assert narrowed.status_code == 200
    assert narrowed.json()["scope"] == READ_ONLY
    read_only = headers(narrowed.json())
    assert (
        client.patch("/users/me", json={"display_name": "A"}, headers=read_only).status_code == 403
    )
    # The session keeps what the login granted: the next refresh may have it all.
    again = refresh(client, narrowed.json()["refresh_token"])
    assert again.json()["scope"] == full["scope"]

    read_session = log_in(client, scope=READ_ONLY)
    widened = refresh(client, read_session["refresh_token"], scope="messages:write")
    assert widened.status_code == 400
    assert widened.json()["error"] == "invalid_scope"
    # A refused refresh changes nothing: the token still works once.
    assert refresh(client, read_session["refresh_token"]).status_code == 200


def test_refresh_errors_are_rfc_6749(client: TestClient) -> None:
    assert_invalid_grant(refresh(client, "not a token of ours"))
    other = client.post("/token", data={"grant_type": "client_credentials"})
    assert other.status_code == 400
    assert other.json()["error"] == "unsupported_grant_type"
    assert other.headers["cache-control"] == "no-store"
    missing = client.post("/token", data={"grant_type": "refresh_token"})
    assert missing.status_code == 422


def test_sessions_are_listed_and_one_is_ended(client: TestClient) -> None:
    signup(client, "alice")
    phone = client.post(
        "/token",
        data={"username": "alice", "password": PASSWORD},
        headers={"User-Agent": "Phone/1.0"},
    ).json()
    laptop = log_in(client)
    listed = sessions(client, laptop)
    assert [s["current"] for s in listed] == [True, False]  # latest used first
    assert listed[1]["user_agent"] == "Phone/1.0"
    assert set(listed[0]) == {
        "id",
        "created_at",
        "last_used_at",
        "client_ip",
        "user_agent",
        "current",
    }
    with live(client, headers(phone)) as socket:
        response = client.delete(f"/sessions/{listed[1]['id']}", headers=headers(laptop))
        assert response.status_code == 204
        assert_closed(socket)
    assert client.get("/users/me", headers=headers(phone)).status_code == 401
    assert_invalid_grant(refresh(client, phone["refresh_token"]))
    assert client.get("/users/me", headers=headers(laptop)).status_code == 200
    assert len(sessions(client, laptop)) == 1
    again = client.delete(f"/sessions/{listed[1]['id']}", headers=headers(laptop))
    assert again.status_code == 404


def test_someone_elses_session_is_not_found(client: TestClient) -> None:
    signup(client, "alice")
    signup(client, "bob")
    alice, bob = log_in(client), log_in(client, "bob")
    bobs = sessions(client, bob)[0]["id"]
    assert client.delete(f"/sessions/{bobs}", headers=headers(alice)).status_code == 404
    assert [s["id"] for s in sessions(client, alice)] != [bobs]
    assert client.get("/users/me", headers=headers(bob)).status_code == 200


def test_end_other_sessions(client: TestClient) -> None:
    signup(client, "alice")
    others = [log_in(client) for _ in range(2)]
    mine = log_in(client)
    assert client.post("/sessions/end-others", headers=headers(mine)).status_code == 204
    for other in others:
        assert client.get("/users/me", headers=headers(other)).status_code == 401
        assert_invalid_grant(refresh(client, other["refresh_token"]))
    assert [s["current"] for s in sessions(client, mine)] == [True]


def test_logout_ends_the_session(client: TestClient) -> None:
    signup(client, "alice")
    tokens, other = log_in(client), log_in(client)
    assert client.post("/logout", headers=headers(tokens)).status_code == 204
    assert client.get("/users/me", headers=headers(tokens)).status_code == 401
    assert_invalid_grant(refresh(client, tokens["refresh_token"]))
    assert client.get("/users/me", headers=headers(other)).status_code == 200


def test_password_change_ends_the_other_sessions_and_keeps_this_one(
    client: TestClient,
) -> None:
    signup(client, "alice")
    other, mine = log_in(client), log_in(client)
    body = {"current_password": PASSWORD, "new_password": "a brand new passphrase"}
    assert client.put("/users/me/password", json=body, headers=headers(mine)).status_code == 204
    # Every access token from before is rejected, this one too...
    assert client.get("/users/me", headers=headers(mine)).status_code == 401
    # ...but this session refreshes instead of asking for the password again.
    renewed = refresh(client, mine["refresh_token"])
    assert renewed.status_code == 200
    assert client.get("/users/me", headers=headers(renewed.json())).status_code == 200
    assert_invalid_grant(refresh(client, other["refresh_token"]))


def test_deactivation_ends_every_session(client: TestClient) -> None:
    root = new_admin(client, "root")
    signup(client, "alice")
    tokens = log_in(client)
    assert client.post("/admin/users/alice/deactivate", headers=root).status_code == 204
    assert_invalid_grant(refresh(client, tokens["refresh_token"]))
    assert client.post("/admin/users/alice/activate", headers=root).status_code == 204
    assert_invalid_grant(refresh(client, tokens["refresh_token"]))  # they log in afresh
    assert log_in(client)


def test_token_from_before_sessions_works_until_it_expires(client: TestClient) -> None:
    """An access token without `sid` (issued before this change) is accepted,
    and logging out with it revokes that token."""
    signup(client, "alice")
    user = client.get("/users/me", headers=headers(log_in(client))).json()
    old = bearer(
        auth.create_access_token(User(id=user["id"], username="alice", hashed_password=""))
    )
    payload = auth.decode_access_token(old["Authorization"].removeprefix("Bearer "))
    assert payload is not None and payload.sid is None
    assert client.get("/users/me", headers=old).status_code == 200
    assert client.get("/sessions", headers=old).status_code == 200
    assert client.post("/logout", headers=old).status_code == 204
    assert client.get("/users/me", headers=old).status_code == 401
