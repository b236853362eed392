"""Attachments: files and images in messages, and the routes that upload
and download them.

How a file travels, and why it is safe at each step:

1. `POST /conversations/{id}/attachments` checks the token and the
   conversation in a short read (no connection is held while the body
   arrives), then streams the multipart body into a temporary file under
   DATA_DIR/attachments/tmp, counting: past ATTACHMENT_MAX_BYTES it is 413
   (at once when Content-Length says so), past ATTACHMENT_QUOTA_BYTES 413 too.
2. The type comes from the first bytes (magic numbers), never from the name
   or the client's header. PNG, JPEG, GIF and WebP are decoded by Pillow
   under ATTACHMENT_MAX_PIXELS (a bomb is refused before it is decoded),
   written again without their metadata (EXIF and its GPS position, comments,
   XMP), and get a WebP thumbnail. Anything else is kept as it came and
   only ever served as a download.
3. Each file is fsynced and renamed into place (DATA_DIR/attachments/ab/<key>),
   and only then is its row written: a crash leaves at worst a file without
   a row, which `sweep` removes a day later, never a row without its file.
4. Sending a message with `attachment_ids` (crud.create_message) ties them
   to it; deleting the message deletes their rows, then their files.
   Uploads never sent are removed after ATTACHMENT_UNSENT_HOURS.
5. `GET /attachments/{id}` (and `/thumbnail`) answers whoever may read the
   conversation, with a bearer token or with the signed URL that message
   JSON carries (pages.attachment_url: an <img> cannot send a header). Files
   are served with nosniff and a CSP that runs nothing; anything but an
   image as `Content-Disposition: attachment`, so an HTML or SVG file never
   renders on the app's origin.

Several replicas share DATA_DIR/attachments as one volume (docs/deploy.md).
"""

import logging
import os
import secrets
import time
import unicodedata
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import IO, Annotated, Any

import anyio
from fastapi import APIRouter, HTTPException, Query, Request, Security, status
from fastapi import Path as PathParam
from fastapi.responses import FileResponse
from fastapi.security import OAuth2PasswordBearer, SecurityScopes
from PIL import Image, ImageOps
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header
from sqlmodel import Session

import auth
import crud
import db
import metrics
import pages
from access import NOT_VISIBLE
from auth import AUTH_ERRORS, forbidden
from config import settings
from models import (
    MAX_ID,
    Attachment,
    AttachmentPublic,
    Scope,
    TokenPayload,
    User,
    error_responses,
    utcnow,
)

logger = logging.getLogger("messageapp.attachments")

router = APIRouter(tags=["attachments"], responses=error_responses(AUTH_ERRORS))

# A multipart body is the file plus its boundaries and part headers.
MULTIPART_OVERHEAD = 16 * 1024
# Bytes gathered before a write to disk (in a worker thread).
WRITE_CHUNK = 256 * 1024
THUMBNAIL_SIZE = (320, 320)
# An animation decodes every frame: it may have this many images' worth of pixels.
ANIMATION_PIXEL_FACTOR = 4
# Pillow refuses (DecompressionBombError) past twice this before decoding;
# `clean_image` refuses past it.
Image.MAX_IMAGE_PIXELS = settings.ATTACHMENT_MAX_PIXELS

# The image formats kept as images: Pillow's name, and the type served.
IMAGE_TYPES = {"PNG": "image/png", "JPEG": "image/jpeg", "GIF": "image/gif", "WEBP": "image/webp"}
# A few other types worth naming; anything else is application/octet-stream.
FILE_TYPES = (
    (b"%PDF-", "application/pdf"),
    (b"PK\x03\x04", "application/zip"),
    (b"\x1f\x8b", "application/gzip"),
)
# Whatever a file holds, the browser runs none of it, on this origin or any.
FILE_POLICY = "default-src 'none'; sandbox"


class Refused(Exception):
    """An upload refused: the route answers `status_code` with `detail`."""

    def __init__(self, status_code: int, detail: str, outcome: metrics.UploadOutcome) -> None:
        super().__init__(detail)
        self.status_code, self.detail, self.outcome = status_code, detail, outcome


def too_large() -> Refused:
    limit = settings.ATTACHMENT_MAX_BYTES
    return Refused(
        status.HTTP_413_CONTENT_TOO_LARGE,
        f"The file is over ATTACHMENT_MAX_BYTES ({limit} bytes)",
        "too_large",
    )


