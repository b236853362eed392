"""Operations: health, body limit, settings, the OpenAPI document, logs."""

import logging
import os
import re
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

import db
from config import Settings, load_or_create_secret_key, settings
from tests.helpers import PASSWORD, bearer, create_conversation, login, new_user, send, signup


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
    ("post", "/conversations/{conversation_id}/messages"): {200, 201, 401, 403, 404, 422},
    ("get", "/conversations/{conversation_id}/messages"): {200, 401, 403, 404, 422},
    ("get", "/messages/{message_id}"): {200, 401, 403, 404},
    ("patch", "/messages/{message_id}"): {200, 401, 403, 404, 409, 422},
    ("delete", "/messages/{message_id}"): {204, 401, 403, 404},
    ("get", "/search/messages"): {200, 401, 403, 422},
    ("get", "/admin/users"): {200, 401, 403, 422},
    ("post", "/admin/users/{username}/deactivate"): {204, 401, 403, 404},
    ("post", "/admin/users/{username}/activate"): {204, 401, 403, 404},
    ("delete", "/admin/messages/{message_id}"): {204, 401, 403, 404},
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


def test_admin_usernames_get_admin_role(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(settings, "ADMIN_USERNAMES", ["Alice"])
    assert signup(client, "alice")["role"] == "admin"
    assert signup(client, "bob")["role"] == "member"


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


def test_admin_message_id_below_one_is_422(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(settings, "ADMIN_USERNAMES", ["root"])
    admin = new_user(client, "root")
    assert client.delete(f"/admin/messages/{-(2**70)}", headers=admin).status_code == 422
