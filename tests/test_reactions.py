"""Reactions, replies and history around a message, through the API and the
socket: who may react and see reactions, what the messages carry, the events."""

from typing import Any

import pytest
from fastapi.testclient import TestClient

from models import REPLY_SNIPPET
from tests.helpers import (
    Headers,
    create_conversation,
    general_id,
    history,
    live,
    new_user,
    send,
)


def react(client: TestClient, headers: Headers, message_id: int, emoji: str) -> Any:
    return client.put(f"/messages/{message_id}/reactions/{emoji}", headers=headers)


def unreact(client: TestClient, headers: Headers, message_id: int, emoji: str) -> Any:
    return client.delete(f"/messages/{message_id}/reactions/{emoji}", headers=headers)


def group_and_outsider(client: TestClient) -> tuple[Headers, Headers, Headers, int, int]:
    """alice and bob in a group; carol outside it, in a direct conversation
    with alice. A message there is carol's barrier: the next frame she sees."""
    alice, bob, carol = (new_user(client, name) for name in ("alice", "bob", "carol"))
    group = create_conversation(client, alice, kind="group", title="team", members=["bob"])["id"]
    direct = create_conversation(client, alice, kind="direct", members=["carol"])["id"]
    return alice, bob, carol, group, direct


def reactions_in(client: TestClient, headers: Headers, conversation_id: int) -> list[Any]:
    return [m["reactions"] for m in history(client, headers, conversation_id)]


# --- Reactions -----------------------------------------------------------------------


def test_react_to_a_message(client: TestClient) -> None:
    alice, bob, _, group, _ = group_and_outsider(client)
    message = send(client, alice, group, "lunch?")
    assert message["reactions"] == []
    assert react(client, bob, message["id"], "👍").status_code == 204
    assert react(client, alice, message["id"], "👍").status_code == 204
    assert react(client, alice, message["id"], "🎉").status_code == 204
    # In order of each emoji's first reaction; `me` is the reader's.
    assert reactions_in(client, alice, group) == [
        [{"emoji": "👍", "count": 2, "me": True}, {"emoji": "🎉", "count": 1, "me": True}]
    ]
    assert reactions_in(client, bob, group) == [
        [{"emoji": "👍", "count": 2, "me": True}, {"emoji": "🎉", "count": 1, "me": False}]
    ]


def test_react_is_idempotent(client: TestClient) -> None:
    alice, _, _, group, _ = group_and_outsider(client)
    message = send(client, alice, group, "once")
    for _ in range(2):
        assert react(client, alice, message["id"], "👍").status_code == 204
    assert reactions_in(client, alice, group) == [[{"emoji": "👍", "count": 1, "me": True}]]


def test_take_back_a_reaction(client: TestClient) -> None:
    alice, bob, _, group, _ = group_and_outsider(client)
    message = send(client, alice, group, "hmm")
    react(client, alice, message["id"], "👍")
    react(client, bob, message["id"], "👍")
    for _ in range(2):  # taking back one that is not there changes nothing
        assert unreact(client, alice, message["id"], "👍").status_code == 204
    assert reactions_in(client, alice, group) == [[{"emoji": "👍", "count": 1, "me": False}]]
    assert unreact(client, bob, message["id"], "👍").status_code == 204
    assert reactions_in(client, alice, group) == [[]]


@pytest.mark.parametrize(
    "emoji",
    [
        "👍🏽",
        "❤️",
        "👩\u200d💻",
        "🇯🇵",
        "1️⃣",
        "🏴\U000e0067\U000e0062\U000e0065\U000e006e\U000e0067\U000e007f",
    ],
)
def test_react_with_any_one_emoji(client: TestClient, emoji: str) -> None:
    alice, _, _, group, _ = group_and_outsider(client)
    message = send(client, alice, group, "emoji")
    assert react(client, alice, message["id"], emoji).status_code == 204
    assert reactions_in(client, alice, group) == [[{"emoji": emoji, "count": 1, "me": True}]]


@pytest.mark.parametrize(
    "emoji",
    ["a", "👍👍", "👍 ", "<b>", "%00", "%E2%80%AE", "\u200d", "🏽", "✓", "1", "x" * 40],
    ids=[
        "letter",
        "two",
        "space",
        "html",
        "nul",
        "bidi",
        "zwj",
        "modifier",
        "check",
        "digit",
        "long",
    ],
)
def test_react_with_other_than_one_emoji_is_422(client: TestClient, emoji: str) -> None:
    alice, _, _, group, _ = group_and_outsider(client)
    message = send(client, alice, group, "emoji")
    for request in (react, unreact):
        response = request(client, alice, message["id"], emoji)
        assert response.status_code == 422, emoji
    assert reactions_in(client, alice, group) == [[]]


