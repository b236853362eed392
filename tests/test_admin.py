"""The admin routes: the user list, deactivation and activation, removing any message."""

from typing import Any

import pytest
from alembic import command
from fastapi.testclient import TestClient
from sqlalchemy import Engine

import db
from config import settings
from tests.helpers import (
    PASSWORD,
    WRONG_CREDENTIALS,
    Headers,
    assert_closed,
    bearer,
    create_conversation,
    live,
    login,
    new_admin,
    new_user,
    send,
)


@pytest.fixture
def root(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> Headers:
    """An admin's full token (read, write and admin)."""
    return new_admin(client, "root")


def login_response(client: TestClient, username: str, password: str = PASSWORD) -> Any:
    return client.post("/token", data={"username": username, "password": password})


# --- GET /admin/users ------------------------------------------------------------


def test_read_users_admin(client: TestClient, root: Headers) -> None:
    new_user(client, "alice")
    response = client.get("/admin/users", headers=root)
    assert response.status_code == 200
    users = response.json()
    assert [u["username"] for u in users] == ["alice", "root"]
    assert set(users[0]) == {"id", "username", "display_name", "role", "created_at", "active"}
    assert [(u["role"], u["active"]) for u in users] == [("member", True), ("admin", True)]


def test_read_users_admin_shows_deactivated(client: TestClient, root: Headers) -> None:
    new_user(client, "alice")
    client.post("/admin/users/alice/deactivate", headers=root)
    users = client.get("/admin/users", params={"q": "alice"}, headers=root).json()
    assert [(u["username"], u["active"]) for u in users] == [("alice", False)]


def test_read_users_admin_prefix_and_pages(client: TestClient, root: Headers) -> None:
    for name in ("Anna", "alice", "bob", "al_x"):
        new_user(client, name)
    found = client.get("/admin/users", params={"q": "AL"}, headers=root).json()
    assert [u["username"] for u in found] == ["al_x", "alice"]  # "_" is not a wildcard
    page = client.get("/admin/users", params={"limit": 2, "offset": 1}, headers=root).json()
    assert [u["username"] for u in page] == ["alice", "Anna"]


@pytest.mark.parametrize("params", [{"limit": 0}, {"limit": 201}, {"offset": -1}])
def test_read_users_admin_bad_page(
    client: TestClient, root: Headers, params: dict[str, int]
) -> None:
    assert client.get("/admin/users", params=params, headers=root).status_code == 422


def test_public_user_has_no_active_field(client: TestClient, root: Headers) -> None:
    """`active` is for admins: the contract's User object does not carry it."""
    alice = new_user(client, "alice")
    assert "active" not in client.get("/users/root", headers=alice).json()


# --- Deactivate and activate ---------------------------------------------------------


def test_deactivate_user_refuses_login(client: TestClient, root: Headers) -> None:
    new_user(client, "alice")
    assert client.post("/admin/users/ALICE/deactivate", headers=root).status_code == 204
    response = login_response(client, "alice")
    assert response.status_code == 401
    assert response.json() == {
        "detail": "Account deactivated",
        "error": "invalid_grant",
        "error_description": "Account deactivated",
    }


def test_deactivated_login_with_wrong_password_reveals_nothing(
    client: TestClient, root: Headers
) -> None:
    new_user(client, "alice")
    client.post("/admin/users/alice/deactivate", headers=root)
    response = login_response(client, "alice", "wrong password")
    assert response.status_code == 401
    assert response.json() == WRONG_CREDENTIALS


def test_deactivated_login_with_a_bad_scope_is_deactivated(
    client: TestClient, root: Headers
) -> None:
    """The account is refused before its scopes are weighed: 401, not 400."""
    new_user(client, "alice")
    client.post("/admin/users/alice/deactivate", headers=root)
    form = {"username": "alice", "password": PASSWORD, "scope": "admin"}
    response = client.post("/token", data=form)
    assert response.status_code == 401
    assert response.json()["detail"] == "Account deactivated"


def test_deactivate_user_rejects_every_token(client: TestClient, root: Headers) -> None:
    laptop = new_user(client, "alice")
    phone = {"Authorization": f"Bearer {login(client, 'alice', scope='messages:read')}"}
    client.post("/admin/users/alice/deactivate", headers=root)
    for headers in (laptop, phone):
        response = client.get("/users/me", headers=headers)
        assert response.status_code == 401
        assert response.headers["www-authenticate"] == "Bearer"


def test_deactivate_user_closes_their_sockets_at_once(client: TestClient, root: Headers) -> None:
    alice = new_user(client, "alice")
    bob = new_user(client, "bob")
    group = create_conversation(client, bob, kind="group", title="g", members=["alice"])["id"]
    with live(client, alice) as first, live(client, alice) as second, live(client, bob) as b:
        assert client.post("/admin/users/alice/deactivate", headers=root).status_code == 204
        assert_closed(first)
        assert_closed(second)
        sent = send(client, bob, group, "bob is still here")
        assert b.receive_json()["message"] == sent  # other users' sockets stay open


def test_deactivated_user_socket_refused(client: TestClient, root: Headers) -> None:
    alice = new_user(client, "alice")
    client.post("/admin/users/alice/deactivate", headers=root)
    with client.websocket_connect("/ws") as ws:
        ws.send_json({"type": "auth", "token": alice["Authorization"].split()[1]})
        assert_closed(ws)


def test_activate_user_restores_login(client: TestClient, root: Headers) -> None:
    old = new_user(client, "alice")
    client.post("/admin/users/alice/deactivate", headers=root)
    assert client.post("/admin/users/alice/activate", headers=root).status_code == 204
    fresh = {"Authorization": f"Bearer {login(client, 'alice')}"}
    assert client.get("/users/me", headers=fresh).status_code == 200
    # Tokens from before the deactivation stay dead.
    assert client.get("/users/me", headers=old).status_code == 401


def test_deactivate_and_activate_twice(client: TestClient, root: Headers) -> None:
    new_user(client, "alice")
    for action in ("deactivate", "deactivate", "activate", "activate"):
        assert client.post(f"/admin/users/alice/{action}", headers=root).status_code == 204
    assert login(client, "alice")


def test_activate_active_user_keeps_their_tokens(client: TestClient, root: Headers) -> None:
    alice = new_user(client, "alice")
    assert client.post("/admin/users/alice/activate", headers=root).status_code == 204
    assert client.get("/users/me", headers=alice).status_code == 200


def test_deactivate_yourself_is_refused(client: TestClient, root: Headers) -> None:
    response = client.post("/admin/users/root/deactivate", headers=root)
    assert response.status_code == 403
    assert response.json() == {"detail": "You cannot deactivate yourself"}
    assert client.get("/users/me", headers=root).status_code == 200


def test_deactivate_another_admin(
    client: TestClient, root: Headers, monkeypatch: pytest.MonkeyPatch
) -> None:
    new_admin(client, "second")
    assert client.post("/admin/users/second/deactivate", headers=root).status_code == 204
    assert login_response(client, "second").status_code == 401


@pytest.mark.parametrize("action", ["deactivate", "activate"])
def test_deactivate_or_activate_unknown_user(
    client: TestClient, root: Headers, action: str
) -> None:
    response = client.post(f"/admin/users/nobody/{action}", headers=root)
    assert response.status_code == 404
    assert response.json() == {"detail": "User not found"}


# --- A deactivated user, as the others see them -----------------------------------------


@pytest.fixture
def bob_gone(client: TestClient, root: Headers) -> Headers:
    """alice's token; bob, deactivated after he wrote "hi" in their group."""
    alice, bob = new_user(client, "alice"), new_user(client, "bob")
    group = create_conversation(client, alice, kind="group", title="g", members=["bob"])["id"]
    send(client, bob, group, "hi")
    assert client.post("/admin/users/bob/deactivate", headers=root).status_code == 204
    return alice


def test_direct_conversation_with_a_deactivated_user_is_refused(
    client: TestClient, bob_gone: Headers
) -> None:
    body = {"kind": "direct", "members": ["Bob"]}
    response = client.post("/conversations", json=body, headers=bob_gone)
    assert response.status_code == 422
    assert response.json() == {"detail": "Deactivated users: bob"}


def test_direct_conversation_from_before_the_deactivation_is_returned(
    client: TestClient, root: Headers
) -> None:
    """Nothing new is started: the existing one, with its history, comes back."""
    alice = new_user(client, "alice")
    new_user(client, "bob")
    direct = create_conversation(client, alice, kind="direct", members=["bob"])
    client.post("/admin/users/bob/deactivate", headers=root)
    response = client.post(
        "/conversations", json={"kind": "direct", "members": ["bob"]}, headers=alice
    )
    assert response.status_code == 200
    assert response.json()["id"] == direct["id"]


def test_group_with_a_deactivated_user_is_refused(client: TestClient, bob_gone: Headers) -> None:
    new_user(client, "carol")
    before = client.get("/conversations", headers=bob_gone).json()
    body = {"kind": "group", "title": "new", "members": ["carol", "bob"]}
    response = client.post("/conversations", json=body, headers=bob_gone)
    assert response.status_code == 422
    assert response.json() == {"detail": "Deactivated users: bob"}
    assert client.get("/conversations", headers=bob_gone).json() == before


def test_add_a_deactivated_user_to_a_group_is_refused(
    client: TestClient, bob_gone: Headers
) -> None:
    group = create_conversation(client, bob_gone, kind="group", title="new", members=[])["id"]
    response = client.post(
        f"/conversations/{group}/members", json={"username": "bob"}, headers=bob_gone
    )
    assert response.status_code == 422
    assert response.json() == {"detail": "Deactivated users: bob"}
    members = client.get(f"/conversations/{group}/members", headers=bob_gone).json()
    assert [m["username"] for m in members] == ["alice"]


def test_add_a_deactivated_member_again_changes_nothing(
    client: TestClient, bob_gone: Headers
) -> None:
    """Adding is idempotent: bob is in the group already, so it is 200."""
    group = client.get("/conversations", headers=bob_gone).json()[0]
    response = client.post(
        f"/conversations/{group['id']}/members", json={"username": "bob"}, headers=bob_gone
    )
    assert response.status_code == 200
    assert response.json()["member_count"] == 2


def test_deactivated_user_stays_in_members_and_history(
    client: TestClient, bob_gone: Headers
) -> None:
    group = client.get("/conversations", headers=bob_gone).json()[0]["id"]
    members = client.get(f"/conversations/{group}/members", headers=bob_gone).json()
    assert [m["username"] for m in members] == ["alice", "bob"]
    messages = client.get(f"/conversations/{group}/messages", headers=bob_gone).json()
    assert [(m["author"]["username"], m["content"]) for m in messages] == [("bob", "hi")]


def test_user_search_hides_deactivated_users(client: TestClient, bob_gone: Headers) -> None:
    new_user(client, "bobby")
    found = client.get("/users", params={"q": "bo"}, headers=bob_gone).json()
    assert [u["username"] for u in found] == ["bobby"]


def test_user_lookup_finds_deactivated_users(client: TestClient, bob_gone: Headers) -> None:
    """An author in the history can still be looked up."""
    response = client.get("/users/bob", headers=bob_gone)
    assert response.status_code == 200
    assert response.json()["username"] == "bob"


def test_deactivated_user_is_searchable_again_once_activated(
    client: TestClient, root: Headers, bob_gone: Headers
) -> None:
    client.post("/admin/users/bob/activate", headers=root)
    found = client.get("/users", params={"q": "bob"}, headers=bob_gone).json()
    assert [u["username"] for u in found] == ["bob"]


# --- DELETE /admin/messages/{id} ---------------------------------------------------------


def test_admin_deletes_a_message_in_a_direct_conversation(
    client: TestClient, root: Headers
) -> None:
    alice, bob = new_user(client, "alice"), new_user(client, "bob")
    direct = create_conversation(client, alice, kind="direct", members=["bob"])["id"]
    message = send(client, alice, direct, "something abusive")
    with live(client, bob) as b, live(client, alice) as a:
        assert client.delete(f"/admin/messages/{message['id']}", headers=root).status_code == 204
        tombstone = {**message, "content": None, "deleted": True}
        for ws in (a, b):
            assert ws.receive_json() == {"type": "message.deleted", "message": tombstone}
    assert client.get(f"/messages/{message['id']}", headers=bob).json() == tombstone
    # The admin is not in the conversation, and still cannot see it.
    assert client.get(f"/messages/{message['id']}", headers=root).status_code == 404


def test_admin_deletes_a_deleted_message_again(client: TestClient, root: Headers) -> None:
    alice, bob = new_user(client, "alice"), new_user(client, "bob")
    group = create_conversation(client, alice, kind="group", title="g", members=["bob"])["id"]
    message = send(client, alice, group, "oops")
    client.delete(f"/messages/{message['id']}", headers=alice)
    with live(client, bob) as b:
        assert client.delete(f"/admin/messages/{message['id']}", headers=root).status_code == 204
        sent = send(client, alice, group, "next")
        assert b.receive_json() == {"type": "message.created", "message": sent}  # no event before


def test_admin_deletes_unknown_message(client: TestClient, root: Headers) -> None:
    response = client.delete("/admin/messages/999", headers=root)
    assert response.status_code == 404
    assert response.json() == {"detail": "Message not found"}


# --- Recovering from a lock-out -------------------------------------------------------------


def test_start_reactivates_the_listed_admins(
    client: TestClient, engine: Engine, root: Headers, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An operator locked out by another admin lists themselves and restarts."""
    second = new_admin(client, "second")
    assert client.post("/admin/users/root/deactivate", headers=second).status_code == 204
    assert login_response(client, "root").status_code == 401
    monkeypatch.setattr(settings, "ADMIN_USERNAMES", ["root"])
    db.init_db(engine)  # what a restart does
    assert login_response(client, "root").status_code == 200
    assert client.get("/users/me", headers=root).status_code == 401  # old tokens stay dead


def test_start_leaves_deactivated_members_deactivated(
    client: TestClient, engine: Engine, root: Headers
) -> None:
    new_user(client, "alice")
    client.post("/admin/users/alice/deactivate", headers=root)
    db.init_db(engine)
    assert login_response(client, "alice").status_code == 401


# --- A database from before `active` existed -------------------------------------------------


def test_start_adds_the_active_column_to_an_older_database(
    client: TestClient, engine: Engine, root: Headers
) -> None:
    new_user(client, "alice")
    with db.migration_lock(engine) as connection:  # back to the schema before `active`
        command.downgrade(db.alembic_config(connection), "0003")
    db.init_db(engine)  # what the next start does: migration 0004
    assert login(client, "alice")
    # The downgrade dropped the sessions table too (0007): root logs in again.
    root = bearer(login(client, "root"))
    users = client.get("/admin/users", headers=root).json()
    assert [u["active"] for u in users] == [True, True]
