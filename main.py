"""The ASGI application: `uvicorn main:app`.

This module only assembles the app; the routes live in one module per resource.
"""

import gc
import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request, Response, status
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from fastapi_offline import FastAPIOffline
from sqlalchemy.exc import OperationalError
from sqlmodel import select
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

import admin
import auth
import conversations
import db
import demo
import hub
import messages
import realtime
import users
from config import settings
from db import SessionDep, init_db
from middleware import BodySizeLimitMiddleware, SecurityHeadersMiddleware
from models import error_responses

STATIC_DIR = Path(__file__).parent / "static"

logging.basicConfig(level=logging.INFO, format="%(levelname)s:     %(name)s: %(message)s")
logger = logging.getLogger("messageapp")


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    # Before `yield`: start-up, before the first request; after it: shutdown.
    init_db(db.engine)
    if settings.DEMO_DATA:
        demo.seed_demo_data(db.engine)
    logger.info("Database ready: %s", db.engine.url.render_as_string(hide_password=True))
    # Requests are served, and live events flow, while the app runs.
    async with db.serving(), hub.hub.running():
        yield
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
    redirect_slashes=False,  # the contract has no trailing slashes: /users/ is 404
    openapi_tags=[
        {"name": "auth", "description": "Log in and out: OAuth2 password flow, JWTs."},
        {"name": "users", "description": "Sign up, your profile and password, people."},
        {"name": "conversations", "description": "Direct messages, groups, channels."},
        {"name": "messages", "description": "Send, read, edit, delete and search."},
        {"name": "admin", "description": "Moderation: needs the `admin` scope (admins only)."},
        {"name": "operations", "description": "For load balancers and monitoring."},
    ],
)

# Each middleware added wraps those added before it: the last is outermost.
app.add_middleware(
    BodySizeLimitMiddleware,
    max_bytes=settings.MAX_BODY_BYTES,
    timeout=settings.REQUEST_BODY_TIMEOUT_SECONDS,
)
if settings.CORS_ORIGINS:
    # Tokens travel in the Authorization header, never in cookies: no credentials.
    app.add_middleware(
        CORSMiddleware,
        allow_origins=settings.CORS_ORIGINS,
        allow_methods=["*"],
        allow_headers=["Authorization", "Content-Type"],
    )
# Outermost: on every answer, 413s and CORS preflight answers included.
app.add_middleware(SecurityHeadersMiddleware)


@app.exception_handler(auth.TokenError)
async def token_error(_: Request, exc: auth.TokenError) -> JSONResponse:
    body = {"detail": exc.detail, "error": exc.error, "error_description": exc.description}
    return JSONResponse(body, status_code=exc.status_code, headers=exc.headers)


@app.exception_handler(OperationalError)
async def database_unavailable(_: Request, exc: OperationalError) -> JSONResponse:
    # "database is locked" after the busy timeout, or a database that is down:
    # either way the client may retry, and nothing was half-done.
    logger.error("Database error: %s", exc.orig)
    return JSONResponse(
        {"detail": "Database busy or unavailable; try again"},
        status_code=status.HTTP_503_SERVICE_UNAVAILABLE,
        headers={"Retry-After": "1"},
    )


@app.exception_handler(RequestValidationError)
async def validation_failed(_: Request, exc: RequestValidationError) -> Response:
    # FastAPI's own answer, but ASCII-escaped: errors echo the input, and a
    # lone surrogate ("\ud800" is valid JSON, not text) cannot be UTF-8 (a 500).
    body = json.dumps({"detail": jsonable_encoder(exc.errors())}, ensure_ascii=True)
    return Response(body, status.HTTP_422_UNPROCESSABLE_CONTENT, media_type="application/json")


@app.exception_handler(status.HTTP_405_METHOD_NOT_ALLOWED)
async def method_not_allowed(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    # Starlette's Allow names the methods of the first route with this path
    # only; GET and DELETE /messages/{id} are two routes. Name them all.
    allowed = {
        method
        for route in app.routes
        if route.matches(request.scope)[0] is not Match.NONE
        for method in getattr(route, "methods", None) or ()
    }
    return JSONResponse(
        {"detail": exc.detail},
        status_code=exc.status_code,
        headers={"Allow": ", ".join(sorted(allowed))},
    )


app.include_router(auth.router)
app.include_router(users.router)
app.include_router(conversations.router)
app.include_router(messages.router)
app.include_router(admin.router)
app.include_router(realtime.router)


@app.get(
    "/healthz",
    tags=["operations"],
    summary="Health check",
    responses=error_responses({503: "The database does not answer"}),
)
def healthz(session: SessionDep) -> dict[str, str]:
    """200 when the service and its database answer, 503 otherwise."""
    session.exec(select(1)).one()
    return {"status": "ok"}


def documented_error(description: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    content = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorDetail"}}}
    documented: dict[str, Any] = {"description": description, "content": content}
    if headers:
        documented["headers"] = headers
    return documented


# Statuses that any route can answer, whatever it does: documented here once
# rather than on every route. Each is added only where a route has not
# described it itself.
BUSY = documented_error(
    "The database is busy or down; nothing was saved. Retry later",
    {"Retry-After": {"description": "Seconds to wait", "schema": {"type": "integer"}}},
)
UNAUTHORIZED = documented_error(
    "Missing, invalid, expired or revoked token",
    {"WWW-Authenticate": {"schema": {"type": "string"}}},
)
BODY_ERRORS = {
    "400": documented_error("The body is not UTF-8, or not a form where one is expected"),
    "408": documented_error("The request body stopped arriving"),
    "413": documented_error("The request body is over 64 KiB"),
}
# A route's own 422 (say, "unknown user") has a text detail; FastAPI's
# validation errors have a list. Either can come.
ANY_422 = {
    "anyOf": [
        {"$ref": "#/components/schemas/ErrorDetail"},
        {"$ref": "#/components/schemas/HTTPValidationError"},
    ]
}


def openapi_with_common_responses() -> dict[str, Any]:
    """FastAPI's document, plus the statuses that middleware and dependencies
    shared by every route answer: 503 everywhere, 401 where a token is
    needed, 400, 408 and 413 where a body is read."""
    if app.openapi_schema is None:
        spec = FastAPI.openapi(app)
        for item in spec["paths"].values():
            for operation in item.values():
                responses = operation["responses"]
                responses.setdefault("503", BUSY)
                if "security" in operation:
                    responses.setdefault("401", UNAUTHORIZED)
                if "requestBody" in operation:
                    if "400" in responses:  # the route's own 400 is not the only one
                        responses["400"]["description"] += "; or an unreadable body"
                    for code, response in BODY_ERRORS.items():
                        responses.setdefault(code, response)
                if "422" in responses:
                    responses["422"]["content"]["application/json"]["schema"] = ANY_422
    return app.openapi_schema  # type: ignore[return-value]  # set by FastAPI.openapi


app.openapi = openapi_with_common_responses  # type: ignore[method-assign]

# Last, so every API route above wins over a file of the same name.
app.frontend("/", directory=STATIC_DIR, fallback=None)


# What exists once this module is imported (modules, the app, the models'
# Pydantic and SQLAlchemy machinery: some 140,000 objects) lives as long as the
# process. A full garbage collection walks all of it, a pause of tens of ms
# that showed in the slowest requests; frozen, those objects are skipped.
gc.collect()
gc.freeze()
