"""MessageApp's benchmark: every scenario against a bare-hello reference.

    make bench                      # or: .venv/bin/python bench/run.py [--quick]

Builds its own data (1,000,000 messages in one channel, a few hundred smaller
conversations, a few thousand users, written with SQL rather than through the
API), starts MessageApp (with serve.py's flags) and a bare FastAPI "hello" app
(bench/hello.py, on uvloop and httptools: the fastest stack installed) from
this venv, pinned with taskset to CPU 0, and
drives them with wrk on CPU 1. Each scenario runs right after a hello run with
the same number of connections (A B A B ...), so a noisy machine moves both
alike; the figure that counts is the median of those paired ratios. What
metrics cost is measured the same way: the history page on two more
MessageApps on the same database, alike but for METRICS_TOKEN, in pairs.

Writes bench/results.json and bench/results.md (the table docs/performance.md quotes).
"""

import argparse
import json
import os
import platform
import random
import secrets
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from importlib.metadata import version
from pathlib import Path
from typing import Any

import httpx2 as httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
BENCH = ROOT / "bench"
LUA = BENCH / "wrk" / "request.lua"

from serve import FLAGS  # noqa: E402  (the flags of `make run` and the image)

# The reference runs on the fastest stack installed (uvloop and httptools, the
# latter from requirements-dev.txt), not on MessageApp's own h11 protocol: a
# ratio then says what the machine and FastAPI could do, not what our choices allow.
CEILING = ["--loop", "uvloop", "--http", "httptools", "--no-access-log"]

PASSWORD = "bench-password-1"
RARE_WORD = "zeppelin"  # one message in 10,000 has it: what search looks for
WORDS = (
    "the a to and of in is it you that he was for on are with as I his they be at one have "
    "this from or had by hot word but what some we can out other were all there when up use "
    "your how said an each she which do their time if will way about many then them write "
    "would like so these her long make thing see him two has look more day could go come did "
    "number sound no most people my over know water than call first who may down side been "
    "now find any new work part take get place made live where after back little only round "
    "man year came show every good me give our under name very through just form sentence "
    "great think say help low line differ turn cause much mean before move right boy old too "
    "same tell does set three want air well also play small end put home read hand port large "
    "spell add even land here must big high such follow act why ask men change went light "
    "kind off need house picture try us again animal point mother world near build self earth "
    "München café naïve déjà über straße 東京 こんにちは 🙂 👍"
).split()


# The per-user and per-address limits, raised: one bench user sends thousands
# of messages a minute, and the floods sign up and fail passwords from one address.
LIMITS = (
    "SEND_MAX_PER_MINUTE",
    "WS_MAX_PER_USER",
    "SIGNUP_MAX_PER_IP",
    "LOGIN_MAX_FAILURES",
    "LOGIN_MAX_FAILURES_PER_IP",
)
NO_LIMITS = dict.fromkeys(LIMITS, "1000000000")
# Senders of the POST scenario, each to a group of theirs. One author sending
# 150 a second, with SEND_MAX_PER_MINUTE raised, makes each send's limit check
# step over all that author sent in the last minute (thousands of index
# entries, about 2 ms of a 6 to 8 ms send); under the default limit (120) a
# check steps over at most 120. At the bench's rates, 299 authors in turn send
# well under 120 a minute each, as people do (the floods' POST probe too).
# The one-author scenario stays, to compare with runs before it.
SENDERS = 299


def pinned(cpu: int) -> list[str]:
    return ["taskset", "-c", str(cpu)] if shutil.which("taskset") else []


# --- the data ------------------------------------------------------------------


@dataclass
class Data:
    token: str = ""
    flood_token: str = ""  # user1's, for the password-change flood
    firehose: int = 0  # the channel with the million messages
    group: int = 0  # where the POST scenario writes
    # A member of each of bench's groups (token, that group's messages path):
    # the many-authors POST scenario sends as each in turn.
    senders: list[tuple[str, str]] = field(default_factory=list)
    oldest_before: int = 0  # a `before=` that returns the channel's oldest page
    users: int = 0
    # In bench's conversations, with the firehose all unread / everything read.
    behind_token: str = ""
    caught_up_token: str = ""


