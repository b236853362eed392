"""Conversations: kinds, membership, visibility, read markers and unread counts."""

import random
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.helpers import (
    Headers,
    create_conversation,
    general_id,
    new_user,
    send,
    signup,
)

# --- Direct conversations ---------------------------------------------------


def test_create_direct(client: TestClient) -> None:
    alice = new_user(client, "alice")
    signup(client, "Bob")
    response = client.post(
        "/conversations", json={"kind": "direct", "members": ["bob"]}, headers=alice
    )
    assert response.status_code == 201
    conversation = response.json()
    assert conversation["kind"] == "direct"
    assert conversation["title"] is None
    assert conversation["member_count"] == 2
    assert sorted(u["username"] for u in conversation["members"]) == ["Bob", "alice"]
    assert conversation["is_member"] is True
    assert conversation["last_message"] is None
    assert conversation["unread_count"] == 0


def test_create_direct_again_returns_existing(client: TestClient) -> None:
    alice = new_user(client, "alice")
    bob = new_user(client, "bob")
    first = create_conversation(client, alice, kind="direct", members=["bob"])
    again = client.post(
        "/conversations", json={"kind": "direct", "members": ["BOB"]}, headers=alice
    )
    assert again.status_code == 200
    assert again.json()["id"] == first["id"]
    # Asked from the other side, it is the same conversation too.
    reverse = client.post(
        "/conversations", json={"kind": "direct", "members": ["alice"]}, headers=bob
    )
    assert reverse.status_code == 200
    assert reverse.json()["id"] == first["id"]


@pytest.mark.parametrize(
    "body",
    [
        {"kind": "direct", "members": ["nobody"]},  # unknown user
        {"kind": "direct", "members": ["alice"]},  # yourself
        {"kind": "direct", "members": []},
        {"kind": "direct", "members": ["bob", "carol"]},
        {"kind": "direct", "members": ["bob"], "title": "Hi"},
        {"kind": "direct"},
        {"kind": "nonsense", "members": ["bob"]},
    ],
)
def test_create_direct_invalid(client: TestClient, body: dict[str, Any]) -> None:
    alice = new_user(client, "alice")
    signup(client, "bob")
    signup(client, "carol")
    response = client.post("/conversations", json=body, headers=alice)
    assert response.status_code == 422
    assert [c["kind"] for c in client.get("/conversations", headers=alice).json()] == ["channel"]


def test_create_direct_unknown_user_is_named(client: TestClient) -> None:
    alice = new_user(client, "alice")
    response = client.post(
        "/conversations", json={"kind": "direct", "members": ["ghost"]}, headers=alice
    )
    assert response.status_code == 422
    assert "ghost" in response.json()["detail"]


# --- Groups -------------------------------------------------------------------


def test_create_group(client: TestClient) -> None:
    alice = new_user(client, "alice")
    signup(client, "bob")
    signup(client, "carol")
    response = client.post(
        "/conversations",
        json={"kind": "group", "title": "  Book club ", "members": ["bob", "Carol", "alice"]},
        headers=alice,
    )
    assert response.status_code == 201
    group = response.json()
    assert group["title"] == "Book club"
    assert group["member_count"] == 3
    assert [u["username"] for u in group["members"]] == ["alice", "bob", "carol"]


def test_create_group_alone(client: TestClient) -> None:
    alice = new_user(client, "alice")
    group = create_conversation(client, alice, kind="group", title="Notes to self")
    assert group["member_count"] == 1


@pytest.mark.parametrize(
    "body",
    [
        {"kind": "group", "members": ["bob"]},  # no title
        {"kind": "group", "title": "", "members": ["bob"]},
        {"kind": "group", "title": "   ", "members": ["bob"]},
        {"kind": "group", "title": "x" * 101, "members": ["bob"]},
        {"kind": "group", "title": "Club", "members": ["bob", "ghost"]},
    ],
)
def test_create_group_invalid(client: TestClient, body: dict[str, Any]) -> None:
    alice = new_user(client, "alice")
    signup(client, "bob")
    assert client.post("/conversations", json=body, headers=alice).status_code == 422
    assert len(client.get("/conversations", headers=alice).json()) == 1


