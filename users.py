"""Routes for accounts: sign up, your profile, your password, the directory."""

import logging
from typing import Annotated

from fastapi import APIRouter, Body, HTTPException, Query, status

import crud
import db
from auth import (
    AUTH_ERRORS,
    ClientIP,
    HashingSlot,
    Reader,
    TokenPayloadDep,
    Writer,
    check_password_guesses,
    hash_password,
    record_password_guess,
    too_many,
    unauthorized,
    verify_password,
)
from config import settings
from db import ReadSessionDep, SessionDep
from hub import Events
from models import (
    ATTEMPT_SIGNUP,
    NoNul,
    PasswordChange,
    User,
    UserCreate,
    UserPublic,
    UserUpdate,
    error_responses,
    utcnow,
)

logger = logging.getLogger("messageapp.users")

router = APIRouter(prefix="/users", tags=["users"])


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    summary="Sign up",
    responses=error_responses(
        {
            409: "Username taken (ignoring case)",
            429: "Too many sign-ups from your address; see Retry-After",
        }
    ),
)
def create_user(
    _: HashingSlot,
    ip: ClientIP,
    user_in: Annotated[
        UserCreate,
        Body(
            openapi_examples={
                "alice": {
                    "summary": "An account with a display name",
                    "value": {
                        "username": "alice",
                        "password": "correct horse battery staple",
                        "display_name": "Alice",
                    },
                }
            }
        ),
    ],
) -> UserPublic:
    """Create an account. It joins the `general` channel at once.

    `username`: 3–32 letters, digits, `_`, `.` or `-`, unique ignoring case.
    `password`: 8–128 characters of any kind (not only spaces).
    Then log in with **POST /token** (or the Authorize button). One address
    may sign up 20 times an hour.
    """
    # Every attempt counts, taken or not: each costs a deliberately slow hash.
    # Checked and counted in one short write, so that attempts at the same
    # moment cannot all slip under the limit.
    now, window = utcnow(), settings.SIGNUP_WINDOW_SECONDS
    limit = settings.SIGNUP_MAX_PER_IP
    with db.write_session() as session:
        retry_after = crud.attempt_retry_after(session, ATTEMPT_SIGNUP, ip, now, limit, window)
        if retry_after is None:
            crud.record_attempt(session, ATTEMPT_SIGNUP, ip, now, window)
    if retry_after is not None:
        logger.warning("Sign-up blocked for %s: too many", ip)
        raise too_many(
            "signup_address", "Too many sign-ups from your address; try again later", retry_after
        )
    # Hash between two writes, so that no lock is held while hashing.
    hashed_password = hash_password(user_in.password)
    with db.write_session() as session:
        user = crud.create_user(session, user_in, hashed_password)
    if user is None:
        raise HTTPException(status.HTTP_409_CONFLICT, detail="Username already taken")
    logger.info("New user %r", user.username)
    return UserPublic.model_validate(user)


@router.get("/me", summary="Your profile", responses=error_responses(AUTH_ERRORS))
def read_user_me(user: Reader) -> UserPublic:
    """The account the bearer token belongs to."""
    return UserPublic.model_validate(user)


@router.patch("/me", summary="Edit your profile", responses=error_responses(AUTH_ERRORS))
def update_user_me(
    session: SessionDep,
    user: Writer,
    user_in: Annotated[
        UserUpdate,
        Body(
            openapi_examples={
                "set": {"summary": "Set it", "value": {"display_name": "Alice Liddell"}},
                "clear": {"summary": "Clear it", "value": {"display_name": None}},
            }
        ),
    ],
) -> UserPublic:
    """Set your display name (1–64 characters after trimming), or clear it with `null`."""
    user = crud.update_user(session, user, user_in.model_dump(exclude_unset=True))
    return UserPublic.model_validate(user)


@router.put(
    "/me/password",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Change your password",
    responses=error_responses(
        {
            **AUTH_ERRORS,
            400: "Wrong current password",
            429: "Too many wrong passwords for your username or from your address; see Retry-After",
        }
    ),
)
def change_password(
    _: HashingSlot,
    session: ReadSessionDep,
    user: Writer,
    payload: TokenPayloadDep,
    ip: ClientIP,
    events: Events,
    body: Annotated[
        PasswordChange,
        Body(
            openapi_examples={
                "change": {
                    "summary": "A new passphrase",
                    "value": {
                        "current_password": "correct horse battery staple",
                        "new_password": "a different and longer passphrase",
                    },
                }
            }
        ),
    ],
) -> None:
    """Change your password. Every access token issued before, this one
    included, stops working, and every other session of yours ends (other
    devices log in again). This session goes on: refresh its tokens with its
    refresh token (POST /token, `grant_type=refresh_token`).

    A wrong `current_password` counts as a failed login for your username:
    after 10 within 5 minutes, this answers 429 until the window has passed."""
    # Someone holding a stolen token must not guess the password at full speed.
    now = utcnow()
    check_password_guesses(session, user.username, ip, now)
    # The hashing slot comes first in the signature, so the request waits for
    # it before its first query. The session only reads (no write lock is held
    # while hashing); the change is written in a short session afterwards.
    session.commit()
    right = verify_password(body.current_password, user.hashed_password)
    record_password_guess(user.username, ip, now, right=right)
    if not right:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, detail="Wrong current password")
    hashed_password = hash_password(body.new_password)
    with db.write_session() as writer:
        if not crud.set_password(writer, user, hashed_password):
            raise unauthorized()  # another change won the race and revoked this token
        crud.end_sessions(writer, user, keep=payload.sid)
    events.check_tokens(user)  # close the sockets opened with the old tokens now


@router.get("", summary="Find users", responses=error_responses(AUTH_ERRORS))
def read_users(
    session: SessionDep,
    _: Reader,
    q: Annotated[str, Query(max_length=32, description="Username prefix, any case"), NoNul] = "",
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> list[UserPublic]:
    """Users whose username starts with `q` (ignoring case), in username order.
    Deactivated users are left out: nobody can start a conversation with them."""
    users = crud.search_users(session, q, limit, active_only=True)
    return [UserPublic.model_validate(u) for u in users]


@router.get(
    "/{username}",
    summary="Look up a user",
    responses=error_responses({**AUTH_ERRORS, 404: "No such user"}),
)
def read_user(session: SessionDep, _: Reader, username: Annotated[str, NoNul]) -> UserPublic:
    """The user with this username (any case)."""
    user: User | None = crud.get_user_by_username(session, username)
    if user is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail="User not found")
    return UserPublic.model_validate(user)
