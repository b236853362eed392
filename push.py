"""Web Push: a new message reaches a member whose app is closed.

The standards, and who does what:
- The browser subscribes with its push service (Google's, Mozilla's,
  Apple's...) using our VAPID public key (GET /push/key), and gives us the
  subscription (POST /push/subscriptions): a URL at that service, and keys.
- For each new message, we encrypt a small JSON payload to the browser's
  keys (RFC 8291, `aes128gcm`), sign a JWT with our VAPID key (RFC 8292), and
  POST both to that URL (RFC 8030). pywebpush does the three.
- The push service wakes the browser, whose service worker decrypts the
  payload and shows a notification. The service sees only ciphertext.

Who gets one (see `recipients`): the members the message notifies by their
level (crud.members_to_notify), who have not read up to it, who have no open
socket anywhere (presence.py), and who have a subscription from a login still
going. Just before each POST, the message must still stand, the user still
be a member who has not read it, the login still be going, and the endpoint
still resolve to public addresses.

Sending never delays the request that sent the message: the route hands the
message id over (`enqueue`), a few tasks started with the app take it from a
bounded queue, the queries run in worker threads, a few at a time, and the
pushes are encrypted (well under a millisecond each) and POSTed on the event
loop through one aiohttp session (pywebpush's async API), each POST within
`PUSH_TIMEOUT_SECONDS` in all.

The subscription's endpoint is a URL a client chose and the server will
POST to: without care, a way to make the server reach its own network
(SSRF). `check_endpoint` accepts only https URLs whose host resolves to
public addresses, when subscribing. When sending, `PublicResolver` looks the
name up for the connection and refuses it unless every address is public:
the addresses checked are the ones connected to, so a DNS server that
changes its answer after a check (DNS rebinding) cannot point a POST
inward. Redirects are never followed.
"""

import asyncio
import base64
import functools
import ipaddress
import json
import logging
import socket
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Annotated
from urllib.parse import urlsplit

import aiohttp
import anyio
from cryptography.hazmat.primitives import serialization
from fastapi import APIRouter, Body, HTTPException, Response, status
from py_vapid import Vapid02
from pywebpush import WebPushException, webpush_async
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, delete, select

import config
import crud
import db
import metrics
from auth import AUTH_ERRORS, AnyScopeUser, TokenPayloadDep, Writer, forbidden, granted_scopes
from config import settings
from db import SessionDep
from models import (
    AuthSession,
    Conversation,
    ConversationKind,
    Membership,
    Mention,
    Message,
    PushEndpoint,
    PushKey,
    PushSubscription,
    PushSubscriptionCreate,
    PushSubscriptionPublic,
    Scope,
    User,
    error_responses,
    utcnow,
)
from presence import presence

logger = logging.getLogger("messageapp.push")

MAX_SUBSCRIPTIONS = 10  # per user: browsers and devices; a new one past this replaces the oldest
QUEUE_SIZE = 1000  # messages waiting to be pushed; past this, new ones get no push
WORKERS = 2  # messages pushed at once (each waits on push services, not on the CPU)
THREADS = 4  # queries at once, over all workers
TTL_SECONDS = 24 * 3600  # how long a push service keeps a push for a browser that is off
SNIPPET_CHARS = 120
LOCALHOST = {"localhost", "127.0.0.1", "::1"}  # PUSH_ALLOW_LOCALHOST lets these through


# --- The VAPID key -------------------------------------------------------------


@functools.cache
def _vapid(private_key: str) -> Vapid02:
    key = config.vapid_private_key(private_key, "VAPID_PRIVATE_KEY")
    return Vapid02(private_key=key)  # type: ignore[no-untyped-call]  # (py_vapid has no hints)


def vapid() -> Vapid02:
    """Our VAPID key (config.py made or read it), parsed once."""
    return _vapid(settings.VAPID_PRIVATE_KEY)


def public_key() -> str:
    """The public key as `applicationServerKey` takes it: the uncompressed
    P-256 point (65 bytes), base64url without padding."""
    point = vapid().public_key.public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    return base64.urlsafe_b64encode(point).rstrip(b"=").decode()


# --- Which endpoints the server will POST to (no SSRF) --------------------------


class RefusedEndpoint(ValueError):
    """An endpoint the server will not POST to; the message says why."""


