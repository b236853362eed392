"""Routes for sessions: logging out (logging in is POST /token, in auth.py).

Here rather than in auth.py because ending a session closes its sockets,
through the hub, and the hub's own socket code depends on auth.py: imports
flow one way.
"""

from datetime import UTC, datetime

from fastapi import APIRouter, status

import crud
from auth import UNAUTHORIZED, AnyScopeUser, TokenPayloadDep
from db import SessionDep
from hub import Events
from models import error_responses

router = APIRouter(tags=["auth"])


@router.post(
    "/logout",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Log out",
    responses=error_responses({401: UNAUTHORIZED}),
)
def logout(
    session: SessionDep, payload: TokenPayloadDep, user: AnyScopeUser, events: Events
) -> None:
    """Revoke the token this request carries; other tokens of yours keep working.
    A WebSocket opened with this token is closed. Any token may log itself
    out, whatever its scopes."""
    crud.revoke_token(session, payload.jti, datetime.fromtimestamp(payload.exp, UTC))
    events.check_tokens(user)
