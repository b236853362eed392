"""Every SQLModel class: the tables, and the schemas the API reads and writes.

One hierarchy per resource, as in the SQLModel tutorial:
- `XBase` holds the fields a client sees, with their validation rules;
- `X(XBase, table=True)` is the table: adds ids, secrets and bookkeeping;
- `XCreate` / `XUpdate` are request bodies;
- `XPublic` is what responses contain. Table rows are never returned as-is,
  so a column added later (a password hash...) cannot leak by accident.

The one deliberate exception: the busiest list pages (history, search,
conversation lists) are built from rows as dicts of these schemas' shape,
for speed, in pages.py, whose TypedDicts a test holds to these classes.
"""

import base64
import binascii
import re
import unicodedata
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, Literal, Self

from cryptography.hazmat.primitives.asymmetric import ec
from pydantic import AfterValidator, Strict, StringConstraints, model_validator
from sqlalchemy import BigInteger, Index, Integer, String, UniqueConstraint, text, true
from sqlmodel import Field, SQLModel


def utcnow() -> datetime:
    return datetime.now(UTC)


def _not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be only whitespace")
    return value


def _no_nul(value: str) -> str:
    # NUL is no text anyone types: PostgreSQL refuses it, C libraries cut strings there.
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    return value


# Every text a client sends refuses NUL: in a body, a form, a path or a query.
NoNul = AfterValidator(_no_nul)
Text = Annotated[str, NoNul]

# Characters that make a name look like something it is not: controls (Cc),
# bidirectional overrides and isolates (U+202A-U+202E, U+2066-U+2069: after
# U+202E the rest of a name shows backwards), and invisible ones. The joiners
# U+200C and U+200D stay: emoji such as a woman technologist (U+1F469 U+200D
# U+1F4BB) and several scripts need them, as emoji tag sequences need U+E0020-7F.
MISLEADING = {chr(c) for c in (*range(0x202A, 0x202F), *range(0x2066, 0x206A))} | {
    "\u200b",  # zero width space
    "\u2060",  # word joiner
    "\ufeff",  # zero width no-break space (byte order mark)
    "\u00ad",  # soft hyphen
}


def _plain_name(value: str) -> str:
    for char in value:
        if char in MISLEADING or unicodedata.category(char) == "Cc":
            raise ValueError(f"must not contain control or invisible characters: U+{ord(char):04X}")
    return value


Username = Annotated[
    str, StringConstraints(min_length=3, max_length=32, pattern=r"^[A-Za-z0-9_.-]+$")
]
# Any Unicode, measured in characters; argon2 hashes all of it (no 72-byte cut).
Password = Annotated[
    str, StringConstraints(min_length=8, max_length=128), AfterValidator(_not_blank), NoNul
]
# Shown to other people as who someone is, or what a conversation is.
DisplayName = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=64),
    AfterValidator(_plain_name),
]
Title = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=100),
    AfterValidator(_plain_name),
]
MessageText = Annotated[
    str,
    StringConstraints(min_length=1, max_length=4000),
    AfterValidator(_not_blank),
    NoNul,
]
ClientId = Annotated[str, StringConstraints(min_length=1, max_length=64), NoNul]

