"""Web Push (push.py): real pushes to a push service the test runs itself.

`PushService` is an HTTP server on a loopback port, standing in for
Mozilla's or Google's; `Browser` makes a P-256 key pair and an auth secret
as a browser does, subscribes with them, and decrypts what arrives
(aes128gcm, RFC 8291) after checking the VAPID signature (RFC 8292). Nothing
of the server's side is mocked: its pushes go over HTTP to the service.
"""

import base64
import json
import os
import queue
import socket
import stat
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import http_ece
import httpx2 as httpx
import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from sqlmodel import Session, select

import auth
import push
from config import Settings, settings
from main import app
from models import User
from tests.helpers import (
    Headers,
    bearer,
    create_conversation,
    general_id,
    live,
    login,
    new_user,
    read_metrics,
    send,
    settle,
    signup,
)
from tests.server import PASSWORD, Server, needs_redis, open_socket, unique_channel
from tests.server import REDIS_URL as TEST_REDIS_URL


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


# --- A push service, and a browser --------------------------------------------------


@dataclass
class Push:
    """One POST the push service received."""

    path: str
    headers: dict[str, str]  # lower-case names
    body: bytes
    at: float = field(default_factory=time.perf_counter)


class PushService:
    """Takes pushes as a real push service does: 201 Created, or what
    `answers` says for a path; requests to a path in `held` wait until
    `release` is set."""

    def __init__(self) -> None:
        self.received: queue.Queue[Push] = queue.Queue()
        self.answers: dict[str, tuple[int, dict[str, str]]] = {}
        self.held: set[str] = set()
        self.release = threading.Event()
        service = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                headers = {k.lower(): v for k, v in self.headers.items()}
                service.received.put(Push(self.path, headers, body))
                if self.path in service.held:
                    service.release.wait(timeout=30)
                code, extra = service.answers.get(self.path, (201, {}))
                self.send_response(code)
                for name, value in extra.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass  # quiet

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.origin = f"http://127.0.0.1:{self.http.server_address[1]}"
        threading.Thread(target=self.http.serve_forever, daemon=True).start()

    def next(self, timeout: float = 10) -> Push:
        return self.received.get(timeout=timeout)

    def pushes(self) -> list[Push]:
        found = []
        while not self.received.empty():
            found.append(self.received.get_nowait())
        return found


class Browser:
    """A browser's side of a subscription: its keys, and decryption."""

    def __init__(self, service: PushService, name: str) -> None:
        self.private_key = ec.generate_private_key(ec.SECP256R1())
        self.auth = os.urandom(16)
        self.path = f"/push/{name}"
        self.endpoint = service.origin + self.path

    def subscription(self) -> dict[str, Any]:
        """What `PushSubscription.toJSON()` gives."""
        point = self.private_key.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
        return {
            "endpoint": self.endpoint,
            "expirationTime": None,
            "keys": {"p256dh": b64(point), "auth": b64(self.auth)},
        }

    def read(self, push: Push) -> dict[str, Any]:
        """Check the push as a push service and a browser would, and decrypt it."""
        assert push.path == self.path
        assert push.headers["content-encoding"] == "aes128gcm"
        plain = http_ece.decrypt(  # type: ignore[no-untyped-call]  # (http_ece has no hints)
            push.body, private_key=self.private_key, auth_secret=self.auth, version="aes128gcm"
        )
        result: dict[str, Any] = json.loads(plain)
        return result


