"""Scopes: what a token may do, granted at login and checked on every route.

The routes under test come from the app's own route table, so a route added
later is checked too: it fails here until it is listed in CONTRACT_ROUTES
and declares its scope.
"""

import re
import time
from typing import Any

import pytest
from fastapi.routing import APIRoute, iter_route_contexts
from fastapi.testclient import TestClient
from jose import jwt
from sqlalchemy import Engine

import db
import manage
from config import settings
from hub import CLOSE_FORBIDDEN
from main import app
from tests.helpers import (
    PASSWORD,
    WRONG_CREDENTIALS,
    Headers,
    assert_closed,
    bearer,
    create_conversation,
    history,
    live,
    login,
    new_admin,
    new_user,
    send,
    token_of,
)

READ, WRITE, ADMIN = "messages:read", "messages:write", "admin"

# Every route of the API, as (method, path template). Since FastAPI 0.137,
# app.routes holds included routers unflattened; iter_route_contexts walks
# them, with the prefixes applied, as FastAPI's own OpenAPI generator does.
# (Swagger UI's and ReDoc's pages are left out of the schema, and out of here.)
ROUTES: list[tuple[str, str]] = sorted(
    # As OpenAPI names them: without Starlette's convertors ({session_id:int}).
    (method, re.sub(r":\w+}", "}", str(context.path)))
    for context in iter_route_contexts(app.routes)
    if isinstance(context.original_route, APIRoute) and context.original_route.include_in_schema
    for method in context.methods or ()
)
PUBLIC = {("POST", "/users"), ("POST", "/token"), ("GET", "/healthz")}
# Any valid token may revoke itself, whatever its scopes, and read the
# public VAPID key (nothing secret: every browser that subscribes gets it).
ANY_TOKEN = {("POST", "/logout"), ("GET", "/push/key")}


def required_scope(method: str, path: str) -> str:
    if path.startswith("/admin/"):
        return ADMIN
    return READ if method == "GET" else WRITE


SCOPED = [r for r in ROUTES if r not in PUBLIC | ANY_TOKEN]
READS = [r for r in SCOPED if required_scope(*r) == READ]
WRITES = [r for r in SCOPED if required_scope(*r) == WRITE]
ADMIN_ROUTES = [r for r in SCOPED if required_scope(*r) == ADMIN]

# Query strings a route needs to answer 200, and bodies a full token would
# get a success with (so a 403 shows the scope stopped it, not the input).
QUERIES = {"/search/messages": {"q": "hello"}}
BODIES: dict[tuple[str, str], Any] = {
    ("POST", "/conversations"): {"kind": "channel", "title": "new"},
    ("POST", "/conversations/{conversation_id}/members"): {"username": "carol"},
    ("POST", "/conversations/{conversation_id}/messages"): {"content": "sneaky"},
    ("POST", "/conversations/{conversation_id}/read"): {"message_id": 1},
    ("PUT", "/conversations/{conversation_id}/notifications"): {"level": "none"},
    ("DELETE", "/push/subscriptions"): {"endpoint": "https://8.8.8.8/push/1"},
    ("POST", "/push/subscriptions"): {
        "endpoint": "https://8.8.8.8/push/1",  # an address: no DNS lookup needed
        "keys": {
            # The P-256 generator point, a valid public key; a 16-byte secret.
            "p256dh": "BGsX0fLhLEJH-Lzm5WOkQPJ3A32BLeszoPShOUXYmMKWT-NC4v4af5uO5-"
            "tKfA-eFivOM1drMV7Oy7ZAaDe_UfU",
            "auth": "AAAAAAAAAAAAAAAAAAAAAA",
        },
    },
    ("PATCH", "/messages/{message_id}"): {"content": "sneaky"},
    ("PATCH", "/users/me"): {"display_name": "Sneaky"},
    ("PUT", "/users/me/password"): {
        "current_password": PASSWORD,
        "new_password": "a sneaky new password",
    },
}


# A 1×1 PNG, for the upload route.
PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010802000000907753de"
    "0000000c4944415408d763f8cfc0000003010100c9fe92ef0000000049454e44ae426082"
)
FILES = {"file": ("dot.png", PNG, "image/png")}
UPLOAD = ("POST", "/conversations/{conversation_id}/attachments")


