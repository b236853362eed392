"""GET /metrics: the token that guards it, and the counters moving as traffic
goes by (HTTP and sockets), in the test's process, in a real server, and
added up over two uvicorn workers.

The tests' process keeps one registry for all its tests, so each test reads
the metrics before and after what it does and checks the difference.
"""

import json
import os
import re
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

import httpx2 as httpx
import pytest
from fastapi.testclient import TestClient
from prometheus_client.multiprocess import MultiProcessCollector

from config import settings
from metrics import UNMATCHED
from tests import database
from tests.helpers import (
    WRONG_CREDENTIALS,
    create_conversation,
    live,
    new_user,
    read_metrics,
    send,
    signup,
)
from tests.server import METRICS_AUTH, ROOT, Server, group, open_socket, post

REQUESTS = "messageapp_http_requests_total"
SECONDS = "messageapp_http_request_duration_seconds_count"
SEND_ROUTE = "/conversations/{conversation_id}/messages"


# --- The token -------------------------------------------------------------------


def test_metrics_absent_without_metrics_token(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(settings, "METRICS_TOKEN", "")
    response = client.get("/metrics", headers=METRICS_AUTH)
    assert response.status_code == 404
    assert response.json() == {"detail": "Not Found"}  # as any unknown path


@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer wrong-token", f"Basic {settings.METRICS_TOKEN}", settings.METRICS_TOKEN],
)
def test_metrics_refuse_a_missing_or_wrong_token(
    client: TestClient, authorization: str | None
) -> None:
    headers = {"Authorization": authorization} if authorization else {}
    response = client.get("/metrics", headers=headers)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert "messageapp_" not in response.text


def test_metrics_refuse_a_user_token(client: TestClient) -> None:
    """A user's JWT opens the API, not the metrics."""
    response = client.get("/metrics", headers=new_user(client, "alice"))
    assert response.status_code == 401


def test_metrics_in_prometheus_format_and_not_in_openapi(client: TestClient) -> None:
    response = client.get("/metrics", headers=METRICS_AUTH)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=")
    assert "# TYPE messageapp_http_requests_total counter" in response.text
    assert "/metrics" not in client.get("/openapi.json").json()["paths"]


# --- Requests ------------------------------------------------------------------------


def test_requests_counted_by_route_template(client: TestClient) -> None:
    alice = new_user(client, "alice")
    general = create_conversation(client, alice, kind="channel", title="plans")["id"]
    before = read_metrics(client)
    for n in range(3):
        send(client, alice, general, f"message {n}")
    assert client.get("/users/alice", headers=alice).status_code == 200
    assert client.get("/no-such-page-xyz").status_code == 404
    assert client.get("/app.js").status_code == 200
    after = read_metrics(client)

    def moved(name: str, **labels: str) -> float:
        return after(name, **labels) - before(name, **labels)

    assert moved(REQUESTS, route=SEND_ROUTE, method="POST", status="201") == 3
    assert moved(SECONDS, route=SEND_ROUTE, method="POST") == 3
    assert moved(REQUESTS, route="/users/{username}", method="GET", status="200") == 1
    assert moved(REQUESTS, route=UNMATCHED, method="GET", status="404") == 1
    assert moved(REQUESTS, route="<static>", method="GET", status="200") == 1
    # Label values are templates, never what the client sent.
    assert "alice" not in after.text
    assert "no-such-page-xyz" not in after.text
    assert "app.js" not in after.text


def test_made_up_methods_share_one_label(client: TestClient) -> None:
    before = read_metrics(client)
    client.request("FROBNICATE", "/healthz")
    after = read_metrics(client)
    assert after(REQUESTS, route="/healthz", method="other", status="405") == (
        before(REQUESTS, route="/healthz", method="other", status="405") + 1
    )
    assert "FROBNICATE" not in after.text


