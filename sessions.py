"""Routes for sessions: logging in (POST /token), staying logged in, logging
out, and the list of your sessions to end.

A login starts a session: one browser or device. Its access tokens live
ACCESS_TOKEN_EXPIRE_MINUTES and carry the session's id; its refresh token is
exchanged at POST /token for a new pair, and works once (rotation, RFC 9700
§2.2.2). A refresh token presented a second time means a copy is in other
hands, the client's or a thief's: the whole session ends. Sessions live in
the database, so every worker and replica honours an ended one at once.

Here rather than in auth.py because ending a session closes its sockets,
through the hub, and the hub's own socket code depends on auth.py: imports
flow one way.
"""

import logging
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Form, HTTPException, Path, Request, Response, status
from sqlmodel import Session

import crud
import db
import metrics
from auth import (
    AUTH_ERRORS,
    DUMMY_HASH,
    NO_STORE,
    ROLE_SCOPES,
    UNAUTHORIZED,
    AnyScopeUser,
    ClientIP,
    HashingSlot,
    Reader,
    TokenError,
    TokenPayloadDep,
    Writer,
    check_password_guesses,
    create_access_token,
    guess_key,
    record_password_guess,
    refused_scopes,
    scopes_to_grant,
    verify_password,
    wrong_credentials,
)
from config import settings
from db import ReadSessionDep, SessionDep
from hub import Events
from models import (
    MAX_ID,
    AuthSession,
    LoginForm,
    Scope,
    SessionPublic,
    Token,
    TokenErrorDetail,
    User,
    error_responses,
    utcnow,
)

logger = logging.getLogger("messageapp.sessions")

router = APIRouter(tags=["auth"])

# Read from a form body, as OAuth2 wants, which FastAPI parses with
# python-multipart: without it, the @router.post below fails at import.
LoginFormDep = Annotated[LoginForm, Form()]


def user_agent(request: Request) -> str:
    """What the client says it is, to tell sessions apart in GET /sessions."""
    return request.headers.get("user-agent", "")[:256]


UserAgent = Annotated[str, Depends(user_agent)]


def invalid_grant(description: str) -> TokenError:
    """RFC 6749 §5.2: a refresh token that is bad, expired, or used already."""
    return TokenError(status.HTTP_400_BAD_REQUEST, "invalid_grant", description)


@router.post(
    "/token",
    summary="Log in, or refresh your tokens",
    responses={
        **error_responses(
            {
                400: "invalid_scope: a scope you may not have; invalid_grant: a refresh token "
                "that is unknown, expired or used already; unsupported_grant_type",
                401: "Wrong username or password, or the account is deactivated",
            },
            model=TokenErrorDetail,
        ),
        **error_responses(
            {429: "Too many failed logins for this username or from your address; see Retry-After"}
        ),
    },
)
def login(
    _: HashingSlot,
    session: ReadSessionDep,
    form: LoginFormDep,
    ip: ClientIP,
    agent: UserAgent,
    events: Events,
    response: Response,
) -> Token:
    """Exchange a username (any case) and password for tokens; or, with
    `grant_type=refresh_token`, a refresh token for new ones.

    This is the OAuth2 password flow: the body is a form, not JSON, and the
    **Authorize** button of this page uses it. Send the access token back as
    `Authorization: Bearer <access_token>`; it expires after `expires_in`
    seconds. Then post `grant_type=refresh_token&refresh_token=...` here for
    a new pair: each refresh token works once, and one used twice ends the
    session it belongs to. After 10 failed logins for one username within 5
    minutes, or 100 from one address, logging in answers 429 until the window
    has passed.

    `scope` (space-separated) asks for less than everything: `messages:read`
    gives a read-only token. Without it, the token gets every scope your role
    allows (`admin` only for admins), or refreshing, what the session was
    given; `scope` in the answer says what you got.
    """
    response.headers.update(NO_STORE)
    if form.grant_type == "refresh_token":
        return refresh(form, ip, agent, events)
    if form.grant_type != "password":
        raise TokenError(
            status.HTTP_400_BAD_REQUEST,
            "unsupported_grant_type",
            "grant_type is password or refresh_token",
        )
    now = utcnow()
    check_password_guesses(session, form.username, ip, now)
    user = crud.get_user_by_username(session, form.username)
    # End the read before the deliberately slow hash, so that no snapshot
    # is held while it runs.
    session.commit()
    hashed = user.hashed_password if user is not None else DUMMY_HASH
    password_ok = verify_password(form.password, hashed) and user is not None
    record_password_guess(form.username, ip, now, right=password_ok)
    if not password_ok or user is None:
        logger.info("Failed login for %r", guess_key(form.username))
        metrics.LOGIN_FAILURES.inc()
        raise wrong_credentials("Incorrect username or password")
    # Only now, with the password right, may the answer depend on the account.
    if not user.active:
        raise wrong_credentials("Account deactivated")
    refused = refused_scopes(user, form.scopes)
    if refused is not None:
        raise TokenError(status.HTTP_400_BAD_REQUEST, "invalid_scope", refused)
    scopes = scopes_to_grant(user, form.scopes)
    with db.write_session() as writer:
        auth_session, refresh_token = crud.start_session(writer, user, " ".join(scopes), ip, agent)
    return issue_tokens(user, scopes, auth_session, refresh_token)