def scope_of(client: TestClient, username: str, scope: str) -> Headers:
    return bearer(login(client, username, scope=scope))


def setting(client: TestClient) -> tuple[Headers, dict[str, Any]]:
    """alice, with bob and carol; a group of alice and bob with a message of
    alice's in it. Returns alice's full token and the path values."""
    alice = new_user(client, "alice")
    new_user(client, "bob")
    new_user(client, "carol")
    group = create_conversation(client, alice, kind="group", title="team", members=["bob"])
    message = send(client, alice, group["id"], "hello")
    picture = client.post(
        f"/conversations/{group['id']}/attachments", files=FILES, headers=alice
    ).json()
    send(client, alice, group["id"], "a picture", attachment_ids=[picture["id"]])
    session_id = client.get("/sessions", headers=alice).json()[0]["id"]
    values = {
        "conversation_id": group["id"],
        "message_id": message["id"],
        "attachment_id": picture["id"],
        "username": "bob",
        "session_id": session_id,
        "emoji": "👍",
    }
    return alice, values


def call(
    client: TestClient, headers: Headers, method: str, path: str, values: dict[str, Any]
) -> Any:
    if (method, path) == UPLOAD:
        return client.post(path.format(**values), files=FILES, headers=headers)
    return client.request(
        method,
        path.format(**values),
        params=QUERIES.get(path),
        json=BODIES.get((method, path)),
        headers=headers,
    )


def assert_needs_scope(response: Any, scope: str) -> None:
    assert response.status_code == 403, response.text
    assert response.headers["www-authenticate"] == f'Bearer scope="{scope}"'
    assert response.json() == {"detail": f"Not enough permissions: this needs the {scope} scope"}


# The contract's routes, written out: a route added or removed fails the
# test below until it is listed here, and so gets a scope test.
CONTRACT_ROUTES = {
    ("POST", "/users"),
    ("POST", "/token"),
    ("POST", "/logout"),
    ("GET", "/sessions"),
    ("DELETE", "/sessions/{session_id}"),
    ("POST", "/sessions/end-others"),
    ("GET", "/users/me"),
    ("PATCH", "/users/me"),
    ("PUT", "/users/me/password"),
    ("GET", "/users"),
    ("GET", "/users/{username}"),
    ("POST", "/conversations"),
    ("GET", "/conversations"),
    ("GET", "/channels"),
    ("GET", "/conversations/{conversation_id}"),
    ("GET", "/conversations/{conversation_id}/members"),
    ("POST", "/conversations/{conversation_id}/join"),
    ("POST", "/conversations/{conversation_id}/leave"),
    ("POST", "/conversations/{conversation_id}/members"),
    ("POST", "/conversations/{conversation_id}/read"),
    ("PUT", "/conversations/{conversation_id}/notifications"),
    ("POST", "/conversations/{conversation_id}/messages"),
    ("GET", "/conversations/{conversation_id}/messages"),
    ("GET", "/messages/{message_id}"),
    ("PATCH", "/messages/{message_id}"),
    ("DELETE", "/messages/{message_id}"),
    ("PUT", "/messages/{message_id}/reactions/{emoji}"),
    ("DELETE", "/messages/{message_id}/reactions/{emoji}"),
    ("GET", "/search/messages"),
    ("GET", "/mentions"),
    ("GET", "/push/key"),
    ("POST", "/push/subscriptions"),
    ("DELETE", "/push/subscriptions"),
    ("POST", "/conversations/{conversation_id}/attachments"),
    ("GET", "/attachments/{attachment_id}"),
    ("GET", "/attachments/{attachment_id}/thumbnail"),
    ("GET", "/admin/users"),
    ("POST", "/admin/users/{username}/deactivate"),
    ("POST", "/admin/users/{username}/activate"),
    ("DELETE", "/admin/messages/{message_id}"),
    ("GET", "/healthz"),
}


def test_route_table_is_the_contracts() -> None:
    """The routes the tests below walk are the contract's, no more, no less."""
    assert set(ROUTES) == CONTRACT_ROUTES
    assert len(READS) == 14 and len(WRITES) == 18 and len(ADMIN_ROUTES) == 4


