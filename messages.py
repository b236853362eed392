"""Routes for messages: send, read history, edit, delete, search."""

from typing import Annotated

from fastapi import APIRouter, Body, HTTPException, Query, Response, status
from sqlmodel import Session

import attachments
import crud
import pages
import push
from access import (
    MESSAGE_NOT_VISIBLE,
    NOT_JOINED,
    NOT_VISIBLE,
    ReadableConversation,
    ReadableMessage,
    WritableConversation,
    WritableMessage,
)
from auth import AUTH_ERRORS, Reader, Writer, forbidden, too_many
from db import SessionDep
from hub import Events, Outbox
from models import (
    MAX_ID,
    Message,
    MessageCreate,
    MessageEvent,
    MessagePublic,
    MessageUpdate,
    NoNul,
    error_responses,
    utcnow,
)
from pages import JSONRows

router = APIRouter(
    tags=["messages"],
    responses=error_responses(AUTH_ERRORS),
)
NOT_YOURS = forbidden("Not your message")


def for_everyone(public: MessagePublic) -> MessagePublic:
    """The message as an event carries it to every member alike: `me` is
    nobody's (the reaction.* events say who reacted)."""
    reactions = [r.model_copy(update={"me": False}) for r in public.reactions]
    return public.model_copy(update={"reactions": reactions})


def delete_message_for_all(session: Session, message: Message, events: Outbox) -> None:
    """Leave a tombstone and tell the members; a deleted message stays as it
    is. Shared by the author's delete and the admin's (admin.py)."""
    if not message.deleted:
        files = crud.delete_message(session, message)
        # After the commit: a crash in between leaves files without rows,
        # which attachments.sweep removes, never rows without files.
        attachments.remove_files(files)
        assert message.id is not None
        tombstone = pages.message_public(session, message.id, None)
        events.to_conversation(
            message.conversation_id, MessageEvent(type="message.deleted", message=tombstone)
        )


# A plain `def`, like every route that queries the database: FastAPI runs it
# in a worker thread, so its blocking queries never stall the event loop.
@router.post(
    "/conversations/{conversation_id}/messages",
    status_code=status.HTTP_201_CREATED,
    summary="Send a message",
    responses={
        200: {
            "model": MessagePublic,
            "description": "You already sent this client_id here: the earlier message",
        },
        **error_responses(
            {
                **NOT_VISIBLE,
                **NOT_JOINED,
                422: "A bad body, attachment_ids not all your unsent uploads here, "
                "or reply_to not a message of this conversation",
                429: "Over SEND_MAX_PER_MINUTE (default 120) messages in a minute; see Retry-After",
            }
        ),
    },
)
def create_message(
    session: SessionDep,
    user: Writer,
    access: WritableConversation,
    events: Events,
    message_in: Annotated[
        MessageCreate,
        Body(
            openapi_examples={
                "plain": {"summary": "Just text", "value": {"content": "Hello, world!"}},
                "retry_safe": {
                    "summary": "With a client_id, safe to retry",
                    "value": {"content": "Hello, world!", "client_id": "3f2b9c1e-0001"},
                },
                "attachments": {
                    "summary": "With files uploaded to POST /conversations/{id}/attachments",
                    "value": {"content": "The screenshots", "attachment_ids": [1, 2]},
                },
                "reply": {
                    "summary": "A reply to message 1",
                    "value": {"content": "Agreed!", "reply_to": 1},
                },
            }
        ),
    ],
    response: Response,
) -> MessagePublic:
    """Send a message (1–4000 characters) to a conversation you are in. One
    account may send 120 messages a minute (over all conversations).

    To share files, upload each first (POST /conversations/{id}/attachments)
    and name up to 10 of them in `attachment_ids`; `content` is optional then.

    Give a `client_id` (any string of up to 64 characters, unique per message
    you send) to make retries safe: sending the same `client_id` again returns
    the first message with status 200 instead of posting a duplicate.

    Give `reply_to` (the id of a message in this conversation, not deleted)
    to answer it: the message then carries a `reply_to` summary of it.
    """
    if access.membership is None:
        raise HTTPException(status.HTTP_403_FORBIDDEN, detail="Join the channel first")
    if message_in.reply_to is not None:
        parent = crud.get_message(session, message_in.reply_to)
        if parent is None or parent.conversation_id != access.conversation.id:
            raise HTTPException(
                status.HTTP_422_UNPROCESSABLE_CONTENT,
                detail="reply_to is not a message of this conversation",
            )
        if parent.deleted:
            raise HTTPException(
                status.HTTP_422_UNPROCESSABLE_CONTENT, detail="Cannot reply to a deleted message"
            )
    # A retry of a message already sent is answered, whatever the limit.
    client_id = message_in.client_id
    if client_id is None or not crud.get_message_by_client_id(
        session, access.conversation, user, client_id
    ):
        retry_after = crud.send_retry_after(session, user, utcnow())
        if retry_after is not None:
            raise too_many("send", "You are sending too fast; try again later", retry_after)
    stored = crud.create_message(session, access.conversation, user, message_in)
    if stored is None:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            detail="attachment_ids: each must be an upload of yours to this conversation, "
            "not sent yet",
        )
    message, created = stored
    assert message.id is not None
    public = pages.message_public(session, message.id, user, new=created)
    if created:
        events.to_conversation(
            message.conversation_id,
            MessageEvent(type="message.created", message=public),
            sign_urls=bool(public.attachments),
        )
        # Committed: Web Push for those away, in the background (push.py).
        push.pusher.enqueue(message.id)
    else:
        response.status_code = status.HTTP_200_OK
    return public


