"""The fast path: pages of messages and conversations, built from rows.

History pages, search results and conversation lists are the app's busiest
reads. Loading their rows as ORM objects and validating each as a SQLModel
schema cost most of their time (see docs/performance.md), so here they are
read as plain rows and turned into dicts of the public schemas' shape,
typed by the TypedDicts below. It is the one deliberate exception to
"every route returns its *Public model" (models.py says so too), and
tests/test_pages.py checks that these TypedDicts agree with
UserPublic, MessagePublic and ConversationPublic, key for key and type for
type. Each list costs a fixed number of queries, however many rows it has.
Single messages (a send, an edit, GET /messages/{id}, the events) are read
here too, so they carry their reply and reactions exactly as a page does.
"""

import base64
import hashlib
import hmac
import json
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import Any, Literal, Protocol, TypedDict

from fastapi import Response
from pydantic_core import to_json
from sqlalchemy import (
    ColumnElement,
    Dialect,
    Row,
    and_,
    bindparam,
    case,
    false,
    func,
    text,
    true,
    type_coerce,
)
from sqlalchemy.orm import aliased
from sqlalchemy.types import UserDefinedType
from sqlmodel import Session, col, select
from sqlmodel.sql.sqltypes import UTCDateTime

from config import settings
from crud import LIKE_ESCAPE, escape_like, lower_username
from db import fold, is_sqlite
from models import (
    MAX_ID,
    REPLY_SNIPPET,
    Attachment,
    AttachmentPublic,
    Conversation,
    ConversationKind,
    ConversationPublic,
    Membership,
    Mention,
    Message,
    MessagePublic,
    NotificationLevel,
    Reaction,
    User,
)


class UserJSON(TypedDict):
    """UserPublic, as a dict."""

    id: int
    username: str
    display_name: str | None
    role: str
    created_at: datetime


class AttachmentJSON(TypedDict):
    """AttachmentPublic, as a dict."""

    id: int
    name: str
    size: int
    content_type: str
    width: int | None
    height: int | None
    url: str
    thumbnail_url: str | None


class ReplyJSON(TypedDict):
    """ReplyPublic, as a dict."""

    id: int
    author: UserJSON
    snippet: str | None
    deleted: bool


class ReactionJSON(TypedDict):
    """ReactionPublic, as a dict."""

    emoji: str
    count: int
    me: bool


class MessageJSON(TypedDict):
    """MessagePublic, as a dict."""

    id: int
    conversation_id: int
    author: UserJSON
    content: str | None
    client_id: str | None
    created_at: datetime
    edited_at: datetime | None
    deleted: bool
    attachments: list[AttachmentJSON]
    reply_to: ReplyJSON | None
    reactions: list[ReactionJSON]
    mentions: list[str]


class ConversationJSON(TypedDict):
    """ConversationPublic, as a dict."""

    id: int
    kind: str
    title: str | None
    created_at: datetime
    member_count: int
    members: list[UserJSON] | None
    is_member: bool
    last_message: MessageJSON | None
    unread_count: int
    unread_mentions: int
    notifications: str | None


class JSONRows(Response):
    """A response of these dicts. FastAPI sends a Response as it is, so the
    route declares `response_model=` for /docs; pydantic-core writes
    datetimes as the models do (ISO 8601, `Z`)."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return to_json(content)


# --- Rows to dicts ---------------------------------------------------------------


class UTCTime(UserDefinedType[datetime]):
    """A datetime column read as the models read it (aware, in UTC), for less.

    SQLite keeps a datetime as naive UTC text. The models' type parses it
    (datetime.fromisoformat) and then attaches UTC with `replace(tzinfo=...)`,
    which costs ten times the parse; a conversation list has some 600 of them.
    Parsing the text with "+00:00" appended gives the same datetime in one
    step. Text that is not naive ISO 8601, and every other database, go the
    models' way. Only for reading: `utc()` wraps a column in a SELECT."""

    cache_ok = True

    def get_col_spec(self, **kw: Any) -> str:
        return "TIMESTAMP"

    def result_processor(self, dialect: Dialect, coltype: object) -> Callable[[Any], Any] | None:
        models_type = UTCDateTime().dialect_impl(dialect)
        models_way = models_type.result_processor(dialect, coltype)
        assert models_way is not None
        if dialect.name != "sqlite":
            return models_way
        parse = datetime.fromisoformat

        def process(value: str | None) -> datetime | None:
            if value is None:
                return None
            try:
                return parse(value + "+00:00")
            except ValueError:  # it has an offset already, or is no ISO 8601
                parsed: datetime | None = models_way(value)
                return parsed

        return process


