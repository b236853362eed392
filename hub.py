"""How live events travel: the routes' `Outbox`, the brokers between
processes, and the `Hub` that hands events to this process's sockets.

The path of one event:

1. A route commits its change, then hands the event to the request's
   `Outbox`. The outbox publishes only after the route has returned without
   an error, so a change that was rolled back never produces an event.
2. A broker carries it to every process: `LocalBroker` within this one (the
   default), `RedisBroker` through Redis pub/sub to every worker and replica.
   Publishing never waits for the network: a request is not slowed down by
   a slow Redis.
3. In each process, `Hub.deliver` asks the database, at that moment, which of
   its connected users may receive it (the conversation's members, with a
   token still valid) and queues it on each of their sockets.
4. Every socket has a bounded queue and its own sender task (realtime.py),
   so a client that cannot keep up is disconnected instead of slowing
   anyone else down.
"""

import asyncio
import gc
import logging
import time
from collections import defaultdict, deque
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Annotated, Protocol
from uuid import uuid4

import anyio
import redis.asyncio as redis
from fastapi import Depends, WebSocket
from pydantic import ValidationError
from redis.asyncio.client import PubSub
from redis.exceptions import RedisError
from sqlmodel import SQLModel

import crud
import db
import metrics
import pages
from config import settings
from models import Envelope, User, UserPublic

logger = logging.getLogger("messageapp.hub")

CLOSE_NORMAL = 1000
CLOSE_UNAUTHORIZED = 4401  # HTTP's 401, in the 4000-4999 range left to applications
CLOSE_FORBIDDEN = 4403  # HTTP's 403: a good token without the messages:read scope
CLOSE_TOO_SLOW = 1013  # "try again later": the client fell too far behind
# Envelopes waiting for the hub (or for Redis); past this, new ones are dropped.
MAX_PENDING = 10_000


# --- One socket ------------------------------------------------------------

# Of some sockets' tokens: the jtis logged out, and the sessions ended.
Revoked = tuple[Collection[str], Collection[int]]


@dataclass(eq=False, slots=True)
class LiveSocket:
    """One open, authenticated socket, and what its token allows."""

    websocket: WebSocket
    user: UserPublic
    jti: str
    session_id: int | None  # the login the token belongs to (None: an older token)
    token_version: int
    expires_at: float  # the token's `exp`, in seconds since the epoch
    can_write: bool = True  # the token has messages:write (needed to send `typing`)
    # Frames waiting to be sent, at most WS_SEND_QUEUE, and the sender's
    # wake-up while it waits for one: an `asyncio.Queue` would keep four
    # deques per socket (docs/performance.md).
    queue: deque[str] = field(default_factory=deque)
    waiter: asyncio.Future[None] | None = None
    # Cancelling it ends the socket's tasks; the endpoint then says goodbye.
    cancel_scope: anyio.CancelScope = field(default_factory=anyio.CancelScope)
    close_code: int = CLOSE_NORMAL
    close_reason: str = ""

    def send(self, text: str) -> bool:
        """Queue a frame, never waiting: a socket that is full is closed, and
        the frame dropped (False)."""
        if len(self.queue) >= settings.WS_SEND_QUEUE:
            logger.info("Closing a socket of user %s: it fell too far behind", self.user.id)
            metrics.EVENTS_DROPPED.labels("socket_behind").inc()
            self.close(CLOSE_TOO_SLOW, "Too far behind; reconnect and catch up")
            return False
        self.queue.append(text)
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)
        return True

    async def next_frame(self) -> str:
        """The oldest queued frame, once there is one (for the sender)."""
        while not self.queue:
            self.waiter = asyncio.get_running_loop().create_future()
            try:
                await self.waiter
            finally:
                self.waiter = None
        return self.queue.popleft()

    def close(self, code: int, reason: str = "") -> None:
        if not self.cancel_scope.cancel_called:
            self.close_code, self.close_reason = code, reason
            self.cancel_scope.cancel()

    def check_token(self, version: int, revoked: Revoked) -> bool:
        """Close the socket (4401) if its token has been revoked (or its
        session ended) or has expired."""
        jtis, sessions = revoked
        if version != self.token_version or self.jti in jtis or self.session_id in sessions:
            self.close(CLOSE_UNAUTHORIZED, "Token revoked")
        elif self.expires_at <= time.time():
            self.close(CLOSE_UNAUTHORIZED, "Token expired")
        else:
            return True
        return False


