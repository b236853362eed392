"""Messages: sending, idempotent retries, history pages, edits, tombstones, search."""

from typing import Any

import pytest
from fastapi.testclient import TestClient

from config import settings
from tests.helpers import Headers, create_conversation, history, new_user, send, signup


def _direct(client: TestClient) -> tuple[Headers, Headers, Headers, int]:
    alice = new_user(client, "alice")
    bob = new_user(client, "bob")
    carol = new_user(client, "carol")
    direct = create_conversation(client, alice, kind="direct", members=["bob"])["id"]
    return alice, bob, carol, direct


# --- Sending ----------------------------------------------------------------------


def test_create_message(client: TestClient) -> None:
    alice, _, _, direct = _direct(client)
    response = client.post(
        f"/conversations/{direct}/messages", json={"content": "Hi Bob"}, headers=alice
    )
    assert response.status_code == 201
    message = response.json()
    assert set(message) == {
        "id",
        "conversation_id",
        "author",
        "content",
        "client_id",
        "created_at",
        "edited_at",
        "deleted",
        "attachments",
        "reply_to",
        "reactions",
        "mentions",
    }
    assert message["attachments"] == []
    assert message["mentions"] == []
    assert message["conversation_id"] == direct
    assert message["author"]["username"] == "alice"
    assert message["content"] == "Hi Bob"
    assert message["client_id"] is None
    assert message["edited_at"] is None
    assert message["deleted"] is False
    assert message["created_at"].endswith(("Z", "+00:00"))


def test_create_message_retry_with_client_id(client: TestClient) -> None:
    alice, _, _, direct = _direct(client)
    body = {"content": "Hi Bob", "client_id": "c-1"}
    first = client.post(f"/conversations/{direct}/messages", json=body, headers=alice)
    retry = client.post(f"/conversations/{direct}/messages", json=body, headers=alice)
    assert first.status_code == 201
    assert retry.status_code == 200
    assert retry.json() == first.json()
    assert len(history(client, alice, direct)) == 1


def test_create_message_client_id_is_per_author_and_conversation(client: TestClient) -> None:
    alice, bob, _, direct = _direct(client)
    group = create_conversation(client, alice, kind="group", title="G", members=["bob"])["id"]
    send(client, alice, direct, "a", client_id="same")
    send(client, bob, direct, "b", client_id="same")  # another author
    send(client, alice, group, "c", client_id="same")  # another conversation
    assert len(history(client, alice, direct)) == 2


def test_create_message_not_visible(client: TestClient) -> None:
    _, _, carol, direct = _direct(client)
    for conversation_id in (direct, 9999):
        response = client.post(
            f"/conversations/{conversation_id}/messages", json={"content": "hi"}, headers=carol
        )
        assert response.status_code == 404


def test_create_message_channel_not_joined(client: TestClient) -> None:
    alice, bob, _, _ = _direct(client)
    channel = create_conversation(client, alice, kind="channel", title="public")["id"]
    response = client.post(
        f"/conversations/{channel}/messages", json={"content": "hi"}, headers=bob
    )
    assert response.status_code == 403
    assert response.json() == {"detail": "Join the channel first"}
    client.post(f"/conversations/{channel}/join", headers=bob)
    assert (
        client.post(
            f"/conversations/{channel}/messages", json={"content": "hi"}, headers=bob
        ).status_code
        == 201
    )


@pytest.mark.parametrize(
    "body",
    [
        {"content": ""},
        {"content": " \n\t "},
        {"content": "x" * 4001},
        {"content": "hi", "client_id": ""},
        {"content": "hi", "client_id": "x" * 65},
        {"content": None},
        {},
    ],
)
def test_create_message_invalid(client: TestClient, body: dict[str, object]) -> None:
    alice, _, _, direct = _direct(client)
    response = client.post(f"/conversations/{direct}/messages", json=body, headers=alice)
    assert response.status_code == 422
    assert history(client, alice, direct) == []