def public_address(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """A global unicast address: not private, loopback, link-local (the cloud's
    169.254.169.254 metadata service), shared, multicast or reserved."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped  # ::ffff:10.0.0.1 is 10.0.0.1
    return address.is_global and not (address.is_multicast or address.is_reserved)


def check_endpoint(url: str, resolve: bool = True) -> None:
    """Raise RefusedEndpoint unless `url` is https on a host that resolves
    only to public addresses (or, with PUSH_ALLOW_LOCALHOST, http(s) on
    localhost). Blocking (a DNS lookup): call it in a worker thread. With
    `resolve=False`, a name is not looked up (PublicResolver checks it when
    connecting); an address in the URL is still checked."""
    parts = urlsplit(url)
    if parts.username is not None or parts.password is not None:
        raise RefusedEndpoint("must not carry a user name or password")
    host = (parts.hostname or "").lower()
    try:
        port = parts.port
    except ValueError:
        raise RefusedEndpoint("has a bad port") from None
    if not host:
        raise RefusedEndpoint("has no host")
    if settings.PUSH_ALLOW_LOCALHOST and host in LOCALHOST and parts.scheme in ("http", "https"):
        return
    if parts.scheme != "https":
        raise RefusedEndpoint("must be an https URL")
    try:
        addresses = [ipaddress.ip_address(host)]
    except ValueError:  # a name, not an address
        if not resolve:
            return
        try:
            found = socket.getaddrinfo(host, port or 443, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError):
            raise RefusedEndpoint("has a host that does not resolve") from None
        addresses = [ipaddress.ip_address(info[4][0]) for info in found]
    # Every address: a name that resolves to a public and a private one
    # could be reached at the private one.
    if not addresses or not all(public_address(a) for a in addresses):
        raise RefusedEndpoint("has a host that is not a public address")


class RefusedAddress(OSError):
    """A push service's name resolved to an address that is not public.
    (An OSError, as a failed lookup is: aiohttp wraps it in
    ClientConnectorDNSError and connects nowhere.)"""


class PublicResolver(aiohttp.ThreadedResolver):
    """aiohttp's resolver, refusing a name unless all its addresses are
    public. aiohttp connects only to the addresses a resolver returns, so
    what is checked is what is connected to: no second lookup to rebind."""

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[aiohttp.abc.ResolveResult]:
        found = await super().resolve(host, port, family)
        if settings.PUSH_ALLOW_LOCALHOST and host.lower() in LOCALHOST:
            return found
        if not found or not all(public_address(ipaddress.ip_address(r["host"])) for r in found):
            raise RefusedAddress(f"{host} resolves to an address that is not public")
        return found


class Redirected(aiohttp.ClientError):
    """A push service answered with a redirect, which is never followed."""


async def no_redirects(
    request: aiohttp.ClientRequest, handler: aiohttp.ClientHandlerType
) -> aiohttp.ClientResponse:
    """aiohttp client middleware: a 3xx answer ends the POST (aiohttp would
    follow it, to a URL nobody checked)."""
    response = await handler(request)
    if 300 <= response.status < 400:
        response.close()
        raise Redirected(response.status)
    return response


def push_client() -> aiohttp.ClientSession:
    """The HTTP client that POSTs pushes: names checked as they resolve, no
    redirects, no proxy or .netrc settings from the environment. Make it on
    the event loop that uses it."""
    connector = aiohttp.TCPConnector(resolver=PublicResolver())
    return aiohttp.ClientSession(connector=connector, middlewares=(no_redirects,), trust_env=False)


# --- Routes -------------------------------------------------------------------

router = APIRouter(tags=["push"], responses=error_responses(AUTH_ERRORS))

REFUSED = (
    "An endpoint refused (not https, or a host that does not resolve to public "
    "addresses), or keys that are not a P-256 point (65 bytes) and a 16-byte secret"
)


@router.get("/push/key", summary="The VAPID public key")
def read_push_key(user: AnyScopeUser) -> PushKey:
    """The server's VAPID public key, to pass as `applicationServerKey` to the
    browser's `pushManager.subscribe()`: base64url, no padding. Any token will do."""
    return PushKey(public_key=public_key())


@router.post(
    "/push/subscriptions",
    status_code=status.HTTP_201_CREATED,
    summary="Get pushes in this browser",
    responses={
        200: {"model": PushSubscriptionPublic, "description": "This browser was yours already"},
        **error_responses(
            {
                **forbidden("The token lacks messages:read too: pushes carry messages"),
                409: "The same endpoint registered twice at the same moment; send again",
                422: REFUSED,
            }
        ),
    },
)
def create_push_subscription(
    session: SessionDep,
    user: Writer,
    token: TokenPayloadDep,
    subscription: Annotated[
        PushSubscriptionCreate,
        Body(
            openapi_examples={
                "browser": {
                    "summary": "What PushSubscription.toJSON() gives",
                    "value": {
                        "endpoint": "https://push.example.net/wpush/v2/gAAAAABk",
                        "expirationTime": None,
                        "keys": {
                            "p256dh": "BNcRdreALRFXTkOOUHK1EtK2wtaz5Ry4YfYCA_0QTpQtUbVlUls0VJXg7A8u"
                            "-Ts1XbjhazAkj7I99e8QcYP7DkM",
                            "auth": "tBHItJI5svbpez7KI4CCXg",
                        },
                    },
                }
            }
        ),
    ],
    response: Response,
) -> PushSubscriptionPublic:
    """Send new messages to this browser as Web Push notifications while the
    app is closed. The body is the browser's `PushSubscription.toJSON()`,
    made with the key of GET /push/key.

    Only `https` endpoints whose host resolves to public addresses are taken
    (the server will POST to them). The subscription belongs to this login:
    logging out, or ending it from another device, stops its pushes. A user
    has at most 10; a new one past that replaces the oldest. An endpoint
    another user registered moves to you (one browser profile, one user).

    Who gets a push: members whose notification level asks for the message
    (`all`, or `mentions` and it mentions them), who have not read it, and who
    have no open socket (GET /ws) at that moment.
    """
    if Scope.read not in granted_scopes(user, token):
        raise HTTPException(
            status.HTTP_403_FORBIDDEN,
            detail=f"Not enough permissions: pushes carry messages, this needs the "
            f"{Scope.read.value} scope too",
        )
    if token.sid is None:  # a token from before sessions: nothing to tie it to
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, detail="Log in again")
    try:
        check_endpoint(subscription.endpoint)
    except RefusedEndpoint as exc:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT, detail=f"endpoint {exc}"
        ) from None
    assert user.id is not None
    stored, created = save_subscription(session, user.id, token.sid, subscription)
    if not created:
        response.status_code = status.HTTP_200_OK
    return PushSubscriptionPublic(endpoint=stored.endpoint, created_at=stored.created_at)


