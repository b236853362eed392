"""Login, tokens, logout, revocation and the failed-login limit."""

import base64
import json
import os
import sys
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from jose import jwt
from sqlalchemy import Engine, text
from sqlmodel import Session, select

import auth
from config import settings
from models import LoginFailure, User
from tests.helpers import PASSWORD, WRONG_CREDENTIALS, bearer, login, new_user, signup


def _claims(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def _sign(claims: dict[str, object], key: str = settings.SECRET_KEY, alg: str = "HS256") -> str:
    return jwt.encode(claims, key, algorithm=alg)


def _good_claims(user_id: int) -> dict[str, Any]:
    now = int(time.time())
    return {"sub": str(user_id), "iat": now, "exp": now + 600, "jti": "abc", "ver": 0}


def test_login(client: TestClient) -> None:
    user = signup(client, "alice")
    response = client.post("/token", data={"username": "alice", "password": PASSWORD})
    assert response.status_code == 200
    body = response.json()
    assert body["token_type"] == "bearer"
    assert body["expires_in"] == settings.ACCESS_TOKEN_EXPIRE_MINUTES * 60
    claims = _claims(body["access_token"])
    # Only identifiers and times: a JWT is readable by anyone who holds it.
    assert set(claims) == {"sub", "exp", "iat", "jti", "ver", "scope", "sid"}
    assert body["scope"] == claims["scope"] == "messages:read messages:write"
    assert claims["sub"] == str(user["id"])
    assert claims["exp"] - claims["iat"] == settings.ACCESS_TOKEN_EXPIRE_MINUTES * 60
    assert PASSWORD not in json.dumps(claims)


def test_login_ignores_username_case(client: TestClient) -> None:
    signup(client, "Alice")
    assert login(client, "ALICE")


def test_login_tokens_are_distinct(client: TestClient) -> None:
    signup(client, "alice")
    assert _claims(login(client, "alice"))["jti"] != _claims(login(client, "alice"))["jti"]


def test_login_wrong_password_and_unknown_user_look_alike(client: TestClient) -> None:
    signup(client, "alice")
    wrong = client.post("/token", data={"username": "alice", "password": "wrong password"})
    unknown = client.post("/token", data={"username": "nobody", "password": "wrong password"})
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json() == unknown.json() == WRONG_CREDENTIALS
    assert wrong.headers["www-authenticate"] == unknown.headers["www-authenticate"] == "Bearer"


def test_login_unknown_user_takes_as_long(client: TestClient) -> None:
    """An unknown user is checked against a dummy hash, so timing reveals nothing.

    What is compared is the CPU time this process (server and test client)
    spends on each login, the least of 7 tries, the two kinds taken in turn:
    other work on a shared machine adds wall-clock time to either at random,
    but not CPU time to this process. Measured: 37 ms and 37 ms; without the
    dummy hash, 36 ms and 9 ms (the hash is 27 ms of it).
    """
    signup(client, "alice")
    least = {"alice": float("inf"), "nobody": float("inf")}
    for _ in range(7):
        for username in least:
            start = time.process_time()
            client.post("/token", data={"username": username, "password": "wrong password"})
            least[username] = min(least[username], time.process_time() - start)
    ratio = least["alice"] / least["nobody"]
    assert 0.5 < ratio < 2


def test_login_missing_fields(client: TestClient) -> None:
    assert client.post("/token", data={"username": "alice"}).status_code == 422
    assert client.post("/token", data={"password": PASSWORD}).status_code == 422


def test_password_is_not_truncated_at_72_bytes(client: TestClient) -> None:
    # bcrypt would ignore everything after byte 72 and accept the second one.
    signup(client, "alice", password="x" * 72 + "first")
    assert login(client, "alice", password="x" * 72 + "first")
    response = client.post("/token", data={"username": "alice", "password": "x" * 72 + "other"})
    assert response.status_code == 401


def test_password_is_not_truncated_multibyte(client: TestClient) -> None:
    signup(client, "alice", password="é" * 40 + "a")  # 81 bytes in UTF-8
    response = client.post("/token", data={"username": "alice", "password": "é" * 40 + "b"})
    assert response.status_code == 401


def test_password_unicode_forms_are_equivalent(client: TestClient) -> None:
    signup(client, "alice", password="caf\u00e9 au lait")  # é as one code point
    assert login(client, "alice", password="cafe\u0301 au lait")  # e + combining accent


def test_token_works(client: TestClient) -> None:
    headers = new_user(client, "alice")
    assert client.get("/users/me", headers=headers).status_code == 200


def _assert_rejected(client: TestClient, token: str) -> None:
    response = client.get("/users/me", headers=bearer(token))
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"


def test_token_expired(client: TestClient) -> None:
    user = signup(client, "alice")
    claims = _good_claims(user["id"]) | {"exp": int(time.time()) - 1}
    _assert_rejected(client, _sign(claims))


def test_token_expired_by_create_access_token(client: TestClient) -> None:
    saved = signup(client, "alice")
    user = User(id=saved["id"], username="alice", hashed_password="-")
    expired = auth.create_access_token(user, expires_delta=timedelta(seconds=-5))
    _assert_rejected(client, expired)


def test_token_without_exp(client: TestClient) -> None:
    user = signup(client, "alice")
    claims = _good_claims(user["id"])
    del claims["exp"]
    _assert_rejected(client, _sign(claims))  # good signature, but no expiry


@pytest.mark.parametrize("claim", ["sub", "iat", "jti", "ver"])
def test_token_missing_claim(client: TestClient, claim: str) -> None:
    user = signup(client, "alice")
    claims = _good_claims(user["id"])
    del claims[claim]
    _assert_rejected(client, _sign(claims))


@pytest.mark.parametrize(
    "bad", [{"exp": None}, {"exp": []}, {"exp": {}}, {"iat": None}, {"ver": "x"}, {"sub": 5}]
)
def test_token_claim_of_wrong_type(client: TestClient, bad: dict[str, Any]) -> None:
    user = signup(client, "alice")
    _assert_rejected(client, _sign(_good_claims(user["id"]) | bad))


def test_token_wrong_key(client: TestClient) -> None:
    user = signup(client, "alice")
    _assert_rejected(client, _sign(_good_claims(user["id"]), key="k" * 48))


def test_token_alg_none(client: TestClient) -> None:
    user = signup(client, "alice")

    def b64(data: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    token = b64({"alg": "none", "typ": "JWT"}) + "." + b64(_good_claims(user["id"])) + "."
    _assert_rejected(client, token)


@pytest.mark.parametrize("alg", ["HS384", "HS512"])
def test_token_other_algorithm(client: TestClient, alg: str) -> None:
    """Only HS256 is accepted (`algorithms` is pinned on decode), whatever the
    token's header says: python-jose's ECDSA and JWE code is never reached."""
    user = signup(client, "alice")
    _assert_rejected(client, _sign(_good_claims(user["id"]), alg=alg))


def test_token_signed_with_an_asymmetric_algorithm(client: TestClient) -> None:
    """A well-made ES256 token (python-jose would verify it with `ecdsa`, the
    package with the unfixed advisory): refused before any ECDSA code runs."""
    import ecdsa  # type: ignore[import-untyped]

    user = signup(client, "alice")
    key = ecdsa.SigningKey.generate(curve=ecdsa.NIST256p).to_pem().decode()
    _assert_rejected(client, _sign(_good_claims(user["id"]), key=key, alg="ES256"))


def test_token_as_jwe_is_refused(client: TestClient) -> None:
    """Five parts (an encrypted token): never decrypted, refused."""
    user = signup(client, "alice")
    header = base64.urlsafe_b64encode(b'{"alg":"dir","enc":"A256GCM"}').rstrip(b"=").decode()
    token = ".".join([header, "", "aaaa", _sign(_good_claims(user["id"])).split(".")[1], "bbbb"])
    _assert_rejected(client, token)


def test_token_answers_are_never_cached(client: TestClient) -> None:
    """RFC 6749 §5.1: Cache-Control: no-store and Pragma: no-cache, on a token
    and on a refusal."""
    signup(client, "alice")
    answers = [
        client.post("/token", data={"username": "alice", "password": PASSWORD}),
        client.post("/token", data={"username": "alice", "password": "wrong!"}),
        client.post("/token", data={"username": "alice", "password": PASSWORD, "scope": "x"}),
    ]
    _fail_logins(client, "alice", settings.LOGIN_MAX_FAILURES)
    answers.append(client.post("/token", data={"username": "alice", "password": PASSWORD}))
    assert [a.status_code for a in answers] == [200, 401, 400, 429]
    for answer in answers:
        assert answer.headers["cache-control"] == "no-store"
        assert answer.headers["pragma"] == "no-cache"


@pytest.mark.parametrize(
    "form",
    [
        {"username": "alice\x00", "password": PASSWORD},
        {"username": "alice", "password": PASSWORD + "\x00"},
        {"username": "alice", "password": PASSWORD, "scope": "messages:read\x00"},
        {"username": "alice", "password": PASSWORD, "client_id": "a\x00"},
    ],
)
def test_login_form_with_nul_is_422(client: TestClient, form: dict[str, str]) -> None:
    """A NUL reached PostgreSQL as a 500 (psycopg's DataError)."""
    signup(client, "alice")
    assert client.post("/token", data=form).status_code == 422


def test_token_tampered(client: TestClient) -> None:
    alice = signup(client, "alice")
    bob = signup(client, "bob")
    header, _, signature = login(client, "alice").split(".")
    forged = _good_claims(bob["id"])
    payload = base64.urlsafe_b64encode(json.dumps(forged).encode()).rstrip(b"=").decode()
    _assert_rejected(client, f"{header}.{payload}.{signature}")
    assert alice["id"] != bob["id"]


@pytest.mark.parametrize("token", [b"garbage", b"a.b.c", b"", "é".encode(), b"\xff\xfe"])
def test_token_garbage(client: TestClient, token: bytes) -> None:
    response = client.get("/users/me", headers={b"Authorization": b"Bearer " + token})
    assert response.status_code == 401


def test_token_wrong_scheme(client: TestClient) -> None:
    signup(client, "alice")
    token = login(client, "alice")
    assert client.get("/users/me", headers={"Authorization": f"Basic {token}"}).status_code == 401
    assert client.get("/users/me", headers={"Authorization": token}).status_code == 401


def test_token_of_unknown_user(client: TestClient) -> None:
    signup(client, "alice")
    _assert_rejected(client, _sign(_good_claims(999)))


def test_token_with_old_version(client: TestClient) -> None:
    user = signup(client, "alice")
    _assert_rejected(client, _sign(_good_claims(user["id"]) | {"ver": 1}))


def test_logout(client: TestClient) -> None:
    signup(client, "alice")
    token, other_token = login(client, "alice"), login(client, "alice")
    response = client.post("/logout", headers=bearer(token))
    assert response.status_code == 204
    assert response.content == b""
    _assert_rejected(client, token)
    # Only that token: another session of the same user goes on.
    assert client.get("/users/me", headers=bearer(other_token)).status_code == 200


def test_logout_twice(client: TestClient) -> None:
    headers = new_user(client, "alice")
    assert client.post("/logout", headers=headers).status_code == 204
    assert client.post("/logout", headers=headers).status_code == 401


def test_logout_unauthenticated(client: TestClient) -> None:
    assert client.post("/logout").status_code == 401


def test_logout_drops_expired_denylist_rows(client: TestClient, engine: Engine) -> None:
    """Tokens from before sessions are logged out by their jti."""
    user = signup(client, "alice")

    def old_token() -> dict[str, str]:
        return bearer(_sign({**_good_claims(user["id"]), "jti": uuid.uuid4().hex}))

    client.post("/logout", headers=old_token())
    past = datetime.now(UTC) - timedelta(hours=2)
    with engine.begin() as connection:
        connection.execute(text("UPDATE revokedtoken SET expires_at = :t"), {"t": past})
    client.post("/logout", headers=old_token())
    with engine.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM revokedtoken")).scalar() == 1


def _fail_logins(client: TestClient, username: str, times: int) -> None:
    for _ in range(times):
        response = client.post("/token", data={"username": username, "password": "wrong!"})
        assert response.status_code == 401


def test_login_limit(client: TestClient) -> None:
    signup(client, "alice")
    _fail_logins(client, "alice", settings.LOGIN_MAX_FAILURES)
    # Now even the right password is refused, with a hint when to come back.
    response = client.post("/token", data={"username": "ALICE", "password": PASSWORD})
    assert response.status_code == 429
    retry_after = int(response.headers["retry-after"])
    assert 0 < retry_after <= settings.LOGIN_FAILURE_WINDOW_SECONDS
    assert response.json() == {"detail": "Too many failed logins; try again later"}


def test_login_limit_counts_within_window(client: TestClient) -> None:
    signup(client, "alice")
    _fail_logins(client, "alice", settings.LOGIN_MAX_FAILURES - 1)
    assert login(client, "alice")  # nine failures: still allowed


def test_login_limit_other_usernames_unaffected(client: TestClient) -> None:
    signup(client, "alice")
    signup(client, "bob")
    _fail_logins(client, "alice", settings.LOGIN_MAX_FAILURES)
    assert login(client, "bob")


def test_login_limit_unknown_username(client: TestClient) -> None:
    # Unknown names are limited alike, or the 429 would reveal which names exist.
    _fail_logins(client, "nobody", settings.LOGIN_MAX_FAILURES)
    response = client.post("/token", data={"username": "nobody", "password": "wrong!"})
    assert response.status_code == 429


def test_login_limit_ends_when_window_passes(client: TestClient, engine: Engine) -> None:
    signup(client, "alice")
    _fail_logins(client, "alice", settings.LOGIN_MAX_FAILURES)
    window = timedelta(seconds=settings.LOGIN_FAILURE_WINDOW_SECONDS + 1)
    with Session(engine) as session:  # let the clock run: age every failure
        for failure in session.exec(select(LoginFailure)):
            failure.failed_at -= window
        session.commit()
    assert login(client, "alice")


def test_login_failures_with_huge_usernames_stay_small(client: TestClient, engine: Engine) -> None:
    response = client.post("/token", data={"username": "x" * 60_000, "password": "wrong!"})
    assert response.status_code == 401
    with engine.connect() as connection:
        stored = connection.execute(text("SELECT username_key FROM loginfailure")).scalar_one()
    assert len(stored) <= 64


def test_login_success_resets_failures(client: TestClient) -> None:
    signup(client, "alice")
    _fail_logins(client, "alice", settings.LOGIN_MAX_FAILURES - 1)
    login(client, "alice")
    _fail_logins(client, "alice", settings.LOGIN_MAX_FAILURES - 1)
    assert login(client, "alice")


@pytest.mark.skipif(sys.platform != "linux", reason="per-thread nice values are Linux's")
def test_password_hashing_runs_at_a_lower_cpu_priority() -> None:
    """So that a login flood leaves the CPU to other requests (docs/performance.md)."""
    thread_id = auth.hashing_pool.submit(threading.get_native_id).result()
    mine = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    assert os.getpriority(os.PRIO_PROCESS, thread_id) == mine + auth.HASH_NICENESS
