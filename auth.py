"""Password hashing, JWTs, scopes, the current-user dependency, and the limit on
password guesses. The routes that log in and out are in sessions.py."""

import logging
import os
import threading
import unicodedata
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from datetime import UTC, datetime, timedelta
from typing import Annotated
from uuid import uuid4

from fastapi import Depends, HTTPException, Request, Security, status
from fastapi.security import OAuth2PasswordBearer, SecurityScopes
from jose import JWTError, jwt
from passlib.context import CryptContext
from sqlmodel import Session

import crud
import db
import logs
import metrics
from config import settings
from db import ReadSessionDep
from models import (
    ATTEMPT_LOGIN_FAILURE,
    Role,
    Scope,
    TokenPayload,
    User,
)

logger = logging.getLogger("messageapp.auth")

# argon2id with OWASP's minimum parameters: 19 MiB of memory, 2 passes, 1 lane.
# Unlike bcrypt it reads the whole password, however long.
pwd_context = CryptContext(
    schemes=["argon2"],
    argon2__memory_cost=19 * 1024,
    argon2__time_cost=2,
    argon2__parallelism=1,
)
# Checked when the username does not exist, so that a failed login takes as
# long for an unknown user as for a wrong password.
DUMMY_HASH = pwd_context.hash("not anybody's password")

ALGORITHM = "HS256"


def _normalize(password: str) -> str:
    # The same password typed on two keyboards can arrive as different code
    # points ("é" as one or two); NFKC makes them one (NIST SP 800-63B).
    return unicodedata.normalize("NFKC", password)


# How much less CPU a hashing thread gets than the rest of the process when
# both want it: nice 10 weighs about a tenth of nice 0 on Linux.
HASH_NICENESS = 10


def _lower_priority() -> None:
    # Linux gives each thread a nice value of its own; elsewhere, skip it.
    # Relative to the process's own: a server started under `nice` stays below it.
    with suppress(OSError, AttributeError):
        thread = threading.get_native_id()
        niceness = os.getpriority(os.PRIO_PROCESS, thread) + HASH_NICENESS
        os.setpriority(os.PRIO_PROCESS, thread, min(niceness, 19))


# Hashes run in threads of their own at a lower CPU priority: when the CPU is
# busy, a login waits a little longer, and other requests do not wait for it.
hashing_pool = ThreadPoolExecutor(
    max_workers=settings.HASH_CONCURRENCY,
    thread_name_prefix="argon2",
    initializer=_lower_priority,
)


def hash_password(password: str) -> str:
    return hashing_pool.submit(pwd_context.hash, _normalize(password)).result()


def verify_password(password: str, hashed_password: str) -> bool:
    return hashing_pool.submit(pwd_context.verify, _normalize(password), hashed_password).result()


def hashing_slot() -> Iterator[None]:
    yield


# Routes that hash take a slot first. At most HASH_CONCURRENCY hashes run at
# once per process; further requests wait for a slot without holding a thread,
# so a login flood neither exhausts memory nor starves other requests.
HashingSlot = Annotated[
    None,
    Depends(hashing_slot, max_concurrency=settings.HASH_CONCURRENCY, scope="function"),
]


# --- Scopes ------------------------------------------------------------------

# Shown in Swagger UI's Authorize dialog, one checkbox each.
SCOPE_DESCRIPTIONS: dict[str, str] = {
    Scope.read: "Read users, conversations and messages, search, and the live socket",
    Scope.write: "Everything that changes them: send, edit, delete, join, your profile",
    Scope.admin: "The /admin routes (admins only)",
}
# What each role may ask for; a login without `scope` gets all of it.
ROLE_SCOPES = {
    Role.member: (Scope.read, Scope.write),
    Role.admin: (Scope.read, Scope.write, Scope.admin),
}
# Tokens issued before scopes existed carry no `scope` claim. They keep what
# they could do when they were issued, reading and writing, and never `admin`.
UNSCOPED_TOKEN_SCOPES = (Scope.read, Scope.write)


def granted_scopes(user: User, payload: TokenPayload) -> set[str]:
    """What the token may do now: the scopes it was given, within those the
    user's role still allows (an admin made a member loses `admin` at once,
    whatever their tokens say)."""
    given = UNSCOPED_TOKEN_SCOPES if payload.scope is None else payload.scope.split()
    return set(given) & set(ROLE_SCOPES[user.role])


def refused_scopes(user: User, requested: list[str]) -> str | None:
    """Why a login may not have `requested`, briefly; None if it may."""
    if not set(requested) <= set(Scope):
        return f"No such scope; ask for {Scope.read}, {Scope.write} or {Scope.admin}"
    refused = [scope for scope in requested if scope not in ROLE_SCOPES[user.role]]
    return f"This account may not have: {' '.join(refused)}" if refused else None