def over_quota(used: int) -> Refused:
    quota = settings.ATTACHMENT_QUOTA_BYTES
    return Refused(
        status.HTTP_413_CONTENT_TOO_LARGE,
        f"Your attachments would take over your quota of {quota} bytes "
        f"({used} used); delete some messages with attachments first",
        "over_quota",
    )


# --- Where files live ----------------------------------------------------------


def root() -> Path:
    return settings.DATA_DIR / "attachments"


def file_path(key: str) -> Path:
    return root() / key[:2] / key


def thumbnail_path(key: str) -> Path:
    return root() / key[:2] / f"{key}.thumb"


def temporary_file() -> tuple[Path, IO[bytes]]:
    """A new private file under DATA_DIR/attachments/tmp (where `sweep` finds
    any a crash left behind), open for writing."""
    folder = root() / "tmp"
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = folder / f"{secrets.token_hex(16)}.part"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    return path, os.fdopen(fd, "wb")


def sync_and_close(file: IO[bytes]) -> None:
    file.flush()
    os.fsync(file.fileno())
    file.close()


def put_in_place(temporary: Path, final: Path) -> None:
    """Rename a complete, fsynced file into place, and make the rename durable."""
    final.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.replace(temporary, final)
    fd = os.open(final.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def remove_files(keys: list[str]) -> None:
    """Delete the files (and thumbnails) of attachments whose rows are gone."""
    for key in keys:
        file_path(key).unlink(missing_ok=True)
        thumbnail_path(key).unlink(missing_ok=True)


# --- What a file is ------------------------------------------------------------


def sniff(head: bytes) -> str | None:
    """Pillow's format name if the bytes begin as an image we keep, else None."""
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if head.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "GIF"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    return None


def file_type(head: bytes) -> str:
    for magic, content_type in FILE_TYPES:
        if head.startswith(magic):
            return content_type
    return "application/octet-stream"


def clean_name(name: str) -> str:
    """The file's name as shown and offered for saving: no folders, no
    control or invisible characters, at most 255 characters."""
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(c for c in name if unicodedata.category(c) not in ("Cc", "Cf"))
    name = name.strip().lstrip(".")[:255]
    return name or "file"


@dataclass
class Stored:
    """A file ready to be renamed into place, as its row will describe it."""

    content_type: str
    file: Path
    thumbnail: Path | None = None
    width: int | None = None
    height: int | None = None
    temporaries: list[Path] = field(default_factory=list)


def clean_image(upload: Path, image_format: str) -> Stored:
    """Decode the image under the pixel limit, write it again without its
    metadata, and make its thumbnail; all in temporary files."""
    limit = settings.ATTACHMENT_MAX_PIXELS
    bomb = Refused(
        status.HTTP_422_UNPROCESSABLE_CONTENT,
        f"The image is too large: over ATTACHMENT_MAX_PIXELS ({limit} pixels)",
        "bad_image",
    )
    try:
        with Image.open(upload, formats=[image_format]) as image:
            frames = getattr(image, "n_frames", 1)
            if image.width * image.height > limit:
                raise bomb
            if image.width * image.height * frames > limit * ANIMATION_PIXEL_FACTOR:
                raise bomb
            image.load()
            return _write_clean(image, image_format, frames > 1)
    except Image.DecompressionBombError:
        raise bomb from None
    except (OSError, SyntaxError, ValueError, EOFError) as error:
        logger.info("Refused an image that Pillow could not read: %s", error)
        raise Refused(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            f"The file starts like a {image_format} image but is not a valid one",
            "bad_image",
        ) from None


# What of an image's own info is kept on the copy: how it is drawn. Everything
# else (EXIF with its GPS position, XMP, comments, text chunks) is left behind.
KEPT_INFO = ("transparency", "duration", "loop", "background", "disposal")


def _write_clean(image: Image.Image, image_format: str, animated: bool) -> Stored:
    stored = Stored(IMAGE_TYPES[image_format], file=Path())
    options: dict[str, Any] = {"format": image_format}
    if animated:
        options["save_all"] = True
        clean = image
    else:
        # A photo's EXIF says which way is up: turn the pixels so, since the
        # EXIF itself goes.
        clean = ImageOps.exif_transpose(image)
    if image_format == "JPEG":
        options["quality"] = 90
    if image_format == "WEBP":
        options["quality"] = 90
    icc = image.info.get("icc_profile")
    if icc:
        options["icc_profile"] = icc  # colours, not a secret
    clean.info = {key: value for key, value in image.info.items() if key in KEPT_INFO}
    path, out = temporary_file()
    stored.temporaries.append(path)
    with out:
        clean.save(out, **options)
        out.flush()
        os.fsync(out.fileno())
    stored.file = path
    stored.width, stored.height = clean.size

    thumbnail = clean.copy()
    thumbnail.thumbnail(THUMBNAIL_SIZE)
    has_alpha = thumbnail.mode in ("RGBA", "LA", "PA") or "transparency" in thumbnail.info
    thumbnail = thumbnail.convert("RGBA" if has_alpha else "RGB")
    path, out = temporary_file()
    stored.temporaries.append(path)
    with out:
        thumbnail.save(out, format="WEBP", quality=80)
        out.flush()
        os.fsync(out.fileno())
    stored.thumbnail = path
    return stored


def store(upload: Path, name: str, user: User, conversation_id: int) -> Attachment:
    """Make the upload an attachment: cleaned, in place, and its row written.
    Synchronous (files and the database): call it in a worker thread."""
    assert user.id is not None
    with upload.open("rb") as f:
        head = f.read(16)
    image_format = sniff(head)
    if image_format is not None:
        stored = clean_image(upload, image_format)
    else:
        stored = Stored(file_type(head), file=upload)
    key = secrets.token_hex(16)
    try:
        size = stored.file.stat().st_size
        thumbnail_size = stored.thumbnail.stat().st_size if stored.thumbnail else 0
        # The thumbnail first: once the file is in place, everything is.
        if stored.thumbnail is not None:
            put_in_place(stored.thumbnail, thumbnail_path(key))
        put_in_place(stored.file, file_path(key))
    finally:
        for path in stored.temporaries:
            path.unlink(missing_ok=True)
    attachment = Attachment(
        conversation_id=conversation_id,
        uploader_id=user.id,
        storage_key=key,
        name=clean_name(name),
        content_type=stored.content_type,
        size=size,
        stored_bytes=size + thumbnail_size,
        width=stored.width,
        height=stored.height,
        has_thumbnail=stored.thumbnail is not None,
    )
    try:
        with db.write_session() as session:
            added = crud.add_attachment(session, attachment, settings.ATTACHMENT_QUOTA_BYTES)
            used = crud.stored_bytes(session, user.id) if not added else 0
    except BaseException:
        remove_files([key])
        raise
    if not added:
        remove_files([key])
        raise over_quota(used)
    return attachment


# --- The multipart body ----------------------------------------------------------


class FilePart:
    """Reads a multipart/form-data body as it arrives: the part named `file`
    goes to `out`, counted; any other field is skipped. Pieces are gathered
    in `pending` and written by the caller, in a worker thread."""

    def __init__(self, boundary: bytes, limit: int) -> None:
        self.limit = limit
        self.size = 0
        self.filename: str | None = None
        self.files = 0
        self.complete = False  # the file's part ended with its boundary
        self.pending: list[bytes] = []
        self.pending_bytes = 0
        self._writing = False
        self._header_field = b""
        self._header_value = b""
        self._headers: dict[bytes, bytes] = {}
        self.parser = MultipartParser(
            boundary,
            {
                "on_part_begin": self._part_begin,
                "on_header_field": self._header_field_data,
                "on_header_value": self._header_value_data,
                "on_header_end": self._header_end,
                "on_headers_finished": self._headers_finished,
                "on_part_data": self._part_data,
                "on_part_end": self._part_end,
            },
            max_header_count=8,
        )

    def _part_begin(self) -> None:
        self._headers = {}

    def _header_field_data(self, data: bytes, start: int, end: int) -> None:
        self._header_field += data[start:end]

    def _header_value_data(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def _header_end(self) -> None:
        self._headers[self._header_field.lower()] = self._header_value
        self._header_field = self._header_value = b""

    def _headers_finished(self) -> None:
        _, options = parse_options_header(self._headers.get(b"content-disposition", b""))
        if options.get(b"name") == b"file":
            self.files += 1
            if self.files > 1:
                raise Refused(
                    status.HTTP_422_UNPROCESSABLE_CONTENT,
                    "Send one file per request",
                    "refused",
                )
            self.filename = options.get(b"filename", b"").decode("utf-8", "replace")
            self._writing = True

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if self._writing:
            self.size += end - start
            if self.size > self.limit:
                raise too_large()
            self.pending.append(data[start:end])
            self.pending_bytes += end - start

    def _part_end(self) -> None:
        if self._writing:
            self.complete = True
        self._writing = False

    def take(self) -> bytes:
        data = b"".join(self.pending)
        self.pending.clear()
        self.pending_bytes = 0
        return data


async def receive_file(request: Request, out: IO[bytes]) -> FilePart:
    """Stream the request's file into `out`: never more than a few hundred
    kilobytes of it in memory, and refused as soon as it is too large."""
    content_type, options = parse_options_header(request.headers.get("content-type", ""))
    boundary = options.get(b"boundary")
    if content_type != b"multipart/form-data" or not boundary:
        raise Refused(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            "Send the file as multipart/form-data, in a field named file",
            "refused",
        )
    part = FilePart(boundary, settings.ATTACHMENT_MAX_BYTES)
    try:
        async for chunk in request.stream():
            part.parser.write(chunk)
            if part.pending_bytes >= WRITE_CHUNK:
                await anyio.to_thread.run_sync(out.write, part.take())
        part.parser.finalize()
    except MultipartParseError as error:
        raise Refused(
            status.HTTP_400_BAD_REQUEST, f"Not a multipart/form-data body: {error}", "refused"
        ) from None
    if part.pending:
        await anyio.to_thread.run_sync(out.write, part.take())
    if part.filename is None:
        raise Refused(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            "No file: send it in a field named file",
            "refused",
        )
    if not part.complete:
        raise Refused(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            "The body ended before the file did (no closing boundary)",
            "refused",
        )
    if part.size == 0:
        raise Refused(status.HTTP_422_UNPROCESSABLE_CONTENT, "The file is empty", "refused")
    return part


# --- Who may upload, who may read ------------------------------------------------


def authorize_upload(payload: TokenPayload, conversation_id: int) -> tuple[User, int]:
    """The uploader, if the token may write and they are in the conversation,
    and what their uploads take already. A short read of its own: no
    connection is held while the body arrives."""
    with db.read_session() as session:
        user = auth.get_current_user(SecurityScopes(scopes=[Scope.write]), session, payload)
        access = crud.get_conversation_access(session, conversation_id, user)
        if access is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, detail="Conversation not found")
        if access.membership is None:
            raise HTTPException(status.HTTP_403_FORBIDDEN, detail="Join the channel first")
        assert user.id is not None
        return user, crud.stored_bytes(session, user.id)


# The bearer token, if one was sent: a signed URL needs none.
optional_token = OAuth2PasswordBearer(
    tokenUrl="token", scopes=auth.SCOPE_DESCRIPTIONS, auto_error=False
)
OptionalToken = Annotated[str | None, Security(optional_token, scopes=[Scope.read])]
UploadToken = Annotated[TokenPayload, Security(auth.get_token_payload, scopes=[Scope.write])]
AttachmentId = Annotated[int, PathParam(ge=1, le=MAX_ID, description="The attachment's id")]
NOT_FOUND = {404: "No such attachment, or you may not see it"}
BAD_LINK = forbidden("The signed URL was altered or has expired")


def reader(
    session: Session,
    token: str | None,
    variant: pages.Variant,
    attachment_id: int,
    u: int | None,
    exp: int | None,
    sig: str | None,
) -> User:
    """Who is asking: the user a valid signed URL names, or the token's user."""
    if u is None and exp is None and sig is None:
        payload = None if token is None else auth.decode_access_token(token)
        if payload is None:
            raise auth.unauthorized()
        return auth.get_current_user(SecurityScopes(scopes=[Scope.read]), session, payload)
    if u is None or exp is None or sig is None:
        raise HTTPException(status.HTTP_403_FORBIDDEN, detail="Incomplete signed URL")
    expected = pages.url_signature(variant, attachment_id, u, exp)
    if not secrets.compare_digest(sig.encode(), expected.encode()):
        raise HTTPException(status.HTTP_403_FORBIDDEN, detail="Invalid signature")
    if exp < time.time():
        raise HTTPException(
            status.HTTP_403_FORBIDDEN, detail="This link has expired; reload the messages"
        )
    user = session.get(User, u)
    if user is None or not user.active:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail="Attachment not found")
    return user