def test_create_message_limits_are_inclusive(client: TestClient) -> None:
    alice, _, _, direct = _direct(client)
    assert send(client, alice, direct, "x" * 4000, client_id="y" * 64)["content"] == "x" * 4000
    assert send(client, alice, direct, "é" * 4000)["content"] == "é" * 4000  # characters, not bytes


def test_create_message_unauthenticated(client: TestClient) -> None:
    _, _, _, direct = _direct(client)
    assert (
        client.post(f"/conversations/{direct}/messages", json={"content": "hi"}).status_code == 401
    )


def test_message_text_is_stored_verbatim(client: TestClient) -> None:
    alice, bob, _, direct = _direct(client)
    text = "  <script>alert('x')</script> 100% _done_ \\o/  "
    send(client, alice, direct, text)
    assert history(client, bob, direct)[0]["content"] == text


# --- History --------------------------------------------------------------------


def _fill(client: TestClient, headers: Headers, conversation_id: int, count: int) -> list[int]:
    return [send(client, headers, conversation_id, f"m{i}")["id"] for i in range(count)]


def test_read_messages_newest_page(client: TestClient) -> None:
    alice, bob, _, direct = _direct(client)
    ids = _fill(client, alice, direct, 7)
    page = history(client, bob, direct, limit=3)
    assert [m["id"] for m in page] == ids[-3:]  # the newest three, oldest first
    assert [m["content"] for m in page] == ["m4", "m5", "m6"]
    assert [m["id"] for m in history(client, bob, direct)] == ids  # default limit 50


def test_read_messages_before(client: TestClient) -> None:
    alice, _, _, direct = _direct(client)
    ids = _fill(client, alice, direct, 7)
    assert [m["id"] for m in history(client, alice, direct, before=ids[4], limit=3)] == ids[1:4]
    assert [m["id"] for m in history(client, alice, direct, before=ids[2], limit=3)] == ids[0:2]
    assert history(client, alice, direct, before=ids[0]) == []
    assert [m["id"] for m in history(client, alice, direct, before=10**9)] == ids


def test_read_messages_after(client: TestClient) -> None:
    alice, _, _, direct = _direct(client)
    ids = _fill(client, alice, direct, 7)
    assert [m["id"] for m in history(client, alice, direct, after=ids[1], limit=3)] == ids[2:5]
    assert [m["id"] for m in history(client, alice, direct, after=0, limit=2)] == ids[:2]
    assert history(client, alice, direct, after=ids[-1]) == []


def test_read_messages_walks_whole_history(client: TestClient) -> None:
    alice, _, _, direct = _direct(client)
    ids = _fill(client, alice, direct, 10)
    seen: list[int] = []
    page = history(client, alice, direct, limit=3)
    while page:
        seen = [m["id"] for m in page] + seen
        page = history(client, alice, direct, limit=3, before=page[0]["id"])
    assert seen == ids


def test_read_messages_only_this_conversation(client: TestClient) -> None:
    alice, _, _, direct = _direct(client)
    group = create_conversation(client, alice, kind="group", title="G")["id"]
    send(client, alice, group, "elsewhere")
    mine = send(client, alice, direct, "here")
    assert [m["id"] for m in history(client, alice, direct, after=0)] == [mine["id"]]


@pytest.mark.parametrize(
    "params",
    [{"limit": 0}, {"limit": 201}, {"before": 1, "after": 1}, {"before": -1}, {"after": "x"}],
)
def test_read_messages_invalid(client: TestClient, params: dict[str, Any]) -> None:
    alice, _, _, direct = _direct(client)
    response = client.get(f"/conversations/{direct}/messages", params=params, headers=alice)
    assert response.status_code == 422


def test_read_messages_limit_bounds(client: TestClient) -> None:
    alice, _, _, direct = _direct(client)
    _fill(client, alice, direct, 3)
    assert len(history(client, alice, direct, limit=1)) == 1
    assert len(history(client, alice, direct, limit=200)) == 3


