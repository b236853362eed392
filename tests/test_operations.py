"""Operations: health, body limit, settings, the OpenAPI document, logs."""

import logging
import os
import re
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError
from sqlalchemy import Engine

import db
from config import Settings, load_or_create_secret_key, settings
from main import app
from tests import database
from tests.helpers import (
    PASSWORD,
    bearer,
    create_conversation,
    login,
    new_admin,
    new_user,
    send,
    signup,
)
from tests.server import Server, running


def test_healthz(client: TestClient) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_healthz_database_down(
    client: TestClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    broken = db.create_db_engine(f"sqlite:///{tmp_path}/missing-folder/x.db")
    monkeypatch.setattr(db, "engine", broken)
    response = client.get("/healthz")
    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"
    assert "detail" in response.json()


def test_body_too_large(client: TestClient) -> None:
    headers = new_user(client, "alice")
    body = b'{"display_name": "' + b"x" * settings.MAX_BODY_BYTES + b'"}'
    response = client.patch(
        "/users/me", content=body, headers=headers | {"Content-Type": "application/json"}
    )
    assert response.status_code == 413
    assert response.json() == {"detail": "Request body too large"}


def test_body_too_large_chunked(client: TestClient) -> None:
    """No Content-Length: the body is counted as it arrives (see test_server.py
    for a real server cutting the upload short)."""
    headers = new_user(client, "alice")

    def chunks() -> Iterator[bytes]:
        yield b'{"content": "'
        for _ in range(100):
            yield b"x" * 1024
        yield b'"}'

    response = client.post(
        "/users", content=chunks(), headers=headers | {"Content-Type": "application/json"}
    )
    assert response.status_code == 413


def test_body_at_limit_is_accepted(client: TestClient) -> None:
    headers = new_user(client, "alice")
    direct_body = b'{"content": "hi", "client_id": "' + b"a" * 10 + b'"}'
    padding = b" " * (settings.MAX_BODY_BYTES - len(direct_body))
    general = client.get("/channels", headers=headers).json()[0]["id"]
    response = client.post(
        f"/conversations/{general}/messages",
        content=direct_body + padding,
        headers=headers | {"Content-Type": "application/json"},
    )
    assert response.status_code == 201


def test_home_page(client: TestClient) -> None:
    response = client.get("/")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert "MessageApp" in response.text


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_docs_work_offline(client: TestClient, page: str) -> None:
    html = client.get(page).text
    assert "https://" not in html  # no CDN: a laptop without internet can show them
    scripts = re.findall(r'src="([^"]+\.js)"', html)
    assert scripts
    for script in scripts:
        assert client.get(script).status_code == 200


def test_unknown_path_is_json_404(client: TestClient) -> None:
    response = client.get("/nope")
    assert response.status_code == 404
    assert response.json() == {"detail": "Not Found"}


@pytest.mark.parametrize(
    ("method", "path"), [("GET", "/users/me/"), ("POST", "/users/"), ("GET", "/healthz/")]
)
def test_trailing_slash_is_not_found(client: TestClient, method: str, path: str) -> None:
    response = client.request(method, path, follow_redirects=False)
    assert response.status_code == 404


def test_cors_closed_by_default(client: TestClient) -> None:
    response = client.get("/healthz", headers={"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in response.headers


# The error statuses of each route in ../shared/API.md (plus 401 wherever a
# token is needed, and 403 wherever a scope is): every one of them must be
# documented in /openapi.json.
CONTRACT = {
    ("post", "/users"): {201, 409, 422},
    ("post", "/token"): {200, 400, 401, 429},
    ("post", "/logout"): {204, 401},
    ("get", "/sessions"): {200, 401, 403},
    ("delete", "/sessions/{session_id}"): {204, 401, 403, 404},
    ("post", "/sessions/end-others"): {204, 401, 403},
    ("get", "/users/me"): {200, 401, 403},
    ("patch", "/users/me"): {200, 401, 403, 422},
    ("put", "/users/me/password"): {204, 400, 401, 403, 422},
    ("get", "/users"): {200, 401, 403},
    ("get", "/users/{username}"): {200, 401, 403, 404},
    ("post", "/conversations"): {200, 201, 401, 403, 409, 422},
    ("get", "/conversations"): {200, 401, 403},
    ("get", "/channels"): {200, 401, 403},
    ("get", "/conversations/{conversation_id}"): {200, 401, 403, 404},
    ("get", "/conversations/{conversation_id}/members"): {200, 401, 403, 404},
    ("post", "/conversations/{conversation_id}/join"): {200, 401, 403, 404, 422},
    ("post", "/conversations/{conversation_id}/leave"): {204, 401, 403, 404, 422},
    ("post", "/conversations/{conversation_id}/members"): {200, 401, 403, 404, 422},
    ("post", "/conversations/{conversation_id}/read"): {204, 401, 403, 404, 422},
    ("put", "/conversations/{conversation_id}/notifications"): {200, 401, 403, 404, 422},
    ("post", "/conversations/{conversation_id}/messages"): {200, 201, 401, 403, 404, 422},
    ("get", "/conversations/{conversation_id}/messages"): {200, 401, 403, 404, 422},
    ("get", "/messages/{message_id}"): {200, 401, 403, 404},
    ("patch", "/messages/{message_id}"): {200, 401, 403, 404, 409, 422},
    ("delete", "/messages/{message_id}"): {204, 401, 403, 404},
    ("put", "/messages/{message_id}/reactions/{emoji}"): {204, 401, 403, 404, 409, 422},
    ("delete", "/messages/{message_id}/reactions/{emoji}"): {204, 401, 403, 404, 422},
    ("get", "/search/messages"): {200, 401, 403, 422},
    ("get", "/mentions"): {200, 401, 403, 422},
    ("post", "/conversations/{conversation_id}/attachments"): {201, 401, 403, 404, 413, 422},
    ("get", "/attachments/{attachment_id}"): {200, 206, 401, 403, 404},
    ("get", "/attachments/{attachment_id}/thumbnail"): {200, 206, 401, 403, 404},
    ("get", "/admin/users"): {200, 401, 403, 422},
    ("post", "/admin/users/{username}/deactivate"): {204, 401, 403, 404},
    ("post", "/admin/users/{username}/activate"): {204, 401, 403, 404},
    ("delete", "/admin/messages/{message_id}"): {204, 401, 403, 404},
    ("get", "/push/key"): {200, 401},
    ("post", "/push/subscriptions"): {200, 201, 401, 403, 409, 422},
    ("delete", "/push/subscriptions"): {204, 401, 403, 404, 422},
    ("get", "/healthz"): {200, 503},
}
PUBLIC = {("post", "/users"), ("post", "/token"), ("get", "/healthz")}


def test_openapi_documents_every_route_and_status(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    operations = {
        (method, path): operation
        for path, item in spec["paths"].items()
        for method, operation in item.items()
    }
    assert set(operations) == set(CONTRACT)
    for key, statuses in CONTRACT.items():
        operation = operations[key]
        assert operation["summary"] and operation["description"], key
        assert operation["tags"], key
        assert {int(code) for code in operation["responses"]} >= statuses, key
        needs_token = key not in PUBLIC
        assert ("security" in operation) == needs_token, key


def test_openapi_authorize_uses_token_route(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    flows = spec["components"]["securitySchemes"]["OAuth2PasswordBearer"]["flows"]
    assert flows["password"]["tokenUrl"] == "token"


def test_openapi_request_examples(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    body = spec["paths"]["/conversations"]["post"]["requestBody"]["content"]["application/json"]
    assert set(body["examples"]) == {"direct", "group", "channel"}


def test_secret_key_file_is_private_and_stable(tmp_path: Path) -> None:
    path = tmp_path / "secret_key"
    key = load_or_create_secret_key(path)
    assert len(key) >= 32
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert load_or_create_secret_key(path) == key
    assert [p.name for p in tmp_path.iterdir()] == ["secret_key"]  # no temporary left over


def test_app_secret_key_file_is_private() -> None:
    path = settings.DATA_DIR / "secret_key"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert path.read_text().strip() == settings.SECRET_KEY


@pytest.mark.parametrize("key", ["short", "changethis", "x" * 31])
def test_explicit_weak_secret_key_is_refused(tmp_path: Path, key: str) -> None:
    with pytest.raises(ValidationError, match="SECRET_KEY") as refused:
        Settings(DATA_DIR=tmp_path, SECRET_KEY=key)
    assert key not in str(refused.value)  # the message does not repeat the key


def test_settings_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("SECRET_KEY", "k" * 40)
    monkeypatch.setenv("ADMIN_USERNAMES", "Alice, bob")
    monkeypatch.setenv("CORS_ORIGINS", "https://a.example,https://b.example")
    configured = Settings()
    assert configured.SECRET_KEY == "k" * 40
    assert configured.DATABASE_URL == f"sqlite:///{tmp_path}/data/messageapp.db"
    assert configured.admin_usernames == {"alice", "bob"}
    assert configured.CORS_ORIGINS == ["https://a.example", "https://b.example"]
    assert not (tmp_path / "data" / "secret_key").exists()  # a given key is not written


def test_logs_never_contain_passwords_or_tokens(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    new_password = "another secret passphrase"
    signup(client, "alice")
    client.post("/token", data={"username": "alice", "password": "wrong guess 123"})
    token = login(client, "alice")
    headers = bearer(token)
    general = create_conversation(client, headers, kind="channel", title="logs")["id"]
    send(client, headers, general, "hello")
    client.put(
        "/users/me/password",
        json={"current_password": PASSWORD, "new_password": new_password},
        headers=headers,
    )
    client.post("/logout", headers=bearer(login(client, "alice", password=new_password)))
    assert "alice" in caplog.text  # the log did capture the session
    for secret in (PASSWORD, new_password, "wrong guess 123", token, token.split(".")[2]):
        assert secret not in caplog.text


@pytest.mark.parametrize(
    ("method", "url", "body"),
    [
        ("GET", f"/conversations/{2**70}", None),
        ("GET", f"/messages/{2**70}", None),
        ("PATCH", f"/messages/{2**70}", {"content": "x"}),
        ("GET", f"/conversations/1/messages?before={2**70}", None),
        ("GET", f"/conversations/1/messages?after={2**70}", None),
        ("GET", f"/conversations/1/messages?around={2**70}", None),
        ("POST", "/conversations/1/messages", {"content": "x", "reply_to": 2**70}),
        ("PUT", f"/messages/{2**70}/reactions/👍", None),
        ("GET", f"/search/messages?q=x&conversation_id={2**70}", None),
        ("POST", "/conversations/1/read", {"message_id": 2**70}),
    ],
)
def test_ids_beyond_bigint_are_422(
    client: TestClient, method: str, url: str, body: dict[str, int] | None
) -> None:
    """Not a 500 from the database driver's integer overflow."""
    headers = new_user(client, "alice")
    response = client.request(method, url, json=body, headers=headers)
    assert response.status_code == 422


@pytest.mark.parametrize(
    "url",
    [
        f"/conversations/{-(2**70)}",
        f"/messages/{-(2**70)}",
        f"/search/messages?q=x&conversation_id={-(2**70)}",
        "/conversations/0",
        "/messages/-1",
    ],
)
def test_ids_below_one_are_422(client: TestClient, url: str) -> None:
    """Found by Schemathesis: a huge negative id overflowed the driver (500)."""
    headers = new_user(client, "alice")
    assert client.get(url, headers=headers).status_code == 422


def test_admin_message_id_below_one_is_422(client: TestClient) -> None:
    admin = new_admin(client, "root")
    assert client.delete(f"/admin/messages/{-(2**70)}", headers=admin).status_code == 422


@pytest.mark.parametrize(
    "path",
    ["/conversations", "/channels", "/conversations/1/members", "/admin/users"],
)
def test_offsets_beyond_bigint_are_422(client: TestClient, path: str) -> None:
    """An offset of 2**63 was an OverflowError and a 500; the largest that
    fits is an empty page."""
    headers = new_admin(client, "root")
    assert client.get(path, params={"offset": 2**63}, headers=headers).status_code == 422
    largest = client.get(path, params={"offset": 2**63 - 1}, headers=headers)
    assert largest.status_code == 200
    assert largest.json() == []


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/conversations", {"kind": "direct", "members": ["bob\x00"]}),
        ("/conversations", {"kind": "group", "title": "g", "members": ["x\x00"]}),
        ("/conversations", {"kind": "group", "title": "g\x00", "members": ["bob"]}),
        ("/conversations", {"kind": "channel", "title": "c\x00"}),
        ("/conversations/{group}/members", {"username": "bob\x00"}),
    ],
)
def test_text_with_nul_in_conversations_is_422(
    client: TestClient, path: str, body: dict[str, Any]
) -> None:
    """psycopg's DataError on PostgreSQL (a 500) before; refused on both."""
    alice = new_user(client, "alice")
    signup(client, "bob")
    group = create_conversation(client, alice, kind="group", title="team", members=[])["id"]
    response = client.post(path.format(group=group), json=body, headers=alice)
    assert response.status_code == 422
    assert len(client.get("/conversations", headers=alice).json()) == 2  # general, team


@pytest.mark.parametrize("title", ["team\u202e", "te\u200bam", "\u2066team\u2069", "team\x1b"])
def test_titles_refuse_misleading_characters(client: TestClient, title: str) -> None:
    alice = new_user(client, "alice")
    for body in (
        {"kind": "group", "title": title, "members": []},
        {"kind": "channel", "title": title},
    ):
        assert client.post("/conversations", json=body, headers=alice).status_code == 422


def test_request_before_the_app_has_started_is_503() -> None:
    """Without its lifespan (or while it runs) the app cannot serve a request
    that needs the database: 503 and Retry-After, not an AttributeError."""
    not_started = TestClient(app)  # no `with`: the lifespan does not run
    response = not_started.get("/healthz")
    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"
    assert not_started.post("/token", data={"username": "a", "password": "b"}).status_code == 503


def test_signup_under_a_listed_admin_name_makes_a_member(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whoever registered a name listed in ADMIN_USERNAMES first on a fresh
    deployment used to own the server."""
    monkeypatch.setattr(settings, "ADMIN_USERNAMES", ["Root"])
    assert signup(client, "root")["role"] == "member"
    form = {"username": "root", "password": PASSWORD, "scope": "admin"}
    refused = client.post("/token", data=form)
    assert refused.status_code == 400
    assert refused.json()["error"] == "invalid_scope"
    token = bearer(login(client, "root"))
    assert client.get("/admin/users", headers=token).status_code == 403


def test_listed_admin_without_account_is_a_warning(
    engine: Engine, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(settings, "ADMIN_USERNAMES", ["ghost"])
    with caplog.at_level(logging.WARNING, logger="messageapp.db"):
        db.init_db(engine)  # what a start does
    assert "'ghost', which has no account" in caplog.text
    assert "python -m manage create-admin ghost" in caplog.text


@pytest.mark.parametrize("content", ["", "\n", "short", "changeme", " " * 40])
def test_weak_key_file_refuses_to_start(tmp_path: Path, content: str) -> None:
    """An empty or short key file (a `touch`, an empty mounted secret, a
    truncated restore) would let anyone forge tokens with that key."""
    (tmp_path / "secret_key").write_text(content)
    with pytest.raises(ValidationError) as refused:
        Settings(DATA_DIR=tmp_path, SECRET_KEY="")
    assert "secret_key: the key must be at least 32 random characters" in str(refused.value)


def test_server_with_an_empty_key_file_does_not_start(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "secret_key").touch()
    server = Server(data)
    with pytest.raises(RuntimeError):
        server.start()
    server.kill()
    assert "the key must be at least 32 random characters" in server.log.read_text()


def test_data_dir_is_private(tmp_path: Path) -> None:
    """DATA_DIR 700, and the database, its WAL files and the keys 600, even
    where they were made before with the usual umask."""
    data = tmp_path / "data"
    data.mkdir(mode=0o755)
    data.chmod(0o755)
    if not database.POSTGRES:
        old = data / "messageapp.db"
        old.touch()
        old.chmod(0o644)
    with running(data) as server:
        server.user("alice")  # writes: the WAL files exist
        modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in data.iterdir()}
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    sqlite = {
        "messageapp.db": 0o600,
        "messageapp.db-wal": 0o600,
        "messageapp.db-shm": 0o600,
        "messageapp.db.lock": 0o600,  # locked while a server runs (db.in_use)
    }
    keys = {"secret_key": 0o600, "vapid_private_key.pem": 0o600}
    assert modes == {**({} if database.POSTGRES else sqlite), **keys}