def test_create_group_names_every_unknown_user(client: TestClient) -> None:
    alice = new_user(client, "alice")
    signup(client, "bob")
    response = client.post(
        "/conversations",
        json={"kind": "group", "title": "Club", "members": ["ghost", "bob", "phantom"]},
        headers=alice,
    )
    assert response.status_code == 422
    assert "ghost" in response.json()["detail"]
    assert "phantom" in response.json()["detail"]


def test_create_group_too_many_members(client: TestClient) -> None:
    alice = new_user(client, "alice")
    names = [f"user{i:03}" for i in range(100)]
    for name in names:
        client.post("/users", json={"username": name, "password": "password123"})
    response = client.post(
        "/conversations", json={"kind": "group", "title": "Big", "members": names}, headers=alice
    )
    assert response.status_code == 422  # 100 others + the creator = 101
    ok = client.post(
        "/conversations",
        json={"kind": "group", "title": "Big", "members": names[:99]},
        headers=alice,
    )
    assert ok.status_code == 201
    assert ok.json()["member_count"] == 100


# --- Channels -------------------------------------------------------------------


def test_create_channel(client: TestClient) -> None:
    alice = new_user(client, "alice")
    response = client.post(
        "/conversations", json={"kind": "channel", "title": "random"}, headers=alice
    )
    assert response.status_code == 201
    channel = response.json()
    assert channel["kind"] == "channel"
    assert channel["members"] is None
    assert channel["member_count"] == 1
    assert channel["is_member"] is True


def test_create_channel_title_taken_ignoring_case(client: TestClient) -> None:
    alice = new_user(client, "alice")
    create_conversation(client, alice, kind="channel", title="München")
    for title in ("MÜNCHEN", " münchen ", "Mu\u0308nchen", "General"):
        response = client.post(
            "/conversations", json={"kind": "channel", "title": title}, headers=alice
        )
        assert response.status_code == 409, title
        assert response.json() == {"detail": "Channel title already taken"}


def test_create_channel_with_members_invalid(client: TestClient) -> None:
    alice = new_user(client, "alice")
    signup(client, "bob")
    response = client.post(
        "/conversations", json={"kind": "channel", "title": "x", "members": ["bob"]}, headers=alice
    )
    assert response.status_code == 422


def test_create_conversation_unauthenticated(client: TestClient) -> None:
    response = client.post("/conversations", json={"kind": "channel", "title": "x"})
    assert response.status_code == 401


def test_general_channel_exists_and_everyone_joins(client: TestClient) -> None:
    alice = new_user(client, "alice")
    new_user(client, "bob")
    general = client.get(f"/conversations/{general_id(client, alice)}", headers=alice).json()
    assert general["title"] == "general"
    assert general["member_count"] == 2


# --- Listing ------------------------------------------------------------------


def test_read_conversations_latest_activity_first(client: TestClient) -> None:
    alice = new_user(client, "alice")
    new_user(client, "bob")
    general = general_id(client, alice)
    direct = create_conversation(client, alice, kind="direct", members=["bob"])["id"]
    group = create_conversation(client, alice, kind="group", title="G")["id"]
    listed = [c["id"] for c in client.get("/conversations", headers=alice).json()]
    assert listed == [group, direct, general]  # newest creation first
    send(client, alice, direct, "hi")
    listed = [c["id"] for c in client.get("/conversations", headers=alice).json()]
    assert listed == [direct, group, general]
    send(client, alice, general, "hello all")
    listed = [c["id"] for c in client.get("/conversations", headers=alice).json()]
    assert listed == [general, direct, group]


