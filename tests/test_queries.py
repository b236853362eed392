"""No N+1 queries: a page costs the same number of queries whatever its size."""

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import Engine, event

from tests.helpers import Headers, create_conversation, new_user, send, settle


@contextmanager
def count_queries(engine: Engine) -> Iterator[list[str]]:
    statements: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        statements.append(statement)

    event.listen(engine, "before_cursor_execute", record)
    try:
        yield statements
    finally:
        event.remove(engine, "before_cursor_execute", record)


def queries_for(engine: Engine, request: Callable[[], Any]) -> int:
    settle()  # a message sent just before is still being pushed, which queries too
    with count_queries(engine) as statements:
        response = request()
    assert response.status_code == 200
    return len(statements)


def test_history_page_query_count_is_fixed(client: TestClient, engine: Engine) -> None:
    alice = new_user(client, "alice")
    users: list[Headers] = [new_user(client, f"user{i}") for i in range(5)]
    group = create_conversation(
        client, alice, kind="group", title="G", members=[f"user{i}" for i in range(5)]
    )["id"]
    previous = None
    for i in range(40):  # many authors, so authors cannot come from one lookup
        # Replies and reactions too: neither may cost a query per message.
        reply_to: dict[str, Any] = {"reply_to": previous} if previous and i % 2 else {}
        previous = send(client, users[i % 5], group, f"message {i}", **reply_to)["id"]
        response = client.put(f"/messages/{previous}/reactions/👍", headers=users[(i + 1) % 5])
        assert response.status_code == 204

    def page(limit: int) -> Callable[[], Any]:
        return lambda: client.get(
            f"/conversations/{group}/messages", params={"limit": limit}, headers=alice
        )

    assert queries_for(engine, page(2)) == queries_for(engine, page(40))

    def around(limit: int) -> Callable[[], Any]:
        return lambda: client.get(
            f"/conversations/{group}/messages",
            params={"limit": limit, "around": previous},
            headers=alice,
        )

    assert queries_for(engine, around(2)) == queries_for(engine, around(40))


def test_conversation_list_query_count_is_fixed(client: TestClient, engine: Engine) -> None:
    alice = new_user(client, "alice")
    for name in ("bob", "carol", "dave"):
        new_user(client, name)
    for i in range(12):
        conversation = create_conversation(
            client, alice, kind="group", title=f"G{i}", members=["bob", "carol", "dave"]
        )
        send(client, alice, conversation["id"], f"hello {i}")
    create_conversation(client, alice, kind="direct", members=["bob"])

    def listing(limit: int) -> Callable[[], Any]:
        return lambda: client.get("/conversations", params={"limit": limit}, headers=alice)

    assert queries_for(engine, listing(1)) == queries_for(engine, listing(14))


def test_search_query_count_is_fixed(client: TestClient, engine: Engine) -> None:
    alice = new_user(client, "alice")
    bob = new_user(client, "bob")
    general = client.get("/conversations", headers=alice).json()[0]["id"]
    for i in range(20):
        message = send(client, alice if i % 2 else bob, general, f"needle {i}")
        client.put(f"/messages/{message['id']}/reactions/🎉", headers=alice)

    def search(limit: int) -> Callable[[], Any]:
        return lambda: client.get(
            "/search/messages", params={"q": "needle", "limit": limit}, headers=alice
        )

    assert queries_for(engine, search(1)) == queries_for(engine, search(20))


def test_group_creation_query_count_is_fixed(client: TestClient, engine: Engine) -> None:
    alice = new_user(client, "alice")
    names = [f"user{i:02}" for i in range(20)]
    for name in names:
        client.post("/users", json={"username": name, "password": "password123"})

    def create(members: list[str]) -> Callable[[], Any]:
        body = {"kind": "group", "title": "G", "members": members}
        return lambda: client.post("/conversations", json=body, headers=alice)

    with count_queries(engine) as small:
        assert create(names[:2])().status_code == 201
    with count_queries(engine) as large:
        assert create(names)().status_code == 201
    assert len(small) == len(large)


