"""Who may see which conversation and message: the dependencies that load
the one named in the path, or answer 404.

Something the caller may not even know exists is 404, not 403: a stranger
cannot learn that a private conversation, or a message in one, exists. A
route takes the access for reading or for writing, and the scope it needs
comes with it (see auth.py).
"""

from dataclasses import dataclass
from typing import Annotated

from fastapi import HTTPException, Path, Security, status

import crud
from auth import AnyScopeUser, forbidden
from crud import ConversationAccess
from db import ReadSessionDep
from models import MAX_ID, Message, Scope

NOT_VISIBLE = {404: "No such conversation, or you may not see it"}
NOT_JOINED = forbidden("You have not joined this channel")
MESSAGE_NOT_VISIBLE = {404: "No such message, or you may not see it"}


def get_conversation_access(
    session: ReadSessionDep,
    user: AnyScopeUser,
    conversation_id: Annotated[int, Path(ge=1, le=MAX_ID, description="The conversation's id")],
) -> ConversationAccess:
    """The conversation in the path, if the caller may see it: a member sees
    it, and anyone signed in sees a channel. Anything else is 404."""
    access = crud.get_conversation_access(session, conversation_id, user)
    if access is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail="Conversation not found")
    return access


# The conversation, for a route that reads it or one that changes it. The
# scope reaches `AnyScopeUser` above, the same scope as the route's own user.
ReadableConversation = Annotated[
    ConversationAccess, Security(get_conversation_access, scopes=[Scope.read])
]
WritableConversation = Annotated[
    ConversationAccess, Security(get_conversation_access, scopes=[Scope.write])
]


@dataclass
class VisibleMessage:
    """A message the caller may see, and their access to its conversation."""

    message: Message
    access: ConversationAccess


def get_visible_message(
    session: ReadSessionDep,
    user: AnyScopeUser,
    message_id: Annotated[int, Path(ge=1, le=MAX_ID, description="The message's id")],
) -> VisibleMessage:
    """The message in the path, if the caller may see its conversation (else 404)."""
    message = crud.get_message(session, message_id)
    if message is not None:
        access = crud.get_conversation_access(session, message.conversation_id, user)
        if access is not None:
            return VisibleMessage(message, access)
    raise HTTPException(status.HTTP_404_NOT_FOUND, detail="Message not found")


ReadableMessage = Annotated[VisibleMessage, Security(get_visible_message, scopes=[Scope.read])]
WritableMessage = Annotated[VisibleMessage, Security(get_visible_message, scopes=[Scope.write])]