def seed(base: str, db_path: Path, users: int, messages: int, conversations: int) -> Data:
    """Fill the database: the users and conversations through the API (they are
    few), the messages with SQL (a million through the API would take hours)."""
    from db import fold  # search matches this form of the text; the import reads DATA_DIR

    data = Data(users=users)
    rng = random.Random(42)
    with httpx.Client(base_url=base, timeout=60) as http:
        http.post("/users", json={"username": "bench", "password": PASSWORD}).raise_for_status()
        # The other users are copies of `bench` (same password hash: one argon2
        # hash instead of thousands), made by SQL so that any column the
        # schema gains later is copied too.
        with sqlite3.connect(db_path) as connection:
            row = connection.execute("SELECT * FROM user WHERE username = 'bench'").fetchone()
            columns = [c[0] for c in connection.execute("SELECT * FROM user").description]
            copies = []
            for n in range(1, users):
                values = dict(zip(columns, row, strict=True), id=None, username=f"user{n}")
                copies.append(tuple(values.values()))
            marks = ", ".join("?" * len(columns))
            connection.executemany(f"INSERT INTO user VALUES ({marks})", copies)
        data.token = login(http, "bench")
        data.flood_token = login(http, "user1")
        auth = {"Authorization": f"Bearer {data.token}"}

        def create(body: dict[str, Any]) -> int:
            response = http.post("/conversations", json=body, headers=auth)
            response.raise_for_status()
            return int(response.json()["id"])

        data.firehose = create({"kind": "channel", "title": "firehose"})
        groups = [
            create(
                {
                    "kind": "group",
                    "title": f"group {n}",
                    "members": [f"user{rng.randrange(1, users)}" for _ in range(4)],
                }
            )
            for n in range(conversations - 1)
        ]
        data.group = groups[0]

    with sqlite3.connect(db_path) as connection:
        # Everybody is in the firehose channel.
        connection.execute(
            "INSERT INTO membership (conversation_id, user_id, joined_at, last_read_message_id)"
            " SELECT ?, id, CURRENT_TIMESTAMP, 0 FROM user WHERE username != 'bench'",
            (data.firehose,),
        )
        members: dict[int, list[int]] = {}
        for conversation_id, user_id in connection.execute(
            "SELECT conversation_id, user_id FROM membership"
        ):
            members.setdefault(conversation_id, []).append(user_id)

        per_group = max(1, messages // 1000)  # the small conversations: 1,000 each
        plan = [(data.firehose, messages)] + [(g, per_group) for g in groups]
        start = datetime.now(UTC) - timedelta(days=365)
        for conversation_id, count in plan:
            authors = members[conversation_id]
            contents = (text(rng, n) for n in range(count))
            rows = (
                (
                    conversation_id,
                    rng.choice(authors),
                    content,
                    fold(content),
                    (start + timedelta(seconds=n * 20)).strftime("%Y-%m-%d %H:%M:%S.%f"),
                )
                for n, content in enumerate(contents)
            )
            connection.executemany(
                "INSERT INTO message"
                " (conversation_id, author_id, content, search_text, created_at, deleted)"
                " VALUES (?, ?, ?, ?, ?, 0)",
                rows,
            )
        if "seq" in {column[1] for column in connection.execute("PRAGMA table_info(message)")}:
            # Numbered as migration 0008 numbers an older database's messages
            # (the check lets this bench measure the code from before it too).
            connection.execute(
                "UPDATE message SET seq = numbered.n FROM (SELECT id, row_number()"
                " OVER (PARTITION BY conversation_id ORDER BY id) AS n FROM message) AS numbered"
                " WHERE message.id = numbered.id"
            )
            connection.execute(
                "UPDATE conversation SET message_seq = coalesce((SELECT max(seq) FROM message"
                " WHERE message.conversation_id = conversation.id), 0)"
            )
        first, last = connection.execute(
            "SELECT min(id), max(id) FROM message WHERE conversation_id = ?", (data.firehose,)
        ).fetchone()
        data.oldest_before = first + 50
        # Read markers as an active user's: a few unread messages in each
        # conversation (0 to 50), 100 in the firehose.
        connection.execute(
            "UPDATE membership SET last_read_message_id = coalesce("
            " (SELECT max(id) FROM message WHERE conversation_id = membership.conversation_id)"
            " - abs(random() % 51), 0)"
        )
        connection.execute(
            "UPDATE membership SET last_read_message_id = ? WHERE conversation_id = ?",
            (last - 100, data.firehose),
        )
        # Two more members of bench's conversations: `behind` has read nothing
        # (the whole firehose unread), `caught_up` everything.
        row = connection.execute("SELECT * FROM user WHERE username = 'bench'").fetchone()
        columns = [c[0] for c in connection.execute("SELECT * FROM user").description]
        newest = "(SELECT max(id) FROM message WHERE conversation_id = m.conversation_id)"
        for name, marker in (("behind", "0"), ("caught_up", newest)):
            values = dict(zip(columns, row, strict=True), id=None, username=name)
            marks = ", ".join("?" * len(columns))
            user_id = connection.execute(
                f"INSERT INTO user VALUES ({marks})", tuple(values.values())
            ).lastrowid
            connection.execute(
                "INSERT INTO membership (conversation_id, user_id, joined_at, last_read_message_id)"
                f" SELECT conversation_id, ?, joined_at, coalesce({marker}, 0) FROM membership m"
                " WHERE user_id = (SELECT id FROM user WHERE username = 'bench')",
                (user_id,),
            )
        # A member of each group other than bench, to send as (SENDERS of them).
        firsts = connection.execute(
            "SELECT m.conversation_id, min(u.username) FROM membership m"
            " JOIN user u ON u.id = m.user_id WHERE m.conversation_id != ?"
            " AND u.username LIKE 'user%' GROUP BY m.conversation_id"
            " ORDER BY m.conversation_id LIMIT ?",
            (data.firehose, SENDERS),
        ).fetchall()
    with httpx.Client(base_url=base, timeout=60) as http:
        data.behind_token = login(http, "behind")
        data.caught_up_token = login(http, "caught_up")
        data.senders = [
            (login(http, username), f"/conversations/{conversation_id}/messages")
            for conversation_id, username in firsts
        ]
    return data


def text(rng: random.Random, n: int) -> str:
    words = rng.choices(WORDS, k=rng.randint(3, 16))
    if n % 10_000 == 5_000:
        words.insert(rng.randrange(len(words)), RARE_WORD.capitalize())
    return " ".join(words)


def login(http: httpx.Client, username: str) -> str:
    response = http.post("/token", data={"username": username, "password": PASSWORD})
    response.raise_for_status()
    return str(response.json()["access_token"])


# --- the servers and the load ----------------------------------------------------


@contextmanager
def server(
    app: str, port: int, log: Path, env: dict[str, str], flags: list[str] = FLAGS
) -> Iterator[int]:
    """A uvicorn process on CPU 0, as `make run` starts it (or with `flags`);
    its output goes to `log`. Yields its pid (taskset execs the server in its
    own process)."""
    process = subprocess.Popen(
        [*pinned(0), sys.executable, "-m", "uvicorn", app, "--port", str(port), *flags],
        cwd=ROOT,
        env={**os.environ, **env},
        stdout=subprocess.DEVNULL,  # hello's access log: a line per request
        stderr=log.open("wb"),  # MessageApp's log, its access lines included
    )
    try:
        health = "/healthz" if app == "main:app" else "/hello"
        for _ in range(300):
            try:
                if httpx.get(f"http://127.0.0.1:{port}{health}").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        else:
            raise RuntimeError(f"{app} did not start")
        yield process.pid
    finally:
        process.terminate()
        process.wait()


@dataclass
class Load:
    """One wrk run's shape; `body` may hold {n} (unique per request) and {u} (a user)."""

    path: str
    connections: int
    method: str = "GET"
    body: str | None = None
    token: str = ""
    content_type: str = "application/json"
    users: int = 1  # {u} runs over 1 .. users
    senders: list[tuple[str, str]] = field(default_factory=list)  # (token, path), in turn


def wrk(base: str, load: Load, seconds: float) -> subprocess.Popen[str]:
    env = {
        **os.environ,
        "BENCH_METHOD": load.method,
        "BENCH_PATH": load.path,
        "BENCH_TOKEN": load.token,
        "BENCH_TYPE": load.content_type,
        "BENCH_USERS": str(load.users),
    }
    if load.body is not None:
        env["BENCH_BODY"] = load.body
    if load.senders:
        env["BENCH_SENDERS"] = " ".join(f"{token} {path}" for token, path in load.senders)
    return subprocess.Popen(
        [
            *pinned(1),
            "wrk",
            "-t1",
            f"-c{load.connections}",
            f"-d{seconds}s",
            "--timeout",
            "10s",
            "-s",
            str(LUA),
            base,
        ],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )


def measure(base: str, load: Load, seconds: float) -> dict[str, float]:
    out, _ = wrk(base, load, seconds).communicate()
    return result(out)


def result(out: str) -> dict[str, float]:
    figures: dict[str, float] = json.loads(out.strip().splitlines()[-1])
    # Failed requests are counted, not hidden: a fast error is no success.
    figures["errors"] = figures.pop("bad_status") + figures.pop("socket_errors")
    figures["rps"] = (figures["requests"] - figures["errors"]) / figures["seconds"]
    return figures


@dataclass
class Scenario:
    name: str
    load: Load
    target: str = ""
    runs: list[dict[str, float]] = field(default_factory=list)
    ratios: list[float] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        def median(key: str) -> float:
            return statistics.median(run[key] for run in self.runs)

        return {
            "name": self.name,
            "connections": self.load.connections,
            "rps": median("rps"),
            "p50_ms": median("p50_ms"),
            "p99_ms": median("p99_ms"),
            "errors": sum(run["errors"] for run in self.runs),
            "ratio": statistics.median(self.ratios) if self.ratios else None,
            "ratios": self.ratios,
            "target": self.target,
        }


def scenarios(data: Data, messages: int) -> list[Scenario]:
    size = f"{messages / 1e6:g}M" if messages >= 1e6 else f"{messages:,}"
    history = f"/conversations/{data.firehose}/messages?limit=50"
    return [
        Scenario("history, newest page (50)", Load(history, 32, token=data.token), "ratio ≥ 0.25"),
        Scenario(
            f"history, oldest page of {size} (before=)",
            Load(f"{history}&before={data.oldest_before}", 32, token=data.token),
            "p50 ≤ 1.2 × newest page",
        ),
        Scenario(
            f"post a message, {len(data.senders)} authors in turn",
            Load(
                "/",  # each request takes its sender's path
                32,
                method="POST",
                body='{"content": "bench message {n}"}',
                senders=data.senders,
            ),
            "ratio ≥ 0.15, p99 ≤ 100 ms",
        ),
        Scenario(
            "post a message, one author",
            Load(
                f"/conversations/{data.group}/messages",
                32,
                method="POST",
                body='{"content": "bench message {n}"}',
                token=data.token,
            ),
        ),
        Scenario(
            "list my conversations (50)",
            Load("/conversations?limit=50", 32, token=data.token),
            "ratio ≥ 0.15",
        ),
        Scenario(
            f"the same list, {size} unread in the firehose",
            Load("/conversations?limit=50", 32, token=data.behind_token),
            "ratio ≥ 0.15, ≤ 1.5 × nothing unread",
        ),
        Scenario(
            "the same list, nothing unread",
            Load("/conversations?limit=50", 32, token=data.caught_up_token),
        ),
        Scenario(
            f"search {size} messages for “{RARE_WORD}”",
            Load(f"/search/messages?q={RARE_WORD}&limit=20", 1, token=data.token),
            "p50 ≤ 20 ms",
        ),
        Scenario(
            "login (argon2)",
            Load(
                "/token",
                8,
                method="POST",
                body=f"username=user{{u}}&password={PASSWORD}",
                content_type="application/x-www-form-urlencoded",
                users=data.users - 1,
            ),
        ),
    ]


def run_pairs(app: str, hello: str, items: list[Scenario], rounds: int, seconds: float) -> None:
    for scenario in items:
        measure(app, scenario.load, 1)  # warm-up: caches, connections, the JIT-less rest
        for n in range(rounds):
            reference = measure(hello, Load("/hello", scenario.load.connections), seconds)
            run = measure(app, scenario.load, seconds)
            scenario.runs.append(run)
            scenario.ratios.append(run["rps"] / reference["rps"])
            print(
                f"  {scenario.name}, round {n + 1}: {run['rps']:.0f} req/s "
                f"(hello {reference['rps']:.0f}), p50 {run['p50_ms']:.1f} ms, "
                f"p99 {run['p99_ms']:.1f} ms, {run['errors']:.0f} errors",
                flush=True,
            )


def cpu_seconds(pid: int) -> float:
    """The CPU time a process has used so far (user and system), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure_cpu(base: str, pid: int, load: Load, seconds: float) -> tuple[float, float]:
    """req/s, and the server's CPU milliseconds per request, over one run."""
    started = cpu_seconds(pid)
    run = measure(base, load, seconds)
    return run["rps"], (cpu_seconds(pid) - started) * 1000 / max(run["requests"], 1)


def metrics_cost(
    off: tuple[str, int], on: tuple[str, int], load: Load, rounds: int, seconds: float
) -> dict[str, Any]:
    """The history page on an app without metrics and on one with them, in
    pairs (A B, B A, ...): the throughput lost to measuring, from the median
    of the paired ratios; and the server's CPU time per request, which other
    work on a shared machine disturbs less than throughput."""
    for base, _ in (off, on):
        measure(base, load, 1)  # warm-up
    pairs = []
    for n in range(rounds):
        if n % 2:  # which goes first alternates: neither gains from its place
            with_metrics, without = (
                measure_cpu(*on, load, seconds),
                measure_cpu(*off, load, seconds),
            )
        else:
            without, with_metrics = (
                measure_cpu(*off, load, seconds),
                measure_cpu(*on, load, seconds),
            )
        pairs.append((without, with_metrics))
        (without_rps, without_ms), (with_rps, with_ms) = without, with_metrics
        print(
            f"  metrics, round {n + 1}: {with_rps:.0f} req/s with ({with_ms:.2f} ms of CPU "
            f"a request), {without_rps:.0f} without ({without_ms:.2f} ms)",
            flush=True,
        )
    rps_ratios = [w[0] / max(wo[0], 0.001) for wo, w in pairs]
    cpu_ratios = [w[1] / max(wo[1], 0.001) for wo, w in pairs]
    return {
        "without_rps": statistics.median(wo[0] for wo, _ in pairs),
        "with_rps": statistics.median(w[0] for _, w in pairs),
        "cost": 1 - statistics.median(rps_ratios),
        "cpu_cost": statistics.median(cpu_ratios) - 1,
        "ratios": rps_ratios,
        "cpu_ratios": cpu_ratios,
        "target": "cost < 5%",
    }


def password_floods(app: str, data: Data, rounds: int, seconds: float) -> list[dict[str, Any]]:
    """Other routes' p99 alone, then while 8 clients hash passwords without
    pause (A B A B): logging in, signing up, changing a password. Probes: a
    history page and a message sent, 4 connections each, side by side."""
    probes = {
        "GET history": Load(
            f"/conversations/{data.firehose}/messages?limit=50", 4, token=data.token
        ),
        "POST a message": Load(
            "/", 4, method="POST", body='{"content": "probe {n}"}', senders=data.senders
        ),
    }
    form = "application/x-www-form-urlencoded"
    floods = {
        "logins": Load(
            "/token",
            8,
            method="POST",
            body=f"username=user{{u}}&password={PASSWORD}",
            content_type=form,
            users=data.users - 1,
        ),
        "sign-ups": Load(
            "/users",
            8,
            method="POST",
            body=f'{{"username": "new{{n}}-{{r}}", "password": "{PASSWORD}"}}',
        ),
        # Each right one would revoke the token it was sent with (and the rest
        # of the flood would be quick 401s): wrong current passwords take the
        # same path up to the write, a verify hash included (limits raised).
        "password changes": Load(
            "/users/me/password",
            8,
            method="PUT",
            body='{"current_password": "not the password", "new_password": "whatever 12345"}',
            token=data.flood_token,
        ),
    }
    results = []
    for flood_name, flood in floods.items():
        idle: dict[str, list[float]] = {name: [] for name in probes}
        busy: dict[str, list[float]] = {name: [] for name in probes}
        for n in range(rounds):
            for name, p99 in side_by_side(app, probes, seconds).items():
                idle[name].append(p99)
            body = flood.body.replace("{r}", str(n)) if flood.body else None
            hashing = wrk(app, replace(flood, body=body), seconds + 2)
            time.sleep(1)  # let the hashes pile up first
            for name, p99 in side_by_side(app, probes, seconds).items():
                busy[name].append(p99)
            flood_out, _ = hashing.communicate()
            flood_rate = result(flood_out)["requests"] / result(flood_out)["seconds"]
            print(
                f"  {flood_name} ({flood_rate:.0f}/s), round {n + 1}: "
                + ", ".join(
                    f"{name} p99 {idle[name][-1]:.1f} → {busy[name][-1]:.1f} ms" for name in probes
                ),
                flush=True,
            )
        for name in probes:
            ratios = [b / max(i, 0.001) for i, b in zip(idle[name], busy[name], strict=True)]
            results.append(
                {
                    "flood": flood_name,
                    "probe": name,
                    "idle_p99_ms": statistics.median(idle[name]),
                    "busy_p99_ms": statistics.median(busy[name]),
                    "ratio": statistics.median(ratios),
                    "ratios": ratios,
                    "target": "busy p99 ≤ 2 × idle p99",
                }
            )
    return results


def side_by_side(app: str, probes: dict[str, Load], seconds: float) -> dict[str, float]:
    """Each probe's p99, measured at the same time."""
    running = {name: wrk(app, load, seconds) for name, load in probes.items()}
    return {name: result(process.communicate()[0])["p99_ms"] for name, process in running.items()}


def fanout(sockets: int, messages: int) -> dict[str, Any]:
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        subprocess.run(
            [
                sys.executable,
                str(BENCH / "ws_fanout.py"),
                f"--sockets={sockets}",
                f"--messages={messages}",
                f"--json={out.name}",
            ],
            check=True,
        )
        figures: dict[str, Any] = json.loads(Path(out.name).read_text())
    figures["target"] = "p99 ≤ 100 ms, ≤ 64 KiB per socket"
    return figures


# --- the report ----------------------------------------------------------------


def machine() -> dict[str, str]:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    packages = ("fastapi", "uvicorn", "sqlalchemy", "sqlmodel", "uvloop", "httptools")
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": f"{cpu}, {os.cpu_count()} cores",
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "wrk": subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout.split()[1],
        "commit": commit,
        **{name: version(name) for name in packages},
    }