def refresh(form: LoginForm, ip: str, agent: str, events: Events) -> Token:
    """The refresh grant (RFC 6749 §6): a new pair for a refresh token. All
    of it in one short write: no hash is involved, and racing refreshes of
    one token take turns."""
    with db.write_session() as writer:
        found = crud.find_refresh_token(writer, form.refresh_token)
        if found is None:
            raise invalid_grant("Unknown refresh token; log in again")
        token, auth_session, user = found
        if auth_session.ended_at is not None or not user.active:
            raise invalid_grant("This session has ended; log in again")
        if crud.session_expires_at(auth_session) <= utcnow():
            end_session(writer, user, auth_session, events)
            raise invalid_grant("This session has expired; log in again")
        granted = [s for s in auth_session.scope.split() if s in ROLE_SCOPES[user.role]]
        if not set(form.scopes) <= set(granted):  # a refresh may narrow, never widen
            missing = " ".join(s for s in form.scopes if s not in granted)
            raise TokenError(
                status.HTTP_400_BAD_REQUEST,
                "invalid_scope",
                f"This session may not have: {missing}",
            )
        scopes = [Scope(s) for s in granted if not form.scopes or s in form.scopes]
        new_token = None
        if token.used_at is None:
            new_token = crud.rotate_refresh_token(writer, token, auth_session, ip, agent)
        if new_token is None:
            # Exchanged before: the client and someone else both hold it (or
            # two tabs raced). Nobody can tell which one is the thief.
            logger.warning("Refresh token reused: session %s ended", auth_session.id)
            end_session(writer, user, auth_session, events)
            raise invalid_grant("This refresh token was used already; the session has ended")
        return issue_tokens(user, scopes, auth_session, new_token)


def issue_tokens(
    user: User, scopes: list[Scope], auth_session: AuthSession, refresh_token: str
) -> Token:
    refresh_expires_in = crud.session_expires_at(auth_session) - utcnow()
    return Token(
        access_token=create_access_token(user, scopes, session_id=auth_session.id),
        expires_in=int(settings.ACCESS_TOKEN_EXPIRE_MINUTES * 60),
        scope=" ".join(scopes),
        refresh_token=refresh_token,
        refresh_expires_in=int(refresh_expires_in.total_seconds()),
    )


def end_session(writer: Session, user: User, auth_session: AuthSession, events: Events) -> None:
    crud.end_sessions(writer, user, only=auth_session.id)
    events.check_tokens(user)  # its sockets close at once


@router.post(
    "/logout",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Log out",
    responses=error_responses({401: UNAUTHORIZED}),
)
def logout(
    session: SessionDep, payload: TokenPayloadDep, user: AnyScopeUser, events: Events
) -> None:
    """End the session this request's token belongs to: its tokens, refresh
    token included, stop working, and its WebSockets close. Your other
    sessions go on. Any token may log itself out, whatever its scopes."""
    if payload.sid is not None:
        crud.end_sessions(session, user, only=payload.sid)
    else:  # a token from before sessions: revoke that one token
        crud.revoke_token(session, payload.jti, datetime.fromtimestamp(payload.exp, UTC))
    events.check_tokens(user)


@router.get(
    "/sessions",
    summary="Your sessions",
    tags=["sessions"],
    responses=error_responses(AUTH_ERRORS),
)
def read_sessions(
    session: ReadSessionDep, user: Reader, payload: TokenPayloadDep
) -> list[SessionPublic]:
    """The browsers and devices logged in as you: when each logged in, when it
    last refreshed its tokens, and from where. `current` marks this one."""
    return [
        SessionPublic.model_validate(s, update={"current": s.id == payload.sid})
        for s in crud.live_sessions(session, user)
    ]


# `:int`: /sessions/end-others is no session id, so DELETE there is a 405
# (the path has only POST), not a 422 from this route.
@router.delete(
    "/sessions/{session_id:int}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="End a session",
    tags=["sessions"],
    responses=error_responses({**AUTH_ERRORS, 404: "No such session of yours"}),
)
def delete_session(
    session: SessionDep,
    user: Writer,
    session_id: Annotated[int, Path(ge=1, le=MAX_ID, description="The session's id")],
    events: Events,
) -> None:
    """Log a browser or device out: its tokens stop working and its sockets
    close at once. Ending the current session is logging out."""
    if crud.end_sessions(session, user, only=session_id) == 0:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail="Session not found")
    events.check_tokens(user)


@router.post(
    "/sessions/end-others",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Sign out everywhere else",
    tags=["sessions"],
    responses=error_responses(AUTH_ERRORS),
)
def end_other_sessions(
    session: SessionDep, user: Writer, payload: TokenPayloadDep, events: Events
) -> None:
    """End every session of yours but this one (a lost phone, a shared
    computer left logged in)."""
    crud.end_sessions(session, user, keep=payload.sid)
    events.check_tokens(user)
