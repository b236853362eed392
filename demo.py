"""Demo data: with DEMO_DATA=1, an empty database gets a few users, a busy
channel, a group and a direct conversation at start, so that `/` and `/docs`
have something to show at once (`make demo`). alice is an admin.

Only a database without any user is filled: an operator's data is never
touched. Everything goes through the same crud functions and password
hashing as the routes, so the demo users log in like anyone else.
"""

import logging
import random
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Engine
from sqlmodel import Session, select

import crud
import db
from auth import hash_password
from models import (
    Conversation,
    ConversationKind,
    Message,
    MessageCreate,
    Role,
    User,
    UserCreate,
    utcnow,
)

logger = logging.getLogger("messageapp.demo")

# Known on purpose, and printed at start: never run demo mode on a server
# that strangers can reach.
DEMO_PASSWORD = "demo-password"
# username, display name (alice is also an admin)
DEMO_USERS = [
    ("alice", "Alice Liddell"),
    ("bob", "Bob Chen"),
    ("carol", "Carol Diaz"),
    ("dave", "Dave Okafor"),
]
BUSY_MESSAGES = 300  # six pages of 50: enough to scroll up through (`before=`)
GROUP_TITLE = "Book club"
QUIET_CHANNEL = "random"

# Lines for the busy channel, picked at random (with a fixed seed: every demo
# database looks the same, times aside).
CHATTER = [
    "Morning all!",
    "Good morning ☀️",
    "Coffee's ready in the kitchen.",
    "Has anyone seen the new dashboard? It's so much faster.",
    "The build is green again 🎉",
    "Who broke the build? 😅",
    "Can someone review my pull request when they have a minute?",
    "Reviewed, two small comments.",
    "Merged, thanks!",
    "Pizza on Friday? 🍕",
    "I'm in for pizza, as long as one has no cheese.",
    "Reminder: stand-up in five minutes.",
    "Stand-up notes are in the wiki.",
    "I'll be a bit late today, dentist.",
    "Working from home today.",
    "Lunch at the noodle place?",
    "+1",
    "Agreed.",
    "Ha, nice one.",
    "Sounds good to me.",
    "Does anyone know why the tests are slow on Mondays?",
    "Because everyone pushes on Monday morning.",
    "The release notes draft is ready for comments.",
    "Shipping the release at 3 pm unless someone shouts.",
    "Released! Thanks everyone.",
    "Found a typo on the login page, fixing it.",
    "Is the meeting room free at 2?",
    "Booked it.",
    "Who wants to pair on the search bug this afternoon?",
    "Me! I think it's the accents: München vs MÜNCHEN.",
    "Fixed: search ignores case in any language now.",
    "The office plants need water 🌱",
    "Weekend plans, anyone?",
    "Hiking if the weather holds.",
    "Bye all, see you tomorrow 👋",
    "Thanks for the help today!",
    "Can we move the retro to Thursday?",
    "Thursday works.",
    "Heads-up: the database migration runs tonight.",
    "Migration done, all good.",
]


@dataclass
class Line:
    """A message to write: in which conversation, by whom, what, and when."""

    conversation: Conversation
    author: User
    content: str
    at: datetime


def seed_demo_data(bind: Engine) -> None:
    """Fill an empty database with the demo data and log how to log in; on a
    database that has users already, add nothing."""
    # The lock that start-up migrations take: workers starting together seed
    # one at a time, and the ones after the first find users and stop. All of
    # it is one transaction, so a demo is never half-made.
    with (
        db.migration_lock(bind) as connection,
        Session(connection, expire_on_commit=False) as session,
    ):
        has_users = session.exec(select(User.id).limit(1)).first() is not None
        if has_users:
            names = [name for name, _ in DEMO_USERS]
            demo_there = len(crud.get_users_by_usernames(session, names)) == len(names)
        else:
            _seed(session)
    if has_users:
        if demo_there:
            logger.info(
                "Demo data is there already; nothing added. Its logins, unless changed since:"
            )
            _log_logins()
        else:
            logger.warning("DEMO_DATA is set, but the database has users: no demo data added")
        return
    logger.info(
        "Demo data added: %d users, a channel of %d messages, a group, a direct conversation",
        len(DEMO_USERS),
        BUSY_MESSAGES,
    )
    _log_logins()


def _log_logins() -> None:
    for username, display_name in DEMO_USERS:
        role = ", an admin" if username == "alice" else ""
        logger.info(
            "Demo login: %-6s password: %s  (%s%s)", username, DEMO_PASSWORD, display_name, role
        )


