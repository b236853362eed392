"""CPU per GET /conversations?limit=50 on the bench's data, to compare two versions.

    .venv/bin/python bench/list_cpu.py build DIR [--messages 1000000]
    .venv/bin/python bench/list_cpu.py measure DIR [--requests 300] [--profile]
    .venv/bin/python bench/list_cpu.py servers CHECKOUT DIR [CHECKOUT DIR ...] [--rounds 3]

`build` seeds DIR/messageapp.db as `make bench` does (bench/run.py's `seed`:
bench in 300 conversations, groups of five, one channel with the firehose),
through a server of this script's checkout. Copy DIR once per version: a
newer version migrates its copy at start.

`measure` runs the code of the current directory's checkout in this process
(the app through Starlette's TestClient) and prints the CPU time
(time.process_time: every thread of the process) per request: the whole
request, client included, then only the page (pages.list_conversations and
conversation_page in one session); `--profile` adds cProfile's view of the page.

`servers` serves each checkout on its copy as `make run` does, and bench/hello.py
as the bench does, all on CPU 0, and asks each in turn (hello first) for the
list with wrk on CPU 1 and 32 connections, as the bench's scenario does; it
prints req/s and the server's CPU per request, read from /proc.

CPU per request rather than requests per second: it does not count the time
other processes take the machine's cores (both still vary with the load).
"""

import argparse
import logging
import os
import secrets
import statistics
import subprocess
import sys
import time
from pathlib import Path

# The code measured is the checkout it runs from; bench/run.py, this one's.
ROOT = Path.cwd()
sys.path.insert(0, str(ROOT))
sys.path.append(str(Path(__file__).resolve().parent))
# bench/run.py's PASSWORD: importing run here would put this checkout first on sys.path.
BENCH_PASSWORD = "bench-password-1"


def build(directory: Path, messages: int) -> None:
    import run

    directory.mkdir(parents=True, exist_ok=True)
    env = {"DATA_DIR": str(directory), "SECRET_KEY": secrets.token_urlsafe(48), **run.NO_LIMITS}
    os.environ.update(env)
    os.environ.pop("DATABASE_URL", None)
    with run.server("main:app", 8720, directory / "server.log", env):
        started = time.monotonic()
        run.seed("http://127.0.0.1:8720", directory / "messageapp.db", 3_000, messages, 300)
        print(f"seeded in {time.monotonic() - started:.0f} s")


def measure(directory: Path, requests: int, rounds: int, profile: bool) -> None:
    os.environ.update({"DATA_DIR": str(directory), "SECRET_KEY": "list-cpu-" + "k" * 40})
    os.environ.pop("DATABASE_URL", None)
    from fastapi.testclient import TestClient
    from sqlmodel import Session, select

    import db
    import pages
    from main import app
    from models import User

    logging.getLogger("httpx2").setLevel(logging.WARNING)  # a line per request otherwise
    with TestClient(app) as client:
        response = client.post("/token", data={"username": "bench", "password": BENCH_PASSWORD})
        headers = {"Authorization": f"Bearer {response.json()['access_token']}"}
        listed = client.get("/conversations", params={"limit": 50}, headers=headers).json()
        print(f"{ROOT}: {len(listed)} conversations, first {[c['id'] for c in listed[:5]]}")
        with Session(db.engine) as session:
            bench = session.exec(select(User).where(User.username == "bench")).one()
            session.expunge(bench)

        def whole() -> None:
            client.get("/conversations", params={"limit": 50}, headers=headers)

        def page() -> None:
            with Session(db.engine) as session:
                rows = pages.list_conversations(session, bench, 50, 0)
                pages.conversation_page(session, rows, bench)

        for name, one in (("request", whole), ("page", page)):
            for _ in range(20):
                one()
            per_round = []
            for _ in range(rounds):
                started = time.process_time()
                for _ in range(requests):
                    one()
                per_round.append((time.process_time() - started) / requests * 1000)
            print(
                f"  {name}: {statistics.median(per_round):.2f} ms CPU"
                f" (rounds: {', '.join(f'{r:.2f}' for r in per_round)})"
            )
        if profile:
            import cProfile
            import pstats

            with cProfile.Profile() as profiler:
                for _ in range(requests):
                    page()
            pstats.Stats(profiler).sort_stats("tottime").print_stats(25)


def cpu_seconds(pid: int) -> float:
    """The process's user + system CPU time so far, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def servers(pairs: list[tuple[Path, Path]], rounds: int, seconds: int) -> None:
    """Each (checkout, data directory) served as `make run` serves it, and
    bench/hello.py as the bench runs it, all pinned to CPU 0 (one at a time
    under load); wrk on CPU 1 asks the list of 50 with 32 connections, as the
    bench's scenario does, in turns: hello, then each checkout, `rounds` times.
    Prints req/s and the server's CPU per request (from /proc)."""
    import httpx2 as httpx
    import run

    from serve import FLAGS

    hello: tuple[str, Path, str, list[str], dict[str, str]] = (
        "hello",
        ROOT,
        "bench.hello:app",
        run.CEILING,
        {},
    )
    apps = [
        (
            str(tree),
            tree,
            "main:app",
            FLAGS,
            {"DATA_DIR": str(directory.resolve()), "SECRET_KEY": "list-cpu-" + "k" * 40},
        )
        for tree, directory in pairs
    ]
    started: list[tuple[str, str, int, str]] = []  # name, base, pid, token
    processes = []
    try:
        for port, (name, tree, app, flags, env) in enumerate([hello, *apps], start=8730):
            process = subprocess.Popen(
                [*run.pinned(0), sys.executable, "-m", "uvicorn", app, "--port", str(port), *flags],
                cwd=tree,
                env={**os.environ, **env, "PYTHONDONTWRITEBYTECODE": "1"},
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            processes.append(process)
            base = f"http://127.0.0.1:{port}"
            health = "/hello" if app == "bench.hello:app" else "/healthz"
            for _ in range(600):
                try:
                    if httpx.get(base + health).status_code == 200:
                        break
                except httpx.TransportError:
                    time.sleep(0.1)
            token = (
                "" if app == "bench.hello:app" else run.login(httpx.Client(base_url=base), "bench")
            )
            started.append((name, base, process.pid, token))
        results: dict[str, list[tuple[float, float]]] = {name: [] for name, *_ in started}
        for _ in range(rounds):
            for name, base, pid, token in started:
                path = "/hello" if not token else "/conversations?limit=50"
                load = run.Load(path, 32, token=token)
                before = cpu_seconds(pid)
                figures = run.measure(base, load, seconds)
                used = cpu_seconds(pid) - before
                results[name].append((figures["rps"], used / figures["requests"] * 1000))
        for name, runs in results.items():
            rps = statistics.median(r for r, _ in runs)
            cpu = statistics.median(c for _, c in runs)
            print(f"{name}: {rps:.0f} req/s, {cpu:.2f} ms CPU per request; runs {runs}")
    finally:
        for process in processes:
            process.terminate()
            process.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=["build", "measure", "servers"])
    parser.add_argument("directory", type=Path, nargs="+", help="servers: CHECKOUT DATA_DIR ...")
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    if args.command == "build":
        build(args.directory[0].resolve(), args.messages)
    elif args.command == "measure":
        measure(args.directory[0].resolve(), args.requests, args.rounds, args.profile)
    else:
        trees = [tree.resolve() for tree in args.directory[::2]]
        servers(list(zip(trees, args.directory[1::2], strict=True)), args.rounds, args.seconds)


if __name__ == "__main__":
    main()
