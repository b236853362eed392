"""@mentions and notification levels, through the API and the socket: who
counts as mentioned, what messages and conversations say about it,
GET /mentions, and PUT /conversations/{id}/notifications."""

from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.helpers import (
    Headers,
    bearer,
    create_conversation,
    general_id,
    history,
    live,
    login,
    new_user,
    send,
    signup,
)


def team(client: TestClient) -> tuple[Headers, Headers, Headers, int]:
    """alice, bob and carol in a group; dave exists but is not in it."""
    alice, bob, carol = (new_user(client, name) for name in ("alice", "bob", "carol"))
    signup(client, "dave")
    group = create_conversation(
        client, alice, kind="group", title="team", members=["bob", "carol"]
    )["id"]
    return alice, bob, carol, group


def mentions_of(client: TestClient, headers: Headers, **params: Any) -> list[Any]:
    response = client.get("/mentions", params=params, headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


def conversation(client: TestClient, headers: Headers, conversation_id: int) -> Any:
    response = client.get(f"/conversations/{conversation_id}", headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


def set_level(client: TestClient, headers: Headers, conversation_id: int, level: Any) -> Any:
    return client.put(
        f"/conversations/{conversation_id}/notifications", json={"level": level}, headers=headers
    )


# --- Who is mentioned ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "mentioned"),
    [
        ("hi @bob", ["bob"]),
        ("@CAROL and @Bob, look", ["carol", "bob"]),  # ignoring case, in order
        ("@bob @bob @BOB", ["bob"]),  # once
        ("ask @bob.", ["bob"]),  # the end of a sentence
        ("(@carol)", ["carol"]),
        ("@dave is not here", []),  # not a member
        ("@alice talks to herself", []),  # the author
        ("@nobody", []),
        ("mail bob@example.com", []),  # inside a word
        ("@bo", []),  # too short to be a username
    ],
)
def test_who_a_message_mentions(client: TestClient, text: str, mentioned: list[str]) -> None:
    alice, _, _, group = team(client)
    message = send(client, alice, group, text)
    assert message["mentions"] == mentioned
    assert history(client, alice, group)[-1]["mentions"] == mentioned


def test_a_username_with_dots_is_mentioned_whole(client: TestClient) -> None:
    alice = new_user(client, "alice")
    signup(client, "bob.smith")
    group = create_conversation(client, alice, kind="group", title="t", members=["bob.smith"])
    assert send(client, alice, group["id"], "thanks @Bob.Smith.")["mentions"] == ["bob.smith"]


def test_in_a_channel_only_its_members_count(client: TestClient) -> None:
    alice, bob = new_user(client, "alice"), new_user(client, "bob")
    signup(client, "carol")  # in general, not in news
    channel = create_conversation(client, alice, kind="channel", title="news")["id"]
    assert client.post(f"/conversations/{channel}/join", headers=bob).status_code == 200
    assert send(client, alice, channel, "@bob @carol")["mentions"] == ["bob"]


def test_an_edit_replaces_the_mentions_and_the_event_says_so(client: TestClient) -> None:
    alice, bob, carol, group = team(client)
    message = send(client, alice, group, "@bob please")
    with live(client, carol) as ws:
        response = client.patch(
            f"/messages/{message['id']}", json={"content": "@carol please"}, headers=alice
        )
        assert response.status_code == 200
        assert response.json()["mentions"] == ["carol"]
        event = ws.receive_json()
    assert event["type"] == "message.updated"
    assert event["message"]["mentions"] == ["carol"]
    assert mentions_of(client, bob) == []
    assert [m["id"] for m in mentions_of(client, carol)] == [message["id"]]
    assert conversation(client, bob, group)["unread_mentions"] == 0
    assert conversation(client, carol, group)["unread_mentions"] == 1


def test_the_created_event_carries_the_mentions(client: TestClient) -> None:
    alice, bob, _, group = team(client)
    with live(client, bob) as ws:
        send(client, alice, group, "hey @bob")
        event = ws.receive_json()
    assert event["type"] == "message.created"
    assert event["message"]["mentions"] == ["bob"]


# --- Unread mentions --------------------------------------------------------------


def test_unread_mentions_count_until_read(client: TestClient) -> None:
    alice, bob, _, group = team(client)
    send(client, alice, group, "@bob one")
    send(client, alice, group, "no mention")
    last = send(client, alice, group, "@bob two")
    listed = {c["id"]: c for c in client.get("/conversations", headers=bob).json()}
    assert listed[group]["unread_count"] == 3
    assert listed[group]["unread_mentions"] == 2
    assert conversation(client, alice, group)["unread_mentions"] == 0  # she wrote them
    read = client.post(f"/conversations/{group}/read", json={"message_id": last["id"]}, headers=bob)
    assert read.status_code == 204
    assert conversation(client, bob, group)["unread_mentions"] == 0
    assert conversation(client, bob, group)["unread_count"] == 0


def test_a_deleted_mention_is_gone(client: TestClient) -> None:
    alice, bob, _, group = team(client)
    message = send(client, alice, group, "@bob secret")
    assert client.delete(f"/messages/{message['id']}", headers=alice).status_code == 204
    assert conversation(client, bob, group)["unread_mentions"] == 0
    assert mentions_of(client, bob) == []
    assert history(client, bob, group)[-1]["mentions"] == []  # the tombstone


# --- GET /mentions -------------------------------------------------------------


def test_mentions_newest_first_in_pages(client: TestClient) -> None:
    alice, bob, carol, group = team(client)
    direct = create_conversation(client, carol, kind="direct", members=["bob"])["id"]
    sent = [
        send(client, alice, group, "@bob 1"),
        send(client, alice, group, "@carol only"),
        send(client, carol, direct, "@bob 2"),
        send(client, alice, general_id(client, alice), "@bob 3"),
    ]
    mine = [sent[3]["id"], sent[2]["id"], sent[0]["id"]]
    assert [m["id"] for m in mentions_of(client, bob)] == mine
    first = mentions_of(client, bob, limit=2)
    assert [m["id"] for m in first] == mine[:2]
    rest = mentions_of(client, bob, limit=2, before=first[-1]["id"])
    assert [m["id"] for m in rest] == mine[2:]
    assert mentions_of(client, bob, before=mine[-1]) == []
    assert first[0]["content"] == "@bob 3"
    assert first[0]["author"]["username"] == "alice"


def test_mentions_only_from_conversations_i_can_read(client: TestClient) -> None:
    alice, bob, _, group = team(client)
    general = general_id(client, alice)
    in_group = send(client, alice, group, "@bob in the group")
    in_general = send(client, alice, general, "@bob in general")
    for conversation_id in (group, general):
        left = client.post(f"/conversations/{conversation_id}/leave", headers=bob)
        assert left.status_code == 204
    # A group he left is closed to him; a channel stays readable by anyone.
    assert [m["id"] for m in mentions_of(client, bob)] == [in_general["id"]]
    assert in_group["id"] not in [m["id"] for m in mentions_of(client, alice)]


@pytest.mark.parametrize(
    "params", [{"limit": 0}, {"limit": 101}, {"before": -1}, {"before": "x"}, {"limit": "x"}]
)
def test_mentions_bad_query(client: TestClient, params: dict[str, Any]) -> None:
    bob = new_user(client, "bob")
    response = client.get("/mentions", params=params, headers=bob)
    assert response.status_code == 422


# --- Notification levels ---------------------------------------------------------


def test_default_levels_by_kind(client: TestClient) -> None:
    alice, bob, _, group = team(client)
    direct = create_conversation(client, alice, kind="direct", members=["bob"])["id"]
    general = general_id(client, alice)
    listed = {c["id"]: c for c in client.get("/conversations", headers=alice).json()}
    assert listed[direct]["notifications"] == "all"
    assert listed[group]["notifications"] == "all"
    assert listed[general]["notifications"] == "mentions"
    channel = create_conversation(client, alice, kind="channel", title="news")["id"]
    # Not a member of a channel: no level.
    assert conversation(client, bob, channel)["notifications"] is None
    channels = {c["id"]: c for c in client.get("/channels", headers=bob).json()}
    assert channels[channel]["notifications"] is None
    assert channels[general]["notifications"] == "mentions"


@pytest.mark.parametrize("level", ["all", "mentions", "none"])
def test_set_a_level(client: TestClient, level: str) -> None:
    alice, bob, _, group = team(client)
    response = set_level(client, bob, group, level)
    assert response.status_code == 200, response.text
    assert response.json()["id"] == group
    assert response.json()["notifications"] == level
    assert conversation(client, bob, group)["notifications"] == level
    listed = {c["id"]: c for c in client.get("/conversations", headers=bob).json()}
    assert listed[group]["notifications"] == level
    # Each member has their own.
    assert conversation(client, alice, group)["notifications"] == "all"


@pytest.mark.parametrize("level", ["some", "", None, 1, "ALL"])
def test_set_a_bad_level(client: TestClient, level: Any) -> None:
    _, bob, _, group = team(client)
    assert set_level(client, bob, group, level).status_code == 422
    assert client.put(f"/conversations/{group}/notifications", headers=bob).status_code == 422
    assert conversation(client, bob, group)["notifications"] == "all"


def test_set_a_level_where_i_am_not_a_member(client: TestClient) -> None:
    alice, _, _, group = team(client)
    dave = bearer(login(client, "dave"))
    # A group he is not in: it does not exist for him.
    response = set_level(client, dave, group, "none")
    assert response.status_code == 404
    assert set_level(client, dave, 999_999, "none").status_code == 404
    # A channel he has not joined: he sees it, but has no membership to set.
    channel = create_conversation(client, alice, kind="channel", title="news")["id"]
    response = set_level(client, dave, channel, "all")
    assert response.status_code == 403
    assert response.json() == {"detail": "Join the channel first"}
    assert conversation(client, dave, channel)["notifications"] is None
