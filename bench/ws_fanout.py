"""WebSocket fan-out: one POST, 1,000 open sockets in one channel.

Prints how long a message takes from the start of its POST to its arrival on
every socket (p50, p99, max over all deliveries, and the median time until the
last socket has it), and the server's memory per open socket (RSS growth /
sockets).

    .venv/bin/python bench/ws_fanout.py [--sockets 1000] [--messages 30]

The server is a real uvicorn process on a fresh DATA_DIR, pinned to CPU 0 when
`taskset` exists; this client runs on CPU 1. Users and memberships are written
straight into SQLite (signing up 1,000 users through argon2 would take minutes),
and their tokens are signed with the server's key, as /token would.

The client must cost less per socket than the server, or it measures itself:
with the `websockets` client reading every frame (a task per socket, JSON
parsing), this process was busy 91% of the fan-out and added about half of
the measured delay at 10,000 sockets. So sockets are opened and
authenticated with `websockets`, then their transports are handed to
`Arrivals`, which notes the time each frame's bytes arrive and looks for the
message's text in them, on uvloop.
"""

import argparse
import asyncio
import gc
import json
import os
import resource
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# Offer per-message-deflate, as browsers do; the server's flags decide.
COMPRESSION = "deflate"
DATA_DIR = Path(tempfile.mkdtemp(prefix="messageapp-bench-"))
# Settings are read at import, so the key and folder must be set before.
os.environ.update(DATA_DIR=str(DATA_DIR), SECRET_KEY=secrets.token_urlsafe(48))
# The per-user limits, raised: the fan-out opens many sockets per user.
os.environ.update(SEND_MAX_PER_MINUTE="1000000000", WS_MAX_PER_USER="1000000000")
os.environ.pop("DATABASE_URL", None)
os.environ.pop("REDIS_URL", None)

import httpx2 as httpx  # noqa: E402
import uvloop  # noqa: E402
from sqlalchemy import text  # noqa: E402
from websockets.asyncio.client import ClientConnection, connect  # noqa: E402

import auth  # noqa: E402
import db  # noqa: E402
from config import settings  # noqa: E402
from models import User  # noqa: E402
from serve import FLAGS  # noqa: E402  (the flags of `make run` and the image)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pinned(cpu: int) -> list[str]:
    two_cpus = (os.cpu_count() or 1) > 1
    return ["taskset", "-c", str(cpu)] if shutil.which("taskset") and two_cpus else []


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def start_server(port: int, flags: list[str], log: Path | None) -> subprocess.Popen[bytes]:
    output = log.open("wb") if log else subprocess.DEVNULL
    server = subprocess.Popen(
        [*pinned(0), sys.executable, "-m", "uvicorn", "main:app", "--port", str(port), *flags],
        cwd=ROOT,
        stdout=output,
        stderr=subprocess.STDOUT,
    )
    for _ in range(200):
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200:
                return server
        except httpx.TransportError:
            time.sleep(0.05)
    raise RuntimeError("the server did not start")


def add_users(count: int) -> list[str]:
    """`count` users, all members of #general; a token for each."""
    engine = db.create_db_engine(settings.DATABASE_URL)
    with engine.begin() as connection:
        general = connection.execute(
            text("SELECT id FROM conversation WHERE channel_key = 'general'")
        ).scalar_one()
        connection.execute(
            text(
                "INSERT INTO user (username, hashed_password, role, token_version, created_at)"
                " VALUES (:name, '-', 'member', 0, CURRENT_TIMESTAMP)"
            ),
            [{"name": f"user{i:05d}"} for i in range(count)],
        )
        ids = [row[0] for row in connection.execute(text("SELECT id FROM user ORDER BY id"))]
        connection.execute(
            text(
                "INSERT INTO membership (conversation_id, user_id, joined_at, last_read_message_id)"
                " VALUES (:c, :u, CURRENT_TIMESTAMP, 0)"
            ),
            [{"c": general, "u": user_id} for user_id in ids],
        )
    engine.dispose()
    return [auth.create_access_token(User(id=i, username="-", hashed_password="-")) for i in ids]


class Fanout:
    """The message being waited for: when each socket got it."""

    def __init__(self) -> None:
        self.marker = b""  # the message's content, as it appears in its event's JSON
        self.arrivals: list[float] = []
        self.missing = 0
        self.closed = 0  # sockets the server closed
        self.done: asyncio.Future[None] | None = None

    def expect(self, content: str, sockets: int) -> asyncio.Future[None]:
        self.marker = json.dumps(content).encode()
        self.arrivals, self.missing = [], sockets
        self.done = asyncio.get_running_loop().create_future()
        return self.done

    def arrived(self, payload: bytes, at: float) -> None:
        if self.missing and self.marker in payload:
            self.arrivals.append(at)
            self.missing -= 1
            if not self.missing and self.done is not None:
                self.done.set_result(None)