def test_failed_logins_and_limits_counted(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    signup(client, "alice")
    monkeypatch.setattr(settings, "LOGIN_MAX_FAILURES", 1)
    monkeypatch.setattr(settings, "SEND_MAX_PER_MINUTE", 1)
    before = read_metrics(client)
    wrong = client.post("/token", data={"username": "alice", "password": "not it at all"})
    assert (wrong.status_code, wrong.json()) == (401, WRONG_CREDENTIALS)
    assert client.post("/token", data={"username": "alice", "password": "x"}).status_code == 429
    bob = new_user(client, "bob")
    channel = create_conversation(client, bob, kind="channel", title="c")["id"]
    send(client, bob, channel, "one")
    refused = client.post(f"/conversations/{channel}/messages", json={"content": "2"}, headers=bob)
    assert refused.status_code == 429
    after = read_metrics(client)
    assert after("messageapp_login_failures_total") - before("messageapp_login_failures_total") == 1
    limited = "messageapp_rate_limited_total"
    assert after(limited, limit="login_username") - before(limited, limit="login_username") == 1
    assert after(limited, limit="send") - before(limited, limit="send") == 1
    assert after(limited, limit="signup_address") == before(limited, limit="signup_address")


def test_database_waits_counted(client: TestClient) -> None:
    alice = new_user(client, "alice")
    before = read_metrics(client)
    assert client.patch("/users/me", json={"display_name": "A"}, headers=alice).status_code == 200
    after = read_metrics(client)
    waits = "messageapp_db_wait_seconds_count"
    assert after(waits, turn="connection") > before(waits, turn="connection")
    # Only SQLite has a writer's turn; PostgreSQL locks rows itself.
    expected = 0 if database.POSTGRES else 1
    assert after(waits, turn="writer") - before(waits, turn="writer") == expected


# --- Sockets and events -------------------------------------------------------------

OPEN = "messageapp_websockets_open"
DELIVERED = "messageapp_events_delivered_total"
DELAY = "messageapp_event_delivery_delay_seconds_count"


def test_sockets_and_events_counted(client: TestClient) -> None:
    alice, bob = new_user(client, "alice"), new_user(client, "bob")
    team = create_conversation(client, alice, kind="group", title="t", members=["bob"])["id"]
    before = read_metrics(client)
    with live(client, bob) as ws:
        assert read_metrics(client)(OPEN) == before(OPEN) + 1
        send(client, alice, team, "hello")
        assert ws.receive_json()["type"] == "message.created"
        during = read_metrics(client)
    assert read_metrics(client)(OPEN) == before(OPEN)
    assert during(DELIVERED) - before(DELIVERED) == 1
    assert during(DELAY) - before(DELAY) == 1


# --- A real server ------------------------------------------------------------------


def test_real_server_counts_http_and_socket_traffic(server: Server) -> None:
    alice, bob = server.user("alice"), server.user("bob")
    with httpx.Client(base_url=server.url) as http:
        team = group(http, alice, "bob")
        before = server.metrics()
        with open_socket(server, bob) as ws, open_socket(server, bob) as ws2:
            assert server.metrics()(OPEN) == 2
            for n in range(5):
                post(http, alice, team, f"message {n}")
            for socket in (ws, ws2):
                events = [json.loads(socket.recv(timeout=5))["type"] for _ in range(5)]
                assert events == ["message.created"] * 5
        after = server.metrics()
    assert after(REQUESTS, route=SEND_ROUTE, method="POST", status="201") == 5
    assert after(DELIVERED) - before(DELIVERED) == 10  # five events, two sockets
    assert after(DELAY) - before(DELAY) == 5
    assert wait_for(lambda: server.metrics()(OPEN) == 0)


def wait_for(condition: Callable[[], bool], seconds: float = 5) -> bool:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


# --- Two workers ----------------------------------------------------------------------


@pytest.fixture
def two_workers(tmp_path: Path) -> Iterator[Server]:
    server = Server(tmp_path / "data", "--workers", "2")
    try:
        server.start()
        yield server
    finally:
        server.kill()


def worker_folder(server: Server) -> Path:
    """serve.py's folder for prometheus-client's files: DATA_DIR/metrics/<its pid>."""
    assert server.process is not None
    return server.data_dir / "metrics" / str(server.process.pid)


def per_worker(folder: Path, kind: str, name: str, **labels: str) -> dict[int, float]:
    """A sample's value in each worker's own file (`kind`: counter or gauge_livesum)."""
    values = {}
    for path in folder.glob(f"{kind}_*.db"):
        pid = int(path.stem.rsplit("_", 1)[1])
        merged = MultiProcessCollector.merge([str(path)], accumulate=False)  # type: ignore[no-untyped-call]
        values[pid] = sum(
            s.value
            for metric in merged
            for s in metric.samples
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
        )
    return values


def test_two_workers_add_up_their_counts(two_workers: Server) -> None:
    """Each worker counts in a file of its own; a scrape, whichever worker
    answers it, adds up both."""
    server = two_workers
    folder = worker_folder(server)
    assert folder.is_dir() and folder.stat().st_mode & 0o777 == 0o700
    healthz = {"route": "/healthz", "method": "GET", "status": "200"}
    sent = 0
    # New connections, until the kernel has handed some to each worker.
    while sent < 400:
        httpx.get(f"{server.url}/healthz")
        sent += 1
        counts = per_worker(folder, "counter", REQUESTS, **healthz)
        if len(counts) == 2 and all(counts.values()) and sent >= 20:
            break
    assert len(counts) == 2 and all(counts.values()), counts

    def scrape_adds_up() -> bool:
        # A request is counted once its answer has gone: the last one may
        # be counted a moment after the client has it.
        in_files = sum(per_worker(folder, "counter", REQUESTS, **healthz).values())
        return server.metrics()(REQUESTS, **healthz) == in_files == sent + 1  # + start-up's

    for _ in range(4):  # scrapes land on either worker
        assert wait_for(scrape_adds_up)


def test_two_workers_forget_a_dead_workers_sockets(two_workers: Server) -> None:
    """uvicorn restarts a worker killed under it; the sockets it held are no
    longer counted as open, and the requests it served still are."""
    server = two_workers
    folder = worker_folder(server)
    bob = server.user("bob")
    healthz = {"route": "/healthz", "method": "GET", "status": "200"}
    with ExitStack() as stack:
        for _ in range(8):
            stack.enter_context(open_socket(server, bob))
        assert server.metrics()(OPEN) == 8
        held = per_worker(folder, "gauge_livesum", OPEN)
        victim, lost = max(held.items(), key=lambda item: item[1])
        assert lost > 0
        served = per_worker(folder, "counter", REQUESTS, **healthz)
        while served.get(victim, 0) == 0 and sum(served.values()) < 400:
            httpx.get(f"{server.url}/healthz")  # until it has served some
            served = per_worker(folder, "counter", REQUESTS, **healthz)
        assert served[victim] > 0
        time.sleep(0.2)  # the last request's count has landed
        served = per_worker(folder, "counter", REQUESTS, **healthz)
        os.kill(victim, signal.SIGKILL)
        assert wait_for(lambda: server.metrics()(OPEN) == 8 - lost, seconds=10)
        assert server.metrics()(REQUESTS, **healthz) == sum(served.values())


def test_metrics_folder_removed_when_the_server_stops(tmp_path: Path) -> None:
    data = tmp_path / "data"
    stale = data / "metrics" / str(2**22 + 1)  # above Linux's largest pid: no such process
    stale.mkdir(parents=True)
    (stale / "counter_1.db").write_bytes(b"")
    server = Server(data, "--workers", "2")
    try:
        server.start()
        assert not stale.exists()  # a killed server's folder, cleared at the next start
        folder = worker_folder(server)
        assert folder.is_dir()
        server.stop()
        assert not folder.exists()
    finally:
        server.kill()


def test_one_worker_keeps_metrics_in_memory(server: Server) -> None:
    """No folder for one worker; its own process's figures come along."""
    metrics = server.metrics()
    assert not (server.data_dir / "metrics").exists()
    assert metrics("process_resident_memory_bytes") > 0


def test_server_without_metrics_token_measures_nothing(tmp_path: Path) -> None:
    server = Server(tmp_path / "data", "--workers", "2", METRICS_TOKEN="")
    try:
        server.start()
        assert httpx.get(f"{server.url}/metrics", headers=METRICS_AUTH).status_code == 404
        assert not (server.data_dir / "metrics").exists()
    finally:
        server.kill()


# --- The Grafana dashboard ------------------------------------------------------------


def test_grafana_dashboard_reads_only_what_the_app_exports(client: TestClient) -> None:
    """docs/grafana-dashboard.json: every metric its panels query is one that
    /metrics has (a renamed metric would leave a panel silently empty)."""
    dashboard = json.loads((ROOT / "docs" / "grafana-dashboard.json").read_text())
    client.get("/healthz")  # so that the per-route series exist
    exported = read_metrics(client).text
    queried = {
        name
        for panel in dashboard["panels"]
        for target in panel["targets"]
        for name in re.findall(r"\bmessageapp_\w+", target["expr"])
    }
    assert len(queried) >= 10
    for name in queried:
        assert re.search(rf"^{name}[{{ ]", exported, re.MULTILINE), name
