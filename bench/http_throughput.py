"""HTTP throughput on PostgreSQL: uvicorn with 1 worker, then with 2.

For each worker count, a fresh database and a real uvicorn process (the
flags of the Docker image), then `wrk` (apt-get install wrk) for a fixed time
against two routes, each with a bearer token:

- GET  /conversations/1/messages   a page of history (the newest 50 messages)
- POST /conversations/1/messages   a new message (a write, and its event)

and prints requests per second, p50 and p99 latency for each.

    .venv/bin/python bench/http_throughput.py [--url postgresql+psycopg://postgres@127.0.0.1:5432/test]
        [--seconds 10] [--connections 32] [--workers 1 2]

The database named in --url is only used to create (and afterwards drop) a
database of the benchmark's own. With REDIS_URL set, the server publishes
its events there, as a deployment of several workers does.
"""

import argparse
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import httpx2 as httpx
from sqlalchemy import create_engine, make_url

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.server import Server  # noqa: E402  (a real uvicorn process, as the tests start)

# Server starts `python -m serve`, which adds the flags every start shares; the
# Docker image adds this one.
UVICORN_FLAGS = ["--proxy-headers"]
PASSWORD = "correct horse battery staple"
HISTORY_MESSAGES = 200

POST_SCRIPT = """
wrk.method = "POST"
wrk.body = '{"content": "benchmark message"}'
wrk.headers["Content-Type"] = "application/json"
"""


def on_server(url: str, statement: str) -> None:
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.exec_driver_sql(statement)
    admin.dispose()


def token_for(base: str) -> str:
    with httpx.Client(base_url=base) as http:
        http.post("/users", json={"username": "bench", "password": PASSWORD})
        response = http.post("/token", data={"username": "bench", "password": PASSWORD})
        token = response.json()["access_token"]
        for i in range(HISTORY_MESSAGES):
            http.post(
                "/conversations/1/messages",
                json={"content": f"history {i}"},
                headers={"Authorization": f"Bearer {token}"},
            )
    return str(token)


def to_ms(value: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", value).groups()  # type: ignore[union-attr]
    return float(number) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def run_wrk(url: str, token: str, seconds: int, connections: int, script: Path | None) -> str:
    command = [
        "wrk",
        "-t2",
        f"-c{connections}",
        f"-d{seconds}s",
        "--latency",
        "-H",
        f"Authorization: Bearer {token}",
        url,
    ]
    if script is not None:
        command[1:1] = ["-s", str(script)]
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))  # type: ignore[union-attr]
    p50 = to_ms(re.search(r"\s50%\s+(\S+)", output).group(1))  # type: ignore[union-attr]
    p99 = to_ms(re.search(r"\s99%\s+(\S+)", output).group(1))  # type: ignore[union-attr]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    note = f"  ({errors.group(1)} non-2xx!)" if errors else ""
    return f"{rps:9.0f} req/s   p50 {p50:7.1f} ms   p99 {p99:7.1f} ms{note}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="postgresql+psycopg://postgres@127.0.0.1:5432/test")
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed: apt-get install wrk")

    script = Path(tempfile.mkdtemp(prefix="messageapp-bench-")) / "post.lua"
    script.write_text(POST_SCRIPT)
    print(
        f"{os.cpu_count()} CPUs; wrk: 2 threads, {args.connections} connections, "
        f"{args.seconds} s per run"
    )
    for workers in args.workers:
        name = f"messageapp_bench_{uuid.uuid4().hex[:12]}"
        on_server(args.url, f'CREATE DATABASE "{name}"')
        database_url = make_url(args.url).set(database=name).render_as_string(hide_password=False)
        (script.parent / name).mkdir()
        server = Server(
            script.parent / name / "data",
            "--workers",
            str(workers),
            *UVICORN_FLAGS,
            DATABASE_URL=database_url,
            SECRET_KEY=secrets.token_urlsafe(48),
            REDIS_CHANNEL=f"messageapp-bench:{uuid.uuid4().hex}",
            SEND_MAX_PER_MINUTE="1000000000",  # one user posts thousands a minute here
        )
        try:
            server.start()
            base = server.url
            token = token_for(base)
            url = f"{base}/conversations/1/messages"
            print(f"--- {workers} worker(s), PostgreSQL")
            for label, lua in (("GET  history (50 messages)", None), ("POST a message", script)):
                result = run_wrk(url, token, args.seconds, args.connections, lua)
                print(f"{label:27}{result}")
        finally:
            server.kill()
            on_server(args.url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    main()