def test_read_messages_not_visible(client: TestClient) -> None:
    alice, _, carol, direct = _direct(client)
    send(client, alice, direct, "private")
    for conversation_id in (direct, 9999):
        response = client.get(f"/conversations/{conversation_id}/messages", headers=carol)
        assert response.status_code == 404


def test_read_messages_channel_without_joining(client: TestClient) -> None:
    alice, bob, _, _ = _direct(client)
    channel = create_conversation(client, alice, kind="channel", title="public")["id"]
    send(client, alice, channel, "for everyone")
    assert [m["content"] for m in history(client, bob, channel)] == ["for everyone"]


def test_read_messages_includes_tombstones(client: TestClient) -> None:
    alice, bob, _, direct = _direct(client)
    ids = _fill(client, alice, direct, 3)
    client.delete(f"/messages/{ids[1]}", headers=alice)
    page = history(client, bob, direct)
    assert [m["id"] for m in page] == ids
    assert page[1]["deleted"] is True
    assert page[1]["content"] is None


def test_pages_agree_with_one_message(client: TestClient) -> None:
    """History and search build their JSON from rows, GET /messages/{id} from the
    MessagePublic model (pages.MessageJSON): the same message reads the same."""
    alice, bob, _, direct = _direct(client)
    client.patch("/users/me", json={"display_name": "Alice A."}, headers=alice)
    plain = send(client, alice, direct, "plain words")
    edited = send(client, bob, direct, "words to edit")
    client.patch(f"/messages/{edited['id']}", json={"content": "edited words"}, headers=bob)
    gone = send(client, alice, direct, "words to delete")
    client.delete(f"/messages/{gone['id']}", headers=alice)
    retried = client.post(
        f"/conversations/{direct}/messages",
        json={"content": "retry-safe words", "client_id": "c-9"},
        headers=bob,
    ).json()

    def one(message_id: int) -> dict[str, Any]:
        response = client.get(f"/messages/{message_id}", headers=alice)
        assert response.status_code == 200
        return dict(response.json())

    ids = [plain["id"], edited["id"], gone["id"], retried["id"]]
    expected = [one(message_id) for message_id in ids]
    assert expected[0]["author"]["display_name"] == "Alice A."
    assert expected[1]["edited_at"] is not None
    assert expected[2]["deleted"] is True and expected[2]["content"] is None
    assert expected[3]["client_id"] == "c-9"
    assert history(client, alice, direct) == expected
    assert history(client, alice, direct, after=0) == expected
    before = history(client, alice, direct, before=retried["id"] + 1)
    assert before == expected
    found = client.get("/search/messages", params={"q": "words"}, headers=alice).json()
    assert found == [m for m in reversed(expected) if not m["deleted"]]


# --- One message, edit and delete ---------------------------------------------


def test_read_message(client: TestClient) -> None:
    alice, bob, _, direct = _direct(client)
    message = send(client, alice, direct, "hello")
    response = client.get(f"/messages/{message['id']}", headers=bob)
    assert response.status_code == 200
    assert response.json() == message


def test_read_message_not_visible(client: TestClient) -> None:
    alice, _, carol, direct = _direct(client)
    message = send(client, alice, direct, "private")
    for message_id in (message["id"], 9999):
        response = client.get(f"/messages/{message_id}", headers=carol)
        assert response.status_code == 404
        assert response.json() == {"detail": "Message not found"}


def test_read_message_after_leaving_group(client: TestClient) -> None:
    alice, bob, _, _ = _direct(client)
    group = create_conversation(client, alice, kind="group", title="G", members=["bob"])["id"]
    message = send(client, alice, group, "before you left")
    client.post(f"/conversations/{group}/leave", headers=bob)
    assert client.get(f"/messages/{message['id']}", headers=bob).status_code == 404


def test_update_message(client: TestClient) -> None:
    alice, bob, _, direct = _direct(client)
    message = send(client, alice, direct, "helo")
    response = client.patch(f"/messages/{message['id']}", json={"content": "hello"}, headers=alice)
    assert response.status_code == 200
    edited = response.json()
    assert edited["content"] == "hello"
    assert edited["edited_at"] is not None
    assert edited["edited_at"] >= edited["created_at"]
    assert client.get(f"/messages/{message['id']}", headers=bob).json() == edited


