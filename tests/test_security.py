"""Security checks: what tokens carry, the pinned algorithm, logs, CORS and
the browser security headers. (Expiry, tampering, alg=none with the default
casing and HS512 are in test_auth.py; the key file's mode in test_operations.py.)"""

import base64
import json
import re
import time
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest
from fastapi.testclient import TestClient
from websockets.sync.client import connect

from config import settings
from tests.helpers import PASSWORD, bearer, login, signup
from tests.server import running


def b64_json(part: str) -> dict[str, Any]:
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))


def b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def test_token_carries_no_secret_data(client: TestClient) -> None:
    user = signup(client, "alice")
    token = login(client, "alice")
    header, payload, _ = token.split(".")
    assert b64_json(header) == {"alg": "HS256", "typ": "JWT"}
    claims = b64_json(payload)
    # Ids, times, a version number and the scopes: anyone holding the token can read them.
    assert set(claims) == {"sub", "iat", "exp", "jti", "ver", "scope", "sid"}
    assert claims["scope"] == "messages:read messages:write"
    assert claims["sub"] == str(user["id"])
    assert all(isinstance(claims[c], int) for c in ("iat", "exp", "ver", "sid"))
    assert re.fullmatch(r"[0-9a-f]{32}", claims["jti"])
    for secret in (PASSWORD, "alice", settings.SECRET_KEY, "argon2"):
        assert secret not in json.dumps(claims)


@pytest.mark.parametrize("alg", ["none", "None", "NONE", "nOnE"])
def test_token_alg_none_in_any_case_is_rejected(client: TestClient, alg: str) -> None:
    signup(client, "alice")
    _, payload, signature = login(client, "alice").split(".")
    for forged_signature in ("", signature):
        token = f"{b64({'alg': alg, 'typ': 'JWT'})}.{payload}.{forged_signature}"
        assert client.get("/users/me", headers=bearer(token)).status_code == 401


@pytest.mark.parametrize("alg", ["HS384", "HS512"])
def test_token_signed_with_the_key_but_another_hmac_is_rejected(
    client: TestClient, alg: str
) -> None:
    from jose import jwt

    signup(client, "alice")
    claims = b64_json(login(client, "alice").split(".")[1])
    token = jwt.encode(claims, settings.SECRET_KEY, algorithm=alg)
    response = client.get("/users/me", headers=bearer(token))
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"


# --- Logs ----------------------------------------------------------------------


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_full_session_logs_no_password_or_token(tmp_path: Path, log_format: str) -> None:
    """Everything the server process writes (uvicorn's lines and the app's
    own, the access line of each request included), in either LOG_FORMAT,
    through sign-up, failed and good logins, messages, a search, the socket,
    a password change and logout: no password, no token, no message text."""
    new_password = "a brand new passphrase"
    wrong = "not the password 123"
    text = "meet me at the old mill"
    with (
        running(tmp_path / "data", LOG_FORMAT=log_format) as server,
        httpx.Client(base_url=server.url) as http,
    ):
        assert http.post("/users", json={"username": "alice", "password": PASSWORD}).is_success
        assert http.post("/token", data={"username": "alice", "password": wrong}).status_code == 401
        token = http.post("/token", data={"username": "alice", "password": PASSWORD}).json()[
            "access_token"
        ]
        headers = bearer(token)
        with connect(server.ws_url) as ws:
            ws.send(json.dumps({"type": "auth", "token": token}))
            assert json.loads(ws.recv(timeout=5))["type"] == "ready"
            ws.send(json.dumps({"type": "auth", "token": token}))  # an error, logged or not
            ws.recv(timeout=5)
            http.post("/conversations/1/messages", json={"content": text}, headers=headers)
        assert http.get("/search/messages", params={"q": "old mill"}, headers=headers).is_success
        http.get("/users/me", headers={"Authorization": f"Bearer {token}x"})  # a bad token
        changed = http.put(
            "/users/me/password",
            json={"current_password": PASSWORD, "new_password": new_password},
            headers=headers,
        )
        assert changed.status_code == 204
        new_token = http.post(
            "/token", data={"username": "alice", "password": new_password}
        ).json()["access_token"]
        assert http.post("/logout", headers=bearer(new_token)).status_code == 204
        time.sleep(0.5)  # let the server flush its last lines
    log = server.log.read_text()
    if log_format == "json":
        lines = [json.loads(line) for line in log.splitlines()]  # every line is JSON
        access = [line for line in lines if line["logger"] == "messageapp.access"]
        assert any(line["route"] == "/token" and line["status"] == 401 for line in access)
    else:
        assert '"POST /token" 401' in log  # the access lines are in there
    assert "Failed login for 'alice'" in log  # and the app's own
    for secret in (PASSWORD, new_password, wrong, settings.SECRET_KEY, settings.METRICS_TOKEN):
        assert secret not in log
    for words in (text, "old mill", "old+mill", "old%20mill"):  # the message, or a search for it
        assert words not in log
    for jwt in (token, new_token):
        for part in jwt.split("."):  # not even the signature, or the claims
            assert part not in log
    assert (server.data_dir / "secret_key").read_text().strip() not in log