def test_search_uses_the_trigram_index(client: TestClient, engine: Engine) -> None:
    """EXPLAIN the query GET /search/messages runs: it goes through the
    trigram index (SQLite FTS5, PostgreSQL pg_trgm), not a scan of every message."""
    alice = new_user(client, "alice")
    general = client.get("/conversations", headers=alice).json()[0]["id"]
    for i in range(300):
        send(client, alice, general, f"message number {i}")
    send(client, alice, general, "the needle")

    captured: list[tuple[str, Any]] = []

    def record(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if "search_text" in statement or "message_search" in statement:
            captured.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", record)
    try:
        response = client.get("/search/messages", params={"q": "NEEDLE"}, headers=alice)
    finally:
        event.remove(engine, "before_cursor_execute", record)
    assert [m["content"] for m in response.json()] == ["the needle"]
    [(statement, parameters)] = captured

    with engine.begin() as connection:
        if engine.dialect.name == "sqlite":
            rows = connection.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", parameters)
            plan = "\n".join(row[-1] for row in rows)
            assert "message_search VIRTUAL TABLE INDEX" in plan, plan
        else:
            # With few rows, reading them all is PostgreSQL's cheapest plan;
            # a table of some size is where the index pays. Then what
            # autovacuum does in production: fold the GIN index's list of
            # pending entries into it, and gather statistics.
            connection.exec_driver_sql(
                "INSERT INTO message (conversation_id, author_id, content, search_text,"
                " created_at, deleted) SELECT 1, 1, 'filler ' || n, 'filler ' || n, now(), false"
                " FROM generate_series(1, 20000) AS n"
            )
            connection.exec_driver_sql(
                "SELECT gin_clean_pending_list('ix_message_search_text_trgm')"
            )
            connection.exec_driver_sql("ANALYZE message")
            rows = connection.exec_driver_sql(f"EXPLAIN {statement}", parameters)
            plan = "\n".join(row[0] for row in rows)
            assert "Bitmap Index Scan on ix_message_search_text_trgm" in plan, plan


def test_unread_counts_walk_no_unread_message(client: TestClient, engine: Engine) -> None:
    """EXPLAIN the unread count GET /conversations runs: every read of `message`
    is an index search (the marker's seq; the reader's own and the deleted
    messages after it), never a walk over the unread messages. So a member
    with a million unread loads the sidebar as fast as one with none."""
    alice, bob = new_user(client, "alice"), new_user(client, "bob")
    general = client.get("/conversations", headers=bob).json()[0]["id"]
    for i in range(50):
        send(client, alice, general, f"unread by bob {i}")
    captured: list[tuple[str, Any]] = []

    def record(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if "message_seq" in statement:
            captured.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", record)
    try:
        listed = client.get("/conversations", headers=bob).json()
    finally:
        event.remove(engine, "before_cursor_execute", record)
    assert listed[0]["unread_count"] == 50
    [(statement, parameters)] = captured

    with engine.begin() as connection:
        if engine.dialect.name == "sqlite":
            rows = connection.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", parameters)
            plan = [row[-1] for row in rows]
            reads = [step for step in plan if " message_" in step]
            assert reads == [
                "SEARCH message_1 USING INDEX ix_message_conversation_id_id"
                " (conversation_id=? AND id<?)",
                "SEARCH message_2 USING COVERING INDEX ix_message_conversation_id_author_id_id"
                " (conversation_id=? AND author_id=? AND id>?)",
                "SEARCH message_3 USING INDEX ix_message_deleted_conversation_id_id"
                " (conversation_id=? AND id>?)",
                "SEARCH mention USING COVERING INDEX ix_mention_user_id_conversation_id_message_id"
                " (user_id=? AND conversation_id=? AND message_id>?)",
            ], plan
        else:
            rows = connection.exec_driver_sql(f"EXPLAIN {statement}", parameters)
            text = "\n".join(row[0] for row in rows)
            assert "Seq Scan on message" not in text, text