def test_update_message_not_author(client: TestClient) -> None:
    alice, bob, _, direct = _direct(client)
    message = send(client, alice, direct, "mine")
    response = client.patch(f"/messages/{message['id']}", json={"content": "yours"}, headers=bob)
    assert response.status_code == 403
    assert client.get(f"/messages/{message['id']}", headers=bob).json()["content"] == "mine"


def test_update_message_not_visible(client: TestClient) -> None:
    alice, _, carol, direct = _direct(client)
    message = send(client, alice, direct, "mine")
    for message_id in (message["id"], 9999):
        response = client.patch(f"/messages/{message_id}", json={"content": "x"}, headers=carol)
        assert response.status_code == 404


def test_update_message_deleted(client: TestClient) -> None:
    alice, _, _, direct = _direct(client)
    message = send(client, alice, direct, "soon gone")
    client.delete(f"/messages/{message['id']}", headers=alice)
    response = client.patch(f"/messages/{message['id']}", json={"content": "back?"}, headers=alice)
    assert response.status_code == 409
    assert client.get(f"/messages/{message['id']}", headers=alice).json()["content"] is None


@pytest.mark.parametrize("body", [{"content": ""}, {"content": "   "}, {"content": "x" * 4001}, {}])
def test_update_message_invalid(client: TestClient, body: dict[str, str]) -> None:
    alice, _, _, direct = _direct(client)
    message = send(client, alice, direct, "original")
    assert client.patch(f"/messages/{message['id']}", json=body, headers=alice).status_code == 422
    assert client.get(f"/messages/{message['id']}", headers=alice).json()["edited_at"] is None


def test_delete_message(client: TestClient) -> None:
    alice, bob, _, direct = _direct(client)
    message = send(client, alice, direct, "a secret I regret", client_id="c-9")
    response = client.delete(f"/messages/{message['id']}", headers=alice)
    assert response.status_code == 204
    assert response.content == b""
    tombstone = client.get(f"/messages/{message['id']}", headers=bob).json()
    assert tombstone["deleted"] is True
    assert tombstone["content"] is None
    assert tombstone["id"] == message["id"]
    # Deleting again is harmless, and a retry of the original send does not resurrect it.
    assert client.delete(f"/messages/{message['id']}", headers=alice).status_code == 204
    retry = client.post(
        f"/conversations/{direct}/messages",
        json={"content": "a secret I regret", "client_id": "c-9"},
        headers=alice,
    )
    assert retry.status_code == 200
    assert retry.json()["deleted"] is True


def test_delete_message_not_author(client: TestClient) -> None:
    alice, bob, _, direct = _direct(client)
    message = send(client, alice, direct, "mine")
    assert client.delete(f"/messages/{message['id']}", headers=bob).status_code == 403
    assert client.get(f"/messages/{message['id']}", headers=bob).json()["deleted"] is False


def test_delete_message_not_visible(client: TestClient) -> None:
    alice, _, carol, direct = _direct(client)
    message = send(client, alice, direct, "mine")
    for message_id in (message["id"], 9999):
        assert client.delete(f"/messages/{message_id}", headers=carol).status_code == 404
    assert client.get(f"/messages/{message['id']}", headers=alice).json()["deleted"] is False


# --- Search ------------------------------------------------------------------------


def _search(client: TestClient, headers: Headers, **params: Any) -> list[str]:
    response = client.get("/search/messages", params=params, headers=headers)
    assert response.status_code == 200, response.text
    return [m["content"] for m in response.json()]


def test_search_messages_newest_first(client: TestClient) -> None:
    alice, _, _, direct = _direct(client)
    for text in ("coffee at 10?", "no coffee today", "tea then", "COFFEE!"):
        send(client, alice, direct, text)
    assert _search(client, alice, q="coffee") == ["COFFEE!", "no coffee today", "coffee at 10?"]
    assert _search(client, alice, q="coffee", limit=1) == ["COFFEE!"]