@router.get(
    "/conversations/{conversation_id}/messages",
    summary="Read history",
    response_model=list[MessagePublic],
    responses=error_responses({**NOT_VISIBLE, 422: "Two cursors given, or a bad limit"}),
)
def read_messages(
    session: SessionDep,
    user: Reader,
    access: ReadableConversation,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    before: Annotated[
        int | None, Query(ge=0, le=MAX_ID, description="Messages older than this id")
    ] = None,
    after: Annotated[
        int | None, Query(ge=0, le=MAX_ID, description="Messages newer than this id")
    ] = None,
    around: Annotated[
        int | None, Query(ge=0, le=MAX_ID, description="Messages around this id, and it")
    ] = None,
) -> JSONRows:
    """A page of messages, oldest first. Tombstones of deleted messages are included.

    - no cursor: the newest `limit` messages;
    - `before=ID`: the `limit` messages just older than ID (scrolling up);
    - `after=ID`: the `limit` messages just newer than ID (catching up after a
      reconnect; repeat with the last id you got until the page is short);
    - `around=ID`: message ID (if it is in this conversation) and the ones
      just older, `limit - limit // 2` in all, then the `limit // 2` just
      newer (opening the history at a search hit or a replied message).
    """
    if sum(cursor is not None for cursor in (before, after, around)) > 1:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            detail="Give one of before, after and around, not several",
        )
    page = pages.message_history(
        session, access.conversation, user, limit, before=before, after=after, around=around
    )
    return JSONRows(page)


@router.get(
    "/messages/{message_id}",
    summary="One message",
    responses=error_responses(MESSAGE_NOT_VISIBLE),
)
def read_message(session: SessionDep, user: Reader, visible: ReadableMessage) -> MessagePublic:
    """A message from a conversation you can see. A deleted one is a tombstone."""
    assert visible.message.id is not None
    return pages.message_public(session, visible.message.id, user)


@router.patch(
    "/messages/{message_id}",
    summary="Edit your message",
    responses=error_responses(
        {
            **MESSAGE_NOT_VISIBLE,
            **NOT_YOURS,
            409: "The message was deleted",
        }
    ),
)
def update_message(
    session: SessionDep,
    user: Writer,
    visible: WritableMessage,
    events: Events,
    message_in: Annotated[
        MessageUpdate,
        Body(openapi_examples={"edit": {"value": {"content": "Hello, world! (edited)"}}}),
    ],
) -> MessagePublic:
    """Replace the text of a message you sent; `edited_at` records when."""
    message = visible.message
    if message.author_id != user.id:
        raise HTTPException(status.HTTP_403_FORBIDDEN, detail="Not your message")
    if message.deleted:
        raise HTTPException(status.HTTP_409_CONFLICT, detail="Message was deleted")
    message = crud.edit_message(session, message, message_in.content)
    assert message.id is not None
    public = pages.message_public(session, message.id, user)
    events.to_conversation(
        message.conversation_id,
        MessageEvent(type="message.updated", message=for_everyone(public)),
        sign_urls=bool(public.attachments),
    )
    return public


@router.delete(
    "/messages/{message_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Delete your message",
    responses=error_responses({**MESSAGE_NOT_VISIBLE, **NOT_YOURS}),
)
def delete_message(
    session: SessionDep, user: Writer, visible: WritableMessage, events: Events
) -> None:
    """Delete a message you sent. Its text and its attachments are erased; a
    tombstone (`deleted: true`, `content: null`) keeps its place in the history."""
    message = visible.message
    if message.author_id != user.id:
        raise HTTPException(status.HTTP_403_FORBIDDEN, detail="Not your message")
    delete_message_for_all(session, message, events)


@router.get("/search/messages", summary="Search your messages", response_model=list[MessagePublic])
def search_messages(
    session: SessionDep,
    user: Reader,
    q: Annotated[str, Query(min_length=1, max_length=100, description="Text to find"), NoNul],
    conversation_id: Annotated[
        int | None, Query(ge=1, le=MAX_ID, description="Only in this conversation")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> JSONRows:
    """Messages containing `q`, ignoring case in any language (`MÜNCHEN` finds
    `München`), newest first. Only conversations you are a member of are
    searched; deleted messages never match. `%` and `_` match themselves."""
    return JSONRows(pages.search_messages(session, user, q, conversation_id, limit))


@router.get("/mentions", summary="Messages that mention you", response_model=list[MessagePublic])
def read_mentions(
    session: SessionDep,
    user: Reader,
    before: Annotated[
        int | None, Query(ge=0, le=MAX_ID, description="Mentions older than this message id")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> JSONRows:
    """Messages whose text @mentions you, newest first, from conversations you
    can read now (deleted ones are gone). For the next page, pass the last
    message's id as `before`."""
    return JSONRows(pages.mentions(session, user, before, limit))
