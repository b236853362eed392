"""How MessageApp is served: uvicorn, with the flags it always needs.

    python -m serve [uvicorn options]    # e.g. --host 0.0.0.0 --port 8000 --workers 2

`make run`, `make demo`, the Docker image and the tests all start the app
this way, so these flags are written once, here. Anything after `serve` is
passed on to uvicorn (its options, and its environment variables such as
WEB_CONCURRENCY and FORWARDED_ALLOW_IPS, work as usual).
"""

import asyncio
import os
import shutil
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import uvicorn.main
from uvicorn.protocols.http.h11_impl import H11Protocol

from config import settings

FLAGS = [
    # h11, with a deadline for the request head (TimedH11Protocol, below);
    # h11 also bounds the head's size, unlike httptools.
    "--http", "serve:TimedH11Protocol",
    "--h11-max-incomplete-event-size", "16384",
    # A WebSocket frame over 64 KiB is refused before it is read.
    "--ws-max-size", "65536",
    # Compressing every event once per socket costs memory per socket and
    # fan-out time, to save bytes on small frames (docs/performance.md).
    "--ws-per-message-deflate", "false",
]  # fmt: skip


class TimedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol, with a deadline for the request line and headers.

    uvicorn closes an idle keep-alive connection, but waits forever for a
    client that connects and sends nothing, or a header a byte at a time
    (slow loris). Here the request head must be complete within
    REQUEST_HEAD_TIMEOUT_SECONDS of the connection opening, or of the
    previous response; otherwise the connection is closed. h11 itself bounds
    the head's size (`--h11-max-incomplete-event-size`, 16 KiB by default).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.head_timer: asyncio.TimerHandle | None = None
        self.head_cycle: object = None

    def await_head(self) -> None:
        self.head_cycle = self.cycle  # a new cycle means a request head has arrived
        self.head_timer = self.loop.call_later(
            settings.REQUEST_HEAD_TIMEOUT_SECONDS, self.head_timeout
        )

    def cancel_head_timer(self) -> None:
        if self.head_timer is not None:
            self.head_timer.cancel()
            self.head_timer = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.await_head()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        # A request began, or the connection became a WebSocket (the
        # transport then belongs to the WebSocket protocol).
        if self.cycle is not self.head_cycle or self.transport.get_protocol() is not self:
            self.cancel_head_timer()

    def on_response_complete(self) -> None:
        previous = self.cycle
        super().on_response_complete()
        # No pipelined request started in the meantime: wait for the next head.
        if self.cycle is previous and not self.transport.is_closing():
            self.cancel_head_timer()
            self.await_head()

    def connection_lost(self, exc: Exception | None) -> None:
        self.cancel_head_timer()
        super().connection_lost(exc)

    def head_timeout(self) -> None:
        self.head_timer = None
        if not self.transport.is_closing() and self.transport.get_protocol() is self:
            self.transport.close()


# --- Metrics from several workers ---------------------------------------------

METRICS_FOLDER = "metrics"  # in DATA_DIR: a folder per running server, named by its pid


def worker_count(args: list[str]) -> int:
    """How many worker processes uvicorn will start, read as uvicorn reads it:
    --workers, else WEB_CONCURRENCY, else 1."""
    command = uvicorn.main  # the click command behind uvicorn's command line
    params = command.make_context("serve", ["main:app", *args], resilient_parsing=True).params
    if params.get("workers") is not None:
        return int(params["workers"])
    value = os.environ.get("WEB_CONCURRENCY", "1")
    return int(value) if value.isdigit() else 1  # uvicorn says what is wrong with it


@contextmanager
def metrics_across_workers(args: list[str]) -> Iterator[None]:
    """With METRICS_TOKEN set and several workers, an empty private folder for
    prometheus-client's multiprocess mode, for as long as the server runs.

    Each worker keeps its values in files there, and a scrape adds them all
    up (metrics.py). The variable must be set before a worker imports
    prometheus_client; uvicorn starts its workers as new processes, which
    inherit it from here. One worker needs none of this: its values stay in
    its memory. An operator who sets PROMETHEUS_MULTIPROC_DIR keeps it.
    """
    if (
        not settings.METRICS_TOKEN
        or "PROMETHEUS_MULTIPROC_DIR" in os.environ
        or worker_count(args) < 2
    ):
        yield
        return
    folder = fresh_metrics_folder(settings.DATA_DIR / METRICS_FOLDER)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(folder)
    try:
        yield
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def fresh_metrics_folder(parent: Path) -> Path:
    """An empty folder of this process's own under `parent`. A server that was
    killed (SIGKILL) left its folder behind: folders of processes that are
    gone go first. In a container, the server is always pid 1, so a folder
    named after our own pid is a previous run's too."""
    parent.mkdir(mode=0o700, exist_ok=True)
    for old in parent.iterdir():
        if not old.name.isdigit() or int(old.name) == os.getpid() or not alive(int(old.name)):
            shutil.rmtree(old, ignore_errors=True)
    folder = parent / str(os.getpid())
    folder.mkdir(mode=0o700)
    return folder


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: only checks that the process is there
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    with metrics_across_workers(args):
        uvicorn.main.main(["main:app", *FLAGS, *args])


if __name__ == "__main__":
    main()
