"""Live events over WebSockets: `GET /ws`, the hub that fans events out, and
the brokers that carry them between processes.

The path of one event:

1. A route commits its change, then hands the event to the request's
   `Outbox`. The outbox publishes only after the route has returned without
   an error, so a change that was rolled back never produces an event.
2. A broker carries it to every process: `LocalBroker` within this one (the
   default), `RedisBroker` through Redis pub/sub to every worker and replica.
3. In each process, `Hub.deliver` asks the database, at that moment, which of
   its connected users may receive it (the conversation's members, with a
   token still valid) and queues it on each of their sockets.
4. Every socket has a bounded queue and its own sender task, so a client
   that cannot keep up is disconnected instead of slowing anyone else down.
"""

import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Collection, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Annotated, Protocol

import anyio
import redis.asyncio as redis
from fastapi import APIRouter, Depends, WebSocket, WebSocketDisconnect
from pydantic import TypeAdapter, ValidationError
from redis.exceptions import RedisError
from sqlmodel import SQLModel
from starlette.websockets import WebSocketState

import crud
import db
from auth import authenticate
from config import settings
from models import (
    AuthFrame,
    ClientFrame,
    Envelope,
    ErrorEvent,
    PingFrame,
    PongEvent,
    ReadyEvent,
    TokenPayload,
    TypingEvent,
    TypingFrame,
    User,
    UserPublic,
)

logger = logging.getLogger("messageapp.realtime")

AUTH_TIMEOUT_SECONDS = 10.0
CLOSE_NORMAL = 1000
CLOSE_UNAUTHORIZED = 4401  # HTTP's 401 in the 4000-4999 range kept for applications
CLOSE_TOO_SLOW = 1013  # "try again later": the client fell too far behind
CLOSE_TOO_BIG = 1009  # "message too big"
CLOSE_TIMEOUT_SECONDS = 5.0
# Every frame a client may send is small (a token is the largest part).
MAX_FRAME_CHARS = 16 * 1024

auth_frame = TypeAdapter(AuthFrame)
client_frame: TypeAdapter[AuthFrame | TypingFrame | PingFrame] = TypeAdapter(ClientFrame)


# --- One socket ------------------------------------------------------------


@dataclass(eq=False)
class Connection:
    """One open, authenticated socket, and what its token allows."""

    websocket: WebSocket
    user: UserPublic
    jti: str
    token_version: int
    expires_at: float  # the token's `exp`, in seconds since the epoch
    queue: asyncio.Queue[str] = field(default_factory=lambda: asyncio.Queue(settings.WS_SEND_QUEUE))
    # Cancelling it ends the socket's tasks; the endpoint then says goodbye.
    cancel_scope: anyio.CancelScope = field(default_factory=anyio.CancelScope)
    close_code: int = CLOSE_NORMAL
    close_reason: str = ""

    def send(self, text: str) -> None:
        """Queue a frame, never waiting: a socket that is full is closed."""
        try:
            self.queue.put_nowait(text)
        except asyncio.QueueFull:
            logger.info("Closing a socket of user %s: it fell too far behind", self.user.id)
            self.close(CLOSE_TOO_SLOW, "Too far behind; reconnect and catch up")

    def close(self, code: int, reason: str = "") -> None:
        if not self.cancel_scope.cancel_called:
            self.close_code, self.close_reason = code, reason
            self.cancel_scope.cancel()


# --- The brokers: how an event reaches every process -------------------------


class Broker(Protocol):
    async def publish(self, envelope: Envelope) -> None: ...

    def subscribe(self) -> AsyncIterator[Envelope]: ...

    async def aclose(self) -> None: ...


class LocalBroker:
    """One process: publishing puts the envelope on a queue that the hub reads.
    Right for a single uvicorn worker; with several, use `RedisBroker`."""

    MAX_PENDING = 10_000

    def __init__(self) -> None:
        self.queue: asyncio.Queue[Envelope] | None = None

    async def publish(self, envelope: Envelope) -> None:
        if self.queue is None:
            return  # not started: no socket can be open either
        try:
            self.queue.put_nowait(envelope)
        except asyncio.QueueFull:
            logger.warning("Event dropped: the hub is %s events behind", self.MAX_PENDING)

    async def subscribe(self) -> AsyncIterator[Envelope]:
        # Made here, inside the running event loop that will use it.
        self.queue = asyncio.Queue(self.MAX_PENDING)
        while True:
            yield await self.queue.get()

    async def aclose(self) -> None:
        self.queue = None