# Emoji: the code points that draw a picture (Unicode's Extended_Pictographic,
# in ranges), and the pieces an emoji sequence joins them with (UTS #51).
_PICTOGRAPHS = (
    "\u00a9\u00ae\u203c\u2049\u2122\u2139\u2194-\u2199\u21a9\u21aa\u231a\u231b"
    "\u2328\u2388\u23cf\u23e9-\u23f3\u23f8-\u23fa\u24c2\u25aa\u25ab\u25b6\u25c0"
    "\u25fb-\u25fe\u2600-\u2605\u2607-\u2612\u2614-\u2685\u2690-\u2705\u2708-\u2712"
    "\u2714\u2716\u271d\u2721\u2728\u2733\u2734\u2744\u2747\u274c\u274e\u2753-\u2755"
    "\u2757\u2763-\u2767\u2795-\u2797\u27a1\u27b0\u27bf\u2934\u2935\u2b05-\u2b07"
    "\u2b1b\u2b1c\u2b50\u2b55\u3030\u303d\u3297\u3299"
    "\U0001f000-\U0001f0ff\U0001f10d-\U0001f10f\U0001f12f\U0001f16c-\U0001f171"
    "\U0001f17e\U0001f17f\U0001f18e\U0001f191-\U0001f19a\U0001f1ad-\U0001f1e5"
    "\U0001f201-\U0001f20f\U0001f21a\U0001f22f\U0001f232-\U0001f23a\U0001f23c-\U0001f23f"
    "\U0001f249-\U0001f3fa\U0001f400-\U0001f53d\U0001f546-\U0001f64f\U0001f680-\U0001f6ff"
    "\U0001f774-\U0001f77f\U0001f7d5-\U0001f7ff\U0001f80c-\U0001f80f\U0001f848-\U0001f84f"
    "\U0001f85a-\U0001f85f\U0001f888-\U0001f88f\U0001f8ae-\U0001f8ff\U0001f90c-\U0001f93a"
    "\U0001f93c-\U0001f945\U0001f947-\U0001faff\U0001fc00-\U0001fffd"
)
_ELEMENT = f"[{_PICTOGRAPHS}](?:[\U0001f3fb-\U0001f3ff]?\ufe0f?|[\U000e0020-\U000e007e]+\U000e007f)"
EMOJI = re.compile(
    "[0-9#*]\ufe0f?\u20e3"  # a keycap
    "|[\U0001f1e6-\U0001f1ff]{2}"  # a flag: two regional indicators
    f"|{_ELEMENT}(?:\u200d{_ELEMENT})*"  # one picture, or several joined (ZWJ)
)


def _one_emoji(value: str) -> str:
    if not EMOJI.fullmatch(value):
        raise ValueError("must be one emoji")
    return value


# One emoji, as a reaction: the longest real ones (families, flags of
# regions) are under 16 code points.
Emoji = Annotated[str, StringConstraints(min_length=1, max_length=32), AfterValidator(_one_emoji)]

MAX_GROUP_MEMBERS = 100
# Ids fit SQL's BIGINT; a larger number would overflow the database driver.
MAX_ID = 2**63 - 1
PUSH_ENDPOINT_MAX = 2048  # a push service's URL for one browser (some run to 500 characters)
# Id columns: 64-bit on PostgreSQL (migration 0003). SQLite's INTEGER is 64-bit
# already, and a primary key must be spelled INTEGER there to stay the rowid.
ID = BigInteger().with_variant(Integer(), "sqlite")


class Role(StrEnum):
    member = "member"
    admin = "admin"


class Scope(StrEnum):
    """What a token may be used for (the OAuth2 `scope` of POST /token)."""

    read = "messages:read"
    write = "messages:write"
    admin = "admin"


class ConversationKind(StrEnum):
    direct = "direct"
    group = "group"
    channel = "channel"


# --- Users -----------------------------------------------------------------


class UserBase(SQLModel):
    username: Username
    display_name: DisplayName | None = None


class User(UserBase, table=True):
    # Unique ignoring case: "Alice" blocks "alice", but is stored as typed.
    __table_args__ = (Index("ix_user_username_lower", text("lower(username)"), unique=True),)

    id: int | None = Field(default=None, primary_key=True, sa_type=ID)
    hashed_password: str
    role: Role = Field(default=Role.member, sa_type=String(16))
    # False once an admin deactivates the account: no login, no token works.
    active: bool = Field(default=True, sa_column_kwargs={"server_default": true()})
    # Part of every token; a password change or a deactivation bumps it, so
    # older tokens fail.
    token_version: int = 0
    created_at: datetime = Field(default_factory=utcnow)


class UserCreate(UserBase):
    password: Password


class UserUpdate(SQLModel):
    display_name: DisplayName | None = None  # null clears it


class UserPublic(UserBase):
    id: int
    role: Role
    created_at: datetime


class UserAdminPublic(UserPublic):
    """A user as admins see them (GET /admin/users)."""

    active: bool


class PasswordChange(SQLModel):
    current_password: Text = Field(max_length=128)
    new_password: Password


# --- Tokens ----------------------------------------------------------------