def scopes_to_grant(user: User, requested: list[str]) -> list[Scope]:
    """The scopes a login asking for `requested` gets (nothing asked: all the
    role allows), once `refused_scopes` has found nothing wrong."""
    allowed = ROLE_SCOPES[user.role]
    return [scope for scope in allowed if not requested or scope in requested]


# --- Tokens ------------------------------------------------------------------


def create_access_token(
    user: User,
    scopes: list[Scope] | None = None,
    expires_delta: timedelta | None = None,
    session_id: int | None = None,
) -> str:
    if scopes is None:
        scopes = list(ROLE_SCOPES[user.role])
    if expires_delta is None:
        expires_delta = timedelta(minutes=settings.ACCESS_TOKEN_EXPIRE_MINUTES)
    now = datetime.now(UTC)
    claims = TokenPayload(
        sub=str(user.id),
        iat=int(now.timestamp()),
        exp=int((now + expires_delta).timestamp()),
        jti=uuid4().hex,
        ver=user.token_version,
        scope=" ".join(scopes),
        sid=session_id,
    )
    return jwt.encode(
        claims.model_dump(exclude_none=True), settings.SECRET_KEY, algorithm=ALGORITHM
    )


def decode_access_token(token: str) -> TokenPayload | None:
    """The token's claims if its signature, algorithm and expiry are good."""
    try:
        claims = jwt.decode(
            token,
            settings.SECRET_KEY,
            algorithms=[ALGORITHM],  # never trust the token's own "alg" header
            options={f"require_{claim}": True for claim in ("exp", "iat", "sub", "jti")},
        )
        return TokenPayload.model_validate(claims)
    # ValueError covers a payload that fails validation; TypeError, a signed
    # token with a claim of the wrong type (jose chokes on "exp": null).
    except (JWTError, TypeError, ValueError):
        return None


# Only takes the token out of `Authorization: Bearer ...` (401 without one);
# get_token_payload checks it. tokenUrl tells Swagger UI where to log in.
oauth2_scheme = OAuth2PasswordBearer(tokenUrl="token", scopes=SCOPE_DESCRIPTIONS)
TokenDep = Annotated[str, Depends(oauth2_scheme)]


def unauthorized(detail: str = "Could not validate credentials") -> HTTPException:
    return HTTPException(
        status_code=status.HTTP_401_UNAUTHORIZED,
        detail=detail,
        headers={"WWW-Authenticate": "Bearer"},
    )


# RFC 6749 §5.1: a token response, or a refused one, is never cached.
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


