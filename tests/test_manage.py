"""The operator's commands, `python -m manage`: making the first admin of a
new deployment, promoting and demoting, and refusing bad input clearly."""

import io
from pathlib import Path

import httpx2 as httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine

import db
import manage
from tests.helpers import PASSWORD, bearer, login, new_user, signup
from tests.server import PASSWORD as SERVER_PASSWORD
from tests.server import manage as run_manage
from tests.server import running

ADMIN_SCOPES = "messages:read messages:write admin"


def test_create_admin_on_a_new_deployment(tmp_path: Path) -> None:
    """On an empty DATA_DIR, before the service ever ran, as `docker exec`
    would: the password comes on standard input."""
    data = tmp_path / "data"
    done = run_manage(data, "create-admin", "Root", stdin=f"{SERVER_PASSWORD}\n")
    assert done.returncode == 0, done.stderr
    assert "Created Root, an admin" in done.stdout
    assert SERVER_PASSWORD not in done.stdout + done.stderr
    with running(data) as server:
        token = httpx.post(
            f"{server.url}/token", data={"username": "root", "password": SERVER_PASSWORD}
        )
        assert token.status_code == 200
        assert token.json()["scope"] == ADMIN_SCOPES
        headers = {"Authorization": f"Bearer {token.json()['access_token']}"}
        me = httpx.get(f"{server.url}/users/me", headers=headers).json()
        assert (me["username"], me["role"]) == ("Root", "admin")
        assert httpx.get(f"{server.url}/admin/users", headers=headers).status_code == 200


def test_create_admin_beside_a_running_server(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with running(data) as server:
        server.user("alice")
        done = run_manage(data, "create-admin", "alice")  # exists: no password asked
        assert done.returncode == 0, done.stderr
        assert "alice is now an active admin" in done.stdout
        form = {"username": "alice", "password": SERVER_PASSWORD, "scope": "admin"}
        assert httpx.post(f"{server.url}/token", data=form).status_code == 200


def test_create_admin_promotes_and_reactivates(client: TestClient) -> None:
    root = new_user(client, "root")
    assert manage.main(["create-admin", "root"]) == 0
    alice = new_user(client, "alice")
    assert manage.main(["create-admin", "alice"]) == 0
    admin = bearer(login(client, "alice"))
    assert client.post("/admin/users/root/deactivate", headers=admin).status_code == 204
    assert client.get("/users/me", headers=root).status_code == 401
    assert manage.main(["create-admin", "root"]) == 0  # a locked-out operator recovers
    assert login(client, "root")
    assert client.get("/users/me", headers=alice).json()["role"] == "admin"


def test_create_admin_creates_with_password_from_stdin(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(f"  {PASSWORD}  \n"))
    assert manage.main(["create-admin", "root"]) == 0
    form = {"username": "root", "password": f"  {PASSWORD}  ", "scope": "admin"}
    assert client.post("/token", data=form).status_code == 200  # spaces kept, newline not


@pytest.mark.parametrize(
    ("username", "stdin", "error"),
    [
        ("r", PASSWORD, "Invalid username 'r'"),
        ("root beer", PASSWORD, "Invalid username 'root beer'"),
        ("root", "short\n", "Invalid password"),
        ("root", "", "Invalid password"),  # nothing piped in
        ("root", " " * 12 + "\n", "Invalid password"),
    ],
)
def test_create_admin_refuses_bad_input(
    client: TestClient,
    engine: Engine,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    username: str,
    stdin: str,
    error: str,
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    assert manage.main(["create-admin", username]) == 2
    assert capsys.readouterr().err.startswith(f"error: {error}")
    assert client.post("/token", data={"username": username, "password": stdin}).status_code in (
        401,
        422,
    )


def test_remove_admin_takes_the_admin_scope_at_once(client: TestClient) -> None:
    signup(client, "root")
    assert manage.main(["create-admin", "root"]) == 0
    root = bearer(login(client, "root"))
    assert client.get("/admin/users", headers=root).status_code == 200
    assert manage.main(["remove-admin", "root"]) == 0
    assert client.get("/admin/users", headers=root).status_code == 403
    assert client.get("/users/me", headers=root).json()["role"] == "member"


def test_remove_admin_of_nobody_is_an_error(
    client: TestClient, capsys: pytest.CaptureFixture[str]
) -> None:
    assert manage.main(["remove-admin", "nobody"]) == 2
    assert "No user named 'nobody'" in capsys.readouterr().err


def test_unknown_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        manage.main(["make-coffee"])
    assert exited.value.code == 2


def test_database_down_exits_1(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    broken = db.create_db_engine(f"sqlite:///{tmp_path}/missing-folder/x.db")
    monkeypatch.setattr(db, "engine", broken)
    assert manage.main(["create-admin", "root"]) == 1
    assert "error: the database failed" in capsys.readouterr().err