class LoginForm(SQLModel):
    """POST /token's form: the OAuth2 password grant (RFC 6749 §4.3), which
    Swagger UI's Authorize dialog sends, or the refresh grant (§6)."""

    grant_type: Text = Field(
        default="password", description="`password` (the default) or `refresh_token`"
    )
    username: Text = Field(default="", description="For the password grant")
    password: Text = Field(
        default="",
        description="For the password grant",
        schema_extra={"json_schema_extra": {"format": "password"}},
    )
    refresh_token: Text = Field(default="", description="For the refresh_token grant")
    scope: Text = Field(
        default="",
        description="The scopes to ask for, separated by spaces, e.g. `messages:read`; "
        "empty for every scope your role allows (or, refreshing, that the session has)",
    )
    client_id: Text | None = None
    client_secret: Text | None = Field(
        default=None, schema_extra={"json_schema_extra": {"format": "password"}}
    )

    @model_validator(mode="after")
    def check_grant(self) -> Self:
        # Each grant needs its own fields (any other grant_type is refused by
        # the route, with OAuth2's unsupported_grant_type).
        if self.grant_type == "password" and not (self.username and self.password):
            raise ValueError("the password grant needs a username and a password")
        if self.grant_type == "refresh_token" and not self.refresh_token:
            raise ValueError("the refresh_token grant needs a refresh_token")
        return self

    @property
    def scopes(self) -> list[str]:
        # RFC 6749 §3.3: scopes are separated by U+0020 only. A tab or an em
        # space stays inside a scope name, which then matches no scope.
        return [scope for scope in self.scope.split(" ") if scope]


class Token(SQLModel):
    access_token: str
    token_type: str = "bearer"
    expires_in: int  # seconds
    scope: str  # the granted scopes, space-separated
    # Exchanged at POST /token (grant_type=refresh_token) for a new pair; it
    # works once, and expires after refresh_expires_in seconds unused.
    refresh_token: str
    refresh_expires_in: int


class TokenPayload(SQLModel):
    """The claims inside our JWTs. Nothing secret: anyone can read a JWT."""

    sub: str  # the user id
    exp: int
    iat: int
    jti: str  # unique per token, so one token can be revoked (logout)
    ver: int  # the user's token_version when it was issued
    # The granted scopes, space-separated; None in tokens issued before
    # scopes existed (see auth.granted_scopes).
    scope: str | None = None
    # The session (login) it belongs to; None in tokens issued before
    # sessions existed, which work until they expire.
    sid: int | None = None


class AuthSession(SQLModel, table=True):
    """One login: a browser or device, and the refresh tokens it goes on
    with (migration 0007). Ending it ends every token it was given."""

    id: int | None = Field(default=None, primary_key=True, sa_type=ID)
    user_id: int = Field(foreign_key="user.id", index=True, sa_type=ID)
    scope: str  # what the login granted; a refresh may ask for less
    created_at: datetime = Field(default_factory=utcnow)
    last_used_at: datetime = Field(default_factory=utcnow)  # the last login or refresh
    client_ip: str = Field(max_length=64)
    user_agent: str = Field(max_length=256)
    ended_at: datetime | None = None  # logged out, ended, or its token reused


class RefreshToken(SQLModel, table=True):
    """Every refresh token a session was given, as a hash: the current one,
    and those rotated since, so that a reused one is recognised."""

    token_hash: str = Field(primary_key=True)  # SHA-256 of the token
    session_id: int = Field(foreign_key="authsession.id", index=True, sa_type=ID)
    used_at: datetime | None = None  # when it was exchanged for the next one


class SessionPublic(SQLModel):
    """A session as its user sees it (GET /sessions)."""

    id: int
    created_at: datetime
    last_used_at: datetime
    client_ip: str
    user_agent: str
    current: bool  # the session of the token that asked


class RevokedToken(SQLModel, table=True):
    """Logged-out tokens, kept until they would have expired anyway."""

    jti: str = Field(primary_key=True)
    expires_at: datetime = Field(index=True)


class LoginFailure(SQLModel, table=True):
    """One row per failed login, for the failed-login limit."""

    id: int | None = Field(default=None, primary_key=True, sa_type=ID)
    username_key: str = Field(index=True)  # the username tried, lower-cased
    failed_at: datetime = Field(default_factory=utcnow, index=True)


class ClientAttempt(SQLModel, table=True):
    """One row per failed login or sign-up from a client address, for the
    per-address limits (migration 0005)."""

    id: int | None = Field(default=None, primary_key=True, sa_type=ID)
    kind: str  # ATTEMPT_LOGIN_FAILURE or ATTEMPT_SIGNUP
    client_ip: str = Field(index=True)
    at: datetime = Field(default_factory=utcnow, index=True)