def test_read_conversations_order_follows_the_newest_message(client: TestClient) -> None:
    """The list's order is the newest message's time (by id, deleted or not:
    a delete or an edit moves nothing), else the conversation's creation,
    newest first; a send in an older conversation brings it to the top."""
    alice = new_user(client, "alice")
    bob = new_user(client, "bob")
    general = general_id(client, alice)
    direct = create_conversation(client, alice, kind="direct", members=["bob"])["id"]
    send(client, bob, direct, "first")
    group = create_conversation(client, alice, kind="group", title="G", members=["bob"])["id"]
    channel = create_conversation(client, alice, kind="channel", title="C")["id"]
    newest = send(client, alice, general, "hello all")

    def listed() -> list[int]:
        return [c["id"] for c in client.get("/conversations", headers=alice).json()]

    def by_definition() -> list[int]:
        """Each conversation's newest message's created_at (from its history),
        else its own, newest first; ties by id, newest first."""
        activity = {}
        for c in client.get("/conversations", headers=alice).json():
            page = client.get(
                f"/conversations/{c['id']}/messages", params={"limit": 1}, headers=alice
            ).json()
            activity[c["id"]] = page[-1]["created_at"] if page else c["created_at"]
        return sorted(activity, key=lambda i: (activity[i], i), reverse=True)

    assert listed() == [general, channel, group, direct] == by_definition()
    send(client, bob, direct, "second")  # the oldest activity: now the newest
    assert listed() == [direct, general, channel, group] == by_definition()
    # Deleting or editing a message changes no one's place, even the newest's.
    response = client.delete(f"/messages/{newest['id']}", headers=alice)
    assert response.status_code == 204, response.text
    earlier = send(client, alice, group, "in the group")
    response = client.patch(f"/messages/{earlier['id']}", json={"content": "edited"}, headers=alice)
    assert response.status_code == 200, response.text
    assert listed() == [group, direct, general, channel] == by_definition()
    send(client, alice, channel, "the channel's first")
    assert listed() == [channel, group, direct, general] == by_definition()
    # A new conversation, with no message yet, is as new as its creation.
    other = create_conversation(client, bob, kind="group", title="H", members=["alice"])["id"]
    assert listed() == [other, channel, group, direct, general] == by_definition()


def test_read_conversations_paging(client: TestClient) -> None:
    alice = new_user(client, "alice")
    for i in range(4):
        create_conversation(client, alice, kind="group", title=f"G{i}")
    everything = client.get("/conversations", headers=alice).json()
    page = client.get("/conversations", params={"limit": 2, "offset": 1}, headers=alice).json()
    assert [c["id"] for c in page] == [c["id"] for c in everything[1:3]]
    for params in ({"limit": 0}, {"limit": 201}, {"offset": -1}):
        assert client.get("/conversations", params=params, headers=alice).status_code == 422


def test_read_conversations_only_mine(client: TestClient) -> None:
    alice = new_user(client, "alice")
    new_user(client, "bob")
    carol = new_user(client, "carol")
    create_conversation(client, alice, kind="direct", members=["bob"])
    create_conversation(client, alice, kind="group", title="Secret", members=["bob"])
    create_conversation(client, alice, kind="channel", title="alice-only")
    assert [c["title"] for c in client.get("/conversations", headers=carol).json()] == ["general"]


def test_read_conversations_last_message(client: TestClient) -> None:
    alice = new_user(client, "alice")
    new_user(client, "bob")
    direct = create_conversation(client, alice, kind="direct", members=["bob"])["id"]
    send(client, alice, direct, "one")
    second = send(client, alice, direct, "two")
    listed = client.get("/conversations", headers=alice).json()[0]
    assert listed["last_message"] == second