def visible_attachment(session: Session, attachment_id: int, user: User) -> Attachment:
    """The attachment, if `user` may read its conversation (or, unsent, uploaded it)."""
    attachment = crud.get_attachment(session, attachment_id)
    if attachment is not None:
        if attachment.message_id is None:
            if attachment.uploader_id == user.id:
                return attachment
        elif crud.get_conversation_access(session, attachment.conversation_id, user):
            return attachment
    raise HTTPException(status.HTTP_404_NOT_FOUND, detail="Attachment not found")


def serve(path: Path, attachment: Attachment, media_type: str, download: bool) -> FileResponse:
    if not path.is_file():  # a file lost outside the app: say so rather than 500
        logger.error("The file of attachment %s is missing: %s", attachment.id, path)
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail="Attachment not found")
    return FileResponse(
        path,
        media_type=media_type,
        filename=attachment.name,
        content_disposition_type="attachment" if download else "inline",
        headers={
            # The file never changes; the URL carries who may read it.
            "Cache-Control": f"private, max-age={settings.ATTACHMENT_URL_SECONDS}",
            "Content-Security-Policy": FILE_POLICY,
            "X-Content-Type-Options": "nosniff",
            "Cross-Origin-Resource-Policy": "same-origin",
        },
    )


# --- The routes --------------------------------------------------------------------

UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {"file": {"type": "string", "format": "binary"}},
                    "required": ["file"],
                }
            }
        },
    }
}


@router.post(
    "/conversations/{conversation_id}/attachments",
    status_code=status.HTTP_201_CREATED,
    summary="Upload an attachment",
    openapi_extra=UPLOAD_BODY,
    responses=error_responses(
        {
            **NOT_VISIBLE,
            **forbidden("You have not joined this channel"),
            413: "Over ATTACHMENT_MAX_BYTES (default 10 MiB), or over your ATTACHMENT_QUOTA_BYTES",
            422: "No file, more than one, an empty one, or an image that is broken or too large",
        }
    ),
)
async def create_attachment(
    request: Request,
    payload: UploadToken,
    conversation_id: Annotated[
        int, PathParam(ge=1, le=MAX_ID, description="The conversation's id")
    ],
) -> AttachmentPublic:
    """Upload one file (multipart/form-data, field `file`, at most
    ATTACHMENT_MAX_BYTES) to a conversation you are in, then send it with
    `attachment_ids` on POST /conversations/{id}/messages. An upload not
    sent within a day is deleted.

    The type is read from the bytes. PNG, JPEG, GIF and WebP images are
    checked, lose their metadata (EXIF, GPS position) and get a thumbnail;
    any other file is offered as a download only.
    """
    user, used = await anyio.to_thread.run_sync(authorize_upload, payload, conversation_id)
    declared = request.headers.get("content-length", "")
    try:
        if declared.isdigit():
            if int(declared) > settings.ATTACHMENT_MAX_BYTES + MULTIPART_OVERHEAD:
                raise too_large()
            if used + int(declared) > settings.ATTACHMENT_QUOTA_BYTES + MULTIPART_OVERHEAD:
                raise over_quota(used)
        path, out = await anyio.to_thread.run_sync(temporary_file)
        try:
            try:
                part = await receive_file(request, out)
            finally:
                await anyio.to_thread.run_sync(sync_and_close, out)
            if used + part.size > settings.ATTACHMENT_QUOTA_BYTES:
                raise over_quota(used)
            attachment = await anyio.to_thread.run_sync(
                store, path, part.filename or "", user, conversation_id
            )
        finally:
            await anyio.to_thread.run_sync(lambda: path.unlink(missing_ok=True))
    except Refused as refused:
        metrics.ATTACHMENT_UPLOADS[refused.outcome].inc()
        raise HTTPException(refused.status_code, detail=refused.detail) from None
    metrics.ATTACHMENT_UPLOADS["stored"].inc()
    metrics.ATTACHMENT_BYTES.inc(attachment.stored_bytes)
    return pages.attachment_public(attachment, user)