ATTEMPT_LOGIN_FAILURE = "login_failure"
ATTEMPT_SIGNUP = "signup"


class AttachmentPublic(SQLModel):
    id: int
    name: str
    size: int
    content_type: str
    width: int | None  # images only
    height: int | None
    # Signed for the reader, valid for ATTACHMENT_URL_SECONDS: an <img> or a
    # link works without the Authorization header.
    url: str
    thumbnail_url: str | None  # images only


# --- Messages --------------------------------------------------------------


class MessageBase(SQLModel):
    # The text is not here: a request must carry it, but a tombstone has none.
    client_id: ClientId | None = None


# table=True: a SQLAlchemy table and a Pydantic model in one. It does not
# validate when constructed; requests arrive as MessageCreate, which does.
class Message(MessageBase, table=True):
    __table_args__ = (
        # History pages are keyset lookups on (conversation_id, id).
        Index("ix_message_conversation_id_id", "conversation_id", "id"),
        # What one user sent lately (SEND_MAX_PER_MINUTE; migration 0006).
        Index("ix_message_author_id_created_at", "author_id", "created_at"),
        # Unread counts subtract what is not counted: the reader's own
        # messages and the deleted ones after the read marker (migration 0008).
        Index("ix_message_conversation_id_author_id_id", "conversation_id", "author_id", "id"),
        Index(
            "ix_message_deleted_conversation_id_id",
            "conversation_id",
            "id",
            sqlite_where=text("deleted = 1"),
            postgresql_where=text("deleted"),
        ),
        # A retried send with the same client_id finds the first one.
        UniqueConstraint("conversation_id", "author_id", "client_id"),
        # Ids are never reused, so `before`/`after` cursors stay meaningful.
        {"sqlite_autoincrement": True},
    )

    id: int | None = Field(default=None, primary_key=True, sa_type=ID)
    conversation_id: int = Field(foreign_key="conversation.id", sa_type=ID)
    author_id: int = Field(foreign_key="user.id", sa_type=ID)
    content: str | None = Field(default=None, max_length=4000)  # None once deleted
    created_at: datetime = Field(default_factory=utcnow)
    edited_at: datetime | None = None
    deleted: bool = False
    # The content as search compares it (db.fold: case-folded, normalized),
    # kept beside it so each database can index it (migration 0002).
    search_text: str | None = None
    # Its place in the conversation: 1, 2, 3… in id order (Conversation.message_seq).
    seq: int = Field(default=0, sa_type=ID)
    # How many attachments it carries (migration 0009): a page without any
    # costs no query for them (pages.with_attachments).
    attachment_count: int = Field(default=0, sa_column_kwargs={"server_default": "0"})
    # The message this one answers, in the same conversation (migration 0010).
    # No foreign key: messages are never removed (a delete leaves a tombstone),
    # and SQLite cannot add one to an existing table without rebuilding it.
    reply_to_id: int | None = Field(default=None, sa_type=ID)
    # The usernames its text @mentions, space-separated, as the message JSON
    # shows them (migration 0011); the Mention rows say the same per user,
    # indexed for GET /mentions and unread mention counts.
    mentions: str | None = None


MAX_ATTACHMENTS = 10


class MessageCreate(MessageBase):
    # Optional when the message carries attachments; stored as "" then.
    content: MessageText | None = None
    attachment_ids: list[Annotated[int, Field(ge=1, le=MAX_ID)]] = Field(
        default_factory=list,
        max_length=MAX_ATTACHMENTS,
        description="Up to 10 of your own uploads to this conversation, not sent yet",
    )
    reply_to: int | None = Field(
        default=None, ge=1, le=MAX_ID, description="The id of the message this one answers"
    )

    @model_validator(mode="after")
    def check_something_to_send(self) -> Self:
        if self.content is None and not self.attachment_ids:
            raise ValueError("a message needs content, attachment_ids or both")
        if len(set(self.attachment_ids)) != len(self.attachment_ids):
            raise ValueError("attachment_ids names an attachment twice")
        return self


class MessageUpdate(SQLModel):
    content: MessageText  # the only editable field, so it is required


class ReplyPublic(SQLModel):
    """What a reply shows of the message it answers, as that message is now."""

    id: int
    author: UserPublic
    snippet: str | None  # the start of its text (REPLY_SNIPPET characters); null once deleted
    deleted: bool