def test_read_channels(client: TestClient) -> None:
    alice = new_user(client, "alice")
    bob = new_user(client, "bob")
    create_conversation(client, alice, kind="channel", title="zebra")
    create_conversation(client, alice, kind="channel", title="Apple")
    create_conversation(client, alice, kind="group", title="not a channel")
    channels = client.get("/channels", headers=bob).json()
    assert [c["title"] for c in channels] == ["Apple", "general", "zebra"]
    assert [c["is_member"] for c in channels] == [False, True, False]
    assert all(c["members"] is None for c in channels)
    assert (
        client.get("/channels", params={"limit": 1, "offset": 2}, headers=bob).json()[0]["title"]
        == "zebra"
    )


def test_lists_agree_with_one_conversation(client: TestClient) -> None:
    """GET /conversations and /channels build their JSON from rows, GET
    /conversations/{id} from the ConversationPublic model (pages.ConversationJSON):
    the same conversation reads the same in both."""
    alice = new_user(client, "alice")
    bob = new_user(client, "bob")
    client.patch("/users/me", json={"display_name": "Bob B."}, headers=bob)
    direct = create_conversation(client, alice, kind="direct", members=["bob"])["id"]
    group = create_conversation(client, alice, kind="group", title="G", members=["bob"])["id"]
    channel = create_conversation(client, bob, kind="channel", title="news")["id"]
    send(client, bob, direct, "unread by alice")
    send(client, bob, channel, "in a channel alice has not joined")

    def one(conversation_id: int) -> dict[str, Any]:
        response = client.get(f"/conversations/{conversation_id}", headers=alice)
        assert response.status_code == 200
        return dict(response.json())

    listed = client.get("/conversations", headers=alice).json()
    assert listed == [one(c["id"]) for c in listed]
    by_id = {c["id"]: c for c in listed}
    assert by_id[direct]["unread_count"] == 1
    assert by_id[direct]["last_message"]["author"]["display_name"] == "Bob B."
    assert [m["username"] for m in by_id[group]["members"]] == ["alice", "bob"]
    assert by_id[group]["last_message"] is None
    channels = client.get("/channels", headers=alice).json()
    assert channels == [one(c["id"]) for c in channels]
    news = next(c for c in channels if c["id"] == channel)
    assert news["is_member"] is False and news["members"] is None
    assert news["last_message"]["content"] == "in a channel alice has not joined"


# --- Visibility -------------------------------------------------------------------


def _private_pair(client: TestClient) -> tuple[Headers, Headers, Headers, int, int]:
    alice = new_user(client, "alice")
    bob = new_user(client, "bob")
    carol = new_user(client, "carol")
    direct = create_conversation(client, alice, kind="direct", members=["bob"])["id"]
    group = create_conversation(client, alice, kind="group", title="AB", members=["bob"])["id"]
    return alice, bob, carol, direct, group


def test_read_conversation(client: TestClient) -> None:
    alice, bob, _, direct, group = _private_pair(client)
    for headers in (alice, bob):
        for conversation_id in (direct, group):
            response = client.get(f"/conversations/{conversation_id}", headers=headers)
            assert response.status_code == 200
            assert response.json()["is_member"] is True


def test_read_conversation_not_visible(client: TestClient) -> None:
    _, _, carol, direct, group = _private_pair(client)
    for conversation_id in (direct, group, 9999):
        response = client.get(f"/conversations/{conversation_id}", headers=carol)
        assert response.status_code == 404  # the same answer as for one that does not exist
        assert response.json() == {"detail": "Conversation not found"}


def test_read_channel_as_non_member(client: TestClient) -> None:
    alice = new_user(client, "alice")
    bob = new_user(client, "bob")
    channel = create_conversation(client, alice, kind="channel", title="public")["id"]
    response = client.get(f"/conversations/{channel}", headers=bob)
    assert response.status_code == 200
    assert response.json()["is_member"] is False