def save_subscription(
    session: Session, user_id: int, session_id: int, new: PushSubscriptionCreate
) -> tuple[PushSubscription, bool]:
    """Store the subscription (True), or update the caller's own (False)."""
    found = session.exec(
        select(PushSubscription).where(PushSubscription.endpoint == new.endpoint)
    ).first()
    created = found is None or found.user_id != user_id
    if found is not None and created:
        session.delete(found)  # another user's browser is now this one's
        session.flush()
    if found is None or created:
        found = PushSubscription(
            user_id=user_id,
            session_id=session_id,
            endpoint=new.endpoint,
            p256dh=new.keys.p256dh,
            auth=new.keys.auth,
        )
    else:  # the same browser again, maybe from a new login
        found.session_id, found.p256dh, found.auth = session_id, new.keys.p256dh, new.keys.auth
    session.add(found)
    session.flush()
    # Over the cap, the oldest go.
    mine = select(PushSubscription.id).where(PushSubscription.user_id == user_id)
    keep = mine.order_by(col(PushSubscription.id).desc()).limit(MAX_SUBSCRIPTIONS)
    session.exec(
        delete(PushSubscription).where(
            col(PushSubscription.user_id) == user_id,
            col(PushSubscription.id).not_in(keep.scalar_subquery()),
        )
    )
    try:
        session.commit()
    except IntegrityError:  # the same endpoint, registered at the same moment
        session.rollback()
        raise HTTPException(
            status.HTTP_409_CONFLICT, detail="Registered at the same moment; try again"
        ) from None
    return found, created


@router.delete(
    "/push/subscriptions",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Stop pushes to a browser",
    responses=error_responses({404: "You have no subscription with this endpoint"}),
)
def delete_push_subscription(
    session: SessionDep, user: Writer, subscription: PushEndpoint
) -> Response:
    """Stop pushes to the browser with this endpoint (a browser that turns
    notifications off, or signs out, sends its own)."""
    deleted = session.exec(
        delete(PushSubscription).where(
            col(PushSubscription.endpoint) == subscription.endpoint,
            col(PushSubscription.user_id) == user.id,
        )
    )
    session.commit()
    if deleted.rowcount == 0:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail="Subscription not found")
    return Response(status_code=status.HTTP_204_NO_CONTENT)


# --- Who gets a push, and what it says -------------------------------------------


@dataclass
class Target:
    """One subscription to push to."""

    id: int
    endpoint: str
    p256dh: str
    auth: str


@dataclass
class Plan:
    """The pushes of one message: the payload's common part and, per user,
    whether it mentions them and where to send."""

    payload: dict[str, object]
    urgent: bool  # a direct message
    users: dict[int, tuple[bool, list[Target]]]


