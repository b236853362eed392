"""How the service logs: one handler for the app's lines and uvicorn's, as
text (the default) or one JSON object per line (LOG_FORMAT=json), and a
request id on every line written while a request is being served.

Each request gets an id: the client's (or its proxy's) `X-Request-ID` if it
is a sane one, else a new one. It goes back in the answer's `X-Request-ID`
and on every log line of that request, so that a client's error report, a
proxy's log and ours can be matched. When the request is answered, one line
says what it was: method, route template, status, duration, and the user
when the token named one. That line replaces uvicorn's access log, which
writes the raw path: a path or a query string can hold a username or the
words someone searched for. What never goes into a log: passwords, tokens,
message text (tests/test_security.py reads a real server's output for them).
"""

import logging
import re
import time
from contextvars import ContextVar
from dataclasses import dataclass
from uuid import uuid4

from pythonjsonlogger.core import RESERVED_ATTRS
from pythonjsonlogger.json import JsonFormatter
from starlette.datastructures import MutableHeaders
from starlette.responses import PlainTextResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from config import settings
from metrics import route_label

TEXT_FORMAT = "%(levelname)s:     %(name)s: %(message)s"
# Letters, digits and a little punctuation: what request ids are made of
# (UUIDs, hex, base64), and nothing that could forge a log line or a header.
SANE_REQUEST_ID = re.compile(rb"[A-Za-z0-9._:+/=-]{1,128}")

access_logger = logging.getLogger("messageapp.access")


@dataclass
class RequestContext:
    """What the log lines of one request share. One object per request, which
    its code may fill in as it learns more (the user, once the token is checked)."""

    request_id: str
    user_id: int | None = None


# Set by the middleware for each request, and seen by all its code: contextvars
# are copied into the worker threads that run `def` routes and dependencies.
# Those threads get a copy of the variable, not of the object it holds, which
# is why the user is set on the object rather than in a variable of its own.
current_request: ContextVar[RequestContext | None] = ContextVar("current_request", default=None)


def set_user(user_id: int | None) -> None:
    """Name the request's user on its log lines (auth.py calls this once the
    token has been checked)."""
    context = current_request.get()
    if context is not None:
        context.user_id = user_id


class RequestFields(logging.Filter):
    """Put the request's id and user on each log record written while it runs."""

    def filter(self, record: logging.LogRecord) -> bool:
        context = current_request.get()
        if context is not None:
            record.request_id = context.request_id
            if context.user_id is not None:
                record.user_id = context.user_id
        return True


class TextFormatter(logging.Formatter):
    """The usual line, and the request id at the end of the lines that have one."""

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        request_id = getattr(record, "request_id", None)
        return f"{line} [{request_id}]" if request_id else line


def json_formatter() -> logging.Formatter:
    """One JSON object per line: time, level, logger and message, then the
    record's own fields (request_id, user_id, and the access line's method,
    route, status and duration_ms)."""
    return JsonFormatter(
        ["levelname", "name", "message"],
        rename_fields={"levelname": "level", "name": "logger"},
        timestamp="time",  # ISO 8601, UTC
        # uvicorn adds a coloured copy of its messages to their records.
        reserved_attrs=[*RESERVED_ATTRS, "color_message"],
        json_ensure_ascii=False,
    )


# Whether the app writes an access line per request; set by setup_logging.
access_log = True


def setup_logging() -> None:
    """Send every line, the app's and uvicorn's, through one handler on stderr
    in LOG_FORMAT. Called by main.py when the app is imported: under uvicorn
    that is after uvicorn has set up its own loggers, which this takes over.
    """
    global access_log
    handler = logging.StreamHandler()
    handler.addFilter(RequestFields())
    json = settings.LOG_FORMAT == "json"
    handler.setFormatter(json_formatter() if json else TextFormatter(TEXT_FORMAT))
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(logging.INFO)
    # uvicorn's start-up, shutdown and error lines, in the same format.
    server = logging.getLogger("uvicorn")
    server.handlers, server.propagate = [], True
    # The app's access line replaces uvicorn's. uvicorn's --no-access-log
    # (which leaves its access logger without a handler) still turns it off.
    uvicorn_access = logging.getLogger("uvicorn.access")
    access_log = bool(uvicorn_access.handlers)
    uvicorn_access.handlers, uvicorn_access.propagate = [], False


def request_id_from(scope: Scope) -> str:
    """The client's X-Request-ID if it is sane, else a new one."""
    value: bytes
    for name, value in scope["headers"]:
        if name == b"x-request-id" and SANE_REQUEST_ID.fullmatch(value):
            return value.decode()
    return uuid4().hex


class RequestLogMiddleware:
    """Give each request (and socket) an id, send it back in X-Request-ID,
    and log one line per HTTP request once it is answered.

    main.py adds it last, so it is the outermost: the id is on every answer,
    413s and CORS preflights included, and on every line logged meanwhile.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        request_id = request_id_from(scope)
        # Not reset when the request ends: uvicorn logs an error that escaped
        # the app after this returns, in the same task, and the task ends with it.
        current_request.set(RequestContext(request_id))
        started = time.perf_counter()
        status_code: int | None = None

        async def send_with_id(message: Message) -> None:
            nonlocal status_code
            if message["type"] in ("http.response.start", "websocket.accept"):
                status_code = message.get("status")
                message.setdefault("headers", [])  # an accept may come without
                MutableHeaders(scope=message)["X-Request-ID"] = request_id
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            # Starlette answers an unhandled error with 500 outside every
            # middleware, where the id could not be added: answer it here.
            # Re-raised, so uvicorn still logs the traceback.
            if scope["type"] == "http" and status_code is None:
                await PlainTextResponse("Internal Server Error", 500)(scope, receive, send_with_id)
            raise
        finally:
            if scope["type"] == "http" and access_log:
                log_request(scope, status_code or 500, time.perf_counter() - started)


def log_request(scope: Scope, status_code: int, seconds: float) -> None:
    route = route_label(scope, status_code)
    client = scope["client"][0] if scope.get("client") else "-"
    access_logger.info(
        '%s "%s %s" %d %.1f ms',
        client,
        scope["method"],
        route,
        status_code,
        seconds * 1000,
        extra={
            "method": scope["method"],
            "route": route,
            "status": status_code,
            "duration_ms": round(seconds * 1000, 2),
            "client": client,
        },
    )
