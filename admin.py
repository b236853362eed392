"""Routes for admins: the user list, locking accounts, removing any message.

Every route here needs a token with the `admin` scope, which only admins can
get (see auth.ROLE_SCOPES); admins are made on the command line (manage.py). The router checks
it once for all of them; a route that needs the admin's own record takes
`Admin` as well, which FastAPI answers from the same cached check.
"""

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Security, status

import crud
from auth import AUTH_ERRORS, Admin, forbidden, get_current_user
from db import SessionDep
from hub import Events
from messages import delete_message_for_all
from models import MAX_ID, NoNul, Scope, User, UserAdminPublic, error_responses

router = APIRouter(
    prefix="/admin",
    tags=["admin"],
    dependencies=[Security(get_current_user, scopes=[Scope.admin])],
    responses=error_responses(AUTH_ERRORS),
)
NO_SUCH_USER = {404: "No such user"}


def get_target_user(
    session: SessionDep,
    username: Annotated[str, Path(description="Their username, any case"), NoNul],
) -> User:
    """The user named in the path (404 if there is none)."""
    user = crud.get_user_by_username(session, username)
    if user is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail="User not found")
    return user


TargetUser = Annotated[User, Depends(get_target_user)]


@router.get("/users", summary="List users, with their status")
def read_users_admin(
    session: SessionDep,
    q: Annotated[str, Query(max_length=32, description="Username prefix, any case"), NoNul] = "",
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Annotated[int, Query(ge=0, le=MAX_ID)] = 0,
) -> list[UserAdminPublic]:
    """Users whose username starts with `q` (ignoring case), in username
    order, each with `role` and `active`."""
    users = crud.search_users(session, q, limit, offset, active_only=False)
    return [UserAdminPublic.model_validate(user) for user in users]


@router.post(
    "/users/{username}/deactivate",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Deactivate a user",
    responses=error_responses({**NO_SUCH_USER, **forbidden("Your own account")}),
)
def deactivate_user(session: SessionDep, admin: Admin, user: TargetUser, events: Events) -> None:
    """Lock an account at once: the user can no longer log in, every session
    and token of theirs ends, and their open WebSockets are closed (4401).
    Their messages stay. Deactivating them again changes nothing."""
    if user.id == admin.id:
        # The only admin would lock themselves out, with nobody to undo it.
        raise HTTPException(status.HTTP_403_FORBIDDEN, detail="You cannot deactivate yourself")
    if user.active:
        crud.deactivate_user(session, user)
        crud.end_sessions(session, user)
        events.check_tokens(user)


@router.post(
    "/users/{username}/activate",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Activate a user",
    responses=error_responses(NO_SUCH_USER),
)
def activate_user(session: SessionDep, user: TargetUser) -> None:
    """Let a deactivated user log in again. The tokens they had before stay
    rejected: they log in afresh."""
    if not user.active:
        crud.activate_user(session, user)


@router.delete(
    "/messages/{message_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Delete any message",
    responses=error_responses({404: "No such message"}),
)
def delete_message_admin(
    session: SessionDep,
    message_id: Annotated[int, Path(ge=1, le=MAX_ID, description="The message's id")],
    events: Events,
) -> None:
    """Delete a message in any conversation, as if its author had: the text
    and the attachments are erased, a tombstone keeps its place, and the members get a
    `message.deleted` event. Deleting a tombstone again changes nothing."""
    message = crud.get_message(session, message_id)
    if message is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail="Message not found")
    delete_message_for_all(session, message, events)
