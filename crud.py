"""Queries and changes behind the routes.

Helpers never raise HTTPException: they return None or False when something
is missing or taken, and the route picks the status. The busiest list pages
(history, search, conversation lists) are in pages.py.
"""

import hashlib
import math
import re
import secrets
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import (
    ColumnElement,
    and_,
    bindparam,
    delete,
    exists,
    func,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select
from sqlmodel.sql.expression import SelectOfScalar

from config import settings
from db import GENERAL_CHANNEL, fold
from models import (
    Attachment,
    AuthSession,
    ClientAttempt,
    Conversation,
    ConversationKind,
    LoginFailure,
    Membership,
    Mention,
    Message,
    MessageCreate,
    NotificationLevel,
    Reaction,
    RefreshToken,
    RevokedToken,
    Role,
    User,
    UserCreate,
    utcnow,
)

# --- Users -----------------------------------------------------------------


def lower_username() -> ColumnElement[str]:
    # The same expression as the unique index, so lookups can use that index.
    return func.lower(User.username)


def get_user_by_username(session: Session, username: str) -> User | None:
    return session.exec(select(User).where(lower_username() == username.lower())).first()


def get_users_by_usernames(session: Session, usernames: list[str]) -> dict[str, User]:
    """The users that exist among `usernames`, keyed by lower-cased username."""
    wanted = {name.lower() for name in usernames}
    users = session.exec(select(User).where(lower_username().in_(wanted))).all()
    return {user.username.lower(): user for user in users}


def search_users(
    session: Session, prefix: str, limit: int, offset: int = 0, *, active_only: bool
) -> Sequence[User]:
    pattern = escape_like(prefix.lower()) + "%"
    query = select(User).where(lower_username().like(pattern, escape=LIKE_ESCAPE))
    if active_only:
        query = query.where(col(User.active))
    return session.exec(query.order_by(lower_username()).offset(offset).limit(limit)).all()


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


# Every authenticated request asks this: one query, built once (see pages.NEWEST_PAGE).
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


# --- Sessions and refresh tokens -------------------------------------------
# A session is one login. Its access tokens carry its id (`sid`), and it
# goes on with refresh tokens, each good for one exchange (rotation).


def refresh_token_hash(token: str) -> str:
    # A refresh token is 256 random bits: a fast hash is enough, and lets the
    # database find it by its hash alone.
    return hashlib.sha256(token.encode()).hexdigest()


def session_expires_at(auth_session: AuthSession) -> datetime:
    """When the session's refresh token stops working: after
    REFRESH_TOKEN_IDLE_DAYS unused, and REFRESH_TOKEN_LIFETIME_DAYS after login."""
    idle = auth_session.last_used_at + timedelta(days=settings.REFRESH_TOKEN_IDLE_DAYS)
    absolute = auth_session.created_at + timedelta(days=settings.REFRESH_TOKEN_LIFETIME_DAYS)
    return min(idle, absolute)


def _give_refresh_token(session: Session, auth_session: AuthSession) -> str:
    assert auth_session.id is not None  # flushed
    token = secrets.token_urlsafe(32)
    session.add(RefreshToken(token_hash=refresh_token_hash(token), session_id=auth_session.id))
    return token


def start_session(
    session: Session, user: User, scope: str, client_ip: str, user_agent: str
) -> tuple[AuthSession, str]:
    """A new session for a login, and its first refresh token. The user's
    sessions that expired unused are ended on the way, so their rows stay few."""
    assert user.id is not None
    now = utcnow()
    going = session.exec(
        select(AuthSession).where(
            AuthSession.user_id == user.id, col(AuthSession.ended_at).is_(None)
        )
    )
    for expired in [s for s in going.all() if session_expires_at(s) <= now]:
        expired.ended_at = now
        session.add(expired)
    _drop_ended_tokens(session, user)
    auth_session = AuthSession(
        user_id=user.id, scope=scope, client_ip=client_ip[:64], user_agent=user_agent[:256]
    )
    session.add(auth_session)
    session.flush()  # gives it its id
    token = _give_refresh_token(session, auth_session)
    session.commit()
    return auth_session, token


# The refresh token, its session and the session's user, in one query.
REFRESH_TOKEN_LOOKUP = (
    select(RefreshToken, AuthSession, User)
    .join(AuthSession, col(AuthSession.id) == RefreshToken.session_id)
    .join(User, col(User.id) == AuthSession.user_id)
    .where(RefreshToken.token_hash == bindparam("token_hash"))
)


def find_refresh_token(
    session: Session, token: str
) -> tuple[RefreshToken, AuthSession, User] | None:
    row = session.exec(
        REFRESH_TOKEN_LOOKUP, params={"token_hash": refresh_token_hash(token)}
    ).first()
    return None if row is None else (row[0], row[1], row[2])


def rotate_refresh_token(
    session: Session,
    used: RefreshToken,
    auth_session: AuthSession,
    client_ip: str,
    user_agent: str,
) -> str | None:
    """Mark `used` as exchanged and give the session its next token; None if
    it had been exchanged already. The check is part of the UPDATE, so of two
    refreshes racing with one token, only one gets a new one."""
    now = utcnow()
    exchanged = session.exec(
        update(RefreshToken)
        .where(col(RefreshToken.token_hash) == used.token_hash, col(RefreshToken.used_at).is_(None))
        .values(used_at=now)
    )
    if exchanged.rowcount != 1:
        session.rollback()
        return None
    auth_session.last_used_at = now
    auth_session.client_ip, auth_session.user_agent = client_ip[:64], user_agent[:256]
    session.add(auth_session)
    token = _give_refresh_token(session, auth_session)
    session.commit()
    return token


def end_sessions(
    session: Session, user: User, *, only: int | None = None, keep: int | None = None
) -> int:
    """End the user's sessions that are still going (just `only`, or all but
    `keep`): their tokens stop working. How many were ended."""
    query = update(AuthSession).where(
        col(AuthSession.user_id) == user.id, col(AuthSession.ended_at).is_(None)
    )
    if only is not None:
        query = query.where(col(AuthSession.id) == only)
    if keep is not None:
        query = query.where(col(AuthSession.id) != keep)
    ended = session.exec(query.values(ended_at=utcnow()))
    _drop_ended_tokens(session, user)
    session.commit()
    return ended.rowcount


def _drop_ended_tokens(session: Session, user: User) -> None:
    # The tokens of ended sessions need no keeping: nothing can refresh them.
    ended = select(AuthSession.id).where(
        AuthSession.user_id == user.id, col(AuthSession.ended_at).is_not(None)
    )
    session.exec(delete(RefreshToken).where(col(RefreshToken.session_id).in_(ended)))


def live_sessions(session: Session, user: User) -> list[AuthSession]:
    """The user's sessions that are neither ended nor expired, latest used first."""
    sessions = session.exec(
        select(AuthSession)
        .where(AuthSession.user_id == user.id, col(AuthSession.ended_at).is_(None))
        .order_by(col(AuthSession.last_used_at).desc(), col(AuthSession.id).desc())
    ).all()
    now = utcnow()
    return [s for s in sessions if session_expires_at(s) > now]


# Every request with a token from a session asks this: one query, built once.
USER_IN_SESSION = (
    select(User)
    .join(AuthSession, col(AuthSession.user_id) == User.id)
    .where(
        User.id == bindparam("user_id"),
        AuthSession.id == bindparam("session_id"),
        col(AuthSession.ended_at).is_(None),
    )
)


def get_user_in_session(session: Session, user_id: int, session_id: int) -> User | None:
    """The user, if the session is theirs and still going."""
    params = {"user_id": user_id, "session_id": session_id}
    return session.exec(USER_IN_SESSION, params=params).first()


def ended_sessions_among(session: Session, session_ids: Collection[int]) -> set[int]:
    """Of `session_ids`, those ended (or gone)."""
    going = session.exec(
        select(AuthSession.id).where(
            col(AuthSession.id).in_(session_ids), col(AuthSession.ended_at).is_(None)
        )
    )
    return set(session_ids) - set(going)


# The hub asks about every connected user at each event. `IN (...)` costs
# SQLAlchemy and SQLite a bound parameter per id (about 7 µs each: 70 ms for
# 10,000 sockets); past MANY_IDS ids, reading the whole list (a
# conversation's members, the revoked tokens) and keeping the ids asked
# about is several times cheaper.
MANY_IDS = 500

# A conversation's members and their token versions, built once.
MEMBER_TOKEN_VERSIONS = (
    select(User.id, User.token_version)
    .join(Membership, col(Membership.user_id) == User.id)
    .where(Membership.conversation_id == bindparam("conversation_id"))
)


def live_token_versions(
    session: Session, user_ids: Collection[int], conversation_id: int | None = None
) -> dict[int, int]:
    """Of `user_ids`, those who may receive an event (the members, if a
    conversation is given), each with their current token version."""
    if conversation_id is not None and len(user_ids) > MANY_IDS:
        rows = session.exec(MEMBER_TOKEN_VERSIONS, params={"conversation_id": conversation_id})
        return {u: version for u, version in rows if u is not None and u in user_ids}
    query = select(User.id, User.token_version).where(col(User.id).in_(user_ids))
    if conversation_id is not None:
        query = query.join(Membership, col(Membership.user_id) == User.id).where(
            Membership.conversation_id == conversation_id
        )
    return {user_id: version for user_id, version in session.exec(query) if user_id is not None}


def revoked_among(session: Session, jtis: Collection[str]) -> set[str]:
    if len(jtis) > MANY_IDS:
        # A short table: a row per logout, purged of expired tokens at each logout.
        return set(session.exec(select(RevokedToken.jti))).intersection(jtis)
    return set(session.exec(select(RevokedToken.jti).where(col(RevokedToken.jti).in_(jtis))))


# --- Conversations ---------------------------------------------------------


@dataclass
class ConversationAccess:
    """A conversation the caller may see, and their membership of it."""

    conversation: Conversation
    membership: Membership | None  # None: a channel the caller has not joined


# The conversation and the user's membership of it (if any), in one query
# built once (see pages.NEWEST_PAGE): every request about a conversation asks it.
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
        .order_by(lower_username())
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


# --- Messages --------------------------------------------------------------


def latest_message_id(session: Session, conversation: Conversation) -> int:
    newest = session.exec(
        select(func.max(Message.id)).where(Message.conversation_id == conversation.id)
    ).one()
    return newest or 0


def get_message(session: Session, message_id: int) -> Message | None:
    return session.get(Message, message_id)


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
    session: Session,
    conversation: Conversation,
    author: User,
    message_in: MessageCreate,
    at: datetime | None = None,
) -> tuple[Message, bool] | None:
    """Store the message, sent `at` (default: now), and return it with True;
    or, if this author already sent its client_id here, return that earlier
    message with False. None if its attachment_ids are not all the author's
    unsent uploads here."""
    client_id = message_in.client_id
    if client_id is not None:
        earlier = get_message_by_client_id(session, conversation, author, client_id)
        if earlier is not None:
            return earlier, False
    content = message_in.content or ""
    created_at = utcnow() if at is None else at
    # The conversation's next seq, and its last activity (what GET
    # /conversations orders by), in one statement. Taking the seq locks the
    # conversation's row until the commit, so on PostgreSQL too a later id
    # always gets a later seq, and last_message_at is the newest id's time.
    # The time is taken before that lock: on PostgreSQL, two sends racing in
    # one conversation may carry times out of id order by the wait for it
    # (on SQLite, writers take turns before this code runs).
    seq = (
        session.connection()
        .execute(
            update(Conversation)
            .where(col(Conversation.id) == conversation.id)
            .values(message_seq=Conversation.message_seq + 1, last_message_at=created_at)
            .returning(col(Conversation.message_seq))
        )
        .scalar_one()
    )
    message = Message.model_validate(
        message_in,
        update={
            "conversation_id": conversation.id,
            "author_id": author.id,
            "content": content,
            "search_text": fold(content),
            "seq": seq,
            "created_at": created_at,
            "attachment_count": len(message_in.attachment_ids),
            "reply_to_id": message_in.reply_to,
        },
    )
    session.add(message)
    try:
        if message_in.attachment_ids and not _attach(session, message, message_in.attachment_ids):
            session.rollback()
            return None
        session.flush()  # gives the message its id, for its mentions
        _set_mentions(session, message)
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
    _set_mentions(session, message, replace=True)
    session.commit()
    return message