SIGNED_URL_QUERY = {
    "u": "From a signed URL: the reader",
    "exp": "From a signed URL: when it expires",
    "sig": "From a signed URL: its signature",
}


def read_attachment_or_thumbnail(
    variant: pages.Variant,
    session: Session,
    token: str | None,
    attachment_id: int,
    u: int | None,
    exp: int | None,
    sig: str | None,
) -> FileResponse:
    user = reader(session, token, variant, attachment_id, u, exp, sig)
    attachment = visible_attachment(session, attachment_id, user)
    if variant == "thumbnail":
        if not attachment.has_thumbnail:
            raise HTTPException(
                status.HTTP_404_NOT_FOUND, detail="This attachment has no thumbnail"
            )
        return serve(thumbnail_path(attachment.storage_key), attachment, "image/webp", False)
    image = attachment.content_type in IMAGE_TYPES.values()
    return serve(file_path(attachment.storage_key), attachment, attachment.content_type, not image)


SignedUser = Annotated[int | None, Query(ge=1, le=MAX_ID, description=SIGNED_URL_QUERY["u"])]
Expires = Annotated[int | None, Query(ge=0, le=MAX_ID, description=SIGNED_URL_QUERY["exp"])]
Signature = Annotated[str | None, Query(max_length=64, description=SIGNED_URL_QUERY["sig"])]
# Every type a file is served as.
SERVED_TYPES: dict[str, dict[str, Any]] = {
    content_type: {}
    for content_type in (
        *IMAGE_TYPES.values(),
        *(content_type for _, content_type in FILE_TYPES),
        "application/octet-stream",
    )
}
FILE_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "The file", "content": SERVED_TYPES},
    206: {"description": "The part asked for with Range", "content": SERVED_TYPES},
    **error_responses({**NOT_FOUND, **BAD_LINK}),
}