def live_subscriptions(session: Session, user_ids: Iterable[int]) -> dict[int, list[Target]]:
    """The users' subscriptions whose login is still going (not ended, not
    expired) and whose account is active."""
    rows = session.exec(
        select(PushSubscription, AuthSession)
        .join(AuthSession, col(AuthSession.id) == PushSubscription.session_id)
        .join(User, col(User.id) == PushSubscription.user_id)
        .where(
            col(PushSubscription.user_id).in_(list(user_ids)),
            col(AuthSession.ended_at).is_(None),
            col(User.active),
        )
        .order_by(col(PushSubscription.id))
    ).all()
    now = utcnow()
    found: dict[int, list[Target]] = {}
    for sub, login in rows:
        if crud.session_expires_at(login) > now:
            assert sub.id is not None
            found.setdefault(sub.user_id, []).append(
                Target(sub.id, sub.endpoint, sub.p256dh, sub.auth)
            )
    return found


def recipients(message_id: int) -> Plan | None:
    """Who should get a push for the message, and its payload; None if nobody.
    Blocking: call it in a worker thread."""
    with db.read_session() as session:
        message = session.get(Message, message_id)
        if message is None or message.deleted:
            return None
        # Most messages go to nobody's push service: one query says so,
        # before the work of choosing (this runs for every message sent).
        subscribed = (
            select(PushSubscription.id)
            .join(Membership, col(Membership.user_id) == PushSubscription.user_id)
            .where(
                Membership.conversation_id == message.conversation_id,
                PushSubscription.user_id != message.author_id,
            )
            .limit(1)
        )
        if session.exec(subscribed).first() is None:
            return None
        conversation = session.get(Conversation, message.conversation_id)
        author = session.get(User, message.author_id)
        assert conversation is not None and author is not None
        notified = crud.members_to_notify(session, message, conversation.kind)
        subscriptions = live_subscriptions(session, notified)
        if not subscriptions:
            return None
        mentioned = set(
            session.exec(select(Mention.user_id).where(Mention.message_id == message_id))
        )
    sender = author.display_name or author.username
    if conversation.kind == ConversationKind.direct:
        title = sender
    elif conversation.kind == ConversationKind.channel:
        title = f"#{conversation.title}"
    else:
        title = conversation.title or ""
    text = message.content or ""
    body = text[:SNIPPET_CHARS] + ("…" if len(text) > SNIPPET_CHARS else "")
    payload: dict[str, object] = {
        "type": "message",
        "conversation_id": message.conversation_id,
        "message_id": message_id,
        "title": title,
        "sender": sender,
        "body": body or "(attachment)",
        "url": f"/?conversation={message.conversation_id}&message={message_id}",
    }
    return Plan(
        payload,
        urgent=conversation.kind == ConversationKind.direct,
        users={u: (u in mentioned, targets) for u, targets in subscriptions.items()},
    )


def still_wanted(message_id: int, user_id: int, targets: list[Target]) -> list[Target]:
    """At send time, the targets still to push to: none unless the message
    still stands and the user is still a member who has not read it; then
    those whose login is still going."""
    with db.read_session() as session:
        found = session.exec(
            select(Message.id)
            .join(
                Membership,
                (col(Membership.conversation_id) == Message.conversation_id)
                & (col(Membership.user_id) == user_id),
            )
            .where(
                Message.id == message_id,
                col(Message.deleted).is_(False),
                col(Membership.last_read_message_id) < message_id,
            )
        ).first()
        if found is None:
            return []
        live = {t.id for t in live_subscriptions(session, [user_id]).get(user_id, [])}
    return [t for t in targets if t.id in live]


def forget(subscription_id: int) -> None:
    """The push service says the browser is gone (404, 410): so is its subscription."""
    with db.write_session() as session:
        session.exec(delete(PushSubscription).where(col(PushSubscription.id) == subscription_id))
        session.commit()