REPLY_SNIPPET = 100


class ReactionPublic(SQLModel):
    """One emoji on a message: how many people put it there, and whether you did."""

    emoji: str
    count: int
    me: bool


class MessagePublic(MessageBase):
    id: int
    conversation_id: int
    author: UserPublic
    content: str | None  # null once deleted; "" for attachments without text
    created_at: datetime
    edited_at: datetime | None
    deleted: bool
    attachments: list[AttachmentPublic]
    reply_to: ReplyPublic | None
    # The members its text @mentions (usernames, in order of first mention).
    mentions: list[str]
    # In order of the first reaction of each. In the message.* events, which
    # every member receives alike, `me` is false: the reaction.* events say who.
    reactions: list[ReactionPublic]


# --- Attachments -----------------------------------------------------------


class Attachment(SQLModel, table=True):
    """A file uploaded to a conversation (attachments.py). Its bytes live in
    DATA_DIR/attachments under `storage_key`; the row is written only once
    the file is complete there (migration 0009)."""

    __table_args__ = (
        # The uploads nobody sent, oldest first, for the daily clean-up.
        Index("ix_attachment_message_id_created_at", "message_id", "created_at"),
        # A user's uploads, for the quota.
        Index("ix_attachment_uploader_id", "uploader_id"),
    )

    id: int | None = Field(default=None, primary_key=True, sa_type=ID)
    conversation_id: int = Field(foreign_key="conversation.id", sa_type=ID)
    uploader_id: int = Field(foreign_key="user.id", sa_type=ID)
    message_id: int | None = Field(default=None, foreign_key="message.id", sa_type=ID)
    storage_key: str = Field(max_length=64, unique=True)
    name: str = Field(max_length=255)
    content_type: str = Field(max_length=100)  # from the bytes, never from the client
    size: int = Field(sa_type=ID)  # of the stored file
    # The bytes it counts against the uploader's quota: the file and its thumbnail.
    stored_bytes: int = Field(sa_type=ID)
    width: int | None = None  # images only
    height: int | None = None
    has_thumbnail: bool = False
    created_at: datetime = Field(default_factory=utcnow)


class Mention(SQLModel, table=True):
    """A member whom a message @mentions (migration 0011). Written when the
    message is sent or edited, removed when it is deleted."""

    __table_args__ = (
        # GET /mentions: mine, newest first.
        Index("ix_mention_user_id_message_id", "user_id", "message_id"),
        # Unread mentions: mine in one conversation, after the read marker.
        Index(
            "ix_mention_user_id_conversation_id_message_id",
            "user_id",
            "conversation_id",
            "message_id",
        ),
    )

    message_id: int = Field(foreign_key="message.id", primary_key=True, sa_type=ID)
    user_id: int = Field(foreign_key="user.id", primary_key=True, sa_type=ID)
    conversation_id: int = Field(foreign_key="conversation.id", sa_type=ID)


class PushSubscription(SQLModel, table=True):
    """A browser that asked for Web Push (push.py, migration 0012): where its
    push service takes pushes for it, and the keys to encrypt them with.

    It belongs to the login it was registered from: once that session ends
    (logout, "end other sessions", a password change, a deactivation), the
    browser gets no more pushes, as it gets no more events.
    """

    __table_args__ = (
        # A user's subscriptions, oldest first: who gets a push; the oldest goes over the cap.
        Index("ix_pushsubscription_user_id_id", "user_id", "id"),
    )

    id: int | None = Field(default=None, primary_key=True, sa_type=ID)
    user_id: int = Field(foreign_key="user.id", sa_type=ID)
    session_id: int = Field(foreign_key="authsession.id", sa_type=ID)
    # The push service's URL for this browser: a capability, as secret as a token.
    endpoint: str = Field(max_length=PUSH_ENDPOINT_MAX, unique=True)
    p256dh: str = Field(max_length=128)  # the browser's P-256 public key, base64url
    auth: str = Field(max_length=32)  # its 16-byte authentication secret, base64url
    created_at: datetime = Field(default_factory=utcnow)


