"""What sits between the server and FastAPI: pure ASGI middleware that
bounds request bodies and adds the browser security headers."""

import re

import anyio
from fastapi import HTTPException, status
from starlette.datastructures import Headers, MutableHeaders
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

TOO_LARGE = "Request body too large"
TOO_SLOW = "Request body not received in time"


class BodySizeLimitMiddleware:
    """Answer 413 to a request whose body is over `max_bytes`, without reading it all,
    and 408 to one whose body stops arriving for `timeout` seconds.

    A declared Content-Length that is too big is refused before any of the
    body is read. A body sent in chunks is counted as it arrives and refused
    as soon as it passes the limit. The timeout keeps a client that sends a
    few bytes and then nothing (slow loris) from holding a request forever.
    """

    def __init__(
        self,
        app: ASGIApp,
        max_bytes: int,
        timeout: float,
        larger: tuple[re.Pattern[str], int] | None = None,
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.timeout = timeout
        # (paths, bytes): the paths that take larger bodies (uploads), and how large.
        self.larger = larger

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        max_bytes = self.max_bytes
        if self.larger is not None and self.larger[0].fullmatch(scope["path"]):
            max_bytes = self.larger[1]
        declared = Headers(scope=scope).get("content-length", "")
        if declared.isdigit() and int(declared) > max_bytes:
            response = JSONResponse(
                {"detail": TOO_LARGE}, status_code=status.HTTP_413_CONTENT_TOO_LARGE
            )
            await response(scope, receive, send)
            return

        received = 0
        body_done = False

        async def limited_receive() -> Message:
            nonlocal received, body_done
            if body_done:  # after the body, receive() waits for a disconnect: no deadline
                return await receive()
            with anyio.move_on_after(self.timeout) as deadline:
                message = await receive()
            if deadline.cancelled_caught:
                # FastAPI turns these into JSON answers like any HTTPException.
                raise HTTPException(status.HTTP_408_REQUEST_TIMEOUT, detail=TOO_SLOW)
            received += len(message.get("body", b""))
            body_done = not message.get("more_body", False)
            if received > max_bytes:
                raise HTTPException(status.HTTP_413_CONTENT_TOO_LARGE, detail=TOO_LARGE)
            return message

        await self.app(scope, limited_receive, send)


# The web client at / has no inline script: a script injected into a page
# (say, through a message) does not run. frame-ancestors and X-Frame-Options
# keep other sites from framing the pages (clickjacking). The service worker
# (/sw.js) and the app manifest come from this origin only (worker-src,
# manifest-src: default-src says so already, these say it where one looks).
# img-src allows blob: for one image: the favicon with the unread count,
# which the page draws on a canvas and shows through a blob: URL. Only a
# script of the page can make a blob: URL, and an image runs nothing.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' blob:; "
    "connect-src 'self'; worker-src 'self'; manifest-src 'self'; object-src 'none'; "
    "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
# Swagger UI (/docs) starts with an inline script and ReDoc (/redoc) injects
# styles and runs a worker from a blob: both pages show only this API's own
# OpenAPI document, so they get the inline allowances the client pages never do.
DOCS_CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self' 'unsafe-inline'; "
    "style-src 'self' 'unsafe-inline'; img-src 'self' data:; worker-src 'self' blob:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)
# Exactly these pages: a path that merely starts with /docs (say /docs/..%2f/,
# which the static files resolve to the client) gets the client's policy.
DOCS_PATHS = {"/docs", "/docs/oauth2-redirect", "/redoc"}


class SecurityHeadersMiddleware:
    """Add the browser security headers to every HTTP response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        docs = scope["path"] in DOCS_PATHS
        policy = DOCS_CONTENT_SECURITY_POLICY if docs else CONTENT_SECURITY_POLICY

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                # A response with a policy of its own (an attachment's,
                # stricter) keeps it.
                headers.setdefault("Content-Security-Policy", policy)
                headers["X-Content-Type-Options"] = "nosniff"
                headers["X-Frame-Options"] = "DENY"
                headers["Referrer-Policy"] = "no-referrer"
            await send(message)

        await self.app(scope, receive, send_with_headers)