def _seed(session: Session) -> None:
    # crud's functions commit; inside the lock's transaction a commit only
    # flushes, and everything is committed together when the lock is released.
    hashed = hash_password(DEMO_PASSWORD)  # one hash for all: same password, and fast
    users = []
    for username, display_name in DEMO_USERS:
        user_in = UserCreate(username=username, display_name=display_name, password=DEMO_PASSWORD)
        user = crud.create_user(session, user_in, hashed)  # also joins `general`
        assert user is not None  # the database had no users
        users.append(user)
    alice, bob, carol, dave = users
    # An admin, so the admin routes have someone to show them with.
    crud.set_role(session, alice, Role.admin)

    general = session.exec(
        select(Conversation).where(Conversation.channel_key == db.GENERAL_CHANNEL)
    ).one()
    group = crud.create_conversation(
        session, ConversationKind.group, GROUP_TITLE, alice, [bob, carol]
    )
    direct = crud.create_conversation(session, ConversationKind.direct, None, bob, [alice])
    quiet = crud.create_conversation(session, ConversationKind.channel, QUIET_CHANNEL, dave)
    assert group is not None and direct is not None and quiet is not None

    now = utcnow()
    rng = random.Random(9)
    lines = [
        Line(general, rng.choice(users), rng.choice(CHATTER), at)
        for at in sorted(
            now - timedelta(minutes=rng.uniform(10, 3 * 24 * 60)) for _ in range(BUSY_MESSAGES)
        )
    ]
    scripts = [
        (
            group,
            now - timedelta(hours=26),
            [
                (alice, "Next book: The Left Hand of Darkness?"),
                (bob, "Yes! I have a copy already."),
                (carol, "I'm halfway through it, no spoilers please 🙈"),
                (alice, "Meeting on the 12th, at my place?"),
                (bob, "Works for me."),
                (carol, "Me too. I'll bring snacks."),
                (alice, "Great, see you then 📚"),
            ],
        ),
        (
            direct,
            now - timedelta(minutes=45),
            [
                (bob, "Hi Alice! Do you have a minute for the demo?"),
                (alice, "Sure, what's up?"),
                (bob, "Can you show the live updates? Open this chat in two windows."),
                (alice, "Good idea: one window as you, one as me."),
                (bob, "And pizza after the demo? 🍕"),
                (bob, "My treat."),
            ],
        ),
        (
            general,
            now - timedelta(minutes=40),  # among alice's unread, older than the direct's
            [(bob, "@alice could you read the release notes before we ship?")],
        ),
        (
            quiet,
            now - timedelta(hours=5),
            [
                (dave, "Anyone here? This channel is for everything off-topic."),
                (dave, "Join from the Channels list if you like."),
            ],
        ),
    ]
    for conversation, start, script in scripts:
        for i, (author, content) in enumerate(script):
            lines.append(Line(conversation, author, content, start + timedelta(minutes=3 * i)))

    # Written oldest first, so that ids (the order of history) follow the times.
    lines.sort(key=lambda line: line.at)
    written: list[tuple[Line, Message]] = []
    for line in lines:
        stored = crud.create_message(
            session, line.conversation, line.author, MessageCreate(content=line.content), line.at
        )
        assert stored is not None  # no attachments: nothing to refuse
        written.append((line, stored[0]))

    # A few reactions, so that the web client has some to show.
    reactions = {
        "Great, see you then 📚": [(bob, "👍"), (carol, "👍"), (carol, "📚")],
        "And pizza after the demo? 🍕": [(alice, "🍕")],
        "Can you show the live updates? Open this chat in two windows.": [(alice, "👍")],
    }
    for line, message in written:
        for user, emoji in reactions.get(line.content, []):
            crud.add_reaction(session, message, user, emoji)

    # Read markers: everyone has read everything, but for a few recent
    # messages, so the web client shows unread badges.
    unread = {(alice.id, general.id): 7, (alice.id, direct.id): 2, (bob.id, group.id): 3}
    for conversation in (general, group, direct, quiet):
        ids = [m.id for line, m in written if line.conversation is conversation]
        for user in users:
            membership = crud.get_membership(session, conversation, user)
            if membership is not None and ids:
                read_up_to = ids[-1 - unread.get((user.id, conversation.id), 0)]
                crud.mark_read(session, membership, read_up_to or 0)