def markdown(report: dict[str, Any]) -> str:
    about = report["machine"]
    lines = [
        f"Measured {about['date']} on {about['cpu']}, commit {about['commit']}: "
        f"Python {about['python']}, SQLite {about['sqlite']}, FastAPI {about['fastapi']}, "
        f"uvicorn {about['uvicorn']} (uvloop {about['uvloop']}; MessageApp on its h11 "
        f"protocol, the bare hello on httptools {about['httptools']}), "
        f"SQLAlchemy {about['sqlalchemy']}, wrk {about['wrk']}. "
        f"Server on CPU 0, wrk on CPU 1; {report['rounds']} rounds of {report['seconds']} s; "
        f"{report['messages']:,} messages in the channel, {report['users']:,} users.",
        "",
        "| scenario | conns | req/s | p50 ms | p99 ms | errors | ÷ hello (median of pairs)"
        " | target |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for s in report["scenarios"]:
        ratio = f"{s['ratio']:.3f}" if s["ratio"] is not None else ""
        lines.append(
            f"| {s['name']} | {s['connections']} | {s['rps']:,.0f} | {s['p50_ms']:.1f} | "
            f"{s['p99_ms']:.1f} | {s['errors']:.0f} | {ratio} | {s['target']} |"
        )
    fan = report["fanout"]
    lines += [
        "",
        f"- Bare hello: {report['hello_rps']:,.0f} req/s at 32 connections (median).",
        f"- Oldest page ÷ newest page, p50 latency: {report['oldest_vs_newest']:.2f} "
        "(target ≤ 1.2).",
        f"- Conversation list with the firehose all unread ÷ with nothing unread, p50 "
        f"latency: {report['unread_vs_none']:.2f} (target ≤ 1.5).",
        *(
            f"- {f['probe']} p99 (4 connections): {f['idle_p99_ms']:.1f} ms idle, "
            f"{f['busy_p99_ms']:.1f} ms during {f['flood']} (8 clients without pause): "
            f"× {f['ratio']:.2f} (target ≤ 2)."
            for f in report["password_floods"]
        ),
        f"- Metrics (METRICS_TOKEN set) on the newest history page: "
        f"{report['metrics']['with_rps']:,.0f} req/s with, {report['metrics']['without_rps']:,.0f} "
        f"without: they cost {report['metrics']['cost']:.1%} of throughput (median of "
        f"paired runs; target < 5%) and {report['metrics']['cpu_cost']:+.1%} of CPU time "
        "per request.",
        f"- WebSocket fan-out to {fan['sockets']:,} sockets, POST → arrival: "
        f"p50 {fan['p50_ms']:.0f} ms, p99 {fan['p99_ms']:.0f} ms, max {fan['max_ms']:.0f} ms; "
        f"{fan['kib_per_socket']:.1f} KiB per open socket (targets: p99 ≤ 100 ms, ≤ 64 KiB).",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--users", type=int, default=3_000)
    parser.add_argument("--conversations", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=5, help="per run (wrk takes whole seconds)")
    parser.add_argument("--sockets", type=int, default=1_000)
    parser.add_argument("--quick", action="store_true", help="a small, fast run to try it out")
    args = parser.parse_args()
    if args.quick:
        args.messages, args.users, args.conversations = 20_000, 200, 20
        args.rounds, args.seconds, args.sockets = 1, 2, 100
    if not shutil.which("wrk"):
        sys.exit("wrk is needed: apt-get install wrk")

    data_dir = Path(tempfile.mkdtemp(prefix="messageapp-bench-"))
    env = {"DATA_DIR": str(data_dir), "SECRET_KEY": secrets.token_urlsafe(48), **NO_LIMITS}
    os.environ.update(env)
    for name in ("DATABASE_URL", "REDIS_URL"):
        os.environ.pop(name, None)
    app, hello = "http://127.0.0.1:8710", "http://127.0.0.1:8711"
    # For what metrics cost: two more, on the same database, that serve
    # nothing else (the first one's floods leave it unlike a fresh process).
    measured, unmeasured = "http://127.0.0.1:8712", "http://127.0.0.1:8713"
    no_metrics = {**env, "METRICS_TOKEN": ""}
    with_metrics = {**env, "METRICS_TOKEN": secrets.token_urlsafe(32)}
    try:
        with (
            server("main:app", 8710, BENCH / "server.log", no_metrics),
            server("bench.hello:app", 8711, BENCH / "hello.log", {}, CEILING),
            server("main:app", 8712, BENCH / "server-metrics.log", with_metrics) as measured_pid,
            server("main:app", 8713, BENCH / "server-no-metrics.log", no_metrics) as unmeasured_pid,
        ):
            started = time.monotonic()
            print(f"seeding {args.messages:,} messages ...", flush=True)
            data = seed(
                app, data_dir / "messageapp.db", args.users, args.messages, args.conversations
            )
            print(f"  done in {time.monotonic() - started:.0f} s", flush=True)
            items = scenarios(data, args.messages)
            run_pairs(app, hello, items, args.rounds, args.seconds)
            hello_rps = statistics.median(
                measure(hello, Load("/hello", 32), args.seconds)["rps"] for _ in range(args.rounds)
            )
            floods = password_floods(app, data, args.rounds, args.seconds)
            # At least five pairs: the difference is small, and one pair is noise.
            cost = metrics_cost(
                (unmeasured, unmeasured_pid),
                (measured, measured_pid),
                items[0].load,
                max(args.rounds, 5),
                args.seconds,
            )
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)
    print("fan-out ...", flush=True)
    fan = fanout(args.sockets, 30 if not args.quick else 5)

    summaries = [s.summary() for s in items]
    report = {
        "machine": machine(),
        "rounds": args.rounds,
        "seconds": args.seconds,
        "messages": args.messages,
        "users": args.users,
        "hello_rps": hello_rps,
        "scenarios": summaries,
        "oldest_vs_newest": summaries[1]["p50_ms"] / summaries[0]["p50_ms"],
        "unread_vs_none": summaries[4]["p50_ms"] / summaries[5]["p50_ms"],
        "password_floods": floods,
        "metrics": cost,
        "fanout": fan,
    }
    table = markdown(report)
    suffix = "-quick" if args.quick else ""
    (BENCH / f"results{suffix}.json").write_text(json.dumps(report, indent=2) + "\n")
    (BENCH / f"results{suffix}.md").write_text(table)
    print()
    print(table)


if __name__ == "__main__":
    main()