@pytest.mark.parametrize(("method", "path"), sorted(set(ROUTES) - PUBLIC))
def test_routes_without_a_token_answer_401(client: TestClient, method: str, path: str) -> None:
    """Admin routes included: no token is 401, not 403."""
    _, values = setting(client)
    response = call(client, {}, method, path, values)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"


# --- Login ---------------------------------------------------------------------


def test_login_grants_every_scope_of_the_role_by_default(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    new_user(client, "alice")
    new_admin(client, "root")
    for username, scope in [("alice", f"{READ} {WRITE}"), ("root", f"{READ} {WRITE} {ADMIN}")]:
        response = client.post("/token", data={"username": username, "password": PASSWORD})
        assert response.status_code == 200
        assert response.json()["scope"] == scope


@pytest.mark.parametrize(
    ("asked", "granted"),
    [(READ, READ), (f"{WRITE} {READ}", f"{READ} {WRITE}"), (f"  {READ}  ", READ)],
)
def test_login_grants_the_scopes_asked_for(client: TestClient, asked: str, granted: str) -> None:
    new_user(client, "alice")
    form = {"username": "alice", "password": PASSWORD, "scope": asked}
    response = client.post("/token", data=form)
    assert response.status_code == 200
    assert response.json()["scope"] == granted


UNKNOWN_SCOPE = f"No such scope; ask for {READ}, {WRITE} or {ADMIN}"


@pytest.mark.parametrize(
    ("scope", "description"),
    [
        (ADMIN, "This account may not have: admin"),
        (f"{READ} {ADMIN}", "This account may not have: admin"),
        ("messages:delete", UNKNOWN_SCOPE),
        ("MESSAGES:READ", UNKNOWN_SCOPE),
    ],
)
def test_login_member_asking_for_a_scope_they_may_not_have(
    client: TestClient, scope: str, description: str
) -> None:
    """The body has RFC 6749's `error` and `error_description`, which Swagger
    UI's Authorize dialog shows, beside the contract's `detail`."""
    new_user(client, "alice")
    response = client.post(
        "/token", data={"username": "alice", "password": PASSWORD, "scope": scope}
    )
    assert response.status_code == 400
    assert response.json() == {
        "detail": "invalid_scope",
        "error": "invalid_scope",
        "error_description": description,
    }


@pytest.mark.parametrize("separator", ["\t", "\u2003", "\u00a0", "\n", ","])
def test_login_scopes_are_separated_by_spaces_only(client: TestClient, separator: str) -> None:
    """RFC 6749 §3.3: only U+0020 separates scopes. Anything else is part of
    a scope name, which then matches no scope."""
    new_user(client, "alice")
    form = {"username": "alice", "password": PASSWORD, "scope": f"{READ}{separator}{WRITE}"}
    response = client.post("/token", data=form)
    assert response.status_code == 400
    assert response.json()["error_description"] == UNKNOWN_SCOPE


def test_login_bad_scope_with_wrong_password_is_a_wrong_password(client: TestClient) -> None:
    """A scope error would tell a stranger that the account exists and is no admin."""
    new_user(client, "alice")
    for username in ("alice", "nobody"):
        form = {"username": username, "password": "wrong password", "scope": ADMIN}
        response = client.post("/token", data=form)
        assert response.status_code == 401
        assert response.json() == WRONG_CREDENTIALS


def test_login_admin_may_ask_for_less(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    new_admin(client, "root")
    form = {"username": "root", "password": PASSWORD, "scope": READ}
    response = client.post("/token", data=form)
    assert response.status_code == 200
    assert response.json()["scope"] == READ


# --- Routes ----------------------------------------------------------------------


@pytest.mark.parametrize(("method", "path"), READS)
def test_read_only_token_reads_what_a_full_token_reads(
    client: TestClient, method: str, path: str
) -> None:
    alice, values = setting(client)
    read_only = scope_of(client, "alice", READ)
    full = call(client, alice, method, path, values)
    limited = call(client, read_only, method, path, values)
    assert full.status_code == 200, full.text
    assert limited.status_code == 200
    if path.startswith("/attachments/"):  # a file, not JSON
        assert limited.content == full.content
        return
    full_json, limited_json = full.json(), limited.json()
    if path == "/sessions":  # the same sessions, each token in its own
        assert [s.pop("current") for s in limited_json] == [True, False]
        assert [s.pop("current") for s in full_json] == [False, True]
    assert limited_json == full_json


@pytest.mark.parametrize(("method", "path"), WRITES + ADMIN_ROUTES)
def test_read_only_token_cannot_write(client: TestClient, method: str, path: str) -> None:
    _, values = setting(client)
    read_only = scope_of(client, "alice", READ)
    assert_needs_scope(call(client, read_only, method, path, values), required_scope(method, path))


def test_read_only_token_changes_nothing(client: TestClient) -> None:
    alice, values = setting(client)
    read_only = scope_of(client, "alice", READ)

    def snapshot() -> list[Any]:
        return [
            client.get(path, headers=alice).json()
            for path in ("/users/me", "/conversations", "/channels", "/users")
        ] + [history(client, alice, values["conversation_id"])]

    before = snapshot()
    for method, path in WRITES + ADMIN_ROUTES:
        assert call(client, read_only, method, path, values).status_code == 403
    assert snapshot() == before
    assert login(client, "alice")  # the password did not change
    assert login(client, "bob")  # nobody was deactivated


def test_read_only_token_may_log_out(client: TestClient) -> None:
    new_user(client, "alice")
    read_only = scope_of(client, "alice", READ)
    assert client.post("/logout", headers=read_only).status_code == 204
    assert client.get("/users/me", headers=read_only).status_code == 401


def test_write_only_token_cannot_read(client: TestClient) -> None:
    alice, values = setting(client)
    write_only = scope_of(client, "alice", WRITE)
    assert_needs_scope(call(client, write_only, "GET", "/users/me", values), READ)
    response = call(client, write_only, "POST", "/conversations/{conversation_id}/messages", values)
    assert response.status_code == 201


def test_scope_is_checked_before_visibility(client: TestClient) -> None:
    """A read-only token learns nothing from a write: 403 even for a
    conversation that does not exist."""
    new_user(client, "alice")
    read_only = scope_of(client, "alice", READ)
    response = client.post("/conversations/999/messages", json={"content": "x"}, headers=read_only)
    assert_needs_scope(response, WRITE)


@pytest.mark.parametrize(("method", "path"), ADMIN_ROUTES)
@pytest.mark.parametrize("who", ["admin without the admin scope", "member"])
def test_admin_routes_need_the_admin_scope(
    client: TestClient, monkeypatch: pytest.MonkeyPatch, method: str, path: str, who: str
) -> None:
    _, values = setting(client)
    if who == "member":
        headers = bearer(login(client, "carol"))
    else:
        new_admin(client, "root")
        headers = scope_of(client, "root", f"{READ} {WRITE}")
    assert_needs_scope(call(client, headers, method, path, values), ADMIN)


def test_admin_only_token_cannot_read_messages(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    setting(client)
    new_admin(client, "root")
    admin_only = scope_of(client, "root", ADMIN)
    assert client.get("/admin/users", headers=admin_only).status_code == 200
    assert_needs_scope(client.get("/users", headers=admin_only), READ)


def test_admin_made_a_member_loses_admin_at_once(client: TestClient) -> None:
    """`python -m manage remove-admin`: the role decides, whatever the token says."""
    root = new_admin(client, "root")
    assert client.get("/admin/users", headers=root).status_code == 200
    assert manage.main(["remove-admin", "root"]) == 0
    assert_needs_scope(client.get("/admin/users", headers=root), ADMIN)
    assert client.get("/users/me", headers=root).json()["role"] == "member"
    response = client.post("/token", data={"username": "root", "password": PASSWORD})
    assert response.json()["scope"] == f"{READ} {WRITE}"


def test_member_added_to_the_list_is_admin_on_tokens_issued_after_restart(
    client: TestClient, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """By design a token keeps the scopes it was given: the new admin logs in again."""
    before = new_user(client, "alice")
    monkeypatch.setattr(settings, "ADMIN_USERNAMES", ["alice"])
    db.init_db(engine)  # what a restart does
    assert client.get("/users/me", headers=before).json()["role"] == "admin"
    assert_needs_scope(client.get("/admin/users", headers=before), ADMIN)
    after = scope_of(client, "alice", "")
    assert client.get("/admin/users", headers=after).status_code == 200


def test_token_from_before_scopes_reads_and_writes_but_never_administers(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Tokens issued before scopes existed have no `scope` claim: they keep
    what they could do then (everything but the admin routes, which are new)."""
    root = new_admin(client, "root")
    me = client.get("/users/me", headers=root).json()
    now = int(time.time())
    claims = {"sub": str(me["id"]), "iat": now, "exp": now + 600, "jti": "old", "ver": 0}
    old = bearer(jwt.encode(claims, settings.SECRET_KEY, algorithm="HS256"))
    assert client.get("/users/me", headers=old).status_code == 200
    assert client.patch("/users/me", json={"display_name": "Root"}, headers=old).status_code == 200
    assert_needs_scope(client.get("/admin/users", headers=old), ADMIN)


# --- The OpenAPI document ----------------------------------------------------------


def test_openapi_lists_the_scopes(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    flow = spec["components"]["securitySchemes"]["OAuth2PasswordBearer"]["flows"]["password"]
    assert set(flow["scopes"]) == {READ, WRITE, ADMIN}
    assert all(flow["scopes"].values())  # each has a description for the Authorize dialog


def test_openapi_describes_the_scope_field(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    body = spec["paths"]["/token"]["post"]["requestBody"]["content"]
    ref = body["application/x-www-form-urlencoded"]["schema"]["$ref"]
    form = spec["components"]["schemas"][ref.rsplit("/", 1)[-1]]
    assert "space" in form["properties"]["scope"]["description"]


def test_openapi_documents_the_login_errors(client: TestClient) -> None:
    responses = client.get("/openapi.json").json()["paths"]["/token"]["post"]["responses"]
    for status in ("400", "401"):
        schema = responses[status]["content"]["application/json"]["schema"]
        assert schema == {"$ref": "#/components/schemas/TokenErrorDetail"}


@pytest.mark.parametrize(("method", "path"), ROUTES)
def test_openapi_names_each_routes_scope(client: TestClient, method: str, path: str) -> None:
    operation = client.get("/openapi.json").json()["paths"][path][method.lower()]
    if (method, path) in PUBLIC:
        assert "security" not in operation
    elif (method, path) in ANY_TOKEN:
        assert operation["security"] == [{"OAuth2PasswordBearer": []}]
    else:
        assert operation["security"] == [{"OAuth2PasswordBearer": [required_scope(method, path)]}]
        # Also where the route documents a 403 of its own ("Not your message").
        description = operation["responses"]["403"]["description"]
        assert description.endswith(
            "the token lacks the scope this route needs (named in WWW-Authenticate)"
        )


# --- The WebSocket -------------------------------------------------------------------


def test_ws_needs_the_read_scope(client: TestClient) -> None:
    new_user(client, "alice")
    write_only = scope_of(client, "alice", WRITE)
    with client.websocket_connect("/ws") as ws:
        ws.send_json({"type": "auth", "token": token_of(write_only)})
        assert_closed(ws, CLOSE_FORBIDDEN)


def test_ws_refuses_an_admin_only_token(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    new_admin(client, "root")
    admin_only = scope_of(client, "root", ADMIN)
    with client.websocket_connect("/ws") as ws:
        ws.send_json({"type": "auth", "token": token_of(admin_only)})
        assert_closed(ws, CLOSE_FORBIDDEN)


def test_ws_read_only_token_receives_events_but_cannot_type(client: TestClient) -> None:
    alice, values = setting(client)
    bob = scope_of(client, "bob", READ)
    group = values["conversation_id"]
    with live(client, bob) as ws:
        sent = send(client, alice, group, "for bob's dashboard")
        assert ws.receive_json() == {"type": "message.created", "message": sent}
        ws.send_json({"type": "typing", "conversation_id": group})
        assert ws.receive_json() == {
            "type": "error",
            "detail": "Typing needs the messages:write scope",
        }
        ws.send_json({"type": "ping"})
        assert ws.receive_json() == {"type": "pong"}  # still open