def delete_message(session: Session, message: Message) -> list[str]:
    """Replace the message by a tombstone: the text is gone for good, and so
    are the reactions to it and its attachments' rows. Their storage keys,
    for their files to go too."""
    message.content = None
    message.search_text = None
    message.deleted = True
    keys: list[str] = []
    if message.attachment_count:
        keys = list(
            session.exec(
                delete(Attachment)
                .where(col(Attachment.message_id) == message.id)
                .returning(col(Attachment.storage_key))
            ).scalars()
        )
        message.attachment_count = 0
    message.mentions = None
    session.add(message)
    session.exec(delete(Reaction).where(col(Reaction.message_id) == message.id))
    session.exec(delete(Mention).where(col(Mention.message_id) == message.id))
    session.commit()
    return keys


# --- Mentions and notification levels ----------------------------------------

# "@name" where a username may stand, not inside a word or an address:
# "bob@example.com" mentions nobody.
MENTION = re.compile(r"(?<![\w@.])@([A-Za-z0-9_.-]+)")
# More are not looked up: a message cannot notify a whole channel by name.
MAX_MENTIONS = 50


def mentioned_names(content: str) -> list[tuple[str, ...]]:
    """What each @mention in `content` may name, lower-cased, in the text's
    order: "@bob." at the end of a sentence is "bob." if someone is called
    that, else "bob". Names a username cannot be (models.Username) are left out."""
    mentions: dict[tuple[str, ...], None] = {}
    for match in MENTION.finditer(content):
        name = match.group(1).lower()
        candidates = dict.fromkeys(n for n in (name, name.rstrip(".-")) if 3 <= len(n) <= 32)
        if candidates:
            mentions[tuple(candidates)] = None
    return list(mentions)[:MAX_MENTIONS]