class TokenError(HTTPException):
    """A refused login. errors.py answers it with RFC 6749's `error` and
    `error_description` beside `detail`: Swagger UI's Authorize dialog and
    OAuth2 clients show those, and know nothing of `detail`."""

    def __init__(
        self,
        status_code: int,
        error: str,
        description: str,
        detail: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        headers = {**NO_STORE, **(headers or {})}
        super().__init__(status_code, detail=detail or error, headers=headers)
        self.error = error
        self.description = description


def wrong_credentials(detail: str) -> TokenError:
    """401, as the contract says, with OAuth2's `invalid_grant`."""
    return TokenError(
        status.HTTP_401_UNAUTHORIZED,
        "invalid_grant",
        description=detail,
        detail=detail,
        headers={"WWW-Authenticate": "Bearer"},
    )


async def get_token_payload(token: TokenDep) -> TokenPayload:
    """The token's claims, if it is well signed and unexpired.

    `async def`: checking a signature is quick work for the CPU with nothing
    to wait for, so it runs on the event loop. A `def` dependency would cost a
    hop to a worker thread and back, which takes longer than the check.
    """
    payload = decode_access_token(token)
    if payload is None:
        raise unauthorized()
    return payload


TokenPayloadDep = Annotated[TokenPayload, Depends(get_token_payload)]


def user_for_token(session: Session, payload: TokenPayload) -> User | None:
    """The token's user, unless the token's session has ended (logged out, or
    ended from another device), or a password change or a deactivation since
    has revoked it. One query checks all of it."""
    if not payload.sub.isdigit():
        return None
    if payload.sid is not None:
        user = crud.get_user_in_session(session, int(payload.sub), payload.sid)
    else:  # a token from before sessions existed, or logged out by its jti
        user = crud.get_user_unless_revoked(session, int(payload.sub), payload.jti)
    if user is None or not user.active or payload.ver != user.token_version:
        return None
    return user


def get_current_user(
    security_scopes: SecurityScopes, session: ReadSessionDep, payload: TokenPayloadDep
) -> User:
    """The token's user, if the token holds every scope the route declares.

    FastAPI fills `security_scopes` with the scopes of the `Security(...)`
    that led here: a route taking `user: Writer` needs `messages:write`.
    """
    user = user_for_token(session, payload)
    if user is None:
        raise unauthorized()
    logs.set_user(user.id)  # on this request's log lines from now on
    if not set(security_scopes.scopes) <= granted_scopes(user, payload):
        needed = security_scopes.scope_str
        raise HTTPException(
            status_code=status.HTTP_403_FORBIDDEN,
            detail=f"Not enough permissions: this needs the {needed} scope",
            headers={"WWW-Authenticate": f'Bearer scope="{needed}"'},
        )
    return user


def authenticate(session: Session, token: str) -> tuple[User, TokenPayload] | None:
    """The same checks as `get_current_user`, for a token that arrived outside the
    Authorization header (the WebSocket's first frame)."""
    payload = decode_access_token(token)
    user = None if payload is None else user_for_token(session, payload)
    return None if user is None or payload is None else (user, payload)


# A route declares the scope it needs by how it takes the user: `Reader`
# needs messages:read, `Writer` messages:write, `Admin` admin; Swagger UI and
# /openapi.json show it. FastAPI caches the user per set of scopes, so when a
# route and its dependencies ask with the same scope, the user is loaded once
# per request.
#
# `AnyScopeUser` declares no scope: a route taking it works with any token.
# Only POST /logout does that on purpose. Dependencies take it, so that they
# get the scope of the Security(...) that leads to them. A new route takes
# Reader, Writer or Admin (tests/test_scopes.py fails until it does).
AnyScopeUser = Annotated[User, Depends(get_current_user)]
Reader = Annotated[User, Security(get_current_user, scopes=[Scope.read])]
Writer = Annotated[User, Security(get_current_user, scopes=[Scope.write])]
Admin = Annotated[User, Security(get_current_user, scopes=[Scope.admin])]

UNAUTHORIZED = "Missing, invalid, expired or revoked token"
LACKS_SCOPE = "the token lacks the scope this route needs (named in WWW-Authenticate)"
# The errors of every route that takes a token, for a router's `responses=`.
AUTH_ERRORS = {401: UNAUTHORIZED, 403: f"Forbidden: {LACKS_SCOPE}"}


def forbidden(reason: str) -> dict[int, str]:
    """A route's own 403 for `responses=`, which replaces the router's: so it
    names the scope 403 too, which every scoped route can answer."""
    return {403: f"{reason}; or {LACKS_SCOPE}"}


def client_ip(request: Request) -> str:
    """The client's address; behind a trusted proxy, uvicorn's --proxy-headers
    has already put the address from X-Forwarded-For here."""
    return request.client.host if request.client else "unknown"


ClientIP = Annotated[str, Depends(client_ip)]


def too_many(
    limit: metrics.Limit, detail: str, retry_after: int, headers: dict[str, str] | None = None
) -> HTTPException:
    """429 with Retry-After, counted in metrics under the limit's name."""
    metrics.LIMITED.labels(limit).inc()
    return HTTPException(
        status_code=status.HTTP_429_TOO_MANY_REQUESTS,
        detail=detail,
        headers={"Retry-After": str(retry_after), **(headers or {})},
    )


# --- Password guesses: POST /token and PUT /users/me/password ---------------


def check_password_guesses(session: Session, username: str, ip: str, now: datetime) -> None:
    """429 once a username, or a client address, has had too many wrong
    passwords lately: for a login, or for the current password of a change."""
    username_key = guess_key(username)
    retry_after = crud.login_retry_after(session, username_key, now)
    if retry_after is not None:
        logger.warning("Password blocked for %r: too many failures", username_key)
        raise too_many(
            "login_username", "Too many failed logins; try again later", retry_after, NO_STORE
        )
    # Per address too, so trying one password on many usernames is stopped.
    window = settings.LOGIN_FAILURE_WINDOW_SECONDS
    limit = settings.LOGIN_MAX_FAILURES_PER_IP
    retry_after = crud.attempt_retry_after(session, ATTEMPT_LOGIN_FAILURE, ip, now, limit, window)
    if retry_after is not None:
        logger.warning("Password blocked for %s: too many failures", ip)
        raise too_many(
            "login_address",
            "Too many failed logins from your address; try again later",
            retry_after,
            NO_STORE,
        )


def record_password_guess(username: str, ip: str, now: datetime, *, right: bool) -> None:
    """Count a wrong password against the username and the address; a right
    one clears the username's count (never the address's: one good account
    must not reset it). Written in a short session of its own, after the hash."""
    username_key = guess_key(username)
    with db.write_session() as writer:
        if right:
            crud.clear_login_failures(writer, username_key)
        else:
            crud.record_login_failure(writer, username_key, now)
            window = settings.LOGIN_FAILURE_WINDOW_SECONDS
            crud.record_attempt(writer, ATTEMPT_LOGIN_FAILURE, ip, now, window)


def guess_key(username: str) -> str:
    # Counted per lower-cased name. The cut keeps each row small when someone
    # sends 64 KiB "usernames" (no real one is over 32 characters).
    return username.lower()[:64]