class Arrivals(asyncio.Protocol):
    """An open socket's frames, read as bytes: the time they arrive is noted
    before anything else is done with them. Server frames are not masked
    (RFC 6455, 5.1); pings get their pong, so the server keeps the socket."""

    def __init__(self, transport: asyncio.Transport, fanout: Fanout) -> None:
        self.transport = transport
        self.fanout = fanout
        self.buffer = b""

    def data_received(self, data: bytes) -> None:
        at = time.monotonic()
        self.buffer += data
        while len(self.buffer) >= 2:
            opcode, length = self.buffer[0] & 0x0F, self.buffer[1] & 0x7F
            start = 2
            if length == 126:
                start, length = 4, int.from_bytes(self.buffer[2:4], "big")
            elif length == 127:
                start, length = 10, int.from_bytes(self.buffer[2:10], "big")
            if len(self.buffer) < start + length:
                return  # the rest of the frame is on its way
            payload = self.buffer[start : start + length]
            self.buffer = self.buffer[start + length :]
            if opcode == 0x1:  # text
                self.fanout.arrived(payload, at)
            elif opcode == 0x9:  # ping
                # A pong with the same payload, masked with a key of zeros.
                pong = bytes([0x8A, 0x80 | len(payload)]) + bytes(4) + payload
                self.transport.write(pong)

    def connection_lost(self, exc: Exception | None) -> None:
        self.fanout.closed += 1


async def open_socket(url: str, token: str) -> ClientConnection:
    ws = await connect(url, max_queue=None, compression=COMPRESSION, ping_interval=None)
    await ws.send(json.dumps({"type": "auth", "token": token}))
    assert json.loads(await ws.recv())["type"] == "ready"
    return ws


async def run(
    sockets: int, messages: int, flags: list[str], log: Path | None = None
) -> dict[str, float]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, 4 * sockets + 256)), hard))
    port = free_port()
    server = start_server(port, flags, log)
    try:
        tokens = add_users(sockets)
        base = f"http://127.0.0.1:{port}"
        async with httpx.AsyncClient(base_url=base) as http:
            general = (await http.get("/channels", headers=bearer(tokens[0]))).json()[0]["id"]
            await asyncio.sleep(1)
            before = rss_kib(server.pid)
            open_started = time.monotonic()
            clients: list[ClientConnection] = []
            for start in range(0, sockets, 100):  # 100 handshakes at a time
                batch = tokens[start : start + 100]
                url = f"ws://127.0.0.1:{port}/ws"
                clients += await asyncio.gather(*(open_socket(url, t) for t in batch))
            open_seconds = time.monotonic() - open_started
            fanout = Fanout()
            for ws in clients:  # from now on, frames go to Arrivals
                ws.transport.set_protocol(Arrivals(ws.transport, fanout))
            await asyncio.sleep(1)
            after = rss_kib(server.pid)

            latencies: list[float] = []
            last_arrivals: list[float] = []
            # This client's own garbage collection, sweeping 1,000 sockets,
            # would add 100 ms pauses that the server is not to blame for.
            gc.collect()
            gc.disable()
            for n in range(messages):
                content = f"fan-out {n}"
                done = fanout.expect(content, len(clients))
                started = time.monotonic()
                response = await http.post(
                    f"/conversations/{general}/messages",
                    json={"content": content},
                    headers=bearer(tokens[0]),
                )
                assert response.status_code == 201, response.text
                try:
                    await asyncio.wait_for(asyncio.shield(done), 60)
                except TimeoutError:
                    raise RuntimeError(
                        f"{fanout.missing} sockets never got message {n}; "
                        f"the server closed {fanout.closed}"
                    ) from None
                delays = [t - started for t in fanout.arrivals]
                latencies += delays
                last_arrivals.append(max(delays))
                await asyncio.sleep(0.2)
            gc.enable()
            for ws in clients:
                ws.transport.close()
    finally:
        server.terminate()
        server.wait()
        shutil.rmtree(DATA_DIR, ignore_errors=True)

    latencies.sort()
    ms = 1000
    figures = {
        "sockets": sockets,
        "messages": messages,
        "open_seconds": open_seconds,
        "p50_ms": latencies[len(latencies) // 2] * ms,
        "p99_ms": latencies[int(len(latencies) * 0.99)] * ms,
        "max_ms": latencies[-1] * ms,
        "last_socket_median_ms": statistics.median(last_arrivals) * ms,
        "rss_before_mib": before / 1024,
        "rss_after_mib": after / 1024,
        "kib_per_socket": (after - before) / sockets,
    }
    print(f"sockets: {sockets}, messages: {messages} ({len(latencies)} deliveries)")
    print(f"opening {sockets} sockets (auth included): {open_seconds:.2f} s")
    print(
        f"POST start -> arrival: p50 {figures['p50_ms']:.1f} ms, "
        f"p99 {figures['p99_ms']:.1f} ms, max {figures['max_ms']:.1f} ms"
    )
    print(f"until the last socket has it: median {figures['last_socket_median_ms']:.1f} ms")
    print("  per message, ms:", " ".join(f"{t * ms:.0f}" for t in last_arrivals))
    print(
        f"server RSS: {figures['rss_before_mib']:.1f} MiB -> {figures['rss_after_mib']:.1f} MiB, "
        f"{figures['kib_per_socket']:.1f} KiB per socket"
    )
    return figures


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sockets", type=int, default=1000)
    parser.add_argument("--messages", type=int, default=30)
    parser.add_argument(
        "--deflate",
        action="store_true",
        help="let uvicorn compress frames (its default; off in make run and the image)",
    )
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    parser.add_argument("--server-log", type=Path, help="write the server's output to this file")
    args = parser.parse_args()
    flags = list(FLAGS)
    if args.deflate:  # uvicorn's default: drop the option that turns it off, and its value
        at = flags.index("--ws-per-message-deflate")
        del flags[at : at + 2]
    if pinned(1):
        os.sched_setaffinity(0, {1})
    figures = uvloop.run(run(args.sockets, args.messages, flags, args.server_log))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
