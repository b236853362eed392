"""Attachments (issue 20): upload, send, download, and every way it is kept
safe: members only, signed URLs, size limits, the quota, image bombs,
disguised files, metadata, deletion, and crashes mid-upload."""

import io
import select
import shutil
import socket
import struct
import threading
import time
import zlib
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx2 as httpx
import pytest
from fastapi.testclient import TestClient
from PIL import ExifTags, Image
from sqlalchemy import Engine, create_engine, text

import attachments
import pages
from config import settings
from models import utcnow
from tests import database
from tests.helpers import (
    Headers,
    create_conversation,
    history,
    live,
    new_admin,
    new_user,
    read_metrics,
    send,
)
from tests.server import Server, manage, running
from tests.test_queries import queries_for

# --- Making files ---------------------------------------------------------------


def image_bytes(image_format: str = "PNG", size: tuple[int, int] = (64, 48), **save: Any) -> bytes:
    image = Image.new("RGB", size, (200, 30, 30))
    out = io.BytesIO()
    image.save(out, format=image_format, **save)
    return out.getvalue()


def jpeg_with_gps(size: tuple[int, int] = (40, 20), orientation: int = 1) -> bytes:
    exif = Image.Exif()
    exif[ExifTags.Base.Make] = "SpyCam"
    exif[ExifTags.Base.Orientation] = orientation
    exif[ExifTags.IFD.GPSInfo] = {
        ExifTags.GPS.GPSLatitudeRef: "N",
        ExifTags.GPS.GPSLatitude: (51.0, 30.0, 12.0),
        ExifTags.GPS.GPSLongitudeRef: "W",
        ExifTags.GPS.GPSLongitude: (0.0, 7.0, 39.0),
    }
    return image_bytes("JPEG", size, exif=exif, comment=b"taken at home")