async def send(
    http: aiohttp.ClientSession, target: Target, data: str, urgency: str
) -> metrics.PushOutcome:
    """POST one push, and say how it went."""
    host = urlsplit(target.endpoint).hostname  # all a log line says of where
    try:
        check_endpoint(target.endpoint, resolve=False)  # PublicResolver checks the name
    except RefusedEndpoint as exc:
        logger.warning("Push to %s not sent: the endpoint %s", host, exc)
        return "refused"
    keys: dict[str, str | bytes] = {"p256dh": target.p256dh, "auth": target.auth}
    try:
        await webpush_async(
            {"endpoint": target.endpoint, "keys": keys},
            data,
            vapid_private_key=vapid(),
            # A new dict each time: webpush adds `aud` and `exp` to it.
            vapid_claims={"sub": settings.VAPID_SUBJECT},
            ttl=TTL_SECONDS,
            headers={"Urgency": urgency},
            # One deadline for the whole POST, so a push service that
            # answers a byte at a time cannot hold a push up for longer.
            timeout=settings.PUSH_TIMEOUT_SECONDS,
            aiohttp_session=http,
        )
    except WebPushException as exc:
        code = exc.status_code
        if code in (404, 410):
            await anyio.to_thread.run_sync(forget, target.id)
            logger.info("Push subscription at %s is gone (%s): removed", host, code)
            return "gone"
        logger.warning("Push to %s refused: %s", host, code)
        return "failed"
    except aiohttp.ClientConnectorDNSError as exc:
        if isinstance(exc.os_error, RefusedAddress):
            logger.warning("Push to %s not sent: the endpoint %s", host, exc.os_error)
            return "refused"
        logger.warning("Push to %s failed: its host does not resolve", host)
        return "failed"
    except (aiohttp.ClientError, TimeoutError) as exc:
        logger.warning("Push to %s failed: %s", host, type(exc).__name__)
        return "failed"
    return "sent"


async def push_to_user(
    http: aiohttp.ClientSession,
    limiter: anyio.CapacityLimiter,
    message_id: int,
    user_id: int,
    targets: list[Target],
    data: str,
    urgency: str,
) -> None:
    wanted = await anyio.to_thread.run_sync(
        still_wanted, message_id, user_id, targets, limiter=limiter
    )
    if len(wanted) < len(targets):
        metrics.PUSHES["skipped"].inc(len(targets) - len(wanted))
    for target in wanted:
        metrics.PUSHES[await send(http, target, data, urgency)].inc()


async def push_message(
    message_id: int, http: aiohttp.ClientSession, limiter: anyio.CapacityLimiter
) -> None:
    """Every push of one message."""
    plan = await anyio.to_thread.run_sync(recipients, message_id, limiter=limiter)
    if plan is None:
        return
    online = await presence.online(plan.users)
    async with anyio.create_task_group() as tasks:
        for user_id, (mentioned, targets) in plan.users.items():
            if user_id in online:
                continue
            data = json.dumps({**plan.payload, "mentioned": mentioned})
            urgency = "high" if mentioned or plan.urgent else "normal"
            tasks.start_soon(
                push_to_user, http, limiter, message_id, user_id, targets, data, urgency
            )


# --- The queue ----------------------------------------------------------------


class Pusher:
    """The queue of messages to push, and the tasks that push them."""

    def __init__(self) -> None:
        self.loop: asyncio.AbstractEventLoop | None = None
        self.queue: asyncio.Queue[int] | None = None
        self.busy = 0  # messages being pushed now

    def enqueue(self, message_id: int) -> None:
        """Push the message, later; returns at once. Callable from any thread
        (routes run in worker threads, the queue belongs to the event loop)."""
        if self.loop is not None:
            self.loop.call_soon_threadsafe(self._put, message_id)

    def _put(self, message_id: int) -> None:
        if self.queue is None:
            return  # stopping
        try:
            self.queue.put_nowait(message_id)
        except asyncio.QueueFull:
            logger.warning("No push for message %s: %s are waiting already", message_id, QUEUE_SIZE)
            metrics.PUSHES["dropped"].inc()

    def idle(self) -> bool:
        """Nothing waiting and nothing being pushed (for tests)."""
        return self.busy == 0 and (self.queue is None or self.queue.empty())

    async def work(
        self,
        queue: asyncio.Queue[int],
        http: aiohttp.ClientSession,
        limiter: anyio.CapacityLimiter,
    ) -> None:
        while True:
            message_id = await queue.get()
            self.busy += 1
            try:
                await push_message(message_id, http, limiter)
            except Exception:
                logger.exception("Could not push message %s", message_id)
            finally:
                self.busy -= 1

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Push while the app runs (main.py's lifespan). Pushes still waiting
        at shutdown are dropped: they are notifications, not the messages."""
        queue: asyncio.Queue[int] = asyncio.Queue(QUEUE_SIZE)
        limiter = anyio.CapacityLimiter(THREADS)
        self.loop, self.queue = asyncio.get_running_loop(), queue
        try:
            async with push_client() as http, anyio.create_task_group() as tasks:
                for _ in range(WORKERS):
                    tasks.start_soon(self.work, queue, http, limiter)
                try:
                    yield
                finally:
                    tasks.cancel_scope.cancel()
        finally:
            self.loop = self.queue = None


pusher = Pusher()