def utc(column: Any) -> Any:
    """`column` (a datetime column of the models), read through UTCTime."""
    return type_coerce(column, UTCTime())


# The columns of a UserPublic, in the order `user_json` unpacks them.
USER_COLUMNS = (
    col(User.id),
    col(User.username),
    col(User.display_name),
    col(User.role),
    utc(User.created_at),
)


def user_json(row: Sequence[Any]) -> UserJSON:
    """A row of USER_COLUMNS as UserPublic's JSON has it."""
    id_, username, display_name, role, created_at = row
    return {
        "id": id_,
        "username": username,
        "display_name": display_name,
        "role": role,
        "created_at": created_at,
    }


# The columns of a MessagePublic, the message's and its author's, then the
# message it answers (if any) and that one's author, in the order
# `message_json` unpacks them. Attachments and reactions come from queries of
# their own (`messages_json`): at most one each per page.
_parent, _parent_author = aliased(Message), aliased(User)
MESSAGE_ROWS = (
    select(  # type: ignore[call-overload, misc]
        Message.id,
        Message.conversation_id,
        Message.client_id,
        Message.content,
        utc(Message.created_at),
        utc(Message.edited_at),
        Message.deleted,
        Message.attachment_count,
        *USER_COLUMNS,
        _parent.id,
        func.substr(_parent.content, 1, REPLY_SNIPPET),
        _parent.deleted,
        _parent_author.id,
        _parent_author.username,
        _parent_author.display_name,
        _parent_author.role,
        utc(_parent_author.created_at),
        Message.mentions,
    )
    .join(User, col(User.id) == Message.author_id)
    .outerjoin(_parent, col(_parent.id) == Message.reply_to_id)
    .outerjoin(_parent_author, col(_parent_author.id) == _parent.author_id)
)


def message_json(row: Row[Any]) -> MessageJSON:
    """A row of MESSAGE_ROWS as MessagePublic's JSON has it, without its
    attachments and reactions yet (`messages_json`)."""
    # Unpacking a row is quicker than reading it by name.
    id_, conversation_id, client_id, content, created_at, edited_at, deleted = tuple(row[:7])
    parent: tuple[Any, ...] = tuple(row[13:16])
    parent_id, snippet, parent_deleted = parent
    mentions: str | None = row[-1]
    return {
        "id": id_,
        "conversation_id": conversation_id,
        "author": user_json(row[8:13]),
        "content": content,
        "client_id": client_id,
        "created_at": created_at,
        "edited_at": edited_at,
        "deleted": deleted,
        "attachments": [],
        "reply_to": None
        if parent_id is None
        else {
            "id": parent_id,
            "author": user_json(row[16:21]),
            "snippet": snippet,
            "deleted": parent_deleted,
        },
        "reactions": [],
        "mentions": mentions.split() if mentions else [],
    }


# The reactions of a page's messages: each emoji on each message, with how
# many people and whether the viewer is one, in order of first reaction.
REACTIONS = (
    select(
        Reaction.message_id,
        Reaction.emoji,
        func.count(),
        func.max(case((col(Reaction.user_id) == bindparam("viewer_id"), 1), else_=0)),
    )
    .where(col(Reaction.message_id).in_(bindparam("ids", expanding=True)))
    .group_by(col(Reaction.message_id), col(Reaction.emoji))
    .order_by(func.min(Reaction.created_at), col(Reaction.emoji))
)