class Reaction(SQLModel, table=True):
    """One person's emoji on one message (migration 0010)."""

    message_id: int = Field(foreign_key="message.id", primary_key=True, sa_type=ID)
    user_id: int = Field(foreign_key="user.id", primary_key=True, sa_type=ID)
    emoji: str = Field(primary_key=True, max_length=32)
    created_at: datetime = Field(default_factory=utcnow)


# --- Conversations ---------------------------------------------------------


class ConversationBase(SQLModel):
    kind: ConversationKind
    title: Title | None = None


class Conversation(ConversationBase, table=True):
    id: int | None = Field(default=None, primary_key=True, sa_type=ID)
    kind: ConversationKind = Field(sa_type=String(16))
    created_at: datetime = Field(default_factory=utcnow)
    # These two turn the contract's uniqueness rules into database constraints
    # (NULL for the other kinds, and NULLs never collide):
    direct_key: str | None = Field(default=None, unique=True)  # "<low id>:<high id>"
    channel_key: str | None = Field(default=None, unique=True)  # casefolded title
    # The seq of its newest message, i.e. how many were ever sent here. With
    # Message.seq it makes an unread count a subtraction (pages.UNREAD_COUNTS)
    # that costs the same for one unread message or a million.
    message_seq: int = Field(default=0, sa_type=ID)
    # When its newest message (by id, deleted or not) was sent; None until
    # the first. Set by the same UPDATE that takes the seq, so that
    # GET /conversations orders by this column (pages.MY_CONVERSATIONS)
    # instead of looking up each conversation's newest message (migration 0013).
    last_message_at: datetime | None = None


class ConversationCreate(ConversationBase):
    members: list[Text] = Field(default_factory=list, max_length=MAX_GROUP_MEMBERS)

    @model_validator(mode="after")
    def check_kind(self) -> Self:
        if self.kind == ConversationKind.direct:
            if self.title is not None:
                raise ValueError("a direct conversation has no title")
            if len(self.members) != 1:
                raise ValueError("a direct conversation has exactly one other member")
        elif self.title is None:
            raise ValueError(f"a {self.kind} needs a title")
        elif self.kind == ConversationKind.channel and self.members:
            raise ValueError("channels have no invited members: people join them")
        return self


class Membership(SQLModel, table=True):
    conversation_id: int | None = Field(
        default=None, foreign_key="conversation.id", primary_key=True, sa_type=ID
    )
    user_id: int | None = Field(
        default=None, foreign_key="user.id", primary_key=True, index=True, sa_type=ID
    )
    joined_at: datetime = Field(default_factory=utcnow)
    # The read marker: the newest message id this member has seen.
    last_read_message_id: int = Field(default=0, sa_type=ID)
    # Which messages notify this member (migration 0011); None: the default
    # for the conversation's kind (NotificationLevel.of).
    notifications: str | None = Field(default=None, sa_type=String(8))


class NotificationLevel(StrEnum):
    """Which new messages of a conversation notify a member (desktop
    notifications and Web Push): every one, those that @mention them, or none."""

    all = "all"
    mentions = "mentions"
    none = "none"

    @classmethod
    def of(cls, kind: str, stored: str | None) -> "NotificationLevel":
        """A member's level: what they chose, else the default for the kind
        (a channel's every message would be too many)."""
        if stored is not None:
            return cls(stored)
        return cls.mentions if kind == ConversationKind.channel else cls.all


class NotificationsUpdate(SQLModel):
    level: NotificationLevel


class ConversationPublic(ConversationBase):
    id: int
    created_at: datetime
    member_count: int
    members: list[UserPublic] | None  # null for channels
    is_member: bool
    last_message: MessagePublic | None
    unread_count: int
    unread_mentions: int  # unread messages that @mention you
    notifications: NotificationLevel | None  # your level; null if you are not a member


class MemberAdd(SQLModel):
    username: Text


class ReadMarker(SQLModel):
    message_id: int = Field(ge=0, le=MAX_ID)


# --- Real time (GET /ws) ----------------------------------------------------
# Frames a client sends. Each is validated before anything acts on it.


class AuthFrame(SQLModel):
    type: Literal["auth"]
    token: str = Field(max_length=4096)


class TypingFrame(SQLModel):
    type: Literal["typing"]
    conversation_id: Annotated[int, Strict()] = Field(ge=1, le=MAX_ID)  # not "1", 1.0, true


class PingFrame(SQLModel):
    type: Literal["ping"]


