"""What the service measures, and `GET /metrics`, where Prometheus reads it.

The instruments are prometheus-client's, made once here and recorded into by
the modules that see each thing happen: requests (the middleware below), the
database's turns (db.py), sockets and events (hub.py), logins and limits
(auth.py and the routes). Every label takes a value from a fixed set (a
route's template, never its path; a limit's name, never a username), so the
number of series stays bounded whatever clients send.

Nothing is read unless METRICS_TOKEN is set: then main.py adds the
middleware, and `GET /metrics` answers a scraper that sends the token.

Several uvicorn workers each count their own requests. When serve.py starts
more than one, it gives them a folder in PROMETHEUS_MULTIPROC_DIR before they
start, where prometheus-client keeps every value in a file per process; a
scrape, whichever worker answers it, adds them all up (its multiprocess
mode). This module imports nothing of the app but config, so that every
module may record into it.
"""

import glob
import os
import re
import secrets
import time
from typing import Annotated, Literal, get_args

from fastapi import APIRouter, Depends, Header, HTTPException, Response, status
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from config import settings

# Set (by serve.py, or by the operator) before prometheus_client was first
# imported: then every value lives in a file there, one per process.
MULTIPROCESS_DIR = os.environ.get("PROMETHEUS_MULTIPROC_DIR", "")

# --- The instruments ---------------------------------------------------------

# A `_created` timestamp beside every counter would double the series for
# nothing Prometheus's rate() needs.
disable_created_metrics()  # type: ignore[no-untyped-call]  # (the library has no hint there)

# Seconds. Most requests take a few milliseconds; a login's hash takes a
# few hundred; past 10 s something is wrong, whatever it is.
REQUEST_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
WAIT_BUCKETS = (0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 2.5, 5)

REQUESTS = Counter(
    "messageapp_http_requests",
    "HTTP requests answered, by route template, method and status",
    ["route", "method", "status"],
)
REQUEST_SECONDS = Histogram(
    "messageapp_http_request_duration_seconds",
    "Time from a request's arrival to the end of its answer, by route template and method",
    ["route", "method"],
    buckets=REQUEST_BUCKETS,
)
SOCKETS_OPEN = Gauge(
    "messageapp_websockets_open",
    "Authenticated WebSockets open now",
    multiprocess_mode="livesum",  # the workers' sockets, added up; a dead worker's are gone
)
EVENTS_DELIVERED = Counter(
    "messageapp_events_delivered",
    "Live events queued on a socket (an event sent to three sockets counts three)",
)
DropReason = Literal["hub_queue_full", "redis_queue_full", "redis_unavailable", "socket_behind"]
EVENTS_DROPPED = Counter(
    "messageapp_events_dropped",
    "Live events that some socket will not get: the hub's or Redis's queue was full, "
    "Redis did not take it, or a socket fell too far behind (it is closed)",
    ["reason"],
)
EVENT_DELAY_SECONDS = Histogram(
    "messageapp_event_delivery_delay_seconds",
    "Time from a route publishing an event to its being queued on the sockets "
    "(wall clock: across replicas it includes their clocks' difference)",
    buckets=WAIT_BUCKETS,
)
LOGIN_FAILURES = Counter(
    "messageapp_login_failures",
    "Logins refused for a wrong username or password",
)
Limit = Literal["login_username", "login_address", "signup_address", "send", "sockets_per_user"]
LIMITED = Counter(
    "messageapp_rate_limited",
    "Requests refused by a limit: 429 answers, and sockets closed for WS_MAX_PER_USER",
    ["limit"],
)
Turn = Literal["connection", "writer"]
DB_WAIT_SECONDS = Histogram(
    "messageapp_db_wait_seconds",
    "Time a request waited for a database connection, or for SQLite's writer's turn",
    ["turn"],
    buckets=WAIT_BUCKETS,
)
UploadOutcome = Literal["stored", "too_large", "over_quota", "bad_image", "refused"]
ATTACHMENT_UPLOADS_BY_OUTCOME = Counter(
    "messageapp_attachment_uploads",
    "Attachment uploads, by outcome: stored, too_large (ATTACHMENT_MAX_BYTES), over_quota, "
    "bad_image (broken, or over ATTACHMENT_MAX_PIXELS), refused (no file, not multipart...)",
    ["outcome"],
)
ATTACHMENT_BYTES = Counter(
    "messageapp_attachment_stored_bytes",
    "Bytes of attachments stored (files and thumbnails)",
)
PushOutcome = Literal["sent", "gone", "failed", "refused", "skipped", "dropped"]
PUSHES_BY_OUTCOME = Counter(
    "messageapp_pushes",
    "Web Push notifications, by outcome: sent (the push service took it), gone (it "
    "answered 404 or 410: the subscription was removed), failed (another answer, a "
    "timeout, no connection), refused (the endpoint no longer resolves to public "
    "addresses), skipped (the message was deleted, or the user left or read it, "
    "before it went out), dropped (the queue was full)",
    ["outcome"],
)

# Every label value exists from the start, at zero, so that a rate over them
# is 0 rather than missing until the first one happens.
for _reason in get_args(DropReason):
    EVENTS_DROPPED.labels(_reason)