def add_reactions(session: Session, messages: Sequence[MessageJSON], viewer_id: int | None) -> None:
    """Fill in the messages' reactions, in one query; `me` is for `viewer_id`
    (None: for nobody, as in the events every member receives alike). Asked
    even for no messages, so that a page costs the same queries however full."""
    by_id = {m["id"]: m for m in messages}
    params = {"ids": list(by_id), "viewer_id": viewer_id}
    for message_id, emoji, count, me in session.connection().execute(REACTIONS, params):
        by_id[message_id]["reactions"].append({"emoji": emoji, "count": count, "me": bool(me)})


def messages_json(session: Session, rows: Iterable[Any], viewer: User | None) -> list[MessageJSON]:
    """Rows of MESSAGE_ROWS as MessagePublic's JSON, as `viewer` sees them:
    attachments in one more query if any of them has some, reactions in one
    more always (see `add_reactions`)."""
    messages, with_files = [], []
    for row in rows:
        message = message_json(row)
        messages.append(message)
        if row[7] and viewer is not None:  # attachment_count
            with_files.append(message)
    if with_files:
        assert viewer is not None
        add_attachments(session, with_files, viewer)
    add_reactions(session, messages, None if viewer is None else viewer.id)
    return messages


ONE_MESSAGE = MESSAGE_ROWS.where(Message.id == bindparam("message_id"))


def message_public(
    session: Session, message_id: int, viewer: User | None, *, new: bool = False
) -> MessagePublic:
    """One message as the pages have it (for the routes that answer one,
    and the events), its attachments' URLs signed for `viewer` and `me` in
    its reactions for them (None: for nobody, as in a tombstone). A `new`
    one has no reactions to look for."""
    row = session.connection().execute(ONE_MESSAGE, {"message_id": message_id}).one()
    if new:
        message = message_json(row)
        if row[7] and viewer is not None:
            add_attachments(session, [message], viewer)
    else:
        [message] = messages_json(session, [row], viewer)
    return MessagePublic.model_validate(message)


# --- Attachments and their signed URLs -------------------------------------------

# The columns of an AttachmentPublic, with the message it belongs to first.
ATTACHMENT_ROWS = (
    select(  # type: ignore[call-overload]
        Attachment.message_id,
        Attachment.id,
        Attachment.name,
        Attachment.size,
        Attachment.content_type,
        Attachment.width,
        Attachment.height,
        Attachment.has_thumbnail,
    )
    .where(col(Attachment.message_id).in_(bindparam("ids", expanding=True)))
    .order_by(col(Attachment.id))
)

Variant = Literal["file", "thumbnail"]
# Derived from SECRET_KEY for this one use: a URL's signature is no token.
URL_KEY = hmac.new(settings.SECRET_KEY.encode(), b"attachment URLs", hashlib.sha256).digest()


def url_signature(variant: Variant, attachment_id: int, user_id: int, expires: int) -> str:
    mac = hmac.new(URL_KEY, f"{variant}:{attachment_id}:{user_id}:{expires}".encode(), "sha256")
    return base64.urlsafe_b64encode(mac.digest()[:18]).decode()