def _set_mentions(session: Session, message: Message, *, replace: bool = False) -> None:
    """Store whom the message's text @mentions: members of its conversation
    other than its author, matched ignoring case; `replace` what an earlier
    version of the text mentioned."""
    assert message.id is not None  # flushed: it has its id
    mentions = mentioned_names(message.content or "")
    found: dict[str, tuple[int, str]] = {}
    if mentions:
        rows = session.exec(
            select(col(User.id), col(User.username))
            .join(Membership, col(Membership.user_id) == User.id)
            .where(
                Membership.conversation_id == message.conversation_id,
                col(User.id) != message.author_id,
                lower_username().in_({name for names in mentions for name in names}),
            )
        )
        found = {username.lower(): (user_id or 0, username) for user_id, username in rows}
    # Each mention's first name that is a member's, in the text's order, once.
    mentioned: dict[int, str] = {}
    for names in mentions:
        name = next((name for name in names if name in found), None)
        if name is not None:
            user_id, username = found[name]
            mentioned.setdefault(user_id, username)
    message.mentions = " ".join(mentioned.values()) or None
    if replace:
        session.exec(delete(Mention).where(col(Mention.message_id) == message.id))
    session.add_all(
        Mention(message_id=message.id, user_id=user_id, conversation_id=message.conversation_id)
        for user_id in mentioned
    )


