"""How errors are answered, and how /docs documents them.

The handlers turn what the routes and the database raise into JSON answers;
`common_responses` adds to the OpenAPI document the statuses that any route
can answer whatever it does (503, and 401 or 413 where they apply), so
Swagger UI lists them without every route repeating them.
"""

import json
import logging
from typing import Any

from fastapi import Request, Response, status
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from auth import TokenError

logger = logging.getLogger("messageapp")


async def token_error(_: Request, exc: TokenError) -> JSONResponse:
    body = {"detail": exc.detail, "error": exc.error, "error_description": exc.description}
    return JSONResponse(body, status_code=exc.status_code, headers=exc.headers)


async def database_unavailable(_: Request, exc: OperationalError) -> JSONResponse:
    # "database is locked" after the busy timeout, a database that is down, or
    # an app not started yet: the client may retry, and nothing was half-done.
    logger.error("Database error: %s", exc.orig)
    return JSONResponse(
        {"detail": "Database busy or unavailable; try again"},
        status_code=status.HTTP_503_SERVICE_UNAVAILABLE,
        headers={"Retry-After": "1"},
    )


async def validation_failed(_: Request, exc: RequestValidationError) -> Response:
    # FastAPI's own answer, but ASCII-escaped: errors echo the input, and a
    # lone surrogate ("\ud800" is valid JSON, not text) cannot be UTF-8 (a 500).
    body = json.dumps({"detail": jsonable_encoder(exc.errors())}, ensure_ascii=True)
    return Response(body, status.HTTP_422_UNPROCESSABLE_CONTENT, media_type="application/json")


async def method_not_allowed(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    # Starlette's Allow names the methods of the first route with this path
    # only; GET and DELETE /messages/{id} are two routes. Name them all.
    allowed = {
        method
        for route in request.app.routes
        if route.matches(request.scope)[0] is not Match.NONE
        for method in getattr(route, "methods", None) or ()
    }
    return JSONResponse(
        {"detail": exc.detail},
        status_code=exc.status_code,
        headers={"Allow": ", ".join(sorted(allowed))},
    )


HANDLERS: dict[Any, Any] = {
    TokenError: token_error,
    OperationalError: database_unavailable,
    RequestValidationError: validation_failed,
    status.HTTP_405_METHOD_NOT_ALLOWED: method_not_allowed,
}


# --- The OpenAPI document -------------------------------------------------------


def documented_error(description: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    content = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorDetail"}}}
    documented: dict[str, Any] = {"description": description, "content": content}
    if headers:
        documented["headers"] = headers
    return documented


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


def common_responses(spec: dict[str, Any]) -> dict[str, Any]:
    """FastAPI's document, plus the statuses that middleware and dependencies
    shared by every route answer: 503 everywhere, 401 where a token is
    needed, 400, 408 and 413 where a body is read. Each is added only where a
    route has not described it itself."""
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
    return spec