# `type` picks the model, so an error names the one field that is wrong.
ClientFrame = Annotated[AuthFrame | TypingFrame | PingFrame, Field(discriminator="type")]


# Events the server sends.


class ReadyEvent(SQLModel):
    type: Literal["ready"] = "ready"
    user: UserPublic


class MessageEvent(SQLModel):
    type: Literal["message.created", "message.updated", "message.deleted"]
    message: MessagePublic


class ReactionEvent(SQLModel):
    """Someone added or removed a reaction; `count` is how many people have
    that emoji on the message now."""

    type: Literal["reaction.added", "reaction.removed"]
    conversation_id: int
    message_id: int
    emoji: str
    user: UserPublic
    count: int


class JoinedEvent(SQLModel):
    type: Literal["conversation.joined"] = "conversation.joined"
    conversation: ConversationPublic


class ReadEvent(SQLModel):
    type: Literal["read"] = "read"
    conversation_id: int
    message_id: int


class TypingEvent(SQLModel):
    type: Literal["typing"] = "typing"
    conversation_id: int
    user: UserPublic


class PongEvent(SQLModel):
    type: Literal["pong"] = "pong"


class ErrorEvent(SQLModel):
    type: Literal["error"] = "error"
    detail: str


class Envelope(SQLModel):
    """An event on its way from the process that published it to the sockets
    of every process. It names the recipients, not their sockets: each process
    looks up, when it delivers, who may receive it."""

    conversation_id: int | None = None  # to the members of this conversation,
    user_ids: list[int] = Field(default_factory=list)  # or to these users
    skip_user_id: int | None = None  # not to this user (typing is not echoed)
    event: str | None = None  # the event's JSON; None: only re-check tokens
    # A message event with attachments: each recipient gets its URLs signed
    # for them (pages.sign_event_for).
    sign_urls: bool = False
    origin: str | None = None  # the process that sent it through Redis
    # When it was published, in seconds since the epoch (wall time, which
    # every process shares, unlike monotonic time): for the delivery delay.
    published_at: float | None = None


# --- Errors, for the OpenAPI document ---------------------------------------


class ErrorDetail(SQLModel):
    detail: str


class TokenErrorDetail(ErrorDetail):
    """A refused login: RFC 6749 §5.2's `error` and `error_description` (which
    Swagger UI and OAuth2 clients show) beside the usual `detail`."""

    error: str  # "invalid_scope" or "invalid_grant"
    error_description: str


# --- Web Push (push.py) ------------------------------------------------------


def _base64url(value: str, size: int, what: str) -> str:
    try:
        raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    except (ValueError, binascii.Error) as exc:
        raise ValueError(f"{what} is not base64url") from exc
    if len(raw) != size:
        raise ValueError(f"{what} must be {size} bytes")
    return value


def _p256_point(value: str) -> str:
    raw = base64.urlsafe_b64decode(_base64url(value, 65, "p256dh") + "=" * (-len(value) % 4))
    try:
        ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), raw)
    except ValueError as exc:
        raise ValueError("p256dh is not an uncompressed point on P-256") from exc
    return value


class PushKeys(SQLModel):
    """The browser's keys: pushes are encrypted to them (RFC 8291)."""

    p256dh: Annotated[str, StringConstraints(max_length=128), AfterValidator(_p256_point)]
    auth: Annotated[
        str,
        StringConstraints(max_length=32),
        AfterValidator(lambda v: _base64url(v, 16, "auth")),
    ]


class PushEndpoint(SQLModel):
    endpoint: Annotated[str, StringConstraints(min_length=1, max_length=PUSH_ENDPOINT_MAX), NoNul]


class PushSubscriptionCreate(PushEndpoint):
    """What the browser's `PushSubscription.toJSON()` gives."""

    expirationTime: int | None = None  # noqa: N815 (the browser's name); unused
    keys: PushKeys


class PushSubscriptionPublic(SQLModel):
    endpoint: str
    created_at: datetime


class PushKey(SQLModel):
    public_key: str  # base64url, no padding: what `applicationServerKey` takes


def error_responses(
    descriptions: dict[int, str], model: type[ErrorDetail] = ErrorDetail
) -> dict[int | str, dict[str, Any]]:
    """Document a route's error statuses, e.g. `{404: "Conversation not found"}`."""
    return {
        code: {"model": model, "description": description}
        for code, description in descriptions.items()
    }