def set_notification_level(
    session: Session, membership: Membership, level: NotificationLevel
) -> None:
    membership.notifications = level
    session.add(membership)
    session.commit()


def members_to_notify(session: Session, message: Message, kind: str) -> list[int]:
    """The members a new message notifies by their level: every member but
    its author whose level is `all`, or `mentions` and it mentions them; and
    who have not read up to it yet (on another device, say)."""
    default = NotificationLevel.of(kind, None)
    level = func.coalesce(Membership.notifications, default.value)
    mentioned = select(Mention.user_id).where(Mention.message_id == message.id)
    return [
        user_id
        for user_id in session.exec(
            select(col(Membership.user_id)).where(
                Membership.conversation_id == message.conversation_id,
                col(Membership.user_id) != message.author_id,
                col(Membership.last_read_message_id) < message.id,
                (level == NotificationLevel.all.value)
                | (
                    (level == NotificationLevel.mentions.value)
                    & col(Membership.user_id).in_(mentioned)
                ),
            )
        ).all()
        if user_id is not None
    ]


# --- Attachments -----------------------------------------------------------


def _attach(session: Session, message: Message, attachment_ids: Collection[int]) -> bool:
    """Give the message these attachments, if each is an unsent upload of its
    author's in its conversation. The checks are part of the UPDATE, so two
    sends racing with one upload cannot both have it."""
    session.flush()  # gives the message its id
    attached = session.exec(
        update(Attachment)
        .where(
            col(Attachment.id).in_(attachment_ids),
            col(Attachment.uploader_id) == message.author_id,
            col(Attachment.conversation_id) == message.conversation_id,
            col(Attachment.message_id).is_(None),
        )
        .values(message_id=message.id)
    )
    return attached.rowcount == len(attachment_ids)


