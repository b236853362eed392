"""Routes for conversations: direct messages, private groups, public channels."""

from typing import Annotated

from fastapi import APIRouter, Body, HTTPException, Query, Response, status

import crud
import pages
from access import NOT_JOINED, NOT_VISIBLE, ReadableConversation, WritableConversation
from auth import AUTH_ERRORS, Reader, Writer
from db import SessionDep
from hub import Events
from models import (
    MAX_GROUP_MEMBERS,
    MAX_ID,
    ConversationCreate,
    ConversationKind,
    ConversationPublic,
    JoinedEvent,
    MemberAdd,
    NotificationsUpdate,
    ReadEvent,
    ReadMarker,
    UserPublic,
    error_responses,
)
from pages import JSONRows

router = APIRouter(
    tags=["conversations"],
    responses=error_responses(AUTH_ERRORS),
)
Limit = Annotated[int, Query(ge=1, le=200)]
Offset = Annotated[int, Query(ge=0, le=MAX_ID)]


@router.post(
    "/conversations",
    status_code=status.HTTP_201_CREATED,
    summary="Start a conversation",
    responses={
        200: {
            "model": ConversationPublic,
            "description": "The direct conversation you two already have",
        },
        **error_responses({409: "A channel with this title exists (ignoring case)"}),
    },
)
def create_conversation(
    session: SessionDep,
    user: Writer,
    events: Events,
    conversation_in: Annotated[
        ConversationCreate,
        Body(
            openapi_examples={
                "direct": {
                    "summary": "A direct conversation with bob",
                    "value": {"kind": "direct", "members": ["bob"]},
                },
                "group": {
                    "summary": "A private group",
                    "value": {"kind": "group", "title": "Book club", "members": ["bob", "carol"]},
                },
                "channel": {
                    "summary": "A public channel",
                    "value": {"kind": "channel", "title": "random"},
                },
            }
        ),
    ],
    response: Response,
) -> ConversationPublic:
    """Create a conversation; you are its first member.

    - `direct`: `members` names exactly one other user. If you two already
      have a direct conversation, you get that one back (200), whoever started it.
      Deactivated users cannot be in a new conversation (422).
    - `group`: private; `title` and the `members` to invite (at most 100 people in all).
    - `channel`: public, anyone can read and join it; `title` unique ignoring case.
    """
    kind, title = conversation_in.kind, conversation_in.title
    found = crud.get_users_by_usernames(session, conversation_in.members)
    unknown = [name for name in conversation_in.members if name.lower() not in found]
    if unknown:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            detail=f"Unknown users: {', '.join(unknown)}",
        )
    others = [other for other in found.values() if other.id != user.id]

    if kind == ConversationKind.direct:
        if not others:
            raise HTTPException(
                status.HTTP_422_UNPROCESSABLE_CONTENT,
                detail="A direct conversation needs another user than yourself",
            )
        existing = crud.get_direct_conversation(session, user, others[0])
        if existing is not None:
            response.status_code = status.HTTP_200_OK
            return pages.conversation_public(session, existing, user)
    # Nobody starts something new with a deactivated user; what they were
    # in already stays as it was.
    deactivated = [other.username for other in others if not other.active]
    if deactivated:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            detail=f"Deactivated users: {', '.join(deactivated)}",
        )
    if kind == ConversationKind.group and len(others) + 1 > MAX_GROUP_MEMBERS:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            detail=f"A group has at most {MAX_GROUP_MEMBERS} members",
        )

    conversation = crud.create_conversation(session, kind, title, user, others)
    if conversation is None and kind == ConversationKind.direct:
        # The other person created it a moment ago.
        existing = crud.get_direct_conversation(session, user, others[0])
        if existing is not None:
            response.status_code = status.HTTP_200_OK
            return pages.conversation_public(session, existing, user)
    if conversation is None:
        raise HTTPException(status.HTTP_409_CONFLICT, detail="Channel title already taken")
    public = pages.conversation_public(session, conversation, user)
    # Everyone starts with the same view of a new conversation: a member,
    # nothing unread, no messages. So the creator's copy serves them all.
    events.to_users([user, *others], JoinedEvent(conversation=public))
    return public


@router.get("/conversations", summary="Your conversations", response_model=list[ConversationPublic])
def read_conversations(
    session: SessionDep, user: Reader, limit: Limit = 50, offset: Offset = 0
) -> JSONRows:
    """The conversations you are a member of, latest activity first, each with
    its last message and your unread count."""
    conversations = pages.list_conversations(session, user, limit, offset)
    return JSONRows(pages.conversation_page(session, conversations, user))


@router.get("/channels", summary="All channels", response_model=list[ConversationPublic])
def read_channels(
    session: SessionDep, user: Reader, limit: Limit = 50, offset: Offset = 0
) -> JSONRows:
    """Every public channel, by title; `is_member` tells which ones you have joined."""
    channels = pages.list_channels(session, limit, offset)
    return JSONRows(pages.conversation_page(session, channels, user))


@router.get(
    "/conversations/{conversation_id}",
    summary="One conversation",
    responses=error_responses(NOT_VISIBLE),
)
def read_conversation(
    session: SessionDep, user: Reader, access: ReadableConversation
) -> ConversationPublic:
    """A conversation you are in, or any channel."""
    return pages.conversation_public(session, access.conversation, user)


