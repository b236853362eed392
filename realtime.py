"""`GET /ws`: the WebSocket protocol of live events.

A client connects, sends `{"type": "auth", "token": ...}` within 10 s, gets
`{"type": "ready", ...}`, and from then on receives the events that the hub
(hub.py) queues on its socket. It may send `ping` and `typing` frames.
main.py routes `/ws` to `websocket_endpoint`.
"""

import asyncio
import logging
import time
from collections import defaultdict
from contextlib import suppress
from typing import Final

import anyio
from fastapi import WebSocket, WebSocketDisconnect
from pydantic import TypeAdapter, ValidationError
from starlette.websockets import WebSocketState

import db
import logs
from auth import authenticate, granted_scopes
from config import settings
from hub import (
    CLOSE_FORBIDDEN,
    CLOSE_NORMAL,
    CLOSE_UNAUTHORIZED,
    LiveSocket,
    hub,
    recipients,
)
from models import (
    AuthFrame,
    ClientFrame,
    Envelope,
    ErrorEvent,
    PingFrame,
    PongEvent,
    ReadyEvent,
    Scope,
    TokenPayload,
    TypingEvent,
    TypingFrame,
    User,
    UserPublic,
)
from presence import presence

logger = logging.getLogger("messageapp.realtime")

AUTH_TIMEOUT_SECONDS = 10.0
# Every frame a client may send is small (a token is the largest part).
MAX_FRAME_CHARS: Final = 16 * 1024
CLOSE_TOO_BIG: Final = 1009  # "message too big"
CLOSE_POLICY: Final = 1008  # "policy violation": too many frames, or sockets
# A client sends a frame now and then (typing every few seconds, a ping);
# a socket may send FRAME_BURST at once, then FRAME_RATE a second.
FRAME_RATE: Final = 10.0
FRAME_BURST: Final = 20.0
# At most one `typing` event per user and conversation in this interval;
# more frames are dropped (clients repeat them while the user types).
TYPING_INTERVAL_SECONDS: Final = 2.0
CLOSE_TIMEOUT_SECONDS: Final = 5.0

auth_frame = TypeAdapter(AuthFrame)
client_frame: TypeAdapter[AuthFrame | TypingFrame | PingFrame] = TypeAdapter(ClientFrame)
# user id -> conversation id -> when a typing event was last relayed.
last_typing: defaultdict[int, dict[int, float]] = defaultdict(dict)


def error_frame(detail: str) -> str:
    return ErrorEvent(detail=detail).model_dump_json()


def _authenticate(token: str) -> tuple[User, TokenPayload] | None:
    with db.read_session() as session:
        return authenticate(session, token)


async def handshake(websocket: WebSocket) -> LiveSocket | tuple[int, str]:
    """Wait for the `auth` frame and check its token: the new socket, or
    the close code and reason the socket is refused with."""
    bad_frame = (CLOSE_UNAUTHORIZED, 'The first frame must be {"type": "auth", "token": "..."}')
    with anyio.move_on_after(AUTH_TIMEOUT_SECONDS):
        message = await websocket.receive()
        text = message.get("text")
        if message["type"] != "websocket.receive" or text is None or len(text) > MAX_FRAME_CHARS:
            return bad_frame
        try:
            frame = auth_frame.validate_json(text)
        except ValidationError:
            return bad_frame
        # The database is synchronous: query it in a worker thread, as FastAPI
        # does for `def` routes, so the event loop keeps serving everyone else.
        found = await anyio.to_thread.run_sync(_authenticate, frame.token)
        if found is None:
            return CLOSE_UNAUTHORIZED, "Invalid, expired or revoked token; log in again"
        user, token = found
        scopes = granted_scopes(user, token)
        if Scope.read not in scopes:
            return CLOSE_FORBIDDEN, f"The token lacks the {Scope.read.value} scope"
        return LiveSocket(
            websocket,
            UserPublic.model_validate(user),
            token.jti,
            token.sid,
            token.ver,
            token.exp,
            can_write=Scope.write in scopes,
        )
    return CLOSE_UNAUTHORIZED, f"No auth frame within {AUTH_TIMEOUT_SECONDS:g} s"


async def relay_typing(socket: LiveSocket, conversation_id: int) -> None:
    user_id = socket.user.id
    now = time.monotonic()
    relayed_at = last_typing[user_id].get(conversation_id)
    if relayed_at is not None and now - relayed_at < TYPING_INTERVAL_SECONDS:
        return
    # Taken before the query, so that the user's other sockets, asking at the
    # same moment, see it and stay quiet.
    last_typing[user_id][conversation_id] = now
    members, revoked = await anyio.to_thread.run_sync(
        recipients, [user_id], conversation_id, [socket]
    )
    if user_id not in members:
        last_typing[user_id].pop(conversation_id, None)
        socket.send(error_frame("Conversation not found"))
    elif socket.check_token(members[user_id], revoked):
        event = TypingEvent(conversation_id=conversation_id, user=socket.user)
        await hub.publish(
            Envelope(
                conversation_id=conversation_id,
                skip_user_id=user_id,
                event=event.model_dump_json(),
            )
        )