def recipients(
    user_ids: Collection[int], conversation_id: int | None, sockets: Collection[LiveSocket]
) -> tuple[dict[int, int], Revoked]:
    """Who of `user_ids` may receive (members, if a conversation is given),
    with their token versions; and which of the sockets' tokens were logged
    out, or sessions ended. Synchronous, like every query: call it in a
    worker thread."""
    jtis = {s.jti for s in sockets}
    session_ids = {s.session_id for s in sockets if s.session_id is not None}
    with db.read_session() as session:
        versions = crud.live_token_versions(session, user_ids, conversation_id)
        revoked = crud.revoked_among(session, jtis)
        return versions, (revoked, crud.ended_sessions_among(session, session_ids))


# --- The brokers: how an event reaches every process -------------------------

Deliver = Callable[[Envelope], Awaitable[None]]
Lost = Callable[[], None]


class Broker(Protocol):
    async def publish(self, envelope: Envelope) -> None:
        """Hand the envelope over; returns at once, whatever the network does."""

    async def run(self, deliver: Deliver, lost: Lost) -> None:
        """Call `deliver` with every envelope published by any process, in
        order, until cancelled; call `lost` when some may never arrive."""


class LocalBroker:
    """One process: publishing puts the envelope on a queue that the hub reads.
    Right for a single uvicorn worker; with several, use `RedisBroker`."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[Envelope] | None = None
        self.lost: Lost = lambda: None

    async def publish(self, envelope: Envelope) -> None:
        if self.queue is None:
            return  # not running: no socket can be open either
        try:
            self.queue.put_nowait(envelope)
        except asyncio.QueueFull:
            logger.warning("Event dropped: %s events are waiting already", MAX_PENDING)
            metrics.EVENTS_DROPPED.labels("hub_queue_full").inc()
            self.lost()

    async def run(self, deliver: Deliver, lost: Lost) -> None:
        # Made here, inside the event loop that will use it.
        self.queue, self.lost = asyncio.Queue(MAX_PENDING), lost
        try:
            while True:
                await deliver(await self.queue.get())
        finally:
            self.queue = None


class RedisBroker:
    """Several processes: each sends its events to one Redis pub/sub channel
    and delivers what the others send there, so an event reaches the sockets
    held by every process. Its own events it delivers directly, as
    `LocalBroker` does, so they arrive even while Redis is away.

    Delivery stays best effort: while Redis is down, HTTP keeps working at
    full speed and other processes' events are lost. When the listener gets
    back in touch, it calls `lost`, so that clients catch up.
    """

    HEARTBEAT_SECONDS = 5.0  # silence after which the listener pings Redis

    def __init__(self, url: str, channel: str) -> None:
        self.channel = channel
        self.origin = uuid4().hex  # to skip our own events coming back
        self.local = LocalBroker()
        # Sending must give up on a Redis that stopped answering; listening
        # checks the line itself (see `receive`).
        self.sender = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
        self.listener = redis.Redis.from_url(url, socket_connect_timeout=2)
        self.outgoing: asyncio.Queue[Envelope] | None = None

    async def publish(self, envelope: Envelope) -> None:
        await self.local.publish(envelope)
        if self.outgoing is None:
            return
        try:
            # Requests only queue the envelope; `send` talks to Redis.
            self.outgoing.put_nowait(envelope.model_copy(update={"origin": self.origin}))
        except asyncio.QueueFull:
            logger.warning("Event not sent to Redis: %s events are waiting already", MAX_PENDING)
            metrics.EVENTS_DROPPED.labels("redis_queue_full").inc()

    async def run(self, deliver: Deliver, lost: Lost) -> None:
        self.outgoing = asyncio.Queue(MAX_PENDING)
        try:
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(self.local.run, deliver, lost)
                tasks.start_soon(self.send)
                tasks.start_soon(self.listen, deliver, lost)
        finally:
            self.outgoing = None
            with anyio.CancelScope(shield=True):  # close even while being cancelled
                await self.sender.aclose()
                await self.listener.aclose()

    async def send(self) -> None:
        assert self.outgoing is not None
        while True:
            envelope = await self.outgoing.get()
            try:
                await self.sender.publish(self.channel, envelope.model_dump_json())
            except (RedisError, OSError) as exc:
                logger.warning("Event not sent to Redis: %s", exc)
                metrics.EVENTS_DROPPED.labels("redis_unavailable").inc()

    async def listen(self, deliver: Deliver, lost: Lost) -> None:
        delay, listened_before = 0.1, False
        while True:
            try:
                async with self.listener.pubsub() as pubsub:
                    await pubsub.subscribe(self.channel)
                    logger.info("Listening for events on Redis")
                    if listened_before:
                        lost()  # what was sent while we were not listening is gone
                    delay, listened_before = 0.1, True
                    await self.receive(pubsub, deliver)
            except (RedisError, OSError, TimeoutError) as exc:
                logger.warning("Redis unavailable (%s); retrying in %.1f s", exc, delay)
                await anyio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def receive(self, pubsub: PubSub, deliver: Deliver) -> None:
        """Deliver other processes' events. A connection can die without a
        word (a network cut, a failover), so silence gets a PING, and three
        heartbeats without an answer count as a lost connection."""
        heard = time.monotonic()
        while True:
            message = await pubsub.get_message(timeout=self.HEARTBEAT_SECONDS)
            if message is None:
                if time.monotonic() - heard > 3 * self.HEARTBEAT_SECONDS:
                    raise TimeoutError("Redis stopped answering")
                await pubsub.ping()
                continue
            heard = time.monotonic()
            if message["type"] != "message":
                continue  # the subscription's confirmation, or a pong
            try:
                envelope = Envelope.model_validate_json(message["data"])
            except ValidationError:
                logger.warning("Ignored a malformed event from Redis")
                continue
            if envelope.origin != self.origin:
                await deliver(envelope)


def make_broker() -> Broker:
    if settings.REDIS_URL:
        return RedisBroker(settings.REDIS_URL, settings.REDIS_CHANNEL)
    return LocalBroker()


# --- The hub: this process's sockets ---------------------------------------

# How often the hub freezes new sockets, and looks whether to collect.
TIDY_SECONDS = 1.0
# Closed sockets that make a collection worth it before WS_GC_SECONDS: it
# walks everything, the start-up's ~160,000 objects too (0.1 to 0.2 s here),
# and a few closed sockets leave little behind that only it can free.
COLLECT_AFTER_CLOSED = 1000


class Hub:
    """The open sockets of this process, by user, and the delivery of events to them."""

    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self.sockets: defaultdict[int, set[LiveSocket]] = defaultdict(set)
        # Deliveries get their own worker thread, so they never queue behind
        # slow requests in the thread pool that `def` routes share.
        self.limiter: anyio.CapacityLimiter | None = None
        # For the garbage collection (see `tidy`): sockets open; added since
        # the last freeze; added or removed, and removed, since the last
        # collection; when that was, and when an event last went out.
        self.open = 0
        self.added = self.changed = self.removed = 0
        self.collected_at = self.delivered_at = time.monotonic()

    def add(self, socket: LiveSocket) -> bool:
        """Register the socket; False if its user has WS_MAX_PER_USER open
        here already (each costs memory, and every event is sent to each)."""
        theirs = self.sockets[socket.user.id]
        if len(theirs) >= settings.WS_MAX_PER_USER:
            metrics.LIMITED.labels("sockets_per_user").inc()
            return False
        theirs.add(socket)
        metrics.SOCKETS_OPEN.inc()
        self.open += 1
        self.added += 1
        self.changed += 1
        return True

    def remove(self, socket: LiveSocket) -> None:
        theirs = self.sockets.get(socket.user.id)
        if theirs is not None and socket in theirs:
            theirs.remove(socket)
            metrics.SOCKETS_OPEN.dec()
            self.open -= 1
            self.removed += 1
            self.changed += 1
            if not theirs:
                del self.sockets[socket.user.id]

    async def publish(self, envelope: Envelope) -> None:
        envelope.published_at = time.time()
        await self.broker.publish(envelope)

    async def deliver(self, envelope: Envelope) -> None:
        """Queue the event on the sockets of those who may receive it now,
        and close any socket whose token has expired or been revoked."""
        if envelope.conversation_id is not None:
            user_ids = set(self.sockets)
        else:
            user_ids = {u for u in envelope.user_ids if u in self.sockets}
        if envelope.skip_user_id is not None:
            user_ids.discard(envelope.skip_user_id)
        if not user_ids:
            return  # nobody here could receive it: no need to ask the database
        sockets = [s for u in user_ids for s in self.sockets.get(u, ())]
        try:
            versions, revoked = await anyio.to_thread.run_sync(
                recipients,
                user_ids,
                envelope.conversation_id,
                sockets,
                limiter=self.limiter,
            )
        except Exception:
            # A database error loses this one event, which clients recover
            # with `after=`; the hub itself goes on.
            logger.exception("Could not deliver an event")
            return
        delivered = 0
        self.delivered_at = time.monotonic()
        for socket in sockets:
            version = versions.get(socket.user.id)
            if version is None:
                continue  # not a member (any more)
            if socket.check_token(version, revoked) and envelope.event is not None:
                event = envelope.event
                if envelope.sign_urls:
                    event = pages.sign_event_for(event, socket.user.id)
                delivered += socket.send(event)
        if delivered:
            metrics.EVENTS_DELIVERED.inc(delivered)
            if envelope.published_at is not None:
                # Another replica's clock may be a little ahead of ours.
                delay = max(0.0, time.time() - envelope.published_at)
                metrics.EVENT_DELAY_SECONDS.observe(delay)

    def lost(self) -> None:
        """Some events may never arrive: close every socket, so that clients
        reconnect and catch up over HTTP instead of missing them silently."""
        for theirs in self.sockets.values():
            for socket in theirs:
                socket.close(CLOSE_TOO_SLOW, "Events were lost; reconnect and catch up")

    def tidy(self) -> None:
        """Keep full garbage collections short while many sockets are open.

        A full collection walks every object in the process: with 10,000
        sockets open each took over a second, and the event it landed on
        waited that long (docs/performance.md). A socket's objects live as
        long as it does, so once set up they are frozen (`gc.freeze`), and
        collections skip them. Frozen objects are never collected, though,
        so a closed socket's reference cycles would stay: now and then, at a
        quiet moment, everything is unfrozen, collected once, and frozen
        again. That is when a quarter of the sockets have closed since the
        last time (CPython's own rule for full collections), at least
        COLLECT_AFTER_CLOSED of them, or after WS_GC_SECONDS; when no event
        went out in the last second, and at most twice WS_GC_SECONDS apart,
        whatever the traffic.
        """
        now = time.monotonic()
        age = now - self.collected_at
        closed = self.removed > max(self.open / 4, COLLECT_AFTER_CLOSED)
        wanted = closed or age >= settings.WS_GC_SECONDS
        quiet = now - self.delivered_at >= TIDY_SECONDS
        if self.changed and wanted and (quiet or age >= 2 * settings.WS_GC_SECONDS):
            gc.unfreeze()
            found = gc.collect()
            gc.freeze()
            self.added = self.changed = self.removed = 0
            self.collected_at = time.monotonic()
            logger.debug("Collected %s objects in %.0f ms", found, (self.collected_at - now) * 1000)
        elif self.added:  # a server without sockets freezes nothing
            gc.freeze()
            self.added = 0

    async def tidying(self) -> None:
        while True:
            await anyio.sleep(TIDY_SECONDS)
            self.tidy()

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Deliver events, and freeze and collect sockets' objects (`tidy`),
        while the app runs (used by the app's lifespan)."""
        self.limiter = anyio.CapacityLimiter(1)  # deliveries happen one at a time
        self.added = self.changed = self.removed = 0  # the lifespan has just frozen all
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(self.broker.run, self.deliver, self.lost)
            tasks.start_soon(self.tidying)
            try:
                yield
            finally:
                tasks.cancel_scope.cancel()


hub = Hub(make_broker())


# --- Publishing from routes --------------------------------------------------


class Outbox:
    """The events of one request, published once its route has succeeded."""

    def __init__(self) -> None:
        self.envelopes: list[Envelope] = []

    def to_conversation(
        self, conversation_id: int, event: SQLModel, *, sign_urls: bool = False
    ) -> None:
        """To every member of the conversation, as they are when it is
        delivered; `sign_urls` for a message event with attachments."""
        self.envelopes.append(
            Envelope(
                conversation_id=conversation_id,
                event=event.model_dump_json(),
                sign_urls=sign_urls,
            )
        )

    def to_users(self, users: Iterable[User], event: SQLModel) -> None:
        user_ids = [user.id for user in users if user.id is not None]
        self.envelopes.append(Envelope(user_ids=user_ids, event=event.model_dump_json()))

    def check_tokens(self, user: User) -> None:
        """Close at once the user's sockets whose token is no longer valid."""
        self.envelopes.append(Envelope(user_ids=[user.id] if user.id is not None else []))


async def get_outbox() -> AsyncIterator[Outbox]:
    outbox = Outbox()
    try:
        # The route runs during this `yield`. If it raises, the exception
        # comes out of the `yield`: no event for a failed change.
        yield outbox
    except Exception:
        # But a re-check of tokens is always right, and one refusal needs it:
        # a reused refresh token ends its session, then answers 400.
        for envelope in outbox.envelopes:
            if envelope.event is None:
                await hub.publish(envelope)
        raise
    for envelope in outbox.envelopes:
        await hub.publish(envelope)


Events = Annotated[Outbox, Depends(get_outbox, scope="function")]
