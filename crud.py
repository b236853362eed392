"""Queries and changes behind the routes.

Helpers never raise HTTPException: they return None or False when something
is missing or taken, and the route picks the status. Every list is loaded in
a fixed number of queries, however many rows it has (authors, members and
last messages are fetched in bulk, never one query per row).
"""

import math
from collections import defaultdict
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import (
    ColumnElement,
    Row,
    and_,
    bindparam,
    delete,
    exists,
    false,
    func,
    text,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import aliased
from sqlmodel import Session, col, select
from sqlmodel.sql.expression import SelectOfScalar

from config import settings
from db import GENERAL_CHANNEL, fold, is_sqlite
from models import (
    ClientAttempt,
    Conversation,
    ConversationKind,
    ConversationPublic,
    LoginFailure,
    Membership,
    Message,
    MessageCreate,
    MessagePublic,
    RevokedToken,
    Role,
    User,
    UserCreate,
    UserPublic,
    utcnow,
)

# --- Users -----------------------------------------------------------------


def _lower_username() -> ColumnElement[str]:
    # The same expression as the unique index, so lookups can use that index.
    return func.lower(User.username)


def get_user_by_username(session: Session, username: str) -> User | None:
    return session.exec(select(User).where(_lower_username() == username.lower())).first()


def get_users_by_usernames(session: Session, usernames: list[str]) -> dict[str, User]:
    """The users that exist among `usernames`, keyed by lower-cased username."""
    wanted = {name.lower() for name in usernames}
    users = session.exec(select(User).where(_lower_username().in_(wanted))).all()
    return {user.username.lower(): user for user in users}


def search_users(
    session: Session, prefix: str, limit: int, offset: int = 0, *, active_only: bool
) -> Sequence[User]:
    pattern = _escape_like(prefix.lower()) + "%"
    query = select(User).where(_lower_username().like(pattern, escape=LIKE_ESCAPE))
    if active_only:
        query = query.where(col(User.active))
    return session.exec(query.order_by(_lower_username()).offset(offset).limit(limit)).all()


def create_user(session: Session, user_in: UserCreate, hashed_password: str) -> User | None:
    """Create the user and make them a member of `general`; None if the name is taken."""
    if get_user_by_username(session, user_in.username) is not None:
        return None
    # Never an admin, whatever the name: admins are made on the command line
    # (manage.py), or named in ADMIN_USERNAMES once their account exists.
    user = User.model_validate(user_in, update={"hashed_password": hashed_password})
    session.add(user)
    try:
        session.flush()
    except IntegrityError:  # the same name registered a moment ago
        session.rollback()
        return None
    general = session.exec(
        select(Conversation).where(Conversation.channel_key == GENERAL_CHANNEL)
    ).first()
    if general is not None:
        _add_members(session, general, [user])
    session.commit()
    return user


def update_user(session: Session, user: User, changes: dict[str, object]) -> User:
    user.sqlmodel_update(changes)
    session.add(user)
    session.commit()
    return user


def set_password(session: Session, user: User, hashed_password: str) -> bool:
    """Store the new hash and bump the token version, revoking every older token.

    False if the password changed since `user` was loaded: the check on
    token_version makes two simultaneous changes unable to both succeed.
    """
    result = session.exec(
        update(User)
        .where(col(User.id) == user.id, col(User.token_version) == user.token_version)
        .values(hashed_password=hashed_password, token_version=User.token_version + 1)
    )
    session.commit()
    return result.rowcount == 1


def set_role(session: Session, user: User, role: Role) -> None:
    """Make `user` an admin (active again, if deactivated) or a member."""
    values: dict[str, object] = {"role": role}
    if role == Role.admin:
        values["active"] = True
    session.exec(update(User).where(col(User.id) == user.id).values(**values))
    session.commit()


def deactivate_user(session: Session, user: User) -> None:
    """Lock the account: no login, and the version bump rejects every token
    issued so far, as a password change does."""
    session.exec(
        update(User)
        .where(col(User.id) == user.id)
        .values(active=False, token_version=User.token_version + 1)
    )
    session.commit()


def activate_user(session: Session, user: User) -> None:
    """Allow logins again. Tokens from before the deactivation stay rejected."""
    session.exec(update(User).where(col(User.id) == user.id).values(active=True))
    session.commit()


# --- Login limiting and token revocation -----------------------------------


def _retry_after(
    session: Session, newest_first: SelectOfScalar[datetime], limit: int, window_start: datetime
) -> int | None:
    """Seconds until the `limit`-th newest of these times (a query of them
    within the window, newest first) leaves the window; None if there are
    fewer than `limit`. The database skips to that one: no other row is read."""
    nth = session.exec(newest_first.offset(limit - 1).limit(1)).first()
    if nth is None:
        return None
    return max(1, math.ceil((nth - window_start).total_seconds()))


def login_retry_after(session: Session, username_key: str, now: datetime) -> int | None:
    """Seconds until `username_key` may try to log in again, or None if it may now."""
    window_start = now - timedelta(seconds=settings.LOGIN_FAILURE_WINDOW_SECONDS)
    recent = (
        select(LoginFailure.failed_at)
        .where(
            LoginFailure.username_key == username_key,
            LoginFailure.failed_at > window_start,
        )
        .order_by(col(LoginFailure.failed_at).desc())
    )
    return _retry_after(session, recent, settings.LOGIN_MAX_FAILURES, window_start)


def record_login_failure(session: Session, username_key: str, now: datetime) -> None:
    window_start = now - timedelta(seconds=settings.LOGIN_FAILURE_WINDOW_SECONDS)
    session.exec(delete(LoginFailure).where(col(LoginFailure.failed_at) <= window_start))
    session.add(LoginFailure(username_key=username_key, failed_at=now))
    session.commit()


def clear_login_failures(session: Session, username_key: str) -> None:
    session.exec(delete(LoginFailure).where(col(LoginFailure.username_key) == username_key))
    session.commit()


def attempt_retry_after(
    session: Session, kind: str, client_ip: str, now: datetime, limit: int, window: int
) -> int | None:
    """Seconds until `client_ip` may make another attempt of this `kind`, or None."""
    window_start = now - timedelta(seconds=window)
    recent = (
        select(ClientAttempt.at)
        .where(
            ClientAttempt.kind == kind,
            ClientAttempt.client_ip == client_ip,
            ClientAttempt.at > window_start,
        )
        .order_by(col(ClientAttempt.at).desc())
    )
    return _retry_after(session, recent, limit, window_start)


def record_attempt(session: Session, kind: str, client_ip: str, now: datetime, window: int) -> None:
    """Count an attempt; rows of this kind that left the window are dropped."""
    window_start = now - timedelta(seconds=window)
    session.exec(
        delete(ClientAttempt).where(
            col(ClientAttempt.kind) == kind, col(ClientAttempt.at) <= window_start
        )
    )
    session.add(ClientAttempt(kind=kind, client_ip=client_ip, at=now))
    session.commit()


# Every authenticated request asks this: one query, built once (see NEWEST_PAGE).
USER_UNLESS_REVOKED = select(User).where(
    User.id == bindparam("user_id"), ~exists().where(col(RevokedToken.jti) == bindparam("jti"))
)


def get_user_unless_revoked(session: Session, user_id: int, jti: str) -> User | None:
    """The user, unless the token `jti` was logged out."""
    return session.exec(USER_UNLESS_REVOKED, params={"user_id": user_id, "jti": jti}).first()


def revoke_token(session: Session, jti: str, expires_at: datetime) -> None:
    # Rows of tokens that have expired anyway are no longer needed.
    session.exec(delete(RevokedToken).where(col(RevokedToken.expires_at) < utcnow()))
    session.add(RevokedToken(jti=jti, expires_at=expires_at))
    session.commit()


def live_token_versions(
    session: Session, user_ids: Collection[int], conversation_id: int | None = None
) -> dict[int, int]:
    """Of `user_ids`, those who may receive an event (the members, if a
    conversation is given), each with their current token version."""
    query = select(User.id, User.token_version).where(col(User.id).in_(user_ids))
    if conversation_id is not None:
        query = query.join(Membership, col(Membership.user_id) == User.id).where(
            Membership.conversation_id == conversation_id
        )
    return {user_id: version for user_id, version in session.exec(query) if user_id is not None}


def revoked_among(session: Session, jtis: Collection[str]) -> set[str]:
    return set(session.exec(select(RevokedToken.jti).where(col(RevokedToken.jti).in_(jtis))))


# --- Conversations ---------------------------------------------------------


@dataclass
class ConversationAccess:
    """A conversation the caller may see, and their membership of it."""

    conversation: Conversation
    membership: Membership | None  # None: a channel the caller has not joined


# The conversation and the user's membership of it (if any), in one query
# built once (see NEWEST_PAGE): every request about a conversation asks it.
CONVERSATION_ACCESS = (
    select(Conversation, Membership)
    .outerjoin(
        Membership,
        and_(
            col(Membership.conversation_id) == Conversation.id,
            col(Membership.user_id) == bindparam("user_id"),
        ),
    )
    .where(Conversation.id == bindparam("conversation_id"))
)


def get_conversation_access(
    session: Session, conversation_id: int, user: User
) -> ConversationAccess | None:
    """None if the conversation does not exist or `user` may not see it."""
    row = session.exec(
        CONVERSATION_ACCESS, params={"conversation_id": conversation_id, "user_id": user.id}
    ).first()
    if row is None:
        return None
    conversation, membership = row
    if membership is None and conversation.kind != ConversationKind.channel:
        return None
    return ConversationAccess(conversation, membership)


def get_membership(session: Session, conversation: Conversation, user: User) -> Membership | None:
    return session.get(Membership, (conversation.id, user.id))


def direct_key(a: User, b: User) -> str:
    """ "<lower id>:<higher id>": the same key whichever of the two asks."""
    assert a.id is not None and b.id is not None
    low, high = sorted((a.id, b.id))
    return f"{low}:{high}"


def get_direct_conversation(session: Session, a: User, b: User) -> Conversation | None:
    return session.exec(
        select(Conversation).where(Conversation.direct_key == direct_key(a, b))
    ).first()


def create_conversation(
    session: Session,
    kind: ConversationKind,
    title: str | None,
    creator: User,
    others: Sequence[User] = (),
) -> Conversation | None:
    """Create it with its first members; None if its direct pair or channel title is taken."""
    conversation = Conversation(kind=kind, title=title)
    if kind == ConversationKind.direct:
        conversation.direct_key = direct_key(creator, others[0])
    elif kind == ConversationKind.channel and title is not None:
        conversation.channel_key = fold(title)
    session.add(conversation)
    try:
        session.flush()
    except IntegrityError:
        session.rollback()
        return None
    _add_members(session, conversation, [creator, *others])
    session.commit()
    return conversation


def _add_members(session: Session, conversation: Conversation, users: Sequence[User]) -> None:
    # A newcomer starts with everything before their arrival read: joining a
    # busy channel does not bury them under its whole history as "unread".
    newest = latest_message_id(session, conversation)
    session.add_all(
        Membership(conversation_id=conversation.id, user_id=user.id, last_read_message_id=newest)
        for user in users
    )


def add_member(session: Session, access: ConversationAccess, user: User) -> bool:
    """Make `user` a member; nothing happens if they already are one. True if added."""
    if get_membership(session, access.conversation, user) is not None:
        return False
    _add_members(session, access.conversation, [user])
    session.commit()
    return True


def remove_member(session: Session, access: ConversationAccess) -> None:
    if access.membership is not None:
        session.delete(access.membership)
        session.commit()


def member_count(session: Session, conversation: Conversation) -> int:
    return session.exec(
        select(func.count())
        .select_from(Membership)
        .where(Membership.conversation_id == conversation.id)
    ).one()


def list_members(
    session: Session, conversation: Conversation, limit: int, offset: int
) -> Sequence[User]:
    return session.exec(
        select(User)
        .join(Membership, col(Membership.user_id) == User.id)
        .where(Membership.conversation_id == conversation.id)
        .order_by(_lower_username())
        .offset(offset)
        .limit(limit)
    ).all()


def mark_read(session: Session, membership: Membership, message_id: int) -> bool:
    """Move the read marker forward to `message_id`; never backward, even when
    two requests race (the comparison happens inside the UPDATE). True if it moved."""
    result = session.exec(
        update(Membership)
        .where(
            col(Membership.conversation_id) == membership.conversation_id,
            col(Membership.user_id) == membership.user_id,
            col(Membership.last_read_message_id) < message_id,
        )
        .values(last_read_message_id=message_id)
    )
    session.commit()
    return result.rowcount == 1


# Pages of messages (history, search) are read as plain rows and sent as
# dicts of MessagePublic's shape: loading 50 messages with their authors as
# ORM objects and validating 50 MessagePublic models takes about 3 ms of CPU,
# rows made into dicts about 0.3 ms. tests/test_messages.py checks that both
# forms agree.
MessageJSON = dict[str, Any]

# The columns of a UserPublic, in the order `user_json` unpacks them.
USER_COLUMNS = (
    col(User.id),
    col(User.username),
    col(User.display_name),
    col(User.role),
    col(User.created_at),
)


def user_json(row: Sequence[Any]) -> dict[str, Any]:
    """A row of USER_COLUMNS as UserPublic's JSON has it."""
    id_, username, display_name, role, created_at = row
    return {
        "id": id_,
        "username": username,
        "display_name": display_name,
        "role": role,
        "created_at": created_at,
    }


# The columns of a MessagePublic, the message's and its author's, in the
# order `message_json` unpacks them.
MESSAGE_ROWS = select(  # type: ignore[call-overload]
    Message.id,
    Message.conversation_id,
    Message.client_id,
    Message.content,
    Message.created_at,
    Message.edited_at,
    Message.deleted,
    *USER_COLUMNS,
).join(User, col(User.id) == Message.author_id)


def message_json(row: Row[Any]) -> MessageJSON:
    """A row of MESSAGE_ROWS as MessagePublic's JSON has it."""
    # Unpacking a row is several times quicker than reading it by name.
    id_, conversation_id, client_id, content, created_at, edited_at, deleted = tuple(row[:7])
    return {
        "id": id_,
        "conversation_id": conversation_id,
        "author": user_json(row[7:]),
        "content": content,
        "client_id": client_id,
        "created_at": created_at,
        "edited_at": edited_at,
        "deleted": deleted,
    }


# Lists of conversations are read as rows and sent as dicts of
# ConversationPublic's shape, as pages of messages are (see MessageJSON): a
# page of 50 holds some 400 users and messages, and validating each as a
# model took most of its 20 ms. tests/test_conversations.py checks that both
# forms agree.
ConversationJSON = dict[str, Any]
CONVERSATION_COLUMNS = (
    col(Conversation.id),
    col(Conversation.kind),
    col(Conversation.title),
    col(Conversation.created_at),
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
_last_message_at = (
    select(Message.created_at)
    .where(Message.conversation_id == Conversation.id)
    .order_by(col(Message.id).desc())
    .limit(1)
    .scalar_subquery()
)
MY_CONVERSATIONS = (
    select(*CONVERSATION_COLUMNS)
    .join(Membership, col(Membership.conversation_id) == Conversation.id)
    .where(Membership.user_id == bindparam("viewer_id"))
    .order_by(func.coalesce(_last_message_at, Conversation.created_at).desc())
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
VIEWER_IS_MEMBER = select(Membership.conversation_id).where(
    _in_page, Membership.user_id == bindparam("viewer_id")
)
MEMBER_COUNTS = (
    select(Membership.conversation_id, func.count())
    .where(_in_page)
    .group_by(col(Membership.conversation_id))
)
MEMBERS = (
    select(col(Membership.conversation_id), *USER_COLUMNS)  # type: ignore[call-overload]
    .join(User, col(User.id) == Membership.user_id)
    .where(_in_page)
    .order_by(_lower_username())
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
UNREAD_COUNTS = (
    select(Message.conversation_id, func.count())
    .join(
        Membership,
        and_(
            col(Membership.conversation_id) == Message.conversation_id,
            col(Membership.user_id) == bindparam("viewer_id"),
        ),
    )
    .where(
        col(Message.conversation_id).in_(bindparam("ids", expanding=True)),
        col(Message.id) > Membership.last_read_message_id,
        Message.author_id != bindparam("viewer_id"),
        Message.deleted == false(),
    )
    .group_by(col(Message.conversation_id))
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
    """Each conversation as `viewer` sees it (ConversationPublic's JSON), in five queries."""
    if not conversations:
        return []
    connection = session.connection()
    ids = [c.id for c in conversations]
    page = {"ids": ids, "viewer_id": viewer.id}
    mine = set(connection.execute(VIEWER_IS_MEMBER, page).scalars())
    counts: dict[int | None, int] = {
        row[0]: row[1] for row in connection.execute(MEMBER_COUNTS, page)
    }
    # Member lists for direct and group conversations (channels have none).
    members: dict[int | None, list[dict[str, Any]]] = defaultdict(list)
    private = {"ids": [c.id for c in conversations if c.kind != ConversationKind.channel]}
    if private["ids"]:
        for row in connection.execute(MEMBERS, private):
            members[row[0]].append(user_json(row[1:]))
    last: dict[int | None, MessageJSON] = {}
    for row in connection.execute(LAST_MESSAGES, page):
        message = message_json(row)
        last[message["conversation_id"]] = message
    unread: dict[int | None, int] = {
        row[0]: row[1] for row in connection.execute(UNREAD_COUNTS, page)
    }

    return [
        {
            "id": c.id,
            "kind": c.kind,
            "title": c.title,
            "created_at": c.created_at,
            "member_count": counts.get(c.id, 0),
            "members": None if c.kind == ConversationKind.channel else members[c.id],
            "is_member": c.id in mine,
            "last_message": last.get(c.id),
            "unread_count": unread.get(c.id, 0),
        }
        for c in conversations
    ]


def conversation_public(
    session: Session, conversation: Conversation, viewer: User
) -> ConversationPublic:
    return ConversationPublic.model_validate(conversation_page(session, [conversation], viewer)[0])


# --- Messages --------------------------------------------------------------


def message_public(message: Message, author: User) -> MessagePublic:
    # model_validate reads the row's attributes: SQLModel turns on Pydantic's
    # from_attributes (once called orm_mode) for every class.
    return MessagePublic.model_validate(
        message, update={"author": UserPublic.model_validate(author)}
    )


def _membership_of(viewer: User) -> ColumnElement[bool]:
    """Join condition: `viewer`'s membership of the message's conversation."""
    return and_(
        col(Membership.conversation_id) == Message.conversation_id,
        col(Membership.user_id) == viewer.id,
    )


def latest_message_id(session: Session, conversation: Conversation) -> int:
    newest = session.exec(
        select(func.max(Message.id)).where(Message.conversation_id == conversation.id)
    ).one()
    return newest or 0


def get_message(session: Session, message_id: int) -> Message | None:
    return session.get(Message, message_id)


def get_author(session: Session, message: Message) -> User:
    author = session.get(User, message.author_id)
    assert author is not None  # the foreign key guarantees it
    return author


def get_message_by_client_id(
    session: Session, conversation: Conversation, author: User, client_id: str
) -> Message | None:
    return session.exec(
        select(Message).where(
            Message.conversation_id == conversation.id,
            Message.author_id == author.id,
            Message.client_id == client_id,
        )
    ).first()


def send_retry_after(session: Session, author: User, now: datetime) -> int | None:
    """Seconds until `author` may send again under SEND_MAX_PER_MINUTE, or None
    if they may now. Through an index, it steps over at most that many entries."""
    window_start = now - timedelta(minutes=1)
    recent = (
        select(Message.created_at)
        .where(Message.author_id == author.id, col(Message.created_at) > window_start)
        .order_by(col(Message.created_at).desc())
    )
    return _retry_after(session, recent, settings.SEND_MAX_PER_MINUTE, window_start)


def create_message(
    session: Session, conversation: Conversation, author: User, message_in: MessageCreate
) -> tuple[Message, bool]:
    """Store the message and return it with True; or, if this author already
    sent its client_id here, return that earlier message with False."""
    client_id = message_in.client_id
    if client_id is not None:
        earlier = get_message_by_client_id(session, conversation, author, client_id)
        if earlier is not None:
            return earlier, False
    message = Message.model_validate(
        message_in,
        update={
            "conversation_id": conversation.id,
            "author_id": author.id,
            "search_text": fold(message_in.content),
        },
    )
    session.add(message)
    try:
        session.commit()
    except IntegrityError:
        # A concurrent retry with the same client_id committed first.
        session.rollback()
        earlier = (
            get_message_by_client_id(session, conversation, author, client_id)
            if client_id is not None
            else None
        )
        if earlier is None:
            raise
        return earlier, False
    return message, True


def edit_message(session: Session, message: Message, content: str) -> Message:
    message.content = content
    message.search_text = fold(content)
    message.edited_at = utcnow()
    session.add(message)
    session.commit()
    return message


def delete_message(session: Session, message: Message) -> None:
    """Replace the message by a tombstone: the text is gone for good."""
    message.content = None
    message.search_text = None
    message.deleted = True
    session.add(message)
    session.commit()


# A page of history in the three ways it is asked for. Statements built once
# and given their values as parameters: SQLAlchemy then reuses their compiled
# SQL, where a statement built per request costs about 0.2 ms to build and to
# find in its cache.
_PAGE = MESSAGE_ROWS.where(Message.conversation_id == bindparam("conversation_id")).limit(
    bindparam("limit")
)
NEWEST_PAGE = _PAGE.order_by(col(Message.id).desc())
# Keyset paging: "id < before" walks the (conversation_id, id) index from
# that point, so a page deep in the history costs what the newest one does.
PAGE_BEFORE = _PAGE.where(col(Message.id) < bindparam("cursor")).order_by(col(Message.id).desc())
PAGE_AFTER = _PAGE.where(col(Message.id) > bindparam("cursor")).order_by(col(Message.id))


def message_history(
    session: Session,
    conversation: Conversation,
    limit: int,
    before: int | None = None,
    after: int | None = None,
) -> list[MessageJSON]:
    """A page of history in ascending id order; see GET /conversations/{id}/messages."""
    params = {"conversation_id": conversation.id, "limit": limit}
    if after is not None:
        rows = session.connection().execute(PAGE_AFTER, {**params, "cursor": after})
        return [message_json(row) for row in rows]
    if before is not None:
        rows = session.connection().execute(PAGE_BEFORE, {**params, "cursor": before})
    else:
        rows = session.connection().execute(NEWEST_PAGE, params)
    return [message_json(row) for row in reversed(rows.all())]


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
    return [message_json(row) for row in session.exec(query)]


# Trigram indexes know strings of 3 characters or more: a shorter query
# cannot use them, and is answered by a scan (same results, more slowly).
TRIGRAM = 3


def _contains(needle: str, *, sqlite: bool) -> ColumnElement[bool]:
    """Messages whose folded text contains `needle`, through each database's
    trigram index (migration 0002): an exact substring test on both."""
    search_text = col(Message.search_text)
    if not sqlite:
        # PostgreSQL's LIKE is case-sensitive, and pg_trgm's GIN index serves it.
        return search_text.like(f"%{_escape_like(needle)}%", escape=LIKE_ESCAPE)
    if len(needle) < TRIGRAM:
        return func.instr(search_text, needle) > 0
    # An FTS5 phrase of trigrams matches exactly where the text contains it.
    phrase = '"' + needle.replace('"', '""') + '"'
    matching = text("SELECT rowid FROM message_search WHERE message_search MATCH :phrase")
    return col(Message.id).in_(matching.bindparams(phrase=phrase))


# "/" rather than a backslash: it needs no extra quoting on any database.
LIKE_ESCAPE = "/"


def _escape_like(text: str) -> str:
    """Make %, _ and the escape character itself match literally in LIKE."""
    for char in (LIKE_ESCAPE, "%", "_"):
        text = text.replace(char, LIKE_ESCAPE + char)
    return text