class RedisBroker:
    """Several processes: each publishes to one Redis pub/sub channel and
    listens to it, so an event reaches the sockets held by every process.

    Delivery stays best effort: while Redis is down, HTTP keeps working,
    events are lost, and the listener reconnects as soon as Redis is back.
    """

    def __init__(self, url: str, channel: str) -> None:
        self.channel = channel
        # Publishing happens inside requests, so it must fail fast. The
        # listener waits for messages for ever, so it gets no read timeout.
        self.publisher = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
        self.listener = redis.Redis.from_url(
            url, socket_connect_timeout=2, socket_keepalive=True, health_check_interval=15
        )

    async def publish(self, envelope: Envelope) -> None:
        try:
            await self.publisher.publish(self.channel, envelope.model_dump_json())
        except (RedisError, OSError) as exc:
            logger.warning("Event not published, Redis unavailable: %s", exc)

    async def subscribe(self) -> AsyncIterator[Envelope]:
        delay = 0.1
        while True:
            try:
                async with self.listener.pubsub(ignore_subscribe_messages=True) as pubsub:
                    await pubsub.subscribe(self.channel)
                    logger.info("Listening for events on Redis")
                    delay = 0.1
                    async for message in pubsub.listen():
                        try:
                            envelope = Envelope.model_validate_json(message["data"])
                        except ValidationError:
                            logger.warning("Ignored a malformed event from Redis")
                            continue
                        yield envelope
            except (RedisError, OSError) as exc:
                logger.warning("Redis unavailable (%s); retrying in %.1f s", exc, delay)
                await anyio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def aclose(self) -> None:
        await self.publisher.aclose()
        await self.listener.aclose()


# --- The hub: this process's sockets ---------------------------------------


def _recipients(
    user_ids: Collection[int], conversation_id: int | None, jtis: Collection[str]
) -> tuple[dict[int, int], set[str]]:
    """Who of `user_ids` may receive (and their token versions), and which
    of the sockets' tokens have been logged out."""
    with db.open_session(db.engine, write=False) as session:
        versions = crud.live_token_versions(session, user_ids, conversation_id)
        return versions, crud.revoked_among(session, jtis)


