"""Password hashing, JWTs, the current-user dependency, and the login routes."""

import logging
import unicodedata
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Annotated
from uuid import uuid4

from fastapi import APIRouter, Depends, HTTPException, status
from fastapi.security import OAuth2PasswordBearer, OAuth2PasswordRequestForm
from jose import JWTError, jwt
from passlib.context import CryptContext
from sqlmodel import Session

import crud
from config import settings
from db import SessionDep
from hub import Events
from models import Token, TokenPayload, User, error_responses, utcnow

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


def hash_password(password: str) -> str:
    return pwd_context.hash(_normalize(password))


def verify_password(password: str, hashed_password: str) -> bool:
    return pwd_context.verify(_normalize(password), hashed_password)


def hashing_slot() -> Iterator[None]:
    yield


# Routes that hash take a slot first. At most HASH_CONCURRENCY hashes run at
# once per process; further requests wait for a slot without holding a thread,
# so a login flood neither exhausts memory nor starves other requests.
HashingSlot = Annotated[
    None,
    Depends(hashing_slot, max_concurrency=settings.HASH_CONCURRENCY, scope="function"),
]


def create_access_token(user: User, expires_delta: timedelta | None = None) -> str:
    if expires_delta is None:
        expires_delta = timedelta(minutes=settings.ACCESS_TOKEN_EXPIRE_MINUTES)
    now = datetime.now(UTC)
    claims = TokenPayload(
        sub=str(user.id),
        iat=int(now.timestamp()),
        exp=int((now + expires_delta).timestamp()),
        jti=uuid4().hex,
        ver=user.token_version,
    )
    return jwt.encode(claims.model_dump(), settings.SECRET_KEY, algorithm=ALGORITHM)


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


oauth2_scheme = OAuth2PasswordBearer(tokenUrl="token")
TokenDep = Annotated[str, Depends(oauth2_scheme)]


def unauthorized(detail: str = "Could not validate credentials") -> HTTPException:
    return HTTPException(
        status_code=status.HTTP_401_UNAUTHORIZED,
        detail=detail,
        headers={"WWW-Authenticate": "Bearer"},
    )


def payload_for_token(session: Session, token: str) -> TokenPayload | None:
    """The token's claims, if it is well signed, unexpired and not logged out."""
    payload = decode_access_token(token)
    if payload is None or crud.is_token_revoked(session, payload.jti):
        return None
    return payload


def get_token_payload(session: SessionDep, token: TokenDep) -> TokenPayload:
    payload = payload_for_token(session, token)
    if payload is None:
        raise unauthorized()
    return payload


TokenPayloadDep = Annotated[TokenPayload, Depends(get_token_payload)]


def user_for_token(session: Session, payload: TokenPayload) -> User | None:
    """The token's user, unless a password change since has revoked the token."""
    user = session.get(User, int(payload.sub)) if payload.sub.isdigit() else None
    if user is None or payload.ver != user.token_version:
        return None
    return user


def get_current_user(session: SessionDep, payload: TokenPayloadDep) -> User:
    user = user_for_token(session, payload)
    if user is None:
        raise unauthorized()
    return user


def authenticate(session: Session, token: str) -> tuple[User, TokenPayload] | None:
    """The same checks as `CurrentUser`, for a token that arrived outside the
    Authorization header (the WebSocket's first frame)."""
    payload = payload_for_token(session, token)
    user = None if payload is None else user_for_token(session, payload)
    return None if user is None or payload is None else (user, payload)


CurrentUser = Annotated[User, Depends(get_current_user)]
LoginForm = Annotated[OAuth2PasswordRequestForm, Depends()]

router = APIRouter(tags=["auth"])


@router.post(
    "/token",
    summary="Log in",
    responses=error_responses(
        {
            401: "Wrong username or password",
            429: "Too many failed logins for this username; see Retry-After",
        }
    ),
)
def login(_: HashingSlot, session: SessionDep, form: LoginForm) -> Token:
    """Exchange a username (any case) and password for a bearer token.

    This is the OAuth2 password flow: the body is a form, not JSON, and the
    **Authorize** button of this page uses it. Send the token back as
    `Authorization: Bearer <access_token>`. After 10 failed logins for one
    username within 5 minutes, this answers 429 until the window has passed.
    """
    # Failures are counted per lower-cased name. The cut keeps each row small
    # when someone sends 64 KiB "usernames" (no real one is over 32 characters).
    username_key = form.username.lower()[:64]
    now = utcnow()
    retry_after = crud.login_retry_after(session, username_key, now)
    if retry_after is not None:
        logger.warning("Login blocked for %r: too many failures", username_key)
        raise HTTPException(
            status_code=status.HTTP_429_TOO_MANY_REQUESTS,
            detail="Too many failed logins; try again later",
            headers={"Retry-After": str(retry_after)},
        )
    user = crud.get_user_by_username(session, form.username)
    # End the transaction before the deliberately slow hash: a write request
    # holds SQLite's write lock while its transaction is open.
    session.commit()
    hashed = user.hashed_password if user is not None else DUMMY_HASH
    if not verify_password(form.password, hashed) or user is None:
        crud.record_login_failure(session, username_key, now)
        logger.info("Failed login for %r", username_key)
        raise unauthorized("Incorrect username or password")
    crud.clear_login_failures(session, username_key)
    return Token(
        access_token=create_access_token(user),
        expires_in=settings.ACCESS_TOKEN_EXPIRE_MINUTES * 60,
    )


@router.post(
    "/logout",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Log out",
    responses=error_responses({401: "Missing, invalid, expired or revoked token"}),
)
def logout(
    session: SessionDep, payload: TokenPayloadDep, user: CurrentUser, events: Events
) -> None:
    """Revoke the token this request carries; other tokens of yours keep working.
    A WebSocket opened with this token is closed."""
    crud.revoke_token(session, payload.jti, datetime.fromtimestamp(payload.exp, UTC))
    events.check_tokens(user)
