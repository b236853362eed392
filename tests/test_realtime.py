"""Real time over `GET /ws`, through TestClient: the handshake and every event.

The hub delivers events one at a time, in the order they were published. So
"this socket received nothing" is shown with a barrier: a later event that the
socket does receive must be the very next frame it sees.
"""

import gc
import time
import weakref
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, update
from starlette.testclient import WebSocketTestSession
from starlette.websockets import WebSocketDisconnect

import auth
import crud
import hub
import realtime
from config import settings
from models import User
from tests.helpers import (
    Headers,
    assert_closed,
    bearer,
    create_conversation,
    general_id,
    history,
    live,
    login,
    new_user,
    send,
    signup,
    token_of,
)


def send_frame(ws: WebSocketTestSession, frame: Any) -> None:
    """Bytes as a binary frame, a str as text as it is, anything else as JSON."""
    if isinstance(frame, bytes):
        ws.send_bytes(frame)
    elif isinstance(frame, str):
        ws.send_text(frame)
    else:
        ws.send_json(frame)


def handshake(client: TestClient, first_frame: Any) -> int:
    """Send one first frame; return the close code the server answers with."""
    with client.websocket_connect("/ws") as ws:
        send_frame(ws, first_frame)
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_json()
        return closed.value.code


@pytest.fixture(params=["by id", "whole lists"])
def recipients_query(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Both ways the hub finds who may receive: asking about each connected
    user by id, and, past crud.MANY_IDS of them, reading whole lists."""
    if request.param == "whole lists":
        monkeypatch.setattr(crud, "MANY_IDS", 0)


def group_of(client: TestClient, owner: Headers, *members: str) -> int:
    group = create_conversation(client, owner, kind="group", title="team", members=list(members))
    return int(group["id"])


def group_and_outsider(client: TestClient) -> tuple[Headers, Headers, Headers, int, int]:
    """alice and bob in a group; carol outside it, in a direct conversation
    with alice. A message there is carol's barrier: the next frame she sees."""
    alice, bob, carol = (new_user(client, name) for name in ("alice", "bob", "carol"))
    group = group_of(client, alice, "bob")
    direct = create_conversation(client, alice, kind="direct", members=["carol"])["id"]
    return alice, bob, carol, group, direct


# --- Handshake -------------------------------------------------------------


def test_ws_ready(client: TestClient) -> None:
    headers = new_user(client, "alice")
    with client.websocket_connect("/ws") as ws:
        ws.send_json({"type": "auth", "token": token_of(headers)})
        ready = ws.receive_json()
    assert ready["type"] == "ready"
    assert ready["user"]["username"] == "alice"
    assert "hashed_password" not in ready["user"]


@pytest.mark.parametrize(
    "frame",
    [
        {"type": "auth", "token": "not.a.jwt"},
        {"type": "auth"},
        {"type": "ping"},
        {"type": "auth", "token": 42},
        "not json",
        b"\x00\x01",
        [],
    ],
    ids=["bad-token", "no-token", "not-auth", "token-not-string", "not-json", "binary", "list"],
)
def test_ws_bad_first_frame(client: TestClient, frame: Any) -> None:
    assert handshake(client, frame) == hub.CLOSE_UNAUTHORIZED


def test_ws_expired_token(client: TestClient) -> None:
    saved = signup(client, "alice")
    user = User(id=saved["id"], username="alice", hashed_password="-")
    expired = auth.create_access_token(user, expires_delta=timedelta(seconds=-5))
    assert handshake(client, {"type": "auth", "token": expired}) == 4401


def test_ws_logged_out_token(client: TestClient) -> None:
    headers = new_user(client, "alice")
    assert client.post("/logout", headers=headers).status_code == 204
    assert handshake(client, {"type": "auth", "token": token_of(headers)}) == 4401


def test_ws_token_from_before_password_change(client: TestClient) -> None:
    headers = new_user(client, "alice")
    change = {"current_password": "correct horse battery staple", "new_password": "x" * 12}
    assert client.put("/users/me/password", json=change, headers=headers).status_code == 204
    assert handshake(client, {"type": "auth", "token": token_of(headers)}) == 4401


def test_ws_no_auth_frame_in_time(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(realtime, "AUTH_TIMEOUT_SECONDS", 0.2)
    with client.websocket_connect("/ws") as ws:
        started = time.monotonic()
        assert_closed(ws)
    assert time.monotonic() - started < 5


def test_ws_token_in_url_is_ignored(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(realtime, "AUTH_TIMEOUT_SECONDS", 0.2)
    headers = new_user(client, "alice")
    with client.websocket_connect(f"/ws?token={token_of(headers)}") as ws:
        assert_closed(ws)


# --- Frames from the client --------------------------------------------------


def test_ws_ping(client: TestClient) -> None:
    with live(client, new_user(client, "alice")) as ws:
        ws.send_json({"type": "ping"})
        assert ws.receive_json() == {"type": "pong"}


@pytest.mark.parametrize(
    ("frame", "detail"),
    [
        ("{oops", "Invalid JSON"),
        ({"type": "shout"}, "type"),
        ({"no": "type"}, "type"),
        ({"type": "typing"}, "conversation_id"),
        ({"type": "typing", "conversation_id": "x"}, "conversation_id"),
        ({"type": "typing", "conversation_id": "1"}, "conversation_id"),
        ({"type": "typing", "conversation_id": True}, "conversation_id"),
        ({"type": "typing", "conversation_id": 1.0}, "conversation_id"),
        ({"type": "typing", "conversation_id": 2**70}, "conversation_id"),
        ({"type": "typing", "conversation_id": 0}, "conversation_id"),
        ({"type": "auth", "token": "again"}, "Already authenticated"),
        (b"\xff", "binary"),
    ],
    ids=[
        "json",
        "unknown-type",
        "no-type",
        "typing-no-id",
        "typing-bad-id",
        "typing-id-string",
        "typing-id-bool",
        "typing-id-float",
        "typing-id-huge",
        "typing-id-zero",
        "auth-again",
        "bin",
    ],
)
def test_ws_malformed_frame_gets_error_and_stays_open(
    client: TestClient, frame: Any, detail: str
) -> None:
    with live(client, new_user(client, "alice")) as ws:
        send_frame(ws, frame)
        error = ws.receive_json()
        assert error["type"] == "error"
        assert detail in error["detail"]
        ws.send_json({"type": "ping"})
        assert ws.receive_json() == {"type": "pong"}


def test_ws_oversized_frame_closes_the_socket(client: TestClient) -> None:
    with live(client, new_user(client, "alice")) as ws:
        ws.send_json({"type": "ping", "padding": "x" * realtime.MAX_FRAME_CHARS})
        assert_closed(ws, realtime.CLOSE_TOO_BIG)


def test_ws_frame_flood_closes_the_socket(client: TestClient) -> None:
    with live(client, new_user(client, "alice")) as ws:
        for _ in range(int(realtime.FRAME_BURST) + 10):
            ws.send_json({"type": "ping"})
        pongs = 0
        with pytest.raises(WebSocketDisconnect) as closed:
            while True:
                assert ws.receive_json() == {"type": "pong"}
                pongs += 1
    assert closed.value.code == realtime.CLOSE_POLICY
    assert pongs <= realtime.FRAME_BURST


def test_ws_sockets_per_user_are_limited(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """WS_MAX_PER_USER: the socket over the limit is closed (1008); the open
    ones, and other users' sockets, go on working."""
    monkeypatch.setattr(settings, "WS_MAX_PER_USER", 2)
    alice, bob = new_user(client, "alice"), new_user(client, "bob")
    with live(client, alice) as first, live(client, alice) as second, live(client, bob) as third:
        with client.websocket_connect("/ws") as extra:
            extra.send_json({"type": "auth", "token": token_of(alice)})
            assert_closed(extra, realtime.CLOSE_POLICY)
        for ws in (first, second, third):
            ws.send_json({"type": "ping"})
            assert ws.receive_json() == {"type": "pong"}
    with live(client, alice), live(client, alice):  # closed sockets free their places
        pass


def test_ws_oversized_first_frame(client: TestClient) -> None:
    frame = {"type": "auth", "token": "x" * realtime.MAX_FRAME_CHARS}
    assert handshake(client, frame) == hub.CLOSE_UNAUTHORIZED


# --- Messages ----------------------------------------------------------------


def test_ws_message_created_reaches_exactly_the_members(
    client: TestClient, recipients_query: None
) -> None:
    alice, bob, carol, group, direct = group_and_outsider(client)
    with live(client, alice) as a, live(client, bob) as b, live(client, carol) as c:
        sent = send(client, alice, group, "for the team")
        for ws in (a, b):
            event = ws.receive_json()
            assert event == {"type": "message.created", "message": sent}
        # carol is not in the group: the next thing she sees is the later message.
        later = send(client, alice, direct, "just for carol")
        assert c.receive_json() == {"type": "message.created", "message": later}


def test_ws_channel_messages_reach_members_not_readers(
    client: TestClient, recipients_query: None
) -> None:
    alice, bob = new_user(client, "alice"), new_user(client, "bob")
    channel = create_conversation(client, alice, kind="channel", title="random")["id"]
    direct = create_conversation(client, alice, kind="direct", members=["bob"])["id"]
    with live(client, bob) as b:
        send(client, alice, channel, "bob can read this over HTTP, but has not joined")
        later = send(client, alice, direct, "hi bob")
        assert b.receive_json() == {"type": "message.created", "message": later}


def test_ws_retry_with_client_id_sends_no_second_event(client: TestClient) -> None:
    alice, bob = new_user(client, "alice"), new_user(client, "bob")
    group = group_of(client, alice, "bob")
    with live(client, bob) as b:
        first = send(client, alice, group, "once", client_id="k1")
        retry = client.post(
            f"/conversations/{group}/messages",
            json={"content": "once", "client_id": "k1"},
            headers=alice,
        )
        assert retry.status_code == 200
        later = send(client, alice, group, "twice")
        assert b.receive_json()["message"] == first
        assert b.receive_json()["message"] == later


def test_ws_failed_request_sends_no_event(client: TestClient) -> None:
    alice, bob = new_user(client, "alice"), new_user(client, "bob")
    channel = create_conversation(client, alice, kind="channel", title="random")["id"]
    group = group_of(client, alice, "bob")
    with live(client, alice) as a:
        # bob has not joined: 403, nothing stored, nothing published.
        response = client.post(
            f"/conversations/{channel}/messages", json={"content": "x"}, headers=bob
        )
        assert response.status_code == 403
        later = send(client, bob, group, "after the failure")
        assert a.receive_json() == {"type": "message.created", "message": later}


def test_ws_message_updated(client: TestClient) -> None:
    alice, bob, carol, group, direct = group_and_outsider(client)
    sent = send(client, alice, group, "draft")
    with live(client, bob) as b, live(client, carol) as c:
        edited = client.patch(
            f"/messages/{sent['id']}", json={"content": "final"}, headers=alice
        ).json()
        event = b.receive_json()
        later = send(client, alice, direct, "carol saw no edit")
        assert c.receive_json()["message"] == later
    assert event == {"type": "message.updated", "message": edited}
    assert event["message"]["content"] == "final"
    assert event["message"]["edited_at"] is not None


def test_ws_failed_edit_sends_no_event(client: TestClient) -> None:
    alice, bob = new_user(client, "alice"), new_user(client, "bob")
    group = group_of(client, alice, "bob")
    sent = send(client, alice, group, "mine")
    with live(client, alice) as a:
        response = client.patch(f"/messages/{sent['id']}", json={"content": "x"}, headers=bob)
        assert response.status_code == 403
        assert client.delete(f"/messages/{sent['id']}", headers=bob).status_code == 403
        later = send(client, bob, group, "after the failures")
        assert a.receive_json()["message"] == later


def test_ws_message_deleted_is_a_tombstone(client: TestClient) -> None:
    alice, bob, carol, group, direct = group_and_outsider(client)
    sent = send(client, alice, group, "oops, a secret")
    with live(client, bob) as b, live(client, carol) as c:
        assert client.delete(f"/messages/{sent['id']}", headers=alice).status_code == 204
        event = b.receive_json()
        # Deleting again changes nothing, so it publishes nothing.
        assert client.delete(f"/messages/{sent['id']}", headers=alice).status_code == 204
        later = send(client, alice, group, "after")
        assert b.receive_json()["message"] == later
        to_carol = send(client, alice, direct, "carol saw no deletion")
        assert c.receive_json()["message"] == to_carol
    assert event["type"] == "message.deleted"
    assert event["message"]["id"] == sent["id"]
    assert event["message"]["deleted"] is True
    assert event["message"]["content"] is None


def test_ws_left_member_stops_receiving(client: TestClient, recipients_query: None) -> None:
    alice, bob = new_user(client, "alice"), new_user(client, "bob")
    group = group_of(client, alice, "bob")
    direct = create_conversation(client, alice, kind="direct", members=["bob"])["id"]
    with live(client, bob) as b:
        assert client.post(f"/conversations/{group}/leave", headers=bob).status_code == 204
        send(client, alice, group, "bob has gone")
        later = send(client, alice, direct, "but still hears this")
        assert b.receive_json()["message"] == later


# --- Conversations -------------------------------------------------------------


def test_ws_conversation_joined_on_create(client: TestClient) -> None:
    alice, bob, carol = (new_user(client, name) for name in ("alice", "bob", "carol"))
    with live(client, alice) as a, live(client, bob) as b, live(client, carol) as c:
        group = create_conversation(client, alice, kind="group", title="pair", members=["bob"])
        for ws in (a, b):
            event = ws.receive_json()
            assert event["type"] == "conversation.joined"
            assert event["conversation"]["id"] == group["id"]
            assert event["conversation"]["is_member"] is True
            assert event["conversation"]["unread_count"] == 0
        direct = create_conversation(client, bob, kind="direct", members=["carol"])
        event = c.receive_json()
        assert event["type"] == "conversation.joined"
        assert event["conversation"]["id"] == direct["id"]


def test_ws_existing_direct_conversation_sends_no_event(client: TestClient) -> None:
    alice, bob = new_user(client, "alice"), new_user(client, "bob")
    direct = create_conversation(client, alice, kind="direct", members=["bob"])["id"]
    with live(client, bob) as b:
        again = client.post(
            "/conversations", json={"kind": "direct", "members": ["bob"]}, headers=alice
        )
        assert again.status_code == 200
        later = send(client, alice, direct, "hello")
        assert b.receive_json()["type"] == "message.created"
        assert later["id"] > 0


def test_ws_conversation_joined_on_join(client: TestClient) -> None:
    alice, bob = new_user(client, "alice"), new_user(client, "bob")
    channel = create_conversation(client, alice, kind="channel", title="random")["id"]
    send(client, alice, channel, "before bob")
    with live(client, bob) as b, live(client, alice) as a:
        assert client.post(f"/conversations/{channel}/join", headers=bob).status_code == 200
        # Joining again changes nothing: no second event.
        assert client.post(f"/conversations/{channel}/join", headers=bob).status_code == 200
        event = b.receive_json()
        assert event["type"] == "conversation.joined"
        assert event["conversation"]["id"] == channel
        assert event["conversation"]["unread_count"] == 0
        # A member now: the next message reaches bob at once. alice, already
        # a member, was told nothing of bob's joining.
        sent = send(client, alice, channel, "welcome")
        assert b.receive_json() == {"type": "message.created", "message": sent}
        assert a.receive_json() == {"type": "message.created", "message": sent}


def test_ws_conversation_joined_on_add(client: TestClient) -> None:
    alice, bob, carol = (new_user(client, name) for name in ("alice", "bob", "carol"))
    group = group_of(client, alice, "bob")
    send(client, alice, group, "before carol")
    with live(client, bob) as b, live(client, carol) as c:
        response = client.post(
            f"/conversations/{group}/members", json={"username": "carol"}, headers=alice
        )
        assert response.status_code == 200
        event = c.receive_json()
        assert event["type"] == "conversation.joined"
        assert event["conversation"]["id"] == group
        assert event["conversation"]["member_count"] == 3
        assert event["conversation"]["unread_count"] == 0
        # bob was already a member: no event for him, only the next message.
        sent = send(client, alice, group, "hi carol")
        assert b.receive_json() == {"type": "message.created", "message": sent}
        assert c.receive_json() == {"type": "message.created", "message": sent}


# --- Read markers and typing -------------------------------------------------


def test_ws_read_goes_to_the_readers_sockets_only(client: TestClient) -> None:
    alice, bob = new_user(client, "alice"), new_user(client, "bob")
    group = group_of(client, alice, "bob")
    sent = send(client, alice, group, "read me")
    with live(client, bob) as b1, live(client, bob) as b2, live(client, alice) as a:
        marker = {"message_id": sent["id"]}
        assert (
            client.post(f"/conversations/{group}/read", json=marker, headers=bob).status_code == 204
        )
        expected = {"type": "read", "conversation_id": group, "message_id": sent["id"]}
        assert b1.receive_json() == expected
        assert b2.receive_json() == expected
        # Marking it again does not move the marker: no event.
        assert (
            client.post(f"/conversations/{group}/read", json=marker, headers=bob).status_code == 204
        )
        later = send(client, bob, group, "to alice")
        assert a.receive_json()["message"] == later


def test_ws_typing_reaches_the_others_not_the_typist(client: TestClient) -> None:
    alice, bob, carol, group, direct = group_and_outsider(client)
    with (
        live(client, alice) as a1,
        live(client, alice) as a2,
        live(client, bob) as b,
        live(client, carol) as c,
    ):
        a1.send_json({"type": "typing", "conversation_id": group})
        event = b.receive_json()
        assert event["type"] == "typing"
        assert event["conversation_id"] == group
        assert event["user"]["username"] == "alice"
        later = send(client, alice, direct, "hi carol")
        for ws in (a1, a2):  # neither of alice's sockets got her own typing
            assert ws.receive_json()["message"] == later
        assert c.receive_json()["message"] == later


def test_ws_typing_is_relayed_once_per_interval(client: TestClient) -> None:
    alice, bob = new_user(client, "alice"), new_user(client, "bob")
    group = group_of(client, alice, "bob")
    with live(client, alice) as a, live(client, bob) as b:
        for _ in range(5):  # a client repeating itself while its user types
            a.send_json({"type": "typing", "conversation_id": group})
        assert b.receive_json()["type"] == "typing"
        sent = send(client, alice, group, "only one typing event came before this")
        assert b.receive_json()["message"] == sent


def test_ws_typing_from_two_sockets_at_once_is_relayed_once(client: TestClient) -> None:
    alice, bob = new_user(client, "alice"), new_user(client, "bob")
    group = group_of(client, alice, "bob")
    with live(client, alice) as a1, live(client, alice) as a2, live(client, bob) as b:
        a1.send_json({"type": "typing", "conversation_id": group})
        a2.send_json({"type": "typing", "conversation_id": group})
        assert b.receive_json()["type"] == "typing"
        sent = send(client, alice, group, "one typing event, not two")
        assert b.receive_json()["message"] == sent


def test_ws_typing_after_logout_is_not_relayed(client: TestClient) -> None:
    alice, bob = new_user(client, "alice"), new_user(client, "bob")
    group = group_of(client, alice, "bob")
    with live(client, alice) as a, live(client, bob) as b:
        assert client.post("/logout", headers=alice).status_code == 204
        a.send_json({"type": "typing", "conversation_id": group})
        assert_closed(a)
        sent = send(client, bob, group, "alice's typing never came")
        assert b.receive_json()["message"] == sent


def test_ws_typing_outside_your_conversations_is_an_error(client: TestClient) -> None:
    alice, bob = new_user(client, "alice"), new_user(client, "bob")
    group = group_of(client, alice)
    with live(client, bob) as b:
        for conversation_id in (group, 999_999):
            b.send_json({"type": "typing", "conversation_id": conversation_id})
            assert b.receive_json() == {"type": "error", "detail": "Conversation not found"}


# --- Several sockets, revocation, expiry ------------------------------------


def test_ws_every_socket_of_a_user_receives(client: TestClient) -> None:
    alice, bob = new_user(client, "alice"), new_user(client, "bob")
    bob_other_device = bearer(login(client, "bob"))
    group = group_of(client, alice, "bob")
    with live(client, bob) as b1, live(client, bob) as b2, live(client, bob_other_device) as b3:
        sent = send(client, alice, group, "to all of bob's tabs")
        for ws in (b1, b2, b3):
            assert ws.receive_json() == {"type": "message.created", "message": sent}


def test_ws_password_change_closes_sockets_at_once(client: TestClient) -> None:
    bob = new_user(client, "bob")
    with live(client, bob) as b:
        change = {"current_password": "correct horse battery staple", "new_password": "y" * 12}
        assert client.put("/users/me/password", json=change, headers=bob).status_code == 204
        assert_closed(b)


def test_ws_logout_closes_that_tokens_socket_at_once(
    client: TestClient, recipients_query: None
) -> None:
    alice, bob = new_user(client, "alice"), new_user(client, "bob")
    bob_phone = bearer(login(client, "bob"))
    group = group_of(client, alice, "bob")
    with live(client, bob) as laptop, live(client, bob_phone) as phone:
        assert client.post("/logout", headers=bob).status_code == 204
        assert_closed(laptop)
        sent = send(client, alice, group, "bob logged out on his laptop")
        assert phone.receive_json()["message"] == sent  # a different token


def test_ws_revocation_during_handshake_is_not_missed(
    client: TestClient, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A password change that commits after the token was checked, but before
    the socket was registered, still closes the socket."""
    headers = new_user(client, "alice")
    check_token = realtime._authenticate

    def password_changes_meanwhile(token: str) -> Any:
        found = check_token(token)
        with engine.begin() as connection:  # what PUT /users/me/password commits
            connection.execute(update(User).values(token_version=User.token_version + 1))
        return found

    monkeypatch.setattr(realtime, "_authenticate", password_changes_meanwhile)
    assert handshake(client, {"type": "auth", "token": token_of(headers)}) == 4401


def test_ws_expired_token_closes_the_socket(client: TestClient) -> None:
    saved = signup(client, "alice")
    user = User(id=saved["id"], username="alice", hashed_password="-")
    short = auth.create_access_token(user, expires_delta=timedelta(seconds=1))
    with client.websocket_connect("/ws") as ws:
        ws.send_json({"type": "auth", "token": short})
        assert ws.receive_json()["type"] == "ready"
        started = time.monotonic()
        assert_closed(ws)
    assert time.monotonic() - started < 5


def test_ws_catch_up_after_reconnect(client: TestClient) -> None:
    alice, bob = new_user(client, "alice"), new_user(client, "bob")
    group = group_of(client, alice, "bob")
    with live(client, bob) as b:
        send(client, alice, group, "seen live")
        last_seen = b.receive_json()["message"]["id"]
    missed = [send(client, alice, group, f"while away {i}") for i in range(3)]
    with live(client, bob) as b:
        caught_up = history(client, bob, group, after=last_seen)
        assert caught_up == missed
        sent = send(client, alice, group, "live again")
        assert b.receive_json()["message"] == sent


def test_ws_general_channel_for_everyone(client: TestClient) -> None:
    alice, bob = new_user(client, "alice"), new_user(client, "bob")
    with live(client, bob) as b:
        sent = send(client, alice, general_id(client, alice), "hello, everyone")
        assert b.receive_json() == {"type": "message.created", "message": sent}


# --- Garbage collection (hub.Hub.tidy) ---------------------------------------


class Cycle:
    """Refers to itself: once unreachable, only the garbage collector frees it."""

    def __init__(self) -> None:
        self.me = self


def collectable(obj: object) -> bool:
    """Whether the garbage collector looks at it: frozen objects are left
    out of `gc.get_objects()`, as out of every collection."""
    return any(o is obj for o in gc.get_objects())


def eventually(check: Callable[[], bool], seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, "not within the time"
        time.sleep(0.05)


def test_ws_what_a_socket_leaves_frozen_is_collected_once_it_closes(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Objects alive when a socket is set up are frozen with it, garbage
    included; after the socket closes, a collection frees that garbage."""
    monkeypatch.setattr(hub, "TIDY_SECONDS", 0.05)
    headers = new_user(client, "alice")
    cycle = Cycle()
    freed = weakref.ref(cycle)
    with live(client, headers):
        eventually(lambda: not collectable(freed()))
        del cycle  # unreachable now, but frozen: collections skip it
        gc.collect()
        assert freed() is not None
    # One closed socket is not worth a collection of everything...
    time.sleep(4 * hub.TIDY_SECONDS)
    assert freed() is not None
    # ...but enough of them are (or WS_GC_SECONDS).
    monkeypatch.setattr(hub, "COLLECT_AFTER_CLOSED", 0)
    eventually(lambda: freed() is None)


def test_ws_nothing_is_frozen_without_sockets(client: TestClient) -> None:
    new_user(client, "alice")  # requests, but no socket
    cycle = Cycle()
    time.sleep(2.5 * hub.TIDY_SECONDS)  # the hub has looked twice at least
    assert collectable(cycle)