def test_react_to_a_deleted_message_is_409(client: TestClient) -> None:
    alice, bob, _, group, _ = group_and_outsider(client)
    message = send(client, alice, group, "soon gone")
    react(client, bob, message["id"], "👍")
    client.delete(f"/messages/{message['id']}", headers=alice)
    # The tombstone keeps no reactions, and takes no new one.
    assert reactions_in(client, bob, group) == [[]]
    response = react(client, bob, message["id"], "👍")
    assert response.status_code == 409
    assert response.json() == {"detail": "Message was deleted"}
    assert unreact(client, bob, message["id"], "👍").status_code == 204


def test_non_member_cannot_react_or_see_reactions(client: TestClient) -> None:
    alice, bob, carol, group, _ = group_and_outsider(client)
    message = send(client, alice, group, "private")
    react(client, bob, message["id"], "👍")
    for request in (react, unreact):
        response = request(client, carol, message["id"], "👍")
        assert response.status_code == 404
        assert response.json() == {"detail": "Message not found"}
    assert client.get(f"/messages/{message['id']}", headers=carol).status_code == 404
    assert client.get(f"/conversations/{group}/messages", headers=carol).status_code == 404
    found = client.get("/search/messages", params={"q": "private"}, headers=carol).json()
    assert found == []
    assert reactions_in(client, alice, group) == [[{"emoji": "👍", "count": 1, "me": False}]]


def test_react_to_a_missing_message_is_404(client: TestClient) -> None:
    alice = new_user(client, "alice")
    assert react(client, alice, 999_999, "👍").status_code == 404
    assert react(client, alice, 2**70, "👍").status_code == 422
    assert react(client, alice, 0, "👍").status_code == 422


def test_channel_non_member_must_join_to_react(client: TestClient) -> None:
    alice, bob = new_user(client, "alice"), new_user(client, "bob")
    channel = create_conversation(client, alice, kind="channel", title="news")["id"]
    message = send(client, alice, channel, "read me")
    for request in (react, unreact):
        response = request(client, bob, message["id"], "👍")
        assert response.status_code == 403
        assert response.json() == {"detail": "Join the channel first"}
    client.post(f"/conversations/{channel}/join", headers=bob)
    assert react(client, bob, message["id"], "👍").status_code == 204


def test_reactions_everywhere_a_message_is(client: TestClient) -> None:
    """History, one message, search, the conversation's last message: the same reactions."""
    alice, bob, _, group, _ = group_and_outsider(client)
    message = send(client, alice, group, "findable")
    react(client, bob, message["id"], "🎉")
    expected = [{"emoji": "🎉", "count": 1, "me": True}]
    assert client.get(f"/messages/{message['id']}", headers=bob).json()["reactions"] == expected
    found = client.get("/search/messages", params={"q": "findable"}, headers=bob).json()
    assert [m["reactions"] for m in found] == [expected]
    listed = client.get("/conversations", headers=bob).json()
    [team] = [c for c in listed if c["id"] == group]
    assert team["last_message"]["reactions"] == expected
    assert client.get(f"/conversations/{group}", headers=bob).json() == team
    edited = client.patch(f"/messages/{message['id']}", json={"content": "x"}, headers=alice)
    assert edited.json()["reactions"] == [{"emoji": "🎉", "count": 1, "me": False}]


def test_reaction_events_reach_members_only(client: TestClient) -> None:
    alice, bob, carol, group, direct = group_and_outsider(client)
    message = send(client, alice, group, "react to me")
    with live(client, alice) as a, live(client, bob) as b, live(client, carol) as c:
        assert react(client, bob, message["id"], "👍").status_code == 204
        bob_public = client.get("/users/me", headers=bob).json()
        added = {
            "type": "reaction.added",
            "conversation_id": group,
            "message_id": message["id"],
            "emoji": "👍",
            "user": bob_public,
            "count": 1,
        }
        assert a.receive_json() == added
        assert b.receive_json() == added
        # Again: nothing changes, nobody is told. The next frame is the removal.
        react(client, bob, message["id"], "👍")
        assert unreact(client, bob, message["id"], "👍").status_code == 204
        removed = {**added, "type": "reaction.removed", "count": 0}
        assert a.receive_json() == removed
        assert b.receive_json() == removed
        # carol is in neither: her next frame is the barrier.
        barrier = send(client, alice, direct, "barrier")
        assert c.receive_json() == {"type": "message.created", "message": barrier}