def test_read_members(client: TestClient) -> None:
    alice, bob, carol, direct, group = _private_pair(client)
    response = client.get(f"/conversations/{group}/members", headers=bob)
    assert response.status_code == 200
    assert [u["username"] for u in response.json()] == ["alice", "bob"]
    assert client.get(f"/conversations/{group}/members", headers=carol).status_code == 404
    assert client.get(f"/conversations/{direct}/members", headers=carol).status_code == 404
    general = general_id(client, carol)
    everyone = client.get(f"/conversations/{general}/members", headers=carol).json()
    assert [u["username"] for u in everyone] == ["alice", "bob", "carol"]
    page = client.get(
        f"/conversations/{general}/members", params={"limit": 1, "offset": 1}, headers=carol
    ).json()
    assert [u["username"] for u in page] == ["bob"]


# --- Join and leave ---------------------------------------------------------------


def test_join_channel(client: TestClient) -> None:
    alice = new_user(client, "alice")
    bob = new_user(client, "bob")
    channel = create_conversation(client, alice, kind="channel", title="public")["id"]
    response = client.post(f"/conversations/{channel}/join", headers=bob)
    assert response.status_code == 200
    assert response.json()["is_member"] is True
    assert response.json()["member_count"] == 2
    again = client.post(f"/conversations/{channel}/join", headers=bob)
    assert again.status_code == 200
    assert again.json()["member_count"] == 2
    assert channel in [c["id"] for c in client.get("/conversations", headers=bob).json()]


def test_join_not_visible(client: TestClient) -> None:
    _, _, carol, direct, group = _private_pair(client)
    for conversation_id in (direct, group, 9999):
        assert (
            client.post(f"/conversations/{conversation_id}/join", headers=carol).status_code == 404
        )


def test_join_not_a_channel(client: TestClient) -> None:
    _, bob, _, direct, group = _private_pair(client)
    for conversation_id in (direct, group):
        assert client.post(f"/conversations/{conversation_id}/join", headers=bob).status_code == 422


def test_leave_channel(client: TestClient) -> None:
    alice = new_user(client, "alice")
    general = general_id(client, alice)
    response = client.post(f"/conversations/{general}/leave", headers=alice)
    assert response.status_code == 204
    assert client.get("/conversations", headers=alice).json() == []
    # Still readable (it is public) and can be joined again.
    assert client.get(f"/conversations/{general}", headers=alice).json()["is_member"] is False
    assert client.post(f"/conversations/{general}/leave", headers=alice).status_code == 204
    assert client.post(f"/conversations/{general}/join", headers=alice).status_code == 200


def test_leave_group(client: TestClient) -> None:
    alice, bob, _, _, group = _private_pair(client)
    assert client.post(f"/conversations/{group}/leave", headers=bob).status_code == 204
    assert client.get(f"/conversations/{group}", headers=bob).status_code == 404
    assert client.get(f"/conversations/{group}", headers=alice).json()["member_count"] == 1


def test_leave_direct(client: TestClient) -> None:
    alice, _, _, direct, _ = _private_pair(client)
    assert client.post(f"/conversations/{direct}/leave", headers=alice).status_code == 422
    assert client.get(f"/conversations/{direct}", headers=alice).status_code == 200


def test_leave_not_visible(client: TestClient) -> None:
    _, _, carol, direct, group = _private_pair(client)
    for conversation_id in (direct, group, 9999):
        assert (
            client.post(f"/conversations/{conversation_id}/leave", headers=carol).status_code == 404
        )


# --- Adding members -------------------------------------------------------------


def test_add_member(client: TestClient) -> None:
    alice, _, carol, _, group = _private_pair(client)
    response = client.post(
        f"/conversations/{group}/members", json={"username": "CAROL"}, headers=alice
    )
    assert response.status_code == 200
    assert response.json()["member_count"] == 3
    assert client.get(f"/conversations/{group}", headers=carol).status_code == 200
    again = client.post(
        f"/conversations/{group}/members", json={"username": "carol"}, headers=alice
    )
    assert again.status_code == 200
    assert again.json()["member_count"] == 3


