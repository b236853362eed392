"""How MessageApp is served: uvicorn, with the flags it always needs.

    python -m serve [uvicorn options]    # e.g. --host 0.0.0.0 --port 8000 --workers 2

`make run`, `make demo`, the Docker image and the tests all start the app
this way, so these flags are written once, here. Anything after `serve` is
passed on to uvicorn (its options, and its environment variables such as
WEB_CONCURRENCY and FORWARDED_ALLOW_IPS, work as usual).
"""

import asyncio
import sys
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


def main(argv: list[str] | None = None) -> None:
    uvicorn.main.main(["main:app", *FLAGS, *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    main()