for _limit in get_args(Limit):
    LIMITED.labels(_limit)
ATTACHMENT_UPLOADS = {
    outcome: ATTACHMENT_UPLOADS_BY_OUTCOME.labels(outcome) for outcome in get_args(UploadOutcome)
}
PUSHES = {outcome: PUSHES_BY_OUTCOME.labels(outcome) for outcome in get_args(PushOutcome)}
# Looked up once: every request records one or two waits.
DB_WAITS = {turn: DB_WAIT_SECONDS.labels(turn) for turn in get_args(Turn)}


# --- Requests ----------------------------------------------------------------

UNMATCHED = "<unmatched>"  # a 404 no route took
STATIC = "<static>"  # a file: the web client, the docs' scripts, /openapi.json
UNROUTED = "<unrouted>"  # answered before routing: a CORS preflight, a body refused by its length
METHODS = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"}


def route_label(scope: Scope, status_code: int) -> str:
    """The request's route template (`/messages/{message_id}`), or one of three
    fixed names when no route of the API answered it."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    if isinstance(path, str):
        return path
    if status_code == status.HTTP_404_NOT_FOUND:
        return UNMATCHED
    return STATIC if scope.get("method") in ("GET", "HEAD") else UNROUTED


def method_label(scope: Scope) -> str:
    # uvicorn accepts any method name a client makes up.
    method: str = scope["method"]
    return method if method in METHODS else "other"


class MetricsMiddleware:
    """Count and time every HTTP request by route template, method and status.

    The route is known only once the router has run (it leaves it in the
    scope), so the labels are picked after the answer has gone.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        # The labelled instruments, looked up once per label set: the lookup
        # takes a lock, and this runs on every request.
        self.counters: dict[tuple[str, str, int], Counter] = {}
        self.timers: dict[tuple[str, str], Histogram] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status_code = status.HTTP_500_INTERNAL_SERVER_ERROR  # unless an answer starts

        async def send_and_note(message: Message) -> None:
            nonlocal status_code
            if message["type"] == "http.response.start":
                status_code = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            self.record(scope, status_code, time.perf_counter() - started)

    def record(self, scope: Scope, status_code: int, seconds: float) -> None:
        route, method = route_label(scope, status_code), method_label(scope)
        counter = self.counters.get((route, method, status_code))
        if counter is None:
            counter = REQUESTS.labels(route, method, str(status_code))
            self.counters[route, method, status_code] = counter
        counter.inc()
        timer = self.timers.get((route, method))
        if timer is None:
            timer = self.timers[route, method] = REQUEST_SECONDS.labels(route, method)
        timer.observe(seconds)


# --- GET /metrics ------------------------------------------------------------

NOT_FOUND = HTTPException(status.HTTP_404_NOT_FOUND, detail="Not Found")


def require_metrics_token(authorization: Annotated[str, Header()] = "") -> None:
    """Let through only a scraper that sends `Authorization: Bearer METRICS_TOKEN`;
    without METRICS_TOKEN, the route is as absent as any unknown path."""
    if not settings.METRICS_TOKEN:
        raise NOT_FOUND
    scheme, _, token = authorization.partition(" ")
    # compare_digest takes as long for a near miss as for a wild guess.
    if scheme.lower() != "bearer" or not secrets.compare_digest(
        token.encode(), settings.METRICS_TOKEN.encode()
    ):
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            detail="Send the METRICS_TOKEN as a bearer token",
            headers={"WWW-Authenticate": "Bearer"},
        )


router = APIRouter(tags=["operations"])


# Not in /openapi.json: Prometheus reads it, not API clients, and it takes
# its own token rather than a user's (docs/deploy.md, "Metrics").
@router.get("/metrics", include_in_schema=False, dependencies=[Depends(require_metrics_token)])
def read_metrics() -> Response:
    """The service's metrics in Prometheus's text format, for a scraper that
    sends METRICS_TOKEN as a bearer token."""
    return Response(exposition(), media_type=CONTENT_TYPE_LATEST)


def exposition() -> bytes:
    """Every metric of this process, or of every worker in multiprocess mode."""
    if not MULTIPROCESS_DIR:
        return generate_latest(REGISTRY)
    forget_dead_workers(MULTIPROCESS_DIR)
    registry = CollectorRegistry()  # made per scrape, as prometheus-client advises
    MultiProcessCollector(registry, path=MULTIPROCESS_DIR)  # type: ignore[no-untyped-call]
    return generate_latest(registry)


def forget_dead_workers(folder: str) -> None:
    """Drop the open-socket gauges of workers that are gone.

    uvicorn restarts a worker that died, but tells nobody, so the files of
    the dead one would keep counting its sockets as open. Its counters stay:
    they only ever go up, and the sum over every file keeps doing so.
    """
    for path in glob.glob(os.path.join(folder, "gauge_live*_*.db")):
        pid = re.search(r"_(\d+)\.db$", path)
        if pid is not None and not running(int(pid.group(1))):
            mark_process_dead(int(pid.group(1)), folder)  # type: ignore[no-untyped-call]


def running(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: only checks the process is there
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process has that number now
    return True