def url_expiry(now: float) -> int:
    """When URLs signed now expire: ATTACHMENT_URL_SECONDS from now, rounded
    up to a sixth of it, so that URLs signed a little apart are the same URL
    and the browser's cache serves the second."""
    lifetime = settings.ATTACHMENT_URL_SECONDS
    step = max(1, lifetime // 6)
    return int(now) // step * step + lifetime


def attachment_url(variant: Variant, attachment_id: int, user_id: int, expires: int) -> str:
    """GET /attachments/{id} (or its thumbnail) for `user_id`, until `expires`."""
    path = f"/attachments/{attachment_id}" + ("/thumbnail" if variant == "thumbnail" else "")
    signature = url_signature(variant, attachment_id, user_id, expires)
    return f"{path}?u={user_id}&exp={expires}&sig={signature}"


def attachment_json(
    id_: int,
    name: str,
    size: int,
    content_type: str,
    width: int | None,
    height: int | None,
    has_thumbnail: bool,
    viewer_id: int,
    expires: int,
) -> AttachmentJSON:
    return {
        "id": id_,
        "name": name,
        "size": size,
        "content_type": content_type,
        "width": width,
        "height": height,
        "url": attachment_url("file", id_, viewer_id, expires),
        "thumbnail_url": attachment_url("thumbnail", id_, viewer_id, expires)
        if has_thumbnail
        else None,
    }


def add_attachments(session: Session, messages: Sequence[MessageJSON], viewer: User) -> None:
    """Fill in the attachments of `messages`, with URLs signed for `viewer`, in one query."""
    assert viewer.id is not None
    by_id = {message["id"]: message for message in messages}
    expires = url_expiry(time.time())
    rows = session.connection().execute(ATTACHMENT_ROWS, {"ids": list(by_id)})
    for message_id, id_, name, size, content_type, width, height, has_thumbnail in rows:
        by_id[message_id]["attachments"].append(
            attachment_json(
                id_, name, size, content_type, width, height, has_thumbnail, viewer.id, expires
            )
        )


def attachment_public(attachment: Attachment, viewer: User) -> AttachmentPublic:
    assert attachment.id is not None and viewer.id is not None
    return AttachmentPublic.model_validate(
        attachment_json(
            attachment.id,
            attachment.name,
            attachment.size,
            attachment.content_type,
            attachment.width,
            attachment.height,
            attachment.has_thumbnail,
            viewer.id,
            url_expiry(time.time()),
        )
    )


def sign_event_for(event: str, user_id: int) -> str:
    """A message event's JSON with its attachments' URLs signed for `user_id`:
    the hub signs each recipient's own (hub.Hub.deliver)."""
    data = json.loads(event)
    expires = url_expiry(time.time())
    for attachment in data["message"]["attachments"]:
        attachment["url"] = attachment_url("file", attachment["id"], user_id, expires)
        if attachment["thumbnail_url"] is not None:
            attachment["thumbnail_url"] = attachment_url(
                "thumbnail", attachment["id"], user_id, expires
            )
    return json.dumps(data, ensure_ascii=False, separators=(",", ":"))


# --- Conversation lists ------------------------------------------------------------

# The columns of a conversation that `conversation_page` reads.
CONVERSATION_COLUMNS = (
    col(Conversation.id),
    col(Conversation.kind),
    col(Conversation.title),
    utc(Conversation.created_at).label("created_at"),
)


class ConversationLike(Protocol):
    """What `conversation_page` reads: a Conversation, or a row of CONVERSATION_COLUMNS."""

    @property
    def id(self) -> int | None: ...
    @property
    def kind(self) -> str: ...
    @property
    def title(self) -> str | None: ...
    @property
    def created_at(self) -> datetime: ...


# The queries of a page of conversations, built once (see NEWEST_PAGE); `ids`
# is the page's conversation ids, `viewer_id` the user who reads it.
# Latest activity first: the newest message's time, kept on the conversation's
# row by each send (crud.create_message), else the conversation's creation.
MY_CONVERSATIONS = (
    select(*CONVERSATION_COLUMNS)
    .join(Membership, col(Membership.conversation_id) == Conversation.id)
    .where(Membership.user_id == bindparam("viewer_id"))
    .order_by(func.coalesce(Conversation.last_message_at, Conversation.created_at).desc())
    .order_by(col(Conversation.id).desc())
    .offset(bindparam("offset"))
    .limit(bindparam("limit"))
)
CHANNELS = (
    select(*CONVERSATION_COLUMNS)
    .where(Conversation.kind == ConversationKind.channel)
    .order_by(col(Conversation.channel_key))
    .offset(bindparam("offset"))
    .limit(bindparam("limit"))
)
_in_page = col(Membership.conversation_id).in_(bindparam("ids", expanding=True))
# Counted for the page's channels only: a direct or group conversation's
# count is the length of its member list, which the page reads anyway.
MEMBER_COUNTS = (
    select(Membership.conversation_id, func.count())
    .where(_in_page)
    .group_by(col(Membership.conversation_id))
)
MEMBERS = (
    select(col(Membership.conversation_id), *USER_COLUMNS)  # type: ignore[call-overload]
    .join(User, col(User.id) == Membership.user_id)
    .where(_in_page)
    .order_by(lower_username())
)
# Each conversation's newest message: max(id) per conversation is one index
# lookup each, where a GROUP BY would read every message.
_newer = aliased(Message)
_newest_id = (
    select(func.max(_newer.id)).where(_newer.conversation_id == Conversation.id).scalar_subquery()
)
LAST_MESSAGES = MESSAGE_ROWS.where(
    col(Message.id).in_(
        select(_newest_id).where(col(Conversation.id).in_(bindparam("ids", expanding=True)))
    )
)
# Unread: messages after the read marker, less the reader's own and the
# deleted ones. Counting them one by one would cost a member who has not read
# a busy channel a million rows per sidebar load. Instead: the seq of the
# newest message minus the seq at the marker (two index lookups), less two
# counts that walk only the reader's own messages and deleted ones after the
# marker (their own indexes: models.Message).
_read, _own, _gone = aliased(Message), aliased(Message), aliased(Message)
_marker = Membership.last_read_message_id
_seq_at_marker = (
    select(_read.seq)
    .where(_read.conversation_id == Membership.conversation_id, col(_read.id) <= _marker)
    .order_by(col(_read.id).desc())
    .limit(1)
    .scalar_subquery()
)
_own_after = (
    select(func.count())
    .select_from(_own)
    .where(
        _own.conversation_id == Membership.conversation_id,
        _own.author_id == bindparam("viewer_id"),
        col(_own.id) > _marker,
    )
    .scalar_subquery()
)
_mentions_after = (
    select(func.count())
    .select_from(Mention)
    .where(
        Mention.user_id == bindparam("viewer_id"),
        Mention.conversation_id == Membership.conversation_id,
        col(Mention.message_id) > _marker,
    )
    .scalar_subquery()
)
_deleted_after = (
    select(func.count())
    .select_from(_gone)
    .where(
        _gone.conversation_id == Membership.conversation_id,
        _gone.deleted == true(),
        col(_gone.id) > _marker,
        _gone.author_id != bindparam("viewer_id"),  # counted in _own_after already
    )
    .scalar_subquery()
)
UNREAD_COUNTS = (
    select(
        Membership.conversation_id,
        Conversation.message_seq - func.coalesce(_seq_at_marker, 0) - _own_after - _deleted_after,
        # Mentions of the viewer after the marker (a deleted message's are
        # gone with it): an index walk over only those.
        _mentions_after,
        Membership.notifications,
    )
    .join(Conversation, col(Conversation.id) == Membership.conversation_id)
    .where(
        Membership.user_id == bindparam("viewer_id"),
        col(Membership.conversation_id).in_(bindparam("ids", expanding=True)),
    )
)


def list_conversations(session: Session, user: User, limit: int, offset: int) -> Sequence[Any]:
    """The user's conversations (rows of CONVERSATION_COLUMNS), latest activity
    (last message, else creation) first."""
    params = {"viewer_id": user.id, "limit": limit, "offset": offset}
    return session.connection().execute(MY_CONVERSATIONS, params).all()


def list_channels(session: Session, limit: int, offset: int) -> Sequence[Any]:
    """Rows of CONVERSATION_COLUMNS, by title."""
    return session.connection().execute(CHANNELS, {"limit": limit, "offset": offset}).all()


def conversation_page(
    session: Session, conversations: Sequence[ConversationLike], viewer: User
) -> list[ConversationJSON]:
    """Each conversation as `viewer` sees it (ConversationPublic's JSON), in
    five queries (six if a last message has attachments). Rows are fetched
    with `all()`: one call for them all, where iterating fetches each alone."""
    if not conversations:
        return []
    connection = session.connection()
    ids = [c.id for c in conversations]
    page = {"ids": ids, "viewer_id": viewer.id}
    # The viewer's unread count, unread mentions and level, per conversation:
    # a row for each conversation of the page the viewer is a member of.
    unread: dict[int | None, tuple[int, int, str | None]] = {
        row[0]: (row[1], row[2], row[3]) for row in connection.execute(UNREAD_COUNTS, page).all()
    }
    # Member lists for direct and group conversations; channels have none,
    # only a count (asked even for no channels: a fixed number of queries).
    channels = {"ids": [c.id for c in conversations if c.kind == ConversationKind.channel]}
    counts: dict[int | None, int] = {
        row[0]: row[1] for row in connection.execute(MEMBER_COUNTS, channels).all()
    }
    members: dict[int | None, list[UserJSON]] = defaultdict(list)
    private = {"ids": [c.id for c in conversations if c.kind != ConversationKind.channel]}
    if private["ids"]:
        # user_json, inlined: some 340 rows in the bench's list of 50.
        for conversation_id, id_, username, display_name, role, created_at in connection.execute(
            MEMBERS, private
        ).all():
            members[conversation_id].append(
                {
                    "id": id_,
                    "username": username,
                    "display_name": display_name,
                    "role": role,
                    "created_at": created_at,
                }
            )
    last: dict[int | None, MessageJSON] = {}
    for message in messages_json(session, connection.execute(LAST_MESSAGES, page).all(), viewer):
        last[message["conversation_id"]] = message

    result: list[ConversationJSON] = []
    for c in conversations:
        assert c.id is not None  # read from the database: it has its id
        member = c.id in unread
        unread_count, unread_mentions, level = unread.get(c.id, (0, 0, None))
        channel = c.kind == ConversationKind.channel
        result.append(
            {
                "id": c.id,
                "kind": c.kind,
                "title": c.title,
                "created_at": c.created_at,
                "member_count": counts.get(c.id, 0) if channel else len(members[c.id]),
                "members": None if channel else members[c.id],
                "is_member": member,
                "last_message": last.get(c.id),
                "unread_count": unread_count,
                "unread_mentions": unread_mentions,
                "notifications": NotificationLevel.of(c.kind, level) if member else None,
            }
        )
    return result


def conversation_public(
    session: Session, conversation: Conversation, viewer: User
) -> ConversationPublic:
    return ConversationPublic.model_validate(conversation_page(session, [conversation], viewer)[0])


# --- History and search ------------------------------------------------------------

# A page of history in the three ways it is asked for. Statements built once
# and given their values as parameters: SQLAlchemy then reuses their compiled
# SQL, where a statement built per request must be built and looked up in
# its cache every time.
_PAGE = MESSAGE_ROWS.where(Message.conversation_id == bindparam("conversation_id")).limit(
    bindparam("limit")
)
NEWEST_PAGE = _PAGE.order_by(col(Message.id).desc())
# Keyset paging: "id < before" walks the (conversation_id, id) index from
# that point, so a page deep in the history costs what the newest one does.
PAGE_BEFORE = _PAGE.where(col(Message.id) < bindparam("cursor")).order_by(col(Message.id).desc())
PAGE_AFTER = _PAGE.where(col(Message.id) > bindparam("cursor")).order_by(col(Message.id))
PAGE_UP_TO = _PAGE.where(col(Message.id) <= bindparam("cursor")).order_by(col(Message.id).desc())


def message_history(
    session: Session,
    conversation: Conversation,
    viewer: User,
    limit: int,
    before: int | None = None,
    after: int | None = None,
    around: int | None = None,
) -> list[MessageJSON]:
    """A page of history in ascending id order; see GET /conversations/{id}/messages."""
    connection = session.connection()
    params = {"conversation_id": conversation.id, "limit": limit}
    if around is not None:
        # The message itself and older ones, then newer ones: half and half.
        older_params = {**params, "cursor": around, "limit": limit - limit // 2}
        older = connection.execute(PAGE_UP_TO, older_params).all()
        newer = connection.execute(PAGE_AFTER, {**params, "cursor": around, "limit": limit // 2})
        rows: Iterable[Any] = [*reversed(older), *newer]
    elif after is not None:
        rows = connection.execute(PAGE_AFTER, {**params, "cursor": after})
    elif before is not None:
        rows = reversed(connection.execute(PAGE_BEFORE, {**params, "cursor": before}).all())
    else:
        rows = reversed(connection.execute(NEWEST_PAGE, params).all())
    return messages_json(session, rows, viewer)


# Messages that @mention the viewer, newest first, from conversations they
# can read now: one they are a member of, or a channel.
_my_membership = and_(
    col(Membership.conversation_id) == Message.conversation_id,
    col(Membership.user_id) == bindparam("viewer_id"),
)
MENTIONS_PAGE = (
    MESSAGE_ROWS.join(Mention, col(Mention.message_id) == Message.id)
    .join(Conversation, col(Conversation.id) == Message.conversation_id)
    .outerjoin(Membership, _my_membership)
    .where(
        Mention.user_id == bindparam("viewer_id"),
        col(Mention.message_id) <= bindparam("up_to"),
        col(Membership.user_id).is_not(None) | (Conversation.kind == ConversationKind.channel),
    )
    .order_by(col(Mention.message_id).desc())
    .limit(bindparam("limit"))
)


def mentions(session: Session, viewer: User, before: int | None, limit: int) -> list[MessageJSON]:
    """A page of GET /mentions: the messages mentioning `viewer` older than
    `before`, newest first. A deleted message has no mentions left."""
    up_to = MAX_ID if before is None else before - 1
    params = {"viewer_id": viewer.id, "up_to": up_to, "limit": limit}
    rows = session.connection().execute(MENTIONS_PAGE, params)
    return messages_json(session, rows, viewer)


def _membership_of(viewer: User) -> ColumnElement[bool]:
    """Join condition: `viewer`'s membership of the message's conversation."""
    return and_(
        col(Membership.conversation_id) == Message.conversation_id,
        col(Membership.user_id) == viewer.id,
    )


def search_messages(
    session: Session, viewer: User, q: str, conversation_id: int | None, limit: int
) -> list[MessageJSON]:
    """Messages containing `q` (ignoring case) in the viewer's conversations, newest first."""
    contains_q = _contains(fold(q), sqlite=is_sqlite(session.get_bind()))
    query = (
        MESSAGE_ROWS.join(Membership, _membership_of(viewer))
        .where(Message.deleted == false(), contains_q)
        .order_by(col(Message.id).desc())
        .limit(limit)
    )
    if conversation_id is not None:
        query = query.where(Message.conversation_id == conversation_id)
    return messages_json(session, session.connection().execute(query), viewer)


# Trigram indexes know strings of 3 characters or more: a shorter query
# cannot use them, and is answered by a scan (same results, more slowly).
TRIGRAM = 3


def _contains(needle: str, *, sqlite: bool) -> ColumnElement[bool]:
    """Messages whose folded text contains `needle`, through each database's
    trigram index (migration 0002): an exact substring test on both."""
    search_text = col(Message.search_text)
    if not sqlite:
        # PostgreSQL's LIKE is case-sensitive, and pg_trgm's GIN index serves it.
        return search_text.like(f"%{escape_like(needle)}%", escape=LIKE_ESCAPE)
    if len(needle) < TRIGRAM:
        return func.instr(search_text, needle) > 0
    # An FTS5 phrase of trigrams matches exactly where the text contains it.
    phrase = '"' + needle.replace('"', '""') + '"'
    matching = text("SELECT rowid FROM message_search WHERE message_search MATCH :phrase")
    return col(Message.id).in_(matching.bindparams(phrase=phrase))
