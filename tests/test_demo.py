"""Demo mode (DEMO_DATA=1, `make demo`): a real server, started the way a
presenter starts it, logged into with the password it printed."""

import re
from pathlib import Path
from typing import Any

import httpx2 as httpx

from tests.server import Server, running

DEMO_USERS = {"alice", "bob", "carol", "dave"}


def printed_logins(server: Server) -> dict[str, str]:
    """The demo logins the server printed at start: username -> password."""
    lines = re.findall(r"Demo login: (\S+) +password: (\S+)", server.log.read_text())
    return dict(lines)


def log_in(http: httpx.Client, username: str, password: str) -> dict[str, str]:
    response = http.post("/token", data={"username": username, "password": password})
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


def whole_history(http: httpx.Client, headers: dict[str, str], conversation_id: int) -> list[Any]:
    """Every message, newest page first, then older pages with `before=`, as
    the web client scrolls up."""
    url = f"/conversations/{conversation_id}/messages"
    page = http.get(url, headers=headers).json()
    messages = list(page)
    while page:
        page = http.get(url, params={"before": page[0]["id"]}, headers=headers).json()
        messages[:0] = page
    return messages


def test_demo_data_fills_an_empty_database(tmp_path: Path) -> None:
    with running(tmp_path / "data", DEMO_DATA="1") as server:
        logins = printed_logins(server)
        assert set(logins) == DEMO_USERS
        with httpx.Client(base_url=server.url) as http:
            alice = log_in(http, "alice", logins["alice"])
            conversations = {
                (c["kind"], c["title"]): c for c in http.get("/conversations", headers=alice).json()
            }
            assert set(conversations) == {
                ("channel", "general"),
                ("group", "Book club"),
                ("direct", None),
            }
            direct = conversations[("direct", None)]
            assert [m["username"] for m in direct["members"]] == ["alice", "bob"]
            assert direct["unread_count"] == 2  # badges to show in the web client
            assert conversations[("channel", "general")]["unread_count"] > 0
            assert conversations[("channel", "general")]["unread_mentions"] == 1  # by bob

            # The busy channel: several pages, several authors, days of history.
            general = whole_history(http, alice, conversations[("channel", "general")]["id"])
            assert len(general) == 301  # the chatter, and bob's question to alice
            assert {m["author"]["username"] for m in general} == DEMO_USERS
            times = [m["created_at"] for m in general]
            assert times == sorted(times)
            assert times[0][:10] != times[-1][:10]

            channels = [c["title"] for c in http.get("/channels", headers=alice).json()]
            assert channels == ["general", "random"]  # "random" for alice to join
            found = http.get("/search/messages", params={"q": "pizza"}, headers=alice).json()
            assert {m["conversation_id"] for m in found} >= {direct["id"]}

            # Every demo user logs in with the printed password.
            for username in DEMO_USERS - {"alice"}:
                log_in(http, username, logins[username])


def test_demo_data_never_added_to_a_database_with_users(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with running(data) as server:
        server.user("operator")
    with running(data, DEMO_DATA="1") as server:
        assert printed_logins(server) == {}
        assert "the database has users: no demo data added" in server.log.read_text()
        with httpx.Client(base_url=server.url) as http:
            refused = http.post("/token", data={"username": "alice", "password": "demo-password"})
            assert refused.status_code == 401
            operator = server.user("operator")
            users = http.get("/users", headers=operator).json()
            assert [u["username"] for u in users] == ["operator"]
            [general] = http.get("/conversations", headers=operator).json()
            assert whole_history(http, operator, general["id"]) == []


def test_demo_data_not_duplicated_by_a_second_start(tmp_path: Path) -> None:
    data = tmp_path / "data"

    def snapshot(server: Server) -> tuple[list[str], dict[str, int]]:
        with httpx.Client(base_url=server.url) as http:
            alice = log_in(http, "alice", printed_logins(server)["alice"])
            users = [u["username"] for u in http.get("/users", headers=alice).json()]
            sizes = {
                str(c["title"]): len(whole_history(http, alice, c["id"]))
                for c in http.get("/conversations", headers=alice).json()
            }
        return users, sizes

    with running(data, DEMO_DATA="1") as server:
        first = snapshot(server)
    with running(data, DEMO_DATA="1") as server:
        assert "Demo data is there already; nothing added" in server.log.read_text()
        assert snapshot(server) == first
    assert first[0] == sorted(DEMO_USERS)
    assert first[1] == {"general": 301, "Book club": 7, "None": 6}
