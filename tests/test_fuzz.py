"""Schema fuzzing: Schemathesis generates requests from the app's own
/openapi.json and sends them to a real uvicorn, signed in as a registered user.

Every response must be documented: its status code for that route, its body
against the route's schema, its content type and headers; no input may cause
a 5xx; input that breaks the schema must be refused with a 4xx.
"""

from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import httpx2 as httpx
import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings

from main import app
from tests.server import PASSWORD, Server, manage, running

pytestmark = pytest.mark.slow

# Examples per route, each in both modes (valid and invalid input), plus the
# coverage phase's edge cases. CI runs it all in about two minutes.
EXAMPLES = 60

# Schema-valid input that the contract still refuses: an unknown username in
# `members` is a string like any other, and 422 by the contract; a wrong
# current password is 400.
CONFIG = schemathesis.Config.from_dict(
    {
        "checks": {
            "positive_data_acceptance": {
                "expected-statuses": ["2xx", "400", "401", "403", "404", "409", "422", "429"]
            },
        }
    }
)

calls: Counter[str] = Counter()
# Operations that end the token's session (or, for a password change, the
# others'): they act as a user of their own, not the shared fuzzer.
REVOKING = {
    ("POST", "/logout"),
    ("PUT", "/users/me/password"),
    ("DELETE", "/sessions/{session_id}"),
    ("POST", "/sessions/end-others"),
}


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    # An admin, so the admin routes are fuzzed too, not only refused with 403.
    data_dir = tmp_path_factory.mktemp("fuzz") / "data"
    made = manage(data_dir, "create-admin", "fuzzer", stdin=f"{PASSWORD}\n")
    assert made.returncode == 0, made.stderr
    with running(data_dir) as server:
        yield server
    assert "Traceback" not in server.log.read_text()  # nothing failed unseen


@pytest.fixture(scope="module")
def fuzz_user(fuzz_server: Server) -> dict[str, str]:
    """An admin with a few messages, in a group and a direct conversation, so
    generated ids hit real rows as well as missing ones."""
    fuzz_server.user("bob")
    headers = fuzz_server.user("fuzzer")
    with httpx.Client(base_url=fuzz_server.url, headers=headers) as http:
        http.post("/conversations", json={"kind": "direct", "members": ["bob"]})
        http.post("/conversations", json={"kind": "group", "title": "g", "members": ["bob"]})
        for n in range(5):
            http.post("/conversations/1/messages", json={"content": f"seed {n}"})
    return headers


# The app's own /openapi.json, read when the tests are collected (the
# requests then go to the real server). schemathesis.pytest.from_fixture
# would read it from the server itself, but fails on pytest 9.2.
with TestClient(app) as client:
    schema = schemathesis.openapi.from_dict(client.get("/openapi.json").json(), config=CONFIG)


@schema.parametrize()
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,  # the same inputs on every run: a CI failure reproduces
)
def test_api_conforms_to_its_schema(
    case: schemathesis.Case[Any], fuzz_server: Server, fuzz_user: dict[str, str]
) -> None:
    headers = fuzz_user
    if (case.method, case.operation.path) in REVOKING:
        # These would revoke the shared token (the password example is the
        # real password): they act as a user of their own.
        headers = fuzz_server.user(f"throwaway{len(calls)}-{calls.total()}")
    response = case.call_and_validate(base_url=fuzz_server.url, headers=headers)
    calls[str(response.status_code)] += 1


def test_fuzzing_signed_in_all_along(
    fuzz_server: Server, fuzz_user: dict[str, str], report: Callable[[str], None]
) -> None:
    """The fuzzer's token still works, so its requests were not all 401s,
    and the service still serves it end to end."""
    statuses = ", ".join(f"{code}: {n}" for code, n in sorted(calls.items()))
    report(f"Schemathesis: {calls.total()} requests, no 5xx ({statuses})")
    assert calls["401"] < calls.total() / 10
    with httpx.Client(base_url=fuzz_server.url, headers=fuzz_user) as http:
        assert http.get("/users/me").status_code == 200
        assert http.post("/conversations/1/join").status_code == 200  # it may have left
        sent = http.post("/conversations/1/messages", json={"content": "still fine"})
        assert sent.status_code == 201
        assert http.get(f"/messages/{sent.json()['id']}").json()["content"] == "still fine"