class Hub:
    """The open sockets of this process, by user, and the delivery of events to them."""

    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self.connections: defaultdict[int, set[Connection]] = defaultdict(set)

    def add(self, connection: Connection) -> None:
        self.connections[connection.user.id].add(connection)

    def remove(self, connection: Connection) -> None:
        sockets = self.connections.get(connection.user.id)
        if sockets is not None:
            sockets.discard(connection)
            if not sockets:
                del self.connections[connection.user.id]

    async def publish(self, envelope: Envelope) -> None:
        await self.broker.publish(envelope)

    async def deliver(self, envelope: Envelope) -> None:
        """Queue the event on the sockets of those who may receive it now,
        and close any socket whose token has expired or been revoked."""
        if envelope.conversation_id is not None:
            user_ids = set(self.connections)
        else:
            user_ids = {u for u in envelope.user_ids if u in self.connections}
        if envelope.skip_user_id is not None:
            user_ids.discard(envelope.skip_user_id)
        if not user_ids:
            return  # nobody here could receive it: no need to ask the database
        connections = [c for u in user_ids for c in self.connections.get(u, ())]
        versions, revoked = await anyio.to_thread.run_sync(
            _recipients, user_ids, envelope.conversation_id, {c.jti for c in connections}
        )
        now = time.time()
        for connection in connections:
            version = versions.get(connection.user.id)
            if version is None:
                continue  # not a member (any more)
            if version != connection.token_version or connection.jti in revoked:
                connection.close(CLOSE_UNAUTHORIZED, "Token revoked")
            elif connection.expires_at <= now:
                connection.close(CLOSE_UNAUTHORIZED, "Token expired")
            elif envelope.event is not None:
                connection.send(envelope.event)

    async def run(self) -> None:
        """Deliver every envelope the broker brings, in order, until cancelled."""
        async for envelope in self.broker.subscribe():
            try:
                await self.deliver(envelope)
            except Exception:
                # One failed delivery (say, the database was busy) loses one
                # event, which clients recover with `after=`; the hub goes on.
                logger.exception("Could not deliver an event")

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Deliver events while the app runs (used by the app's lifespan)."""
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(self.run)
            try:
                yield
            finally:
                tasks.cancel_scope.cancel()
                await self.broker.aclose()


def make_broker() -> Broker:
    if settings.REDIS_URL:
        return RedisBroker(settings.REDIS_URL, settings.REDIS_CHANNEL)
    return LocalBroker()


hub = Hub(make_broker())


# --- Publishing from routes --------------------------------------------------


class Outbox:
    """The events of one request, published once its route has succeeded."""

    def __init__(self) -> None:
        self.envelopes: list[Envelope] = []

    def to_conversation(self, conversation_id: int, event: SQLModel) -> None:
        """To every member of the conversation, as they are when it is delivered."""
        self.envelopes.append(
            Envelope(conversation_id=conversation_id, event=event.model_dump_json())
        )

    def to_users(self, users: Iterable[User], event: SQLModel) -> None:
        user_ids = [user.id for user in users if user.id is not None]
        self.envelopes.append(Envelope(user_ids=user_ids, event=event.model_dump_json()))

    def check_tokens(self, user: User) -> None:
        """Close at once the user's sockets whose token is no longer valid."""
        self.envelopes.append(Envelope(user_ids=[user.id] if user.id is not None else []))


async def get_outbox() -> AsyncIterator[Outbox]:
    outbox = Outbox()
    # The route runs during this `yield`. If it raises, the exception comes
    # out of the `yield` and nothing below runs: no event for a failed change.
    yield outbox
    for envelope in outbox.envelopes:
        await hub.publish(envelope)


Events = Annotated[Outbox, Depends(get_outbox, scope="function")]


# --- The WebSocket endpoint ----------------------------------------------------

router = APIRouter()


def error_frame(detail: str) -> str:
    return ErrorEvent(detail=detail).model_dump_json()


def _authenticate(token: str) -> tuple[User, TokenPayload] | None:
    with db.open_session(db.engine, write=False) as session:
        return authenticate(session, token)


async def handshake(websocket: WebSocket) -> Connection | None:
    """Wait for the `auth` frame and check its token; None if it is not right."""
    with anyio.move_on_after(AUTH_TIMEOUT_SECONDS):
        message = await websocket.receive()
        text = message.get("text")
        if message["type"] != "websocket.receive" or text is None or len(text) > MAX_FRAME_CHARS:
            return None
        try:
            frame = auth_frame.validate_json(text)
        except ValidationError:
            return None
        # The database is synchronous: query it in a worker thread, as FastAPI
        # does for `def` routes, so the event loop keeps serving everyone else.
        found = await anyio.to_thread.run_sync(_authenticate, frame.token)
        if found is None:
            return None
        user, token = found
        return Connection(
            websocket, UserPublic.model_validate(user), token.jti, token.ver, token.exp
        )
    return None


async def relay_typing(connection: Connection, conversation_id: int) -> None:
    members, _ = await anyio.to_thread.run_sync(
        _recipients, [connection.user.id], conversation_id, ()
    )
    if not members:
        connection.send(error_frame("Conversation not found"))
        return
    event = TypingEvent(conversation_id=conversation_id, user=connection.user)
    await hub.publish(
        Envelope(
            conversation_id=conversation_id,
            skip_user_id=connection.user.id,
            event=event.model_dump_json(),
        )
    )


async def receive_frames(connection: Connection) -> None:
    """Answer the client's frames until it goes away."""
    while True:
        message = await connection.websocket.receive()
        if message["type"] == "websocket.disconnect":
            connection.close(CLOSE_NORMAL)
            return
        text = message.get("text")
        if text is None:
            connection.send(error_frame("Frames must be JSON text, not binary"))
            continue
        if len(text) > MAX_FRAME_CHARS:
            connection.close(CLOSE_TOO_BIG, "Frame too large")
            return
        try:
            frame = client_frame.validate_json(text)
        except ValidationError as exc:
            error = exc.errors(include_url=False)[0]
            where = ".".join(str(part) for part in error["loc"])
            connection.send(error_frame(f"{where}: {error['msg']}" if where else error["msg"]))
            continue
        if isinstance(frame, PingFrame):
            connection.send(PongEvent().model_dump_json())
        elif isinstance(frame, TypingFrame):
            await relay_typing(connection, frame.conversation_id)
        else:
            connection.send(error_frame("Already authenticated"))


async def send_frames(connection: Connection) -> None:
    """Send queued frames, one at a time, for as long as the client reads them."""
    try:
        while True:
            text = await connection.queue.get()
            await connection.websocket.send_text(text)
    except (WebSocketDisconnect, OSError):
        connection.close(CLOSE_NORMAL)


async def expire(connection: Connection) -> None:
    await anyio.sleep(max(0.0, connection.expires_at - time.time()))
    connection.close(CLOSE_UNAUTHORIZED, "Token expired")


async def close(websocket: WebSocket, code: int, reason: str = "") -> None:
    if websocket.client_state != WebSocketState.CONNECTED:
        return  # the client has gone already
    # A client that stopped reading may never acknowledge; don't wait for ever.
    with anyio.move_on_after(CLOSE_TIMEOUT_SECONDS):
        try:
            await websocket.close(code, reason)
        except (WebSocketDisconnect, OSError, RuntimeError):
            pass


@router.websocket("/ws")
async def websocket_endpoint(websocket: WebSocket) -> None:
    """Live events. Send `{"type": "auth", "token": "<jwt>"}` first, within 10 s."""
    await websocket.accept()
    connection = await handshake(websocket)
    if connection is None:
        await close(websocket, CLOSE_UNAUTHORIZED, "Send a valid auth frame first")
        return
    connection.send(ReadyEvent(user=connection.user).model_dump_json())
    hub.add(connection)
    try:
        # Receiving, sending and the expiry timer run side by side; whichever
        # ends first cancels the scope, and with it the other two.
        with connection.cancel_scope:
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(receive_frames, connection)
                tasks.start_soon(send_frames, connection)
                tasks.start_soon(expire, connection)
    finally:
        hub.remove(connection)
    await close(websocket, connection.close_code, connection.close_reason)
