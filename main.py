"""The ASGI application: `python -m serve` (or `uvicorn main:app`) runs it.

This module only assembles the app: what happens at start and stop, the
middleware, the routers (one module per resource), and the web client.
"""

import gc
import logging
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi_offline import FastAPIOffline

import admin
import attachments
import conversations
import db
import demo
import errors
import hub
import logs
import messages
import metrics
import operations
import push
import reactions
import realtime
import sessions
import users
from config import settings
from middleware import BodySizeLimitMiddleware, SecurityHeadersMiddleware
from presence import presence

STATIC_DIR = Path(__file__).parent / "static"

logs.setup_logging()  # text or JSON (LOG_FORMAT), uvicorn's lines included
logger = logging.getLogger("messageapp")


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    # Before `yield`: start-up, before the first request; after it: shutdown.
    # The database is marked in use until the end: `manage restore` refuses meanwhile.
    with db.in_use(db.engine):
        db.init_db(db.engine)
        if settings.DEMO_DATA:
            demo.seed_demo_data(db.engine)
        logger.info("Database ready: %s", db.engine.url.render_as_string(hide_password=True))
        # What exists by now (modules, the app, the models' machinery) lives as
        # long as the process: frozen, a full garbage collection skips it, rather
        # than walk it all in the middle of a request. (The hub freezes what
        # sockets make later, and collects it now and then: hub.Hub.tidy.)
        gc.collect()
        gc.freeze()
        # Requests are served, and live events flow, while the app runs.
        async with (
            db.serving(),
            hub.hub.running(),
            attachments.sweeping(),
            presence.running(),
            push.pusher.running(),
        ):
            yield
        gc.unfreeze()
        db.engine.dispose()


DESCRIPTION = """
A small messaging service: direct messages, private groups and public channels.

**Try it here:** create an account with `POST /users`, press **Authorize**
(top right) and log in with it; every route below then works from this page.

**Scopes** limit what a token may do: `messages:read`, `messages:write` and
`admin` (admins only). Tick none in the Authorize dialog to get all that your
account may have, or only `messages:read` for a read-only token. Each route
names the scope it needs; without it, the answer is 403.

**Live events** come over a WebSocket at `/ws`, which this page cannot show:
send `{"type": "auth", "token": "<access_token>"}` as the first frame, then
receive `message.created`, `message.updated`, `message.deleted`,
`conversation.joined`, `read` and `typing` events as JSON.
"""

# A plain FastAPI app, except that Swagger UI (/docs) and ReDoc (/redoc) load
# their JavaScript from this server rather than a CDN: they work offline.
app = FastAPIOffline(
    title="MessageApp",
    version="1.0.0",
    description=DESCRIPTION,
    lifespan=lifespan,
    exception_handlers=errors.HANDLERS,
    redirect_slashes=False,  # the contract has no trailing slashes: /users/ is 404
    openapi_tags=[
        {
            "name": "auth",
            "description": "Log in, refresh and log out: OAuth2 password and refresh grants.",
        },
        {"name": "sessions", "description": "Your logins (devices), to see and to end."},
        {"name": "users", "description": "Sign up, your profile and password, people."},
        {"name": "conversations", "description": "Direct messages, groups, channels."},
        {"name": "messages", "description": "Send, read, edit, delete and search."},
        {"name": "attachments", "description": "Files and images to send with messages."},
        {"name": "push", "description": "Web Push: notifications while the app is closed."},
        {"name": "admin", "description": "Moderation: needs the `admin` scope (admins only)."},
        {"name": "operations", "description": "For load balancers and monitoring."},
    ],
)

# Each middleware added wraps those added before it: the last is outermost.
app.add_middleware(
    BodySizeLimitMiddleware,
    max_bytes=settings.MAX_BODY_BYTES,
    timeout=settings.REQUEST_BODY_TIMEOUT_SECONDS,
    # Uploads: the file and the multipart around it (attachments.py counts the file).
    larger=(
        re.compile(r"/conversations/[^/]+/attachments"),
        settings.ATTACHMENT_MAX_BYTES + attachments.MULTIPART_OVERHEAD,
    ),
)
if settings.CORS_ORIGINS:
    # Tokens travel in the Authorization header, never in cookies: no credentials.
    app.add_middleware(
        CORSMiddleware,
        allow_origins=settings.CORS_ORIGINS,
        allow_methods=["*"],
        allow_headers=["Authorization", "Content-Type", "X-Request-ID"],
        expose_headers=["X-Request-ID"],
    )
# On every answer, 413s and CORS preflight answers included.
app.add_middleware(SecurityHeadersMiddleware)
if settings.METRICS_TOKEN:  # nothing is measured per request unless someone may read it
    app.add_middleware(metrics.MetricsMiddleware)
# Outermost: the request id is on every answer and every line logged meanwhile.
app.add_middleware(logs.RequestLogMiddleware)

for module in (
    sessions,
    users,
    conversations,
    messages,
    attachments,
    reactions,
    push,
    admin,
    operations,
):
    app.include_router(module.router)
app.include_router(metrics.router)
# A plain Starlette route, not FastAPI's `@router.websocket` in an included
# router: FastAPI's wrapper (its dependency machinery, two exit stacks) and
# the included router's layers would stay in memory for as long as each
# socket is open, about 5 KiB of it (docs/performance.md).
app.router.add_websocket_route("/ws", realtime.websocket_endpoint)


def openapi() -> dict[str, Any]:
    """The OpenAPI document (/openapi.json), made once, with the common errors."""
    if app.openapi_schema is None:
        app.openapi_schema = errors.common_responses(FastAPI.openapi(app))
    return app.openapi_schema


app.openapi = openapi  # type: ignore[method-assign]

# Last, so every API route above wins over a file of the same name.
app.frontend("/", directory=STATIC_DIR, fallback=None)