async def receive_frames(socket: LiveSocket) -> None:
    """Answer the client's frames until it goes away."""
    allowance, checked = FRAME_BURST, time.monotonic()
    while True:
        message = await socket.websocket.receive()
        if message["type"] == "websocket.disconnect":
            socket.close(CLOSE_NORMAL)
            return
        # A token bucket: FRAME_RATE frames a second, FRAME_BURST at once.
        now = time.monotonic()
        allowance = min(FRAME_BURST, allowance + (now - checked) * FRAME_RATE) - 1
        checked = now
        if allowance < 0:
            socket.close(CLOSE_POLICY, "Too many frames")
            return
        text = message.get("text")
        if text is None:
            socket.send(error_frame("Frames must be JSON text, not binary"))
            continue
        if len(text) > MAX_FRAME_CHARS:
            socket.close(CLOSE_TOO_BIG, "Frame too large")
            return
        try:
            frame = client_frame.validate_json(text)
        except ValidationError as exc:
            error = exc.errors(include_url=False)[0]
            where = ".".join(str(part) for part in error["loc"])
            socket.send(error_frame(f"{where}: {error['msg']}" if where else error["msg"]))
            continue
        if isinstance(frame, PingFrame):
            socket.send(PongEvent().model_dump_json())
        elif isinstance(frame, TypingFrame):
            if socket.can_write:
                await relay_typing(socket, frame.conversation_id)
            else:
                socket.send(error_frame(f"Typing needs the {Scope.write.value} scope"))
        else:
            socket.send(error_frame("Already authenticated"))


async def send_frames(socket: LiveSocket) -> None:
    """Send queued frames, one at a time, for as long as the client reads them."""
    try:
        while True:
            text = await socket.next_frame()
            await socket.websocket.send_text(text)
    except (WebSocketDisconnect, OSError):
        pass
    finally:
        socket.close(CLOSE_NORMAL)  # the socket ends with its sender (if not closing already)


async def close(websocket: WebSocket, code: int, reason: str = "") -> None:
    if websocket.client_state != WebSocketState.CONNECTED:
        return  # the client has gone already
    # A client that stopped reading may never acknowledge; don't wait for ever.
    with anyio.move_on_after(CLOSE_TIMEOUT_SECONDS):
        try:
            await websocket.close(code, reason)
        except (WebSocketDisconnect, OSError, RuntimeError):
            pass


# `async def`: a socket spends its life waiting, which costs the event loop
# nothing, where a `def` would hold a worker thread for as long as it is open.
# Its queries still go to threads (see handshake).
async def websocket_endpoint(websocket: WebSocket) -> None:
    """Live events. Send `{"type": "auth", "token": "<jwt>"}` first, within 10 s;
    the token needs the `messages:read` scope (else the socket closes with 4403)."""
    await websocket.accept()
    socket = await handshake(websocket)
    if isinstance(socket, tuple):
        await close(websocket, *socket)
        return
    if not hub.add(socket):
        limit = f"{settings.WS_MAX_PER_USER} open sockets per user"
        await close(websocket, CLOSE_POLICY, f"Too many sockets: at most {limit}")
        return
    socket.send(ReadyEvent(user=socket.user).model_dump_json())
    user_id = socket.user.id
    logs.set_user(user_id)
    # The token's expiry is a timer, not a task: each task costs every open
    # socket memory (docs/performance.md).
    expiry = asyncio.get_running_loop().call_later(
        max(0.0, socket.expires_at - time.time()),
        socket.close,
        CLOSE_UNAUTHORIZED,
        "Token expired",
    )
    try:
        # From now on the user gets no Web Push (presence.py); `ready`, only
        # queued above, goes out once the sender starts below, after this.
        await presence.arrived(socket)
        # A logout or password change that committed while the token was being
        # checked found no socket to close; look again now that it is registered.
        await hub.deliver(Envelope(user_ids=[user_id]))
        # Sending runs beside receiving, which this task does itself; either
        # ends by closing the socket, which cancels the scope, and receiving
        # then stops the sender. A plain task, not a task group: each socket
        # keeps what it is made of for as long as it is open.
        sender = asyncio.create_task(send_frames(socket))
        try:
            with socket.cancel_scope:
                await receive_frames(socket)
        finally:
            # Waited for, so that nothing is sent after the goodbye below, and
            # an error of the sender's is raised here, not lost with its task.
            sender.cancel()
            with suppress(asyncio.CancelledError):
                await sender
    finally:
        expiry.cancel()
        hub.remove(socket)
        await presence.left(socket)
        if user_id not in hub.sockets:
            last_typing.pop(user_id, None)
    await close(websocket, socket.close_code, socket.close_reason)