def test_add_member_not_visible(client: TestClient) -> None:
    _, _, carol, _, group = _private_pair(client)
    response = client.post(
        f"/conversations/{group}/members", json={"username": "carol"}, headers=carol
    )
    assert response.status_code == 404


def test_add_member_not_a_group(client: TestClient) -> None:
    alice, _, _, direct, _ = _private_pair(client)
    general = general_id(client, alice)
    for conversation_id in (direct, general):
        response = client.post(
            f"/conversations/{conversation_id}/members", json={"username": "carol"}, headers=alice
        )
        assert response.status_code == 422
    assert client.get(f"/conversations/{direct}", headers=alice).json()["member_count"] == 2


def test_add_member_unknown_user(client: TestClient) -> None:
    alice, _, _, _, group = _private_pair(client)
    response = client.post(
        f"/conversations/{group}/members", json={"username": "ghost"}, headers=alice
    )
    assert response.status_code == 422
    assert "ghost" in response.json()["detail"]
    assert client.post(f"/conversations/{group}/members", json={}, headers=alice).status_code == 422


def test_add_member_to_full_group(client: TestClient) -> None:
    alice = new_user(client, "alice")
    names = [f"user{i:03}" for i in range(100)]
    for name in names:
        client.post("/users", json={"username": name, "password": "password123"})
    group = create_conversation(client, alice, kind="group", title="Full", members=names[:99])["id"]
    response = client.post(
        f"/conversations/{group}/members", json={"username": names[99]}, headers=alice
    )
    assert response.status_code == 422
    # Adding someone who is already in stays a harmless no-op, even when full.
    response = client.post(
        f"/conversations/{group}/members", json={"username": names[0]}, headers=alice
    )
    assert response.status_code == 200


# --- Read markers and unread counts -------------------------------------------------


def _unread(client: TestClient, headers: Headers, conversation_id: int) -> int:
    return client.get(f"/conversations/{conversation_id}", headers=headers).json()["unread_count"]


def test_unread_count(client: TestClient) -> None:
    alice, bob, _, direct, _ = _private_pair(client)
    send(client, alice, direct, "one")
    send(client, alice, direct, "two")
    send(client, bob, direct, "my own message is never unread")
    assert _unread(client, bob, direct) == 2
    assert _unread(client, alice, direct) == 1


def test_unread_count_ignores_deleted(client: TestClient) -> None:
    alice, bob, _, direct, _ = _private_pair(client)
    send(client, alice, direct, "one")
    gone = send(client, alice, direct, "two")
    client.delete(f"/messages/{gone['id']}", headers=alice)
    assert _unread(client, bob, direct) == 1


def test_unread_count_non_member_is_zero(client: TestClient) -> None:
    alice = new_user(client, "alice")
    bob = new_user(client, "bob")
    channel = create_conversation(client, alice, kind="channel", title="public")["id"]
    send(client, alice, channel, "hello")
    assert _unread(client, bob, channel) == 0


def test_unread_count_starts_when_joining(client: TestClient) -> None:
    alice = new_user(client, "alice")
    bob = new_user(client, "bob")
    channel = create_conversation(client, alice, kind="channel", title="public")["id"]
    send(client, alice, channel, "before bob came")
    client.post(f"/conversations/{channel}/join", headers=bob)
    assert _unread(client, bob, channel) == 0
    send(client, alice, channel, "after bob came")
    assert _unread(client, bob, channel) == 1


