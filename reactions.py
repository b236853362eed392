"""Routes for reactions: an emoji on a message, put there or taken off."""

from typing import Annotated, Literal

from fastapi import APIRouter, HTTPException, Path, status

import crud
from access import MESSAGE_NOT_VISIBLE, NOT_JOINED, VisibleMessage, WritableMessage
from auth import AUTH_ERRORS, Writer
from db import SessionDep
from hub import Events
from models import Emoji, ReactionEvent, User, UserPublic, error_responses

router = APIRouter(tags=["reactions"], responses=error_responses(AUTH_ERRORS))

EmojiPath = Annotated[
    Emoji,
    Path(
        description="One emoji, e.g. 👍 (URL-encoded: `%F0%9F%91%8D`); skin tones, "
        "flags and joined sequences (👩‍💻) count as one",
        examples=["👍"],
    ),
]
BAD_EMOJI = {422: "Not one emoji"}


def _member(visible: VisibleMessage) -> None:
    # Reading a channel is open to anyone signed in; reacting, like sending, is for members.
    if visible.access.membership is None:
        raise HTTPException(status.HTTP_403_FORBIDDEN, detail="Join the channel first")


def _tell(
    session: SessionDep,
    events: Events,
    visible: VisibleMessage,
    user: User,
    emoji: str,
    kind: Literal["reaction.added", "reaction.removed"],
) -> None:
    message = visible.message
    assert message.id is not None
    event = ReactionEvent(
        type=kind,
        conversation_id=message.conversation_id,
        message_id=message.id,
        emoji=emoji,
        user=UserPublic.model_validate(user),
        count=crud.reaction_count(session, message, emoji),
    )
    events.to_conversation(message.conversation_id, event)


@router.put(
    "/messages/{message_id}/reactions/{emoji}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="React to a message",
    responses=error_responses(
        {**MESSAGE_NOT_VISIBLE, **NOT_JOINED, 409: "The message was deleted", **BAD_EMOJI}
    ),
)
def add_reaction(
    session: SessionDep, user: Writer, visible: WritableMessage, emoji: EmojiPath, events: Events
) -> None:
    """Put an emoji on a message of a conversation you are in. Putting it
    there again changes nothing. The members get `reaction.added`."""
    _member(visible)
    if visible.message.deleted:
        raise HTTPException(status.HTTP_409_CONFLICT, detail="Message was deleted")
    if crud.add_reaction(session, visible.message, user, emoji):
        _tell(session, events, visible, user, emoji, "reaction.added")


@router.delete(
    "/messages/{message_id}/reactions/{emoji}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Take back a reaction",
    responses=error_responses({**MESSAGE_NOT_VISIBLE, **NOT_JOINED, **BAD_EMOJI}),
)
def remove_reaction(
    session: SessionDep, user: Writer, visible: WritableMessage, emoji: EmojiPath, events: Events
) -> None:
    """Take your emoji off a message. Taking off one that is not there
    changes nothing. The members get `reaction.removed`."""
    _member(visible)
    if crud.remove_reaction(session, visible.message, user, emoji):
        _tell(session, events, visible, user, emoji, "reaction.removed")