# --- CORS --------------------------------------------------------------------


def test_cors_preflight_closed_by_default(client: TestClient) -> None:
    response = client.options(
        "/conversations",
        headers={
            "Origin": "https://evil.example",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization",
        },
    )
    assert response.status_code == 405
    assert not any(h.startswith("access-control-") for h in response.headers)


def test_cors_preflight_has_the_security_headers(tmp_path: Path) -> None:
    """With CORS_ORIGINS set, the CORS middleware answers preflights itself:
    the security headers must wrap it, not the other way round."""
    with running(tmp_path / "data", CORS_ORIGINS="https://app.example") as server:
        response = httpx.options(
            f"{server.url}/conversations",
            headers={
                "Origin": "https://app.example",
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization",
            },
        )
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == "https://app.example"
    assert re.fullmatch(r"[0-9a-f]{32}", response.headers["x-request-id"])
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["x-frame-options"] == "DENY"
    assert "frame-ancestors 'none'" in response.headers["content-security-policy"]


# --- Security headers -------------------------------------------------------


def directives(policy: str) -> dict[str, list[str]]:
    parsed = (d.split() for d in policy.split(";") if d.strip())
    return {name: values for name, *values in parsed}


@pytest.mark.parametrize("path", ["/", "/index.html", "/users/me", "/healthz", "/nope"])
def test_security_headers_on_every_response(client: TestClient, path: str) -> None:
    response = client.get(path)
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["referrer-policy"] == "no-referrer"
    policy = directives(response.headers["content-security-policy"])
    assert policy["script-src"] == ["'self'"]  # no inline script, no other origin
    assert policy["frame-ancestors"] == ["'none'"]
    assert policy["object-src"] == ["'none'"]
    assert policy["default-src"] == ["'self'"]
    # The service worker and the manifest from here only; images from here,
    # and blob: for the favicon the page draws with the unread count on it.
    assert policy["worker-src"] == ["'self'"]
    assert policy["manifest-src"] == ["'self'"]
    assert policy["img-src"] == ["'self'", "blob:"]


def test_security_headers_on_refusals_too(client: TestClient) -> None:
    """The middleware is outermost: a 413 from the body limit has them."""
    response = client.post(
        "/users", content=b"x" * (settings.MAX_BODY_BYTES + 1), headers={"Content-Type": "a/b"}
    )
    assert response.status_code == 413
    assert "script-src 'self'" in response.headers["content-security-policy"]


def test_web_client_has_no_inline_script(client: TestClient) -> None:
    html = client.get("/").text
    for attributes, body in re.findall(r"<script([^>]*)>(.*?)</script>", html, re.DOTALL):
        assert "src=" in attributes and not body.strip()
    assert not re.search(r"\son[a-z]+\s*=", html)  # no onclick= and the like


def test_web_client_app_files_are_served_with_their_types(client: TestClient) -> None:
    """The manifest (linked from the page) and the service worker at the root,
    whose scope is then the whole app, with the types browsers insist on."""
    assert '<link rel="manifest" href="manifest.webmanifest">' in client.get("/").text
    manifest = client.get("/manifest.webmanifest")
    assert manifest.headers["content-type"] == "application/manifest+json"
    assert manifest.json()["start_url"] == "/"
    for icon in manifest.json()["icons"]:
        assert client.get(icon["src"]).headers["content-type"] == icon["type"]
    worker = client.get("/sw.js")
    assert worker.headers["content-type"].startswith("text/javascript")


@pytest.mark.parametrize("path", ["/docs/..%2f/", "/docs/x/..%2f..%2findex.html"])
def test_docs_policy_only_on_the_docs_pages(client: TestClient, path: str) -> None:
    """A path that only starts with /docs and resolves to the web client gets
    the client's strict policy, never the inline allowances of /docs."""
    response = client.get(path)
    policy = directives(response.headers["content-security-policy"])
    assert policy["script-src"] == ["'self'"]
    assert policy["style-src"] == ["'self'"]


@pytest.mark.parametrize("page", ["/docs", "/redoc", "/docs/oauth2-redirect"])
def test_docs_policy_lets_their_own_assets_load(client: TestClient, page: str) -> None:
    """Swagger UI starts from an inline script, ReDoc injects styles and runs a
    blob: worker; their policy allows that, and still only this origin."""
    response = client.get(page)
    assert response.status_code == 200
    policy = directives(response.headers["content-security-policy"])
    assert policy["script-src"] == ["'self'", "'unsafe-inline'"]
    assert policy["frame-ancestors"] == ["'none'"]
    html = response.text
    inline = [body for attrs, body in re.findall(r"<script([^>]*)>(.*?)</script>", html, re.S)]
    assets = re.findall(r'(?:src|href)="([^"]+)"', html)
    for asset in assets:  # every script, style sheet and icon comes from here: 'self'
        assert asset.startswith("/"), asset
        assert client.get(asset).status_code == 200
    if page == "/docs":
        assert any("SwaggerUIBundle" in body for body in inline)  # needs 'unsafe-inline'
    if page == "/redoc":
        assert "blob:" in policy["worker-src"]
        assert "'unsafe-inline'" in policy["style-src"]