@router.get(
    "/attachments/{attachment_id}",
    summary="Download an attachment",
    response_class=FileResponse,
    responses=FILE_RESPONSES,
)
def read_attachment(
    session: db.ReadSessionDep,
    token: OptionalToken,
    attachment_id: AttachmentId,
    u: SignedUser = None,
    exp: Expires = None,
    sig: Signature = None,
) -> FileResponse:
    """The file, for whoever may read its conversation: with a bearer token,
    or through the signed `url` that message JSON carries (it expires after
    ATTACHMENT_URL_SECONDS). Images are shown inline; any other file is a
    download. Range requests are answered (206)."""
    return read_attachment_or_thumbnail("file", session, token, attachment_id, u, exp, sig)


@router.get(
    "/attachments/{attachment_id}/thumbnail",
    summary="An image's thumbnail",
    response_class=FileResponse,
    responses=FILE_RESPONSES,
)
def read_thumbnail(
    session: db.ReadSessionDep,
    token: OptionalToken,
    attachment_id: AttachmentId,
    u: SignedUser = None,
    exp: Expires = None,
    sig: Signature = None,
) -> FileResponse:
    """An image attachment's thumbnail (WebP, at most 320×320), as
    `thumbnail_url` in message JSON names it; 404 for other files."""
    return read_attachment_or_thumbnail("thumbnail", session, token, attachment_id, u, exp, sig)


# --- Clean-up ----------------------------------------------------------------------

SWEEP_SECONDS = 3600
# A temporary file this old belongs to no upload still arriving.
STALE_TEMPORARY = timedelta(hours=1)
# A file this old without a row was left by a crash between its rename and its row.
STALE_ORPHAN = timedelta(days=1)


def sweep(now: datetime) -> int:
    """Remove the uploads never sent within ATTACHMENT_UNSENT_HOURS, and the
    files a crash left behind. How many files went."""
    with db.write_session() as session:
        keys = crud.delete_unsent_attachments(
            session, now - timedelta(hours=settings.ATTACHMENT_UNSENT_HOURS)
        )
    remove_files(keys)
    removed = len(keys)
    cutoff = now.timestamp()
    if not root().is_dir():
        return removed
    for folder in root().iterdir():
        if folder.name == "tmp":
            for path in folder.iterdir():
                if _older(path, cutoff - STALE_TEMPORARY.total_seconds()):
                    path.unlink(missing_ok=True)
                    removed += 1
            continue
        old = {
            path.name.removesuffix(".thumb")
            for path in folder.iterdir()
            if _older(path, cutoff - STALE_ORPHAN.total_seconds())
        }
        if old:
            with db.read_session() as session:
                orphans = old - crud.known_storage_keys(session, old)
            remove_files(sorted(orphans))
            removed += len(orphans)
    return removed


def _older(path: Path, cutoff: float) -> bool:
    with suppress(FileNotFoundError):
        return path.stat().st_mtime < cutoff
    return False


@asynccontextmanager
async def sweeping(
    every: float = SWEEP_SECONDS, clock: Callable[[], datetime] = utcnow
) -> AsyncIterator[None]:
    """Sweep at start and every hour while the app runs (main.py's lifespan)."""

    async def loop() -> None:
        while True:
            try:
                await anyio.to_thread.run_sync(sweep, clock())
            except Exception:
                logger.exception("Could not clean up attachments")
            await anyio.sleep(every)

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(loop)
        try:
            yield
        finally:
            tasks.cancel_scope.cancel()