@pytest.mark.parametrize(
    ("stored", "query"),
    [
        ("Wir fahren nach München", "MÜNCHEN"),
        ("ΣΟΦΊΑ", "σοφία"),
        ("Straße", "STRASSE"),
        ("ПРИВЕТ, мир", "привет"),
    ],
)
def test_search_messages_ignores_case_in_unicode(
    client: TestClient, stored: str, query: str
) -> None:
    alice, _, _, direct = _direct(client)
    send(client, alice, direct, stored)
    send(client, alice, direct, "something else")
    assert _search(client, alice, q=query) == [stored]


def test_search_messages_ignores_unicode_composition(client: TestClient) -> None:
    alice, _, _, direct = _direct(client)
    send(client, alice, direct, "un cafe\u0301 noir")  # e + combining accent
    send(client, alice, direct, "CAF\u00c9 AU LAIT")  # É as one code point
    assert _search(client, alice, q="caf\u00e9") == ["CAF\u00c9 AU LAIT", "un cafe\u0301 noir"]
    assert _search(client, alice, q="cafe\u0301") == ["CAF\u00c9 AU LAIT", "un cafe\u0301 noir"]


def test_search_messages_wildcards_match_themselves(client: TestClient) -> None:
    alice, _, _, direct = _direct(client)
    for text in ("100% sure", "100 percent", "snake_case", "snakeXcase", "back\\slash", "a/b"):
        send(client, alice, direct, text)
    assert _search(client, alice, q="0%") == ["100% sure"]
    assert _search(client, alice, q="e_c") == ["snake_case"]
    assert _search(client, alice, q="\\") == ["back\\slash"]
    assert _search(client, alice, q="/") == ["a/b"]
    assert _search(client, alice, q="%") == ["100% sure"]


def test_search_messages_only_my_conversations(client: TestClient) -> None:
    alice, bob, carol, direct = _direct(client)
    send(client, alice, direct, "secret plan")
    public = create_conversation(client, alice, kind="channel", title="public")["id"]
    send(client, alice, public, "public plan")
    # Carol is in neither; a channel she has not joined is not searched either.
    assert _search(client, carol, q="plan") == []
    assert _search(client, carol, q="plan", conversation_id=direct) == []
    assert _search(client, bob, q="plan") == ["secret plan"]
    client.post(f"/conversations/{public}/join", headers=carol)
    assert _search(client, carol, q="plan") == ["public plan"]


def test_search_messages_in_one_conversation(client: TestClient) -> None:
    alice, _, _, direct = _direct(client)
    group = create_conversation(client, alice, kind="group", title="G")["id"]
    send(client, alice, direct, "lunch here")
    send(client, alice, group, "lunch there")
    assert _search(client, alice, q="lunch", conversation_id=group) == ["lunch there"]


def test_search_messages_skips_deleted(client: TestClient) -> None:
    alice, _, _, direct = _direct(client)
    message = send(client, alice, direct, "delete this password hunter2")
    client.delete(f"/messages/{message['id']}", headers=alice)
    assert _search(client, alice, q="hunter2") == []


def test_search_messages_sees_edits(client: TestClient) -> None:
    alice, _, _, direct = _direct(client)
    message = send(client, alice, direct, "old words")
    client.patch(f"/messages/{message['id']}", json={"content": "new words"}, headers=alice)
    assert _search(client, alice, q="old") == []
    assert _search(client, alice, q="new") == ["new words"]


@pytest.mark.parametrize(
    "params", [{}, {"q": ""}, {"q": "x" * 101}, {"q": "x", "limit": 0}, {"q": "x", "limit": 101}]
)
def test_search_messages_invalid(client: TestClient, params: dict[str, Any]) -> None:
    alice, _, _, _ = _direct(client)
    assert client.get("/search/messages", params=params, headers=alice).status_code == 422


def test_search_messages_unauthenticated(client: TestClient) -> None:
    assert client.get("/search/messages", params={"q": "x"}).status_code == 401