def check_vapid(push: Push, audience: str) -> dict[str, Any]:
    """Verify the VAPID `Authorization: vapid t=<JWT>, k=<key>` (RFC 8292):
    an ES256 signature by `k`, for this push service. The JWT's claims."""
    scheme, _, params = push.headers["authorization"].partition(" ")
    assert scheme == "vapid"
    parts = dict(p.strip().split("=", 1) for p in params.split(","))
    token, key = parts["t"], parts["k"]
    public = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), unb64(key))
    header_b64, claims_b64, signature_b64 = token.split(".")
    assert json.loads(unb64(header_b64)) == {"typ": "JWT", "alg": "ES256"}
    raw = unb64(signature_b64)  # r and s, 32 bytes each (JWS), not DER
    assert len(raw) == 64
    der = encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))
    try:
        public.verify(der, f"{header_b64}.{claims_b64}".encode(), ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        pytest.fail("the VAPID signature does not verify")
    claims: dict[str, Any] = json.loads(unb64(claims_b64))
    assert claims["aud"] == audience
    assert time.time() < claims["exp"] <= time.time() + 24 * 3600
    assert claims["sub"] == settings.VAPID_SUBJECT
    claims["k"] = key
    return claims


@pytest.fixture
def service() -> Iterator[PushService]:
    service = PushService()
    yield service
    service.release.set()
    service.http.shutdown()
    service.http.server_close()


@pytest.fixture
def localhost(monkeypatch: pytest.MonkeyPatch) -> None:
    """Let subscriptions point at the test's push service on 127.0.0.1."""
    monkeypatch.setattr(settings, "PUSH_ALLOW_LOCALHOST", True)


def subscribe(client: TestClient, headers: Headers, browser: Browser) -> None:
    response = client.post("/push/subscriptions", json=browser.subscription(), headers=headers)
    assert response.status_code == 201, response.text


def mine(client: TestClient, headers: Headers, endpoint: str) -> bool:
    """Whether the user still has this subscription (DELETE says, and ends it)."""
    response = client.request(
        "DELETE", "/push/subscriptions", json={"endpoint": endpoint}, headers=headers
    )
    assert response.status_code in (204, 404), response.text
    return response.status_code == 204


# --- GET /push/key and the VAPID key -----------------------------------------------


def test_push_key_is_the_vapid_public_key(client: TestClient) -> None:
    signup(client, "alice")
    read_only = bearer(login(client, "alice", scope="messages:read"))
    response = client.get("/push/key", headers=read_only)  # any scope will do
    assert response.status_code == 200
    key = response.json()["public_key"]
    assert "=" not in key and unb64(key)[0] == 4 and len(unb64(key)) == 65
    expected = push.vapid().public_key.public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    assert unb64(key) == expected
    assert client.get("/push/key").status_code == 401


def test_vapid_key_is_made_once_private_and_kept(tmp_path: Path) -> None:
    """Generated at the first start into DATA_DIR (600), read at the next."""
    first = Settings(DATA_DIR=tmp_path)
    path = tmp_path / "vapid_private_key.pem"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert first.VAPID_PRIVATE_KEY.startswith("-----BEGIN PRIVATE KEY-----")
    assert Settings(DATA_DIR=tmp_path).VAPID_PRIVATE_KEY == first.VAPID_PRIVATE_KEY


def test_vapid_key_from_the_setting(tmp_path: Path) -> None:
    """A raw base64url key (as `web-push generate-vapid-keys` prints) works;
    anything else is refused at start, without echoing it."""
    key = ec.generate_private_key(ec.SECP256R1())
    raw = b64(key.private_numbers().private_value.to_bytes(32, "big"))
    configured = Settings(DATA_DIR=tmp_path, VAPID_PRIVATE_KEY=raw)
    assert configured.VAPID_PRIVATE_KEY == raw
    assert not (tmp_path / "vapid_private_key.pem").exists()
    other_curve = ec.generate_private_key(ec.SECP384R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    for bad in ("not-a-key", other_curve.decode()):
        with pytest.raises(ValueError, match="VAPID_PRIVATE_KEY") as refused:
            Settings(DATA_DIR=tmp_path, VAPID_PRIVATE_KEY=bad)
        assert "not-a-key" not in str(refused.value)


# --- POST and DELETE /push/subscriptions -------------------------------------------


def test_subscribe_and_unsubscribe(
    client: TestClient, service: PushService, localhost: None
) -> None:
    alice = new_user(client, "alice")
    browser = Browser(service, "alice")
    response = client.post("/push/subscriptions", json=browser.subscription(), headers=alice)
    assert response.status_code == 201
    assert set(response.json()) == {"endpoint", "created_at"}
    assert response.json()["endpoint"] == browser.endpoint
    again = client.post("/push/subscriptions", json=browser.subscription(), headers=alice)
    assert again.status_code == 200
    assert again.json() == response.json()
    assert mine(client, alice, browser.endpoint)
    assert not mine(client, alice, browser.endpoint)  # 404: gone already


def test_endpoint_moves_to_the_last_user(
    client: TestClient, service: PushService, localhost: None
) -> None:
    """One browser profile, one user: whoever subscribes it last gets its pushes."""
    alice, bob = new_user(client, "alice"), new_user(client, "bob")
    browser = Browser(service, "shared")
    subscribe(client, alice, browser)
    subscribe(client, bob, browser)
    assert not mine(client, alice, browser.endpoint)
    assert mine(client, bob, browser.endpoint)


def test_at_most_ten_subscriptions_the_oldest_goes(
    client: TestClient, service: PushService, localhost: None
) -> None:
    alice = new_user(client, "alice")
    browsers = [Browser(service, f"b{n}") for n in range(push.MAX_SUBSCRIPTIONS + 1)]
    for browser in browsers:
        subscribe(client, alice, browser)
    assert not mine(client, alice, browsers[0].endpoint)
    assert all(mine(client, alice, b.endpoint) for b in browsers[1:])


def test_delete_needs_a_body_and_a_write_token(client: TestClient) -> None:
    signup(client, "alice")
    read_only = bearer(login(client, "alice", scope="messages:read"))
    body = {"endpoint": "https://push.example.net/x"}
    response = client.request("DELETE", "/push/subscriptions", json=body, headers=read_only)
    assert response.status_code == 403
    full = bearer(login(client, "alice"))
    assert client.request("DELETE", "/push/subscriptions", headers=full).status_code == 422


@pytest.mark.parametrize(
    ("scope", "needs"), [("messages:read", "messages:write"), ("messages:write", "messages:read")]
)
def test_subscribing_needs_read_and_write(
    client: TestClient, service: PushService, localhost: None, scope: str, needs: str
) -> None:
    """Writing: it stores something. Reading: pushes carry messages, so a
    write-only token must not get them."""
    signup(client, "alice")
    headers = bearer(login(client, "alice", scope=scope))
    response = client.post(
        "/push/subscriptions", json=Browser(service, "a").subscription(), headers=headers
    )
    assert response.status_code == 403
    assert needs in response.json()["detail"]


def test_a_token_from_before_sessions_must_log_in_again(client: TestClient, engine: Engine) -> None:
    """A subscription is tied to a login; such a token has none to tie it to."""
    signup(client, "alice")
    with Session(engine) as session:
        user = session.exec(select(User).where(User.username == "alice")).one()
        old = bearer(auth.create_access_token(user))  # no `sid`
    response = client.post("/push/subscriptions", json=_with_keys(), headers=old)
    assert response.status_code == 401
    assert response.json()["detail"] == "Log in again"


def _with_keys(p256dh: str | None = None, auth: str | None = None) -> dict[str, Any]:
    browser = Browser.__new__(Browser)
    browser.private_key = ec.generate_private_key(ec.SECP256R1())
    browser.auth, browser.endpoint = os.urandom(16), "https://push.example.net/x"
    body = browser.subscription()
    if p256dh is not None:
        body["keys"]["p256dh"] = p256dh
    if auth is not None:
        body["keys"]["auth"] = auth
    return body


@pytest.mark.parametrize(
    "body",
    [
        _with_keys(p256dh=b64(b"\x04" + bytes(63))),  # 64 bytes
        _with_keys(p256dh=b64(b"\x04" + bytes(64))),  # 65 bytes, not on the curve
        _with_keys(p256dh="not base64!"),
        _with_keys(auth=b64(bytes(15))),
        _with_keys(auth=b64(bytes(17))),
        {"endpoint": "https://push.example.net/x"},  # no keys
    ],
    ids=["short-point", "off-curve", "not-base64", "auth-15", "auth-17", "no-keys"],
)
def test_bad_keys_are_refused(client: TestClient, body: dict[str, Any]) -> None:
    alice = new_user(client, "alice")
    response = client.post("/push/subscriptions", json=body, headers=alice)
    assert response.status_code == 422, response.text


@pytest.mark.parametrize(
    "endpoint",
    [
        "http://push.example.net/x",  # not https
        "https://127.0.0.1/x",
        "https://169.254.169.254/latest/meta-data",  # the cloud's metadata service
        "https://localhost/x",  # a name that resolves to a private address
        "https://10.0.0.7:8443/x",
        "https://[::1]/x",
        "https://[::ffff:192.168.0.1]/x",  # IPv4 inside IPv6
        "https://224.0.0.1/x",  # multicast
        "https://user:secret@push.example.net/x",  # userinfo
        "https://no-such-host.invalid/x",  # resolves to nothing
        "ftp://push.example.net/x",
    ],
)
def test_ssrf_endpoints_are_refused(client: TestClient, endpoint: str) -> None:
    assert not settings.PUSH_ALLOW_LOCALHOST  # the default
    alice = new_user(client, "alice")
    body = {**_with_keys(), "endpoint": endpoint}
    response = client.post("/push/subscriptions", json=body, headers=alice)
    assert response.status_code == 422, response.text
    assert response.json()["detail"].startswith("endpoint ")


def test_public_addresses_pass_the_check() -> None:
    push.check_endpoint("https://8.8.8.8/x")
    push.check_endpoint("https://[2001:4860:4860::8888]:8443/x")  # odd ports are fine


def test_allow_localhost_allows_localhost_only(localhost: None) -> None:
    for url in ("http://localhost:9/x", "https://127.0.0.1/x", "http://[::1]:9/x"):
        push.check_endpoint(url)
    for url in ("http://10.0.0.7/x", "https://169.254.169.254/x", "http://push.example.net/x"):
        with pytest.raises(push.RefusedEndpoint):
            push.check_endpoint(url)


# --- Sending -------------------------------------------------------------------------


def test_a_push_arrives_encrypted_and_signed(
    client: TestClient, service: PushService, localhost: None
) -> None:
    alice = new_user(client, "alice")
    client.patch("/users/me", json={"display_name": "Alice A."}, headers=alice)
    bob = new_user(client, "bob")
    browser = Browser(service, "bob")
    subscribe(client, bob, browser)
    direct = create_conversation(client, alice, kind="direct", members=["bob"])["id"]
    sent_at = time.perf_counter()
    message = send(client, alice, direct, "x" * 130)
    got = service.next()
    print(f"send to push received: {(got.at - sent_at) * 1000:.1f} ms")  # noqa: T201
    assert got.headers["ttl"] == str(push.TTL_SECONDS)
    assert got.headers["urgency"] == "high"  # a direct message
    claims = check_vapid(got, service.origin)
    assert claims["k"] == client.get("/push/key", headers=bob).json()["public_key"]
    assert browser.read(got) == {
        "type": "message",
        "conversation_id": direct,
        "message_id": message["id"],
        "title": "Alice A.",  # a direct message: the sender's name
        "sender": "Alice A.",
        "body": "x" * 120 + "…",
        "mentioned": False,
        "url": f"/?conversation={direct}&message={message['id']}",
    }
    settle()
    assert service.pushes() == []  # one push; none to alice, the author
    assert read_metrics(client)("messageapp_pushes_total", outcome="sent") >= 1


NOTIFIES = [
    # kind, bob's level (None: the default), mentioned, pushed
    ("direct", None, False, True),
    ("group", None, False, True),
    ("channel", None, False, False),  # a channel's default: mentions only
    ("channel", None, True, True),
    ("channel", "all", False, True),
    ("group", "mentions", False, False),
    ("group", "mentions", True, True),
    ("group", "none", True, False),
    ("direct", "none", False, False),
]


@pytest.mark.parametrize(("kind", "level", "mentioned", "pushed"), NOTIFIES)
def test_levels_decide_who_gets_a_push(
    client: TestClient,
    service: PushService,
    localhost: None,
    kind: str,
    level: str | None,
    mentioned: bool,
    pushed: bool,
) -> None:
    alice, bob = new_user(client, "alice"), new_user(client, "bob")
    browser = Browser(service, "bob")
    subscribe(client, bob, browser)
    if kind == "channel":
        conversation = general_id(client, alice)
    elif kind == "group":
        conversation = create_conversation(
            client, alice, kind="group", title="team", members=["bob"]
        )["id"]
    else:
        conversation = create_conversation(client, alice, kind="direct", members=["bob"])["id"]
    if level is not None:
        response = client.put(
            f"/conversations/{conversation}/notifications", json={"level": level}, headers=bob
        )
        assert response.status_code == 200, response.text
    send(client, alice, conversation, "hello @bob" if mentioned else "hello all")
    settle()
    pushes = service.pushes()
    assert len(pushes) == (1 if pushed else 0)
    if pushed:
        payload = browser.read(pushes[0])
        assert payload["mentioned"] == mentioned
        assert payload["title"] == {"direct": "alice", "group": "team", "channel": "#general"}[kind]
        urgent = mentioned or kind == "direct"
        assert pushes[0].headers["urgency"] == ("high" if urgent else "normal")


def test_no_push_while_a_socket_is_open(
    client: TestClient, service: PushService, localhost: None
) -> None:
    alice, bob = new_user(client, "alice"), new_user(client, "bob")
    browser = Browser(service, "bob")
    subscribe(client, bob, browser)
    direct = create_conversation(client, alice, kind="direct", members=["bob"])["id"]
    with live(client, bob) as ws:
        send(client, alice, direct, "you see this live")
        assert ws.receive_json()["type"] == "message.created"
        settle()
        assert service.pushes() == []
    send(client, alice, direct, "and this one on your phone")
    assert browser.read(service.next())["body"] == "and this one on your phone"


def test_attachment_only_message_says_so(
    client: TestClient, service: PushService, localhost: None
) -> None:
    alice, bob = new_user(client, "alice"), new_user(client, "bob")
    browser = Browser(service, "bob")
    subscribe(client, bob, browser)
    direct = create_conversation(client, alice, kind="direct", members=["bob"])["id"]
    upload = client.post(
        f"/conversations/{direct}/attachments",
        files={"file": ("notes.txt", b"some notes", "text/plain")},
        headers=alice,
    )
    assert upload.status_code == 201, upload.text
    response = client.post(
        f"/conversations/{direct}/messages",
        json={"attachment_ids": [upload.json()["id"]]},
        headers=alice,
    )
    assert response.status_code == 201, response.text
    assert browser.read(service.next())["body"] == "(attachment)"


def hold_the_workers(client: TestClient, service: PushService, alice: Headers) -> None:
    """Keep every push worker busy on a push the service holds, so the next
    message waits in the queue until `service.release` is set."""
    for n in range(push.WORKERS):
        name = f"carol{n}"
        carol = new_user(client, name)
        browser = Browser(service, name)
        service.held.add(browser.path)
        subscribe(client, carol, browser)
        direct = create_conversation(client, alice, kind="direct", members=[name])["id"]
        send(client, alice, direct, "hold on")
    for _ in range(push.WORKERS):
        assert service.next().path in service.held  # arrived, and held there


@pytest.mark.parametrize("change", ["deleted", "left", "read", "logged out"])
def test_no_push_for_what_changed_before_it_went_out(
    client: TestClient, service: PushService, localhost: None, change: str
) -> None:
    """The message deleted, its reader gone from the conversation, or having
    read it elsewhere, or the subscription's login ended, between the send
    and the push: no push."""
    alice, bob = new_user(client, "alice"), new_user(client, "bob")
    browser = Browser(service, "bob")
    subscribe(client, bob, browser)
    group = create_conversation(client, alice, kind="group", title="team", members=["bob"])["id"]
    hold_the_workers(client, service, alice)
    message = send(client, alice, group, "soon regretted")
    assert not push.pusher.idle()  # waiting in the queue
    if change == "deleted":
        assert client.delete(f"/messages/{message['id']}", headers=alice).status_code == 204
    elif change == "left":
        assert client.post(f"/conversations/{group}/leave", headers=bob).status_code == 204
    elif change == "read":
        read = {"message_id": message["id"]}
        assert client.post(f"/conversations/{group}/read", json=read, headers=bob).status_code
    else:
        assert client.post("/logout", headers=bob).status_code == 204
    service.release.set()
    settle()
    assert [p.path for p in service.pushes()] == []


def test_a_full_queue_drops_and_counts(
    engine: Engine, service: PushService, localhost: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past QUEUE_SIZE messages waiting, a message gets no push; its send is
    as quick and successful as ever."""
    monkeypatch.setattr(push, "QUEUE_SIZE", 1)
    with TestClient(app) as client:  # the queue is made at start, with the size above
        alice, bob = new_user(client, "alice"), new_user(client, "bob")
        subscribe(client, bob, Browser(service, "bob"))
        group = create_conversation(client, alice, kind="group", title="t", members=["bob"])
        hold_the_workers(client, service, alice)
        dropped = read_metrics(client)("messageapp_pushes_total", outcome="dropped")
        send(client, alice, group["id"], "waits in the queue")
        send(client, alice, group["id"], "finds it full")
        assert read_metrics(client)("messageapp_pushes_total", outcome="dropped") == dropped + 1
        service.release.set()
        settle()
        assert [p.path for p in service.pushes()] == ["/push/bob"]


def test_an_ended_session_gets_no_pushes(
    client: TestClient, service: PushService, localhost: None
) -> None:
    """Each subscription belongs to the login it came from."""
    alice, bob_phone = new_user(client, "alice"), new_user(client, "bob")
    bob_laptop = bearer(login(client, "bob"))
    phone, laptop = Browser(service, "phone"), Browser(service, "laptop")
    subscribe(client, bob_phone, phone)
    subscribe(client, bob_laptop, laptop)
    assert client.post("/logout", headers=bob_phone).status_code == 204
    direct = create_conversation(client, alice, kind="direct", members=["bob"])["id"]
    send(client, alice, direct, "where are you?")
    settle()
    assert [p.path for p in service.pushes()] == [laptop.path]
    # A password change ends every other login: the laptop's too.
    phone_again = bearer(login(client, "bob"))
    body = {"current_password": PASSWORD, "new_password": "another long passphrase"}
    assert client.put("/users/me/password", json=body, headers=phone_again).status_code == 204
    send(client, alice, direct, "hello?")
    settle()
    assert service.pushes() == []


@pytest.mark.parametrize("code", [404, 410])
def test_a_dead_endpoint_is_removed(
    client: TestClient, service: PushService, localhost: None, code: int
) -> None:
    alice, bob = new_user(client, "alice"), new_user(client, "bob")
    browser = Browser(service, "bob")
    service.answers[browser.path] = (code, {})
    subscribe(client, bob, browser)
    direct = create_conversation(client, alice, kind="direct", members=["bob"])["id"]
    send(client, alice, direct, "anyone?")
    assert service.next().path == browser.path
    settle()
    assert not mine(client, bob, browser.endpoint)  # removed by the push
    send(client, alice, direct, "anyone at all?")
    settle()
    assert service.pushes() == []
    assert read_metrics(client)("messageapp_pushes_total", outcome="gone") >= 1


def test_other_failures_keep_the_subscription_and_no_redirect_is_followed(
    client: TestClient, service: PushService, localhost: None
) -> None:
    alice, bob = new_user(client, "alice"), new_user(client, "bob")
    browser = Browser(service, "bob")
    service.answers[browser.path] = (307, {"Location": service.origin + "/elsewhere"})
    subscribe(client, bob, browser)
    direct = create_conversation(client, alice, kind="direct", members=["bob"])["id"]
    send(client, alice, direct, "follow me")
    settle()
    assert [p.path for p in service.pushes()] == [browser.path]  # not /elsewhere
    service.answers[browser.path] = (500, {})
    send(client, alice, direct, "again")
    settle()
    assert len(service.pushes()) == 1
    assert mine(client, bob, browser.endpoint)  # kept: it may work next time
    assert read_metrics(client)("messageapp_pushes_total", outcome="failed") >= 2


def test_the_endpoint_is_checked_again_before_sending(
    client: TestClient, service: PushService, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Allowed when subscribing, refused when sending: no POST."""
    monkeypatch.setattr(settings, "PUSH_ALLOW_LOCALHOST", True)
    alice, bob = new_user(client, "alice"), new_user(client, "bob")
    subscribe(client, bob, Browser(service, "bob"))
    monkeypatch.setattr(settings, "PUSH_ALLOW_LOCALHOST", False)
    direct = create_conversation(client, alice, kind="direct", members=["bob"])["id"]
    send(client, alice, direct, "to a host no longer allowed")
    settle()
    assert service.pushes() == []
    assert read_metrics(client)("messageapp_pushes_total", outcome="refused") >= 1


class Listener:
    """A TCP port on 127.0.0.1 that accepts connections and, for each,
    sends `answer` a byte every `pace` seconds (or nothing)."""

    def __init__(self, answer: bytes = b"", pace: float = 0.3) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.connections = 0
        self.answer, self.pace = answer, pace
        self.stop = threading.Event()
        threading.Thread(target=self.accept, daemon=True).start()

    def accept(self) -> None:
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return  # closed
            self.connections += 1
            threading.Thread(target=self.drip, args=(conn,), daemon=True).start()

    def drip(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(self.pace)
            for byte in self.answer:
                try:
                    conn.recv(65536)  # whatever the client sends; answered regardless
                except TimeoutError:
                    pass
                if self.stop.is_set():
                    return
                try:
                    conn.sendall(bytes([byte]))
                except OSError:
                    return  # the client hung up

    def close(self) -> None:
        self.stop.set()
        self.server.close()


def test_a_name_that_rebinds_after_the_check_is_never_connected_to(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """DNS rebinding: the name resolves to a public address whenever the
    check asks, and to 127.0.0.1 for anyone else (an attacker's DNS server
    winning every race). The subscription is taken; the push connects nowhere."""
    inside = Listener()
    name = "push.rebinding.test"
    real = socket.getaddrinfo
    asked_by_others: list[str] = []

    def rebinding(host: str, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host != name:
            return real(host, port, *args, **kwargs)
        frame, checking = sys._getframe(1), False
        while frame is not None and not checking:
            checking = frame.f_code is push.check_endpoint.__code__
            frame = frame.f_back  # type: ignore[assignment]
        if not checking:
            asked_by_others.append(host)
        return real("93.184.215.14" if checking else "127.0.0.1", port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", rebinding)
    try:
        alice, bob = new_user(client, "alice"), new_user(client, "bob")
        body = {**_with_keys(), "endpoint": f"https://{name}:{inside.port}/push/bob"}
        response = client.post("/push/subscriptions", json=body, headers=bob)
        assert response.status_code == 201, response.text  # public, when checked
        direct = create_conversation(client, alice, kind="direct", members=["bob"])["id"]
        send(client, alice, direct, "to a name that changed its mind")
        settle()
        assert asked_by_others == [name]  # looked up to connect: 127.0.0.1, refused
        assert inside.connections == 0
        assert read_metrics(client)("messageapp_pushes_total", outcome="refused") >= 1
    finally:
        inside.close()


def test_a_push_service_answering_a_byte_at_a_time_is_cut_off(
    client: TestClient, localhost: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PUSH_TIMEOUT_SECONDS is one deadline for the whole POST: a service
    that keeps sending its answer a byte at a time, each well within the
    deadline, is cut off at it, not waited on for as long as it goes on."""
    monkeypatch.setattr(settings, "PUSH_TIMEOUT_SECONDS", 1)
    slow = Listener(answer=b"HTTP/1.1 201 Created\r\n" + b"X" * 200, pace=0.2)  # 40 s
    try:
        alice, bob = new_user(client, "alice"), new_user(client, "bob")
        body = {**_with_keys(), "endpoint": f"http://127.0.0.1:{slow.port}/push/bob"}
        assert client.post("/push/subscriptions", json=body, headers=bob).status_code == 201
        direct = create_conversation(client, alice, kind="direct", members=["bob"])["id"]
        send(client, alice, direct, "take your time")
        settle(timeout=10)  # the 40 s answer was cut off at 1 s
        assert slow.connections == 1
        assert read_metrics(client)("messageapp_pushes_total", outcome="failed") >= 1
    finally:
        slow.close()


# --- Presence across processes -------------------------------------------------------


@needs_redis
def test_a_socket_on_one_replica_stops_pushes_from_another(
    tmp_path: Path, service: PushService
) -> None:
    """Presence lives in Redis: bob's socket is on one process, alice's
    message arrives at the other, and bob gets no push."""
    env = {
        "REDIS_URL": TEST_REDIS_URL,
        "REDIS_CHANNEL": unique_channel(),
        "PUSH_ALLOW_LOCALHOST": "true",
    }
    one, other = Server(tmp_path / "data", **env), Server(tmp_path / "data", **env)
    try:
        one.start()
        other.start()
        alice, bob, carol = other.user("alice"), other.user("bob"), other.user("carol")
        with httpx.Client(base_url=other.url) as http:
            bob_browser, carol_browser = Browser(service, "bob"), Browser(service, "carol")
            for headers, browser in ((bob, bob_browser), (carol, carol_browser)):
                response = http.post(
                    "/push/subscriptions", json=browser.subscription(), headers=headers
                )
                assert response.status_code == 201, response.text
            body = {"kind": "group", "title": "team", "members": ["bob", "carol"]}
            group = http.post("/conversations", json=body, headers=alice).json()["id"]
            with open_socket(one, bob):
                sent = http.post(
                    f"/conversations/{group}/messages", json={"content": "hi"}, headers=alice
                )
                assert sent.status_code == 201
                assert service.next().path == carol_browser.path  # carol is away
                time.sleep(1)  # bob's would have come with carol's
                assert service.pushes() == []
            time.sleep(0.5)  # the socket's close reaches the server
            sent = http.post(
                f"/conversations/{group}/messages", json={"content": "bye"}, headers=alice
            )
            assert sent.status_code == 201
            paths = {service.next().path, service.next().path}
            assert paths == {bob_browser.path, carol_browser.path}
    finally:
        one.kill()
        other.kill()