def png_bomb(side: int = 30_000) -> bytes:
    """A small PNG that claims side x side pixels (900 megapixels): decoded,
    it would take gigabytes."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)  # 1 bit grey
    zeros = zlib.compress(b"\0" * (side // 8 + 1) * 100, 9)  # the first rows; all it takes
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zeros) + chunk(b"IEND", b"")
    )


# --- Talking to the app -----------------------------------------------------------


def upload(
    client: TestClient,
    headers: Headers,
    conversation_id: int,
    content: bytes,
    name: str = "picture.png",
    content_type: str = "image/png",
) -> httpx.Response:
    return client.post(
        f"/conversations/{conversation_id}/attachments",
        files={"file": (name, content, content_type)},
        headers=headers,
    )


def uploaded(
    client: TestClient, headers: Headers, conversation_id: int, content: bytes, **kw: Any
) -> dict[str, Any]:
    response = upload(client, headers, conversation_id, content, **kw)
    assert response.status_code == 201, response.text
    return response.json()


def team(client: TestClient) -> tuple[Headers, Headers, Headers, int]:
    """alice and bob in a group; carol outside it."""
    alice = new_user(client, "alice")
    bob = new_user(client, "bob")
    carol = new_user(client, "carol")
    group = create_conversation(client, alice, kind="group", title="team", members=["bob"])
    return alice, bob, carol, group["id"]


def user_id(client: TestClient, headers: Headers) -> int:
    return int(client.get("/users/me", headers=headers).json()["id"])


def storage_key(engine: Engine, attachment_id: int) -> str | None:
    with engine.connect() as connection:
        return connection.execute(
            text("SELECT storage_key FROM attachment WHERE id = :id"), {"id": attachment_id}
        ).scalar()


def stored_files(key: str) -> list[Path]:
    return [p for p in (attachments.file_path(key), attachments.thumbnail_path(key)) if p.exists()]


# --- Upload and send ----------------------------------------------------------------


def test_upload_and_send_an_image(client: TestClient) -> None:
    alice, bob, _, group = team(client)
    picture = uploaded(client, alice, group, image_bytes(size=(640, 480)))
    assert picture["name"] == "picture.png"
    assert picture["content_type"] == "image/png"
    assert (picture["width"], picture["height"]) == (640, 480)
    assert picture["size"] > 0 and picture["thumbnail_url"]

    with live(client, bob) as ws:
        response = client.post(
            f"/conversations/{group}/messages",
            json={"attachment_ids": [picture["id"]]},
            headers=alice,
        )
        assert response.status_code == 201, response.text
        message = response.json()
        assert message["content"] == ""
        assert [a["id"] for a in message["attachments"]] == [picture["id"]]
        event = ws.receive_json()
    assert event["type"] == "message.created"
    bob_id = user_id(client, bob)
    # Each reader gets URLs signed for them: bob's socket, bob's history.
    live_attachment = event["message"]["attachments"][0]
    assert parse_qs(urlsplit(live_attachment["url"]).query)["u"] == [str(bob_id)]
    [seen] = history(client, bob, group)
    [attachment] = seen["attachments"]
    assert parse_qs(urlsplit(attachment["url"]).query)["u"] == [str(bob_id)]

    for url in (live_attachment["url"], attachment["url"]):
        full = client.get(url)  # no Authorization header: as an <img> asks
        assert full.status_code == 200, full.text
        assert full.headers["content-type"] == "image/png"
        assert full.headers["content-disposition"].startswith("inline")
        assert full.headers["x-content-type-options"] == "nosniff"
        assert full.headers["content-security-policy"] == attachments.FILE_POLICY
        assert full.headers["cache-control"].startswith("private")
        assert Image.open(io.BytesIO(full.content)).size == (640, 480)
    thumbnail = client.get(attachment["thumbnail_url"])
    assert thumbnail.status_code == 200
    assert thumbnail.headers["content-type"] == "image/webp"
    assert max(Image.open(io.BytesIO(thumbnail.content)).size) <= 320

    # The sidebar's last message and search carry them too.
    listed = client.get("/conversations", headers=bob).json()
    last = next(c for c in listed if c["id"] == group)["last_message"]
    assert [a["name"] for a in last["attachments"]] == ["picture.png"]
    with_text = send(
        client,
        alice,
        group,
        "findme here",
        attachment_ids=[
            uploaded(
                client, alice, group, b"plain notes", name="notes.txt", content_type="text/plain"
            )["id"]
        ],
    )
    found = client.get("/search/messages", params={"q": "findme"}, headers=bob).json()
    assert [a["name"] for a in found[0]["attachments"]] == ["notes.txt"]
    one = client.get(f"/messages/{with_text['id']}", headers=bob).json()
    assert one["attachments"][0]["content_type"] == "application/octet-stream"


def test_bearer_token_downloads_too(client: TestClient) -> None:
    alice, bob, _, group = team(client)
    picture = uploaded(client, alice, group, image_bytes())
    send(client, alice, group, "look", attachment_ids=[picture["id"]])
    response = client.get(f"/attachments/{picture['id']}", headers=bob)
    assert response.status_code == 200
    assert response.content[:8] == b"\x89PNG\r\n\x1a\n"


def test_range_requests(client: TestClient) -> None:
    alice, bob, _, group = team(client)
    data = bytes(range(256)) * 400
    sent = uploaded(client, alice, group, data, name="blob.bin", content_type="application/x")
    send(client, alice, group, "data", attachment_ids=[sent["id"]])
    response = client.get(f"/attachments/{sent['id']}", headers={**bob, "Range": "bytes=10-19"})
    assert response.status_code == 206
    assert response.content == data[10:20]
    assert response.headers["content-range"] == f"bytes 10-19/{len(data)}"


def test_edit_keeps_the_attachments(client: TestClient) -> None:
    alice, _, _, group = team(client)
    picture = uploaded(client, alice, group, image_bytes())
    message = send(client, alice, group, "first", attachment_ids=[picture["id"]])
    edited = client.patch(f"/messages/{message['id']}", json={"content": "second"}, headers=alice)
    assert edited.status_code == 200
    assert [a["id"] for a in edited.json()["attachments"]] == [picture["id"]]


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"content": ""},
        {"attachment_ids": []},
        {"attachment_ids": list(range(1, 12))},
        {"attachment_ids": [1, 1]},
        {"attachment_ids": [0]},
    ],
)
def test_send_refuses_bad_attachment_lists(client: TestClient, body: dict[str, Any]) -> None:
    alice, _, _, group = team(client)
    uploaded(client, alice, group, image_bytes())
    response = client.post(f"/conversations/{group}/messages", json=body, headers=alice)
    assert response.status_code == 422
    assert history(client, alice, group) == []


def test_send_only_your_own_unsent_uploads_from_here(client: TestClient) -> None:
    alice, bob, _, group = team(client)
    other = create_conversation(client, alice, kind="group", title="other", members=["bob"])["id"]
    bobs = uploaded(client, bob, group, image_bytes())
    elsewhere = uploaded(client, alice, other, image_bytes())
    mine = uploaded(client, alice, group, image_bytes())
    send(client, alice, group, "once", attachment_ids=[mine["id"]])
    for ids in ([bobs["id"]], [elsewhere["id"]], [mine["id"]], [999_999]):
        response = client.post(
            f"/conversations/{group}/messages", json={"attachment_ids": ids}, headers=alice
        )
        assert response.status_code == 422, ids
        assert "attachment_ids" in response.json()["detail"]
    assert len(history(client, alice, group)) == 1  # nothing changed
    # bob's upload is still his to send.
    send(client, bob, group, "mine", attachment_ids=[bobs["id"]])


# --- Who may read ------------------------------------------------------------------


def sent_picture(client: TestClient) -> tuple[Headers, Headers, Headers, int, dict[str, Any]]:
    alice, bob, carol, group = team(client)
    picture = uploaded(client, alice, group, image_bytes())
    send(client, alice, group, "look", attachment_ids=[picture["id"]])
    [attachment] = history(client, bob, group)[0]["attachments"]
    return alice, bob, carol, group, attachment


def test_a_non_member_is_refused(client: TestClient) -> None:
    _, bob, carol, group, attachment = sent_picture(client)
    assert client.get(f"/attachments/{attachment['id']}", headers=carol).status_code == 404
    assert upload(client, carol, group, image_bytes()).status_code == 404
    # bob's URL, made out to carol: the signature no longer fits.
    carol_id = user_id(client, carol)
    forged = attachment["url"].replace(f"u={user_id(client, bob)}", f"u={carol_id}")
    assert client.get(forged).status_code == 403


def test_a_member_who_left_is_refused(client: TestClient) -> None:
    _, bob, _, group, attachment = sent_picture(client)
    assert client.get(attachment["url"]).status_code == 200
    assert client.post(f"/conversations/{group}/leave", headers=bob).status_code == 204
    # The URL bob was given names him; he is no member now.
    assert client.get(attachment["url"]).status_code == 404
    assert client.get(attachment["thumbnail_url"]).status_code == 404
    assert client.get(f"/attachments/{attachment['id']}", headers=bob).status_code == 404


def test_an_altered_or_expired_signed_url_is_refused(client: TestClient) -> None:
    _, bob, _, _, attachment = sent_picture(client)
    url = attachment["url"]
    query = parse_qs(urlsplit(url).query)
    path = f"/attachments/{attachment['id']}"
    bob_id = int(query["u"][0])
    signature, expires = query["sig"][0], int(query["exp"][0])
    altered = [
        f"{path}?u={bob_id}&exp={expires + 3600}&sig={signature}",  # a longer life
        f"{path}?u={bob_id}&exp={expires}&sig={signature[:-2]}AA",
        f"{path}/thumbnail?u={bob_id}&exp={expires}&sig={signature}",  # the other variant
        f"{path}?u={bob_id}&exp={expires}",  # no signature
    ]
    for wrong in altered:
        assert client.get(wrong).status_code == 403, wrong
    # A URL signed by this server two hours ago, expired an hour ago.
    expired = pages.attachment_url("file", attachment["id"], bob_id, int(time.time()) - 3600)
    response = client.get(expired)
    assert response.status_code == 403
    assert "expired" in response.json()["detail"]
    # Nothing at all: no token.
    assert client.get(path).status_code == 401


def test_unsent_upload_is_its_uploaders_only(client: TestClient) -> None:
    alice, bob, _, group = team(client)
    picture = uploaded(client, alice, group, image_bytes())
    assert client.get(picture["url"]).status_code == 200
    assert client.get(f"/attachments/{picture['id']}", headers=alice).status_code == 200
    assert client.get(f"/attachments/{picture['id']}", headers=bob).status_code == 404


# --- Sizes and quota ------------------------------------------------------------------


def test_413_by_declared_length(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    alice, _, _, group = team(client)
    monkeypatch.setattr(settings, "ATTACHMENT_MAX_BYTES", 1000)
    response = upload(client, alice, group, b"x" * 40_000, name="big.bin")
    assert response.status_code == 413
    assert "ATTACHMENT_MAX_BYTES" in response.json()["detail"]


def test_413_by_stream(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    alice, _, _, group = team(client)
    monkeypatch.setattr(settings, "ATTACHMENT_MAX_BYTES", 1000)
    # Under the declared-length check (the multipart's slack), over once counted.
    response = upload(client, alice, group, b"x" * 1001, name="big.bin")
    assert response.status_code == 413
    assert "ATTACHMENT_MAX_BYTES" in response.json()["detail"]
    assert upload(client, alice, group, b"x" * 1000, name="ok.bin").status_code == 201


def test_other_routes_keep_the_64_kib_limit(client: TestClient) -> None:
    alice, _, _, group = team(client)
    body = {"content": "x" * 70_000}
    response = client.post(f"/conversations/{group}/messages", json=body, headers=alice)
    assert response.status_code == 413


def test_quota(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    alice, bob, _, group = team(client)
    monkeypatch.setattr(settings, "ATTACHMENT_QUOTA_BYTES", 5000)
    uploaded(client, alice, group, b"a" * 3000, name="one.bin")
    response = upload(client, alice, group, b"b" * 3000, name="two.bin")
    assert response.status_code == 413
    assert "quota of 5000 bytes" in response.json()["detail"]
    assert "3000 used" in response.json()["detail"]
    # Someone else's quota is their own.
    uploaded(client, bob, group, b"c" * 3000, name="three.bin")
    assert read_metrics(client)("messageapp_attachment_uploads_total", outcome="over_quota") >= 1


# --- Trust nothing the client says ------------------------------------------------------


def test_an_image_bomb_is_refused(client: TestClient, engine: Engine) -> None:
    alice, _, _, group = team(client)
    started = time.monotonic()
    response = upload(client, alice, group, png_bomb(), name="bomb.png")
    assert response.status_code == 422
    assert "ATTACHMENT_MAX_PIXELS" in response.json()["detail"]
    assert time.monotonic() - started < 5  # refused before decoding
    with engine.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM attachment")).scalar() == 0


def test_a_broken_image_is_refused(client: TestClient) -> None:
    alice, _, _, group = team(client)
    broken = image_bytes()[:60]
    response = upload(client, alice, group, broken, name="broken.png")
    assert response.status_code == 422
    assert "not a valid one" in response.json()["detail"]


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("cat.png", b"<html><body><script>alert(document.cookie)</script></body></html>"),
        ("cat.svg", b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>'),
    ],
)
def test_html_disguised_as_an_image_is_a_download(
    client: TestClient, name: str, content: bytes
) -> None:
    alice, bob, _, group = team(client)
    disguised = uploaded(client, alice, group, content, name=name, content_type="image/png")
    assert disguised["content_type"] == "application/octet-stream"
    assert disguised["thumbnail_url"] is None and disguised["width"] is None
    send(client, alice, group, "a cat", attachment_ids=[disguised["id"]])
    [attachment] = history(client, bob, group)[0]["attachments"]
    response = client.get(attachment["url"])
    assert response.status_code == 200
    assert response.content == content
    assert response.headers["content-type"] == "application/octet-stream"
    assert response.headers["content-disposition"] == f'attachment; filename="{name}"'
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["content-security-policy"] == "default-src 'none'; sandbox"
    assert client.get(f"/attachments/{attachment['id']}/thumbnail", headers=bob).status_code == 404


def test_exif_and_gps_are_stripped(client: TestClient) -> None:
    alice, bob, _, group = team(client)
    photo = jpeg_with_gps(orientation=6)  # "turn 90° to show": stored turned
    original = Image.open(io.BytesIO(photo))
    assert original.getexif().get_ifd(ExifTags.IFD.GPSInfo)  # there to begin with
    sent = uploaded(client, alice, group, photo, name="holiday.jpg", content_type="image/jpeg")
    assert (sent["width"], sent["height"]) == (20, 40)
    send(client, alice, group, "holiday", attachment_ids=[sent["id"]])
    response = client.get(f"/attachments/{sent['id']}", headers=bob)
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/jpeg"
    cleaned = Image.open(io.BytesIO(response.content))
    assert cleaned.size == (20, 40)
    assert not cleaned.getexif()
    assert "comment" not in cleaned.info
    assert b"Exif" not in response.content and b"SpyCam" not in response.content
    assert b"taken at home" not in response.content


@pytest.mark.parametrize("image_format", ["GIF", "WEBP"])
def test_other_image_formats(client: TestClient, image_format: str) -> None:
    alice, _, _, group = team(client)
    sent = uploaded(client, alice, group, image_bytes(image_format), name="x.img")
    assert sent["content_type"] == f"image/{image_format.lower()}"
    assert sent["thumbnail_url"] is not None


def test_a_file_name_is_cleaned(client: TestClient) -> None:
    alice, _, _, group = team(client)
    sent = uploaded(client, alice, group, b"data", name="../../etc/\u202epasswd\u2066.txt")
    assert sent["name"] == "passwd.txt"


def test_refused_uploads(client: TestClient) -> None:
    alice, _, _, group = team(client)
    path = f"/conversations/{group}/attachments"
    assert client.post(path, json={"file": "x"}, headers=alice).status_code == 422
    response = client.post(path, data={"other": "x"}, files={"x": ("a", b"b")}, headers=alice)
    assert response.status_code == 422
    assert response.json()["detail"] == "No file: send it in a field named file"
    assert upload(client, alice, group, b"", name="empty.txt").status_code == 422
    two = [("file", ("a.txt", b"a", "text/plain")), ("file", ("b.txt", b"b", "text/plain"))]
    assert client.post(path, files=two, headers=alice).status_code == 422
    malformed = b"--XyZ\r\nno colon here\r\n\r\nx\r\n--XyZ--\r\n"
    response = client.post(
        path,
        content=malformed,
        headers={**alice, "Content-Type": "multipart/form-data; boundary=XyZ"},
    )
    assert response.status_code == 400
    assert response.json()["detail"].startswith("Not a multipart/form-data body")
    unfinished = b'--XyZ\r\nContent-Disposition: form-data; name="file"; filename="a"\r\n\r\nab'
    response = client.post(
        path,
        content=unfinished,
        headers={**alice, "Content-Type": "multipart/form-data; boundary=XyZ"},
    )
    assert response.status_code == 422
    assert "ended before the file did" in response.json()["detail"]


# --- Deleting ----------------------------------------------------------------------------


@pytest.mark.parametrize("as_admin", [False, True])
def test_deleting_a_message_deletes_its_files(
    client: TestClient, engine: Engine, as_admin: bool
) -> None:
    alice, bob, _, group = team(client)
    picture = uploaded(client, alice, group, image_bytes())
    notes = uploaded(client, alice, group, b"notes", name="n.txt")
    message = send(client, alice, group, "both", attachment_ids=[picture["id"], notes["id"]])
    keys = [storage_key(engine, picture["id"]), storage_key(engine, notes["id"])]
    assert all(keys)
    assert len(stored_files(keys[0] or "")) == 2 and len(stored_files(keys[1] or "")) == 1
    [seen] = history(client, bob, group)
    if as_admin:
        admin = new_admin(client, "root")
        response = client.delete(f"/admin/messages/{message['id']}", headers=admin)
    else:
        response = client.delete(f"/messages/{message['id']}", headers=alice)
    assert response.status_code == 204
    for key in keys:
        assert stored_files(key or "") == []
    assert storage_key(engine, picture["id"]) is None
    assert client.get(seen["attachments"][0]["url"]).status_code == 404
    [tombstone] = history(client, bob, group)
    assert tombstone["deleted"] and tombstone["attachments"] == []


def test_unsent_uploads_are_removed_after_a_day(client: TestClient, engine: Engine) -> None:
    alice, _, _, group = team(client)
    stale = uploaded(client, alice, group, image_bytes())
    kept = uploaded(client, alice, group, image_bytes())
    send(client, alice, group, "kept", attachment_ids=[kept["id"]])
    key = storage_key(engine, stale["id"]) or ""
    assert stored_files(key)
    attachments.sweep(utcnow() + timedelta(hours=1))
    assert stored_files(key)  # not a day yet
    attachments.sweep(utcnow() + timedelta(hours=25))
    assert stored_files(key) == []
    assert client.get(f"/attachments/{stale['id']}", headers=alice).status_code == 404
    assert client.get(f"/attachments/{kept['id']}", headers=alice).status_code == 200
    response = client.post(
        f"/conversations/{group}/messages", json={"attachment_ids": [stale["id"]]}, headers=alice
    )
    assert response.status_code == 422


def test_history_with_attachments_costs_a_fixed_number_of_queries(
    client: TestClient, engine: Engine
) -> None:
    alice, _, _, group = team(client)
    for i in range(12):
        picture = uploaded(client, alice, group, image_bytes())
        send(client, alice, group, f"picture {i}", attachment_ids=[picture["id"]])

    def page(limit: int) -> Any:
        return lambda: client.get(
            f"/conversations/{group}/messages", params={"limit": limit}, headers=alice
        )

    assert queries_for(engine, page(2)) == queries_for(engine, page(12))


def test_metrics_count_uploads(client: TestClient) -> None:
    alice, _, _, group = team(client)
    before = read_metrics(client)
    uploaded(client, alice, group, image_bytes())
    upload(client, alice, group, png_bomb(), name="bomb.png")
    after = read_metrics(client)
    name = "messageapp_attachment_uploads_total"
    assert after(name, outcome="stored") == before(name, outcome="stored") + 1
    assert after(name, outcome="bad_image") == before(name, outcome="bad_image") + 1
    stored = "messageapp_attachment_stored_bytes_total"
    assert after(stored) > before(stored)


# --- A real server: streams and crashes -----------------------------------------------


def raw_upload_head(server: Server, headers: Headers, conversation_id: int, length: str) -> bytes:
    framing = f"Content-Length: {length}" if length else "Transfer-Encoding: chunked"
    return (
        f"POST /conversations/{conversation_id}/attachments HTTP/1.1\r\n"
        f"Host: 127.0.0.1:{server.port}\r\n"
        f"Authorization: {headers['Authorization']}\r\n"
        "Content-Type: multipart/form-data; boundary=XyZ\r\n"
        f"{framing}\r\n\r\n"
    ).encode()


PART_HEAD = (
    b'--XyZ\r\nContent-Disposition: form-data; name="file"; filename="big.bin"\r\n'
    b"Content-Type: application/octet-stream\r\n\r\n"
)


def server_group(server: Server) -> tuple[Headers, int]:
    alice = server.user("alice")
    server.user("bob")
    body = {"kind": "group", "title": "team", "members": ["bob"]}
    response = httpx.post(f"{server.url}/conversations", json=body, headers=alice)
    assert response.status_code == 201, response.text
    return alice, int(response.json()["id"])


def status_of(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


def test_413_before_the_body_is_read(server: Server) -> None:
    """A declared length over the limit is answered before a byte of body is
    sent; a chunked body, as soon as it passes the limit."""
    alice, group = server_group(server)
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
        s.sendall(raw_upload_head(server, alice, group, str(50 * 1024 * 1024)))
        assert status_of(s.recv(4096)) == 413
    sent = 0
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
        s.sendall(raw_upload_head(server, alice, group, ""))
        s.sendall(b"%x\r\n%s\r\n" % (len(PART_HEAD), PART_HEAD))
        chunk = b"x" * 65536
        answer = b""
        while sent < 100 * 1024 * 1024:
            if select.select([s], [], [], 0)[0]:
                break  # the server has answered (or hung up): stop sending
            try:
                s.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            except (BrokenPipeError, ConnectionResetError, TimeoutError):
                break
            sent += len(chunk)
        answer = s.recv(4096)
        assert status_of(answer) == 413
    assert sent < 20 * 1024 * 1024  # cut off near the 10 MiB limit, not at 100


def server_attachments(server: Server) -> list[tuple[int, str, int, int | None]]:
    """(id, storage_key, stored_bytes, message_id) of every attachment row."""
    url = (
        database.postgres_url()
        if database.POSTGRES
        else (f"sqlite:///{server.data_dir / 'messageapp.db'}")
    )
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            rows = connection.execute(
                text("SELECT id, storage_key, size, message_id FROM attachment")
            )
            return [tuple(row) for row in rows]
    finally:
        engine.dispose()


def test_sigkill_during_uploads_leaves_no_row_without_its_file(server: Server) -> None:
    alice, group = server_group(server)
    payload = image_bytes(size=(900, 700)) + b""  # a real image: decoded, cleaned, thumbnailed
    blob = bytes(range(256)) * 8000  # 2 MB of plain file
    acknowledged: list[int] = []

    def keep_uploading() -> None:
        with httpx.Client(base_url=server.url, headers=alice, timeout=10) as http:
            i = 0
            while True:
                content = payload if i % 2 else blob
                try:
                    response = http.post(
                        f"/conversations/{group}/attachments",
                        files={"file": (f"f{i}", content, "application/octet-stream")},
                    )
                except httpx.TransportError:
                    return
                if response.status_code != 201:
                    return
                acknowledged.append(response.json()["id"])
                i += 1

    for moment in (0.3, 0.7, 1.1):
        threads = [threading.Thread(target=keep_uploading) for _ in range(2)]
        for thread in threads:
            thread.start()
        time.sleep(moment)
        # Also one cut off mid-body, by the kill.
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
            s.sendall(raw_upload_head(server, alice, group, str(5 * 1024 * 1024)))
            s.sendall(PART_HEAD + b"y" * 1024 * 1024)
            server.kill()
        for thread in threads:
            thread.join(timeout=30)
        server.start()

    rows = server_attachments(server)
    assert {row[0] for row in rows} >= set(acknowledged)  # nothing acknowledged was lost
    for _, key, size, message_id in rows:
        path = server.data_dir / "attachments" / key[:2] / key
        assert path.is_file() and path.stat().st_size == size  # each row has its whole file
        assert message_id is None  # none sent: nothing counted as sent
    sent = httpx.post(
        f"{server.url}/conversations/{group}/messages",
        json={"attachment_ids": [rows[0][0]]},
        headers=alice,
    )
    assert sent.status_code == 201
    assert httpx.get(f"{server.url}{sent.json()['attachments'][0]['url']}").status_code == 200


@pytest.mark.skipif(database.POSTGRES, reason="SQLite's backup; PostgreSQL's is pg_dump")
def test_backup_and_restore_keep_the_attachments(tmp_path: Path) -> None:
    data, copy = tmp_path / "data", tmp_path / "backup"
    with running(data) as server:
        alice, group = server_group(server)
        with httpx.Client(base_url=server.url, headers=alice) as http:
            picture = http.post(
                f"/conversations/{group}/attachments",
                files={"file": ("p.png", image_bytes(), "image/png")},
            ).json()
            http.post(f"/conversations/{group}/messages", json={"attachment_ids": [picture["id"]]})
        done = manage(data, "backup", str(copy))
        assert done.returncode == 0, done.stderr
        assert "3 attachment files" not in done.stdout and "2 attachment files" in done.stdout
    shutil.rmtree(data / "attachments")  # lost with the disk
    done = manage(data, "restore", str(copy))
    assert done.returncode == 0, done.stderr
    with running(data) as server:
        response = httpx.get(f"{server.url}/attachments/{picture['id']}", headers=alice)
        assert response.status_code == 200
        assert response.content[:4] == b"\x89PNG"