# --- Privacy: a third user learns nothing of another pair's conversation ------------


def test_third_user_sees_nothing(client: TestClient) -> None:
    alice, bob, carol, direct = _direct(client)
    message = send(client, alice, direct, "between us")
    send(client, bob, direct, "yes, between us")
    signup(client, "dave")
    checks = [
        client.get("/conversations", headers=carol),
        client.get(f"/conversations/{direct}", headers=carol),
        client.get(f"/conversations/{direct}/members", headers=carol),
        client.get(f"/conversations/{direct}/messages", headers=carol),
        client.get(f"/messages/{message['id']}", headers=carol),
        client.get("/search/messages", params={"q": "between"}, headers=carol),
    ]
    assert [r.status_code for r in checks] == [200, 404, 404, 404, 404, 200]
    for response in checks:
        assert "between us" not in response.text
    assert all(c["id"] != direct for c in checks[0].json())
    assert checks[-1].json() == []


def test_search_messages_short_and_quoted_queries(client: TestClient) -> None:
    """Under 3 characters, trigram indexes cannot help: such queries are
    answered without them, with the same results."""
    alice, _, _, direct = _direct(client)
    for text in ("box", "xylophone", "Straße", 'she said "hi" twice', "tax"):
        send(client, alice, direct, text)
    assert _search(client, alice, q="x") == ["tax", "xylophone", "box"]
    assert _search(client, alice, q="ß") == ["Straße"]  # folds to "ss"
    assert _search(client, alice, q="SS") == ["Straße"]
    assert _search(client, alice, q="ax") == ["tax"]
    assert _search(client, alice, q="tax") == ["tax"]
    assert _search(client, alice, q='"hi"') == ['she said "hi" twice']
    assert _search(client, alice, q='d "h') == ['she said "hi" twice']
    assert _search(client, alice, q="xyz") == []


def test_largest_ids_are_not_found_on_either_database(client: TestClient) -> None:
    """Ids up to 2**63 - 1 are accepted, and compare correctly with the
    database's own (PostgreSQL's are 32-bit integers)."""
    alice, _, _, direct = _direct(client)
    send(client, alice, direct, "hi")
    big = 2**63 - 1
    assert client.get(f"/messages/{big}", headers=alice).status_code == 404
    assert client.get(f"/conversations/{big}", headers=alice).status_code == 404
    assert [m["content"] for m in history(client, alice, direct, before=big)] == ["hi"]
    assert history(client, alice, direct, after=big) == []
    read = client.post(f"/conversations/{direct}/read", json={"message_id": big}, headers=alice)
    assert read.status_code == 422  # not a message of this conversation
    found = client.get(
        "/search/messages", params={"q": "hi", "conversation_id": big}, headers=alice
    )
    assert found.json() == []


def test_send_limit_per_minute(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    """SEND_MAX_PER_MINUTE over all conversations; 429 with Retry-After past it,
    and nothing stored. Other people are not affected."""
    monkeypatch.setattr(settings, "SEND_MAX_PER_MINUTE", 3)
    alice, bob = new_user(client, "alice"), new_user(client, "bob")
    group = create_conversation(client, alice, kind="group", title="g", members=["bob"])["id"]
    direct = create_conversation(client, alice, kind="direct", members=["bob"])["id"]
    send(client, alice, group, "one", client_id="c1")
    send(client, alice, group, "two")
    send(client, alice, direct, "three")
    refused = client.post(f"/conversations/{direct}/messages", json={"content": "4"}, headers=alice)
    assert refused.status_code == 429
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    assert refused.json() == {"detail": "You are sending too fast; try again later"}
    assert [m["content"] for m in history(client, alice, direct)] == ["three"]
    # A retry of a message already sent is still answered: it sends nothing new.
    retry = client.post(
        f"/conversations/{group}/messages",
        json={"content": "one", "client_id": "c1"},
        headers=alice,
    )
    assert retry.status_code == 200
    send(client, bob, group, "bob is not limited by alice")