@router.get(
    "/conversations/{conversation_id}/members",
    summary="Members of a conversation",
    responses=error_responses(NOT_VISIBLE),
)
def read_members(
    session: SessionDep,
    access: ReadableConversation,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Offset = 0,
) -> list[UserPublic]:
    """The members, in username order (page through a big channel with `offset`)."""
    users = crud.list_members(session, access.conversation, limit, offset)
    return [UserPublic.model_validate(u) for u in users]


@router.post(
    "/conversations/{conversation_id}/join",
    summary="Join a channel",
    responses=error_responses({**NOT_VISIBLE, 422: "Not a channel"}),
)
def join_conversation(
    session: SessionDep, user: Writer, access: WritableConversation, events: Events
) -> ConversationPublic:
    """Become a member of a channel. Joining one you are in changes nothing."""
    if access.conversation.kind != ConversationKind.channel:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT, detail="Only channels can be joined"
        )
    joined = crud.add_member(session, access, user)
    public = pages.conversation_public(session, access.conversation, user)
    if joined:
        events.to_users([user], JoinedEvent(conversation=public))
    return public


@router.post(
    "/conversations/{conversation_id}/leave",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Leave a group or channel",
    responses=error_responses({**NOT_VISIBLE, 422: "Direct conversations cannot be left"}),
)
def leave_conversation(session: SessionDep, access: WritableConversation) -> None:
    """Stop being a member. A group you leave disappears from your view; a
    channel stays readable and can be joined again."""
    if access.conversation.kind == ConversationKind.direct:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            detail="Direct conversations cannot be left",
        )
    crud.remove_member(session, access)


@router.post(
    "/conversations/{conversation_id}/members",
    summary="Add someone to a group",
    responses=error_responses(
        {**NOT_VISIBLE, 422: "Not a group, unknown or deactivated user, or the group is full"}
    ),
)
def add_member(
    session: SessionDep,
    user: Writer,
    access: WritableConversation,
    events: Events,
    member_in: Annotated[MemberAdd, Body(openapi_examples={"bob": {"value": {"username": "bob"}}})],
) -> ConversationPublic:
    """Add a user to a group you are in. Adding a member again changes nothing."""
    if access.conversation.kind != ConversationKind.group:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT, detail="Members can only be added to groups"
        )
    new_member = crud.get_user_by_username(session, member_in.username)
    if new_member is None:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            detail=f"Unknown users: {member_in.username}",
        )
    already = crud.get_membership(session, access.conversation, new_member) is not None
    if not already and not new_member.active:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            detail=f"Deactivated users: {new_member.username}",
        )
    if not already and crud.member_count(session, access.conversation) >= MAX_GROUP_MEMBERS:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            detail=f"A group has at most {MAX_GROUP_MEMBERS} members",
        )
    if crud.add_member(session, access, new_member):
        their_view = pages.conversation_public(session, access.conversation, new_member)
        events.to_users([new_member], JoinedEvent(conversation=their_view))
    return pages.conversation_public(session, access.conversation, user)


@router.post(
    "/conversations/{conversation_id}/read",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Mark messages as read",
    responses=error_responses(
        {
            **NOT_VISIBLE,
            **NOT_JOINED,
            422: "The message is not in this conversation",
        }
    ),
)
def mark_read(
    session: SessionDep,
    user: Writer,
    access: WritableConversation,
    events: Events,
    marker: Annotated[ReadMarker, Body(openapi_examples={"read": {"value": {"message_id": 1}}})],
) -> None:
    """Everything up to `message_id` has been seen. The marker only moves
    forward, so a late or repeated call cannot make messages unread again."""
    message = crud.get_message(session, marker.message_id)
    if message is None or message.conversation_id != access.conversation.id:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            detail="Message not in this conversation",
        )
    if access.membership is None:
        raise HTTPException(status.HTTP_403_FORBIDDEN, detail="Join the channel first")
    if crud.mark_read(session, access.membership, marker.message_id):
        # The reader's other tabs and devices update their unread counts.
        read = ReadEvent(conversation_id=access.conversation.id, message_id=marker.message_id)
        events.to_users([user], read)


@router.put(
    "/conversations/{conversation_id}/notifications",
    summary="Choose what notifies you",
    responses=error_responses({**NOT_VISIBLE, **NOT_JOINED, 422: "Not a level"}),
)
def set_notifications(
    session: SessionDep,
    user: Writer,
    access: WritableConversation,
    choice: Annotated[
        NotificationsUpdate,
        Body(
            openapi_examples={
                "all": {"summary": "Every new message", "value": {"level": "all"}},
                "mentions": {"summary": "Only @mentions of you", "value": {"level": "mentions"}},
                "none": {"summary": "Nothing", "value": {"level": "none"}},
            }
        ),
    ],
) -> ConversationPublic:
    """Which new messages of this conversation notify you, on the web page
    and by Web Push: `all`, `mentions` (those that @mention you) or `none`.
    Until you choose, direct and group conversations notify `all`, channels
    `mentions`. The conversation's `notifications` shows your level."""
    if access.membership is None:
        raise HTTPException(status.HTTP_403_FORBIDDEN, detail="Join the channel first")
    crud.set_notification_level(session, access.membership, choice.level)
    return pages.conversation_public(session, access.conversation, user)