def get_attachment(session: Session, attachment_id: int) -> Attachment | None:
    return session.get(Attachment, attachment_id)


def stored_bytes(session: Session, user_id: int) -> int:
    """What the user's uploads take on disk, sent or not (the quota's measure)."""
    used = session.exec(
        select(func.sum(Attachment.stored_bytes)).where(Attachment.uploader_id == user_id)
    ).one()
    return int(used or 0)


def add_attachment(session: Session, attachment: Attachment, quota: int) -> bool:
    """Store the row, unless it would take its uploader over `quota` bytes.
    The user's row is locked meanwhile (SQLite's write lock does as much), so
    that two uploads at once cannot both squeeze under it."""
    session.exec(select(User.id).where(User.id == attachment.uploader_id).with_for_update())
    if stored_bytes(session, attachment.uploader_id) + attachment.stored_bytes > quota:
        session.rollback()
        return False
    session.add(attachment)
    session.commit()
    return True


def delete_unsent_attachments(session: Session, before: datetime) -> list[str]:
    """Drop the uploads never sent that were made before `before`: their storage keys."""
    keys = list(
        session.exec(
            delete(Attachment)
            .where(col(Attachment.message_id).is_(None), col(Attachment.created_at) < before)
            .returning(col(Attachment.storage_key))
        ).scalars()
    )
    session.commit()
    return keys


def known_storage_keys(session: Session, keys: Collection[str]) -> set[str]:
    return set(
        session.exec(select(Attachment.storage_key).where(col(Attachment.storage_key).in_(keys)))
    )


# --- Reactions -------------------------------------------------------------


def add_reaction(session: Session, message: Message, user: User, emoji: str) -> bool:
    """Put `emoji` on the message for `user`; True if it was not there yet."""
    key = (message.id, user.id, emoji)
    if session.get(Reaction, key) is not None:
        return False
    assert message.id is not None and user.id is not None
    session.add(Reaction(message_id=message.id, user_id=user.id, emoji=emoji))
    try:
        session.commit()
    except IntegrityError:  # the same reaction, from a request racing this one
        session.rollback()
        return False
    return True


def remove_reaction(session: Session, message: Message, user: User, emoji: str) -> bool:
    """Take `user`'s `emoji` off the message; True if it was there."""
    result = session.exec(
        delete(Reaction).where(
            col(Reaction.message_id) == message.id,
            col(Reaction.user_id) == user.id,
            col(Reaction.emoji) == emoji,
        )
    )
    session.commit()
    return result.rowcount == 1


def reaction_count(session: Session, message: Message, emoji: str) -> int:
    return session.exec(
        select(func.count())
        .select_from(Reaction)
        .where(Reaction.message_id == message.id, Reaction.emoji == emoji)
    ).one()


# "/" rather than a backslash: it needs no extra quoting on any database.
LIKE_ESCAPE = "/"


def escape_like(text: str) -> str:
    """Make %, _ and the escape character itself match literally in LIKE."""
    for char in (LIKE_ESCAPE, "%", "_"):
        text = text.replace(char, LIKE_ESCAPE + char)
    return text