def test_message_events_carry_reactions_for_nobody(client: TestClient) -> None:
    """message.updated goes to every member alike: `me` is false for all."""
    alice, bob, _, group, _ = group_and_outsider(client)
    message = send(client, alice, group, "before")
    react(client, alice, message["id"], "👍")
    with live(client, bob) as b:
        client.patch(f"/messages/{message['id']}", json={"content": "after"}, headers=alice)
        event = b.receive_json()
    assert event["type"] == "message.updated"
    assert event["message"]["reactions"] == [{"emoji": "👍", "count": 1, "me": False}]


# --- Replies -------------------------------------------------------------------------


def test_reply_to_a_message(client: TestClient) -> None:
    alice, bob, _, group, _ = group_and_outsider(client)
    client.patch("/users/me", json={"display_name": "Alice A."}, headers=alice)
    question = send(client, alice, group, "Who wants tea? " + "x" * 200)
    with live(client, alice) as a:
        reply = send(client, bob, group, "Me!", reply_to=question["id"])
        assert a.receive_json() == {"type": "message.created", "message": reply}
    assert reply["reply_to"] == {
        "id": question["id"],
        "author": question["author"],
        "snippet": question["content"][:REPLY_SNIPPET],
        "deleted": False,
    }
    assert question["author"]["display_name"] == "Alice A."
    assert history(client, alice, group)[-1] == reply
    assert client.get(f"/messages/{reply['id']}", headers=alice).json() == reply


def test_reply_shows_the_current_text(client: TestClient) -> None:
    alice, bob, _, group, _ = group_and_outsider(client)
    question = send(client, alice, group, "first words")
    reply = send(client, bob, group, "answer", reply_to=question["id"])
    client.patch(f"/messages/{question['id']}", json={"content": "second words"}, headers=alice)
    assert history(client, bob, group)[-1]["reply_to"]["snippet"] == "second words"
    client.delete(f"/messages/{question['id']}", headers=alice)
    summary = client.get(f"/messages/{reply['id']}", headers=bob).json()["reply_to"]
    assert summary == {
        "id": question["id"],
        "author": question["author"],
        "snippet": None,
        "deleted": True,
    }


def test_reply_to_something_else_is_422(client: TestClient) -> None:
    alice, bob, carol, group, direct = group_and_outsider(client)
    elsewhere = send(client, alice, direct, "in another conversation")
    gone = send(client, alice, group, "deleted")
    client.delete(f"/messages/{gone['id']}", headers=alice)
    cases: list[tuple[Any, str | None]] = [
        (elsewhere["id"], "reply_to is not a message of this conversation"),
        (999_999, "reply_to is not a message of this conversation"),
        (gone["id"], "Cannot reply to a deleted message"),
        (0, None),
        (2**70, None),
        ("first", None),
        (1.5, None),
    ]
    for reply_to, detail in cases:
        response = client.post(
            f"/conversations/{group}/messages",
            json={"content": "hi", "reply_to": reply_to},
            headers=bob,
        )
        assert response.status_code == 422, reply_to
        if detail is not None:
            assert response.json() == {"detail": detail}
    assert [m["content"] for m in history(client, bob, group)] == [None]
    assert carol  # outside the group: its messages are "not in this conversation" to her too


# --- History around a message ----------------------------------------------------------


def test_history_around_a_message(client: TestClient) -> None:
    alice, _, _, group, _ = group_and_outsider(client)
    ids = [send(client, alice, group, f"m{i}")["id"] for i in range(10)]

    def around(message_id: int, limit: int) -> list[int]:
        return [m["id"] for m in history(client, alice, group, around=message_id, limit=limit)]

    assert around(ids[5], 4) == ids[4:8]
    assert around(ids[5], 5) == ids[3:8]
    assert around(ids[0], 4) == ids[0:3]
    assert around(ids[9], 4) == ids[8:10]
    assert around(ids[5], 1) == [ids[5]]
    assert around(ids[5], 200) == ids


@pytest.mark.parametrize(
    "params",
    [
        {"around": 1, "before": 5},
        {"around": 1, "after": 5},
        {"around": -1},
        {"around": 2**70},
        {"around": "x"},
    ],
)
def test_history_around_with_bad_cursors_is_422(client: TestClient, params: Any) -> None:
    alice = new_user(client, "alice")
    response = client.get(
        f"/conversations/{general_id(client, alice)}/messages", params=params, headers=alice
    )
    assert response.status_code == 422