def test_unread_counts_agree_with_their_definition(client: TestClient) -> None:
    """Unread counts are a subtraction of sequence numbers (pages.py), so
    check them against the contract's words after a random mix of sends into
    two conversations, deletions (own and others', the read message itself)
    and read markers: messages newer than the marker, not mine, not deleted."""
    rng = random.Random(2026)
    people = {name: new_user(client, name) for name in ("alice", "bob", "carol")}
    group = create_conversation(
        client, people["alice"], kind="group", title="team", members=["bob", "carol"]
    )["id"]
    channel = create_conversation(client, people["bob"], kind="channel", title="talk")["id"]
    for name in ("alice", "carol"):
        client.post(f"/conversations/{channel}/join", headers=people[name])
    sent: dict[int, list[dict[str, Any]]] = {group: [], channel: []}
    markers = {(name, c): 0 for name in people for c in sent}
    for step in range(120):
        name, conversation = rng.choice(list(people)), rng.choice(list(sent))
        action = rng.random()
        if action < 0.6 or not sent[conversation]:
            message = send(client, people[name], conversation, f"step {step}")
            sent[conversation].append({**message, "author": name})
        elif action < 0.75:
            message = rng.choice(sent[conversation])
            response = client.delete(
                f"/messages/{message['id']}", headers=people[message["author"]]
            )
            assert response.status_code in (204, 404)  # 404: deleted already
            message["deleted"] = True
        else:
            target = rng.choice(sent[conversation])["id"]
            response = client.post(
                f"/conversations/{conversation}/read",
                json={"message_id": target},
                headers=people[name],
            )
            assert response.status_code == 204
            markers[name, conversation] = max(markers[name, conversation], target)
        if step % 10 == 9:
            for reader, headers in people.items():
                listed = {
                    c["id"]: c["unread_count"]
                    for c in client.get("/conversations", headers=headers).json()
                }
                for c, messages in sent.items():
                    expected = sum(
                        1
                        for m in messages
                        if m["id"] > markers[reader, c]
                        and m["author"] != reader
                        and not m.get("deleted")
                    )
                    assert listed[c] == expected, (step, reader, c)


def test_mark_read(client: TestClient) -> None:
    alice, bob, _, direct, _ = _private_pair(client)
    first = send(client, alice, direct, "one")
    second = send(client, alice, direct, "two")
    response = client.post(
        f"/conversations/{direct}/read", json={"message_id": first["id"]}, headers=bob
    )
    assert response.status_code == 204
    assert _unread(client, bob, direct) == 1
    client.post(f"/conversations/{direct}/read", json={"message_id": second["id"]}, headers=bob)
    assert _unread(client, bob, direct) == 0


def test_mark_read_only_moves_forward(client: TestClient) -> None:
    alice, bob, _, direct, _ = _private_pair(client)
    first = send(client, alice, direct, "one")
    second = send(client, alice, direct, "two")
    client.post(f"/conversations/{direct}/read", json={"message_id": second["id"]}, headers=bob)
    response = client.post(
        f"/conversations/{direct}/read", json={"message_id": first["id"]}, headers=bob
    )
    assert response.status_code == 204
    assert _unread(client, bob, direct) == 0


def test_mark_read_not_visible(client: TestClient) -> None:
    alice, _, carol, direct, _ = _private_pair(client)
    message = send(client, alice, direct, "one")
    response = client.post(
        f"/conversations/{direct}/read", json={"message_id": message["id"]}, headers=carol
    )
    assert response.status_code == 404


def test_mark_read_message_elsewhere(client: TestClient) -> None:
    alice, bob, _, direct, group = _private_pair(client)
    elsewhere = send(client, alice, group, "in the group")
    for message_id in (elsewhere["id"], 9999):
        response = client.post(
            f"/conversations/{direct}/read", json={"message_id": message_id}, headers=bob
        )
        assert response.status_code == 422
    assert client.post(f"/conversations/{direct}/read", json={}, headers=bob).status_code == 422


def test_mark_read_channel_not_joined(client: TestClient) -> None:
    alice = new_user(client, "alice")
    bob = new_user(client, "bob")
    channel = create_conversation(client, alice, kind="channel", title="public")["id"]
    message = send(client, alice, channel, "hello")
    response = client.post(
        f"/conversations/{channel}/read", json={"message_id": message["id"]}, headers=bob
    )
    assert response.status_code == 403
