"""The web client at `/`, in a real browser: two people chatting through the page.

Playwright drives Debian's Chromium (.ci/run installs it with apt-get) against
a real uvicorn process. Every page fails its test on any console error or
uncaught exception, and runs under the Content-Security-Policy the server
sends (middleware.py): no inline script, no inline style, sockets to this host only.
"""

import base64
import io
import json
import os
import re
import time
import zlib
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx2 as httpx
import pytest
from axe_playwright_python.sync_playwright import Axe  # type: ignore[import-untyped]
from playwright.sync_api import (
    Browser,
    BrowserContext,
    ConsoleMessage,
    FilePayload,
    Page,
    Route,
    WebSocketRoute,
    Worker,
    expect,
    sync_playwright,
)

from middleware import CONTENT_SECURITY_POLICY as CSP
from tests.server import PASSWORD, Server

CHROMIUM = "/usr/bin/chromium"
TIMEZONE = "Asia/Kolkata"  # +05:30: local times cannot pass for UTC by accident
DESKTOP = {"width": 1100, "height": 720}
PHONE = {"width": 390, "height": 760}
READ = re.compile(r"/conversations/\d+/read$")
# Auto-waiting assertions give up after 5 s by default: too little on a shared
# 2-core machine running a server, Chromium and pytest at once. A passing run
# waits no longer for it.
expect.set_options(timeout=15_000)

if not Path(CHROMIUM).exists():
    if os.environ.get("CI"):
        raise RuntimeError(f"{CHROMIUM} is missing: .ci/run installs it with apt-get")
    pytest.skip(f"no {CHROMIUM} (apt-get install chromium)", allow_module_level=True)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def web(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One server for the module; each test uses its own usernames."""
    server = Server(tmp_path_factory.mktemp("web") / "data")
    server.start()
    yield server
    server.kill()


class Pages:
    """Opens pages as separate people (one browser context each) and collects
    every console error and uncaught exception they produce."""

    def __init__(self, browser: Browser, server: Server) -> None:
        self.browser = browser
        self.server = server
        self.contexts: list[BrowserContext] = []
        self.problems: list[str] = []
        self.expected: list[str] = []  # console errors a test provokes on purpose

    def open(
        self,
        viewport: dict[str, int] = DESKTOP,
        now: datetime | None = None,
        permissions: list[str] | None = None,
        init_script: str | None = None,
    ) -> Page:
        """A new person's page; `now`: the time its clock says, all along;
        `permissions` granted to the site; `init_script` run before the page's own."""
        context = self.browser.new_context(
            viewport=viewport,  # type: ignore[arg-type]
            locale="en-GB",
            timezone_id=TIMEZONE,
            permissions=permissions or [],
        )
        if now is not None:
            context.clock.set_fixed_time(now)
        if init_script is not None:
            context.add_init_script(init_script)
        self.contexts.append(context)
        page = context.new_page()
        page.on("console", self._console)
        page.on("pageerror", lambda error: self.problems.append(f"uncaught: {error}"))
        response = page.goto(self.server.url)
        # The server's own policy (middleware.py): a violation is a console error.
        assert response is not None and response.headers["content-security-policy"] == CSP
        return page

    def _console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.problems.append(message.text)

    def close(self) -> list[str]:
        for context in self.contexts:
            context.close()
        return [p for p in self.problems if not any(e in p for e in self.expected)]


@pytest.fixture
def pages(browser: Browser, web: Server) -> Iterator[Pages]:
    pages = Pages(browser, web)
    yield pages
    assert pages.close() == []  # no console errors, no uncaught exceptions


@pytest.fixture
def names(request: pytest.FixtureRequest) -> Callable[[str], str]:
    """Usernames unique to the test, since the module shares one database."""
    tag = zlib.crc32(request.node.name.encode()) % 10**6
    return lambda name: f"{name}{tag}"


# ---- Helpers: what a person does on the page ------------------------------


def sign_up(page: Page, username: str) -> None:
    page.get_by_label("Username", exact=True).fill(username)
    page.get_by_label("Password", exact=True).fill(PASSWORD)
    page.get_by_role("button", name="Sign up").click()
    expect(page.get_by_text(f"Signed in as {username}")).to_be_attached()


def log_in(page: Page, username: str) -> None:
    page.get_by_label("Username", exact=True).fill(username)
    page.get_by_label("Password", exact=True).fill(PASSWORD)
    page.get_by_label("Password", exact=True).press("Enter")  # Enter logs in
    expect(page.get_by_role("button", name="Log out")).to_be_visible()


def sidebar_item(page: Page, title: str) -> Any:
    return page.locator("#conversation-list .conversation").filter(
        has=page.locator(".title", has_text=re.compile(f"^{re.escape(title)}$"))
    )


def start_direct(page: Page, username: str) -> None:
    page.get_by_role("button", name="New message").click()
    page.get_by_label("Find people by username").fill(username)
    page.get_by_role("button", name=username, exact=True).click()
    expect(page.locator("#conversation-title")).to_have_text(username)


def send(page: Page, text: str) -> None:
    page.get_by_label("Message", exact=True).fill(text)
    page.get_by_label("Message", exact=True).press("Enter")


def message(page: Page, text: str) -> Any:
    return page.locator("#messages .message").filter(has_text=text)


def token_of(page: Page) -> str:
    return str(page.evaluate("JSON.parse(localStorage.getItem('messageapp.session')).token"))


def api_direct(web: Server, headers: dict[str, str], other: str) -> int:
    response = httpx.post(
        f"{web.url}/conversations", json={"kind": "direct", "members": [other]}, headers=headers
    )
    assert response.status_code in (200, 201), response.text
    return int(response.json()["id"])


def api_send(
    web: Server, headers: dict[str, str], conversation_id: int, text: str, **extra: Any
) -> Any:
    response = httpx.post(
        f"{web.url}/conversations/{conversation_id}/messages",
        json={"content": text, **extra},
        headers=headers,
    )
    assert response.status_code == 201, response.text
    return response.json()


def api_read_all(web: Server, headers: dict[str, str], conversation_id: int) -> None:
    """Move the read marker to the newest message: nothing unread."""
    newest = httpx.get(
        f"{web.url}/conversations/{conversation_id}/messages?limit=1", headers=headers
    ).json()[-1]["id"]
    response = httpx.post(
        f"{web.url}/conversations/{conversation_id}/read",
        json={"message_id": newest},
        headers=headers,
    )
    assert response.status_code == 204, response.text


def unread_of(web: Server, headers: dict[str, str], conversation_id: int) -> int:
    response = httpx.get(f"{web.url}/conversations/{conversation_id}", headers=headers)
    return int(response.json()["unread_count"])


EDIT_OR_DELETE = re.compile("^(Edit|Delete) ")


def action(page: Page, text: str, name: str) -> None:
    """Use a message's actions bar, which shows on hover (or focus)."""
    item = message(page, text)
    item.hover()
    item.get_by_role("button", name=re.compile(f"^{name} ")).click()


def alice_and_bob(web: Server, names: Callable[[str], str]) -> tuple[str, str, dict[str, str], int]:
    """Alice and Bob signed up over HTTP, with a direct conversation: their
    usernames, Alice's headers and the conversation's id."""
    alice_name, bob_name = names("alice"), names("bob")
    headers = web.user(alice_name)
    web.user(bob_name)
    return alice_name, bob_name, headers, api_direct(web, headers, bob_name)


def open_as(
    pages: Pages,
    web: Server,
    username: str,
    viewport: dict[str, int] = DESKTOP,
    now: datetime | None = None,
) -> Page:
    """A page signed in as an existing user."""
    page = pages.open(viewport, now)
    log_in(page, username)
    return page


# ---- Tests -----------------------------------------------------------------


def test_two_people_chat_live(pages: Pages, names: Callable[[str], str]) -> None:
    alice_name, bob_name = names("alice"), names("bob")
    alice, bob = pages.open(), pages.open()
    sign_up(alice, alice_name)
    sign_up(bob, bob_name)

    start_direct(alice, bob_name)
    with alice.expect_response(READ) as read:  # her own message, on screen
        send(alice, "Hi Bob!")
    expect(message(alice, "Hi Bob!")).to_be_visible()
    assert read.value.status == 204

    # Bob is not looking at the conversation: it arrives with an unread badge.
    expect(sidebar_item(bob, alice_name).locator(".badge")).to_have_text("1 unread")
    expect(sidebar_item(bob, alice_name).locator(".preview")).to_have_text(f"{alice_name}: Hi Bob!")
    sidebar_item(bob, alice_name).click()
    expect(message(bob, "Hi Bob!")).to_be_visible()
    expect(sidebar_item(bob, alice_name).locator(".badge")).to_have_count(0)
    expect(bob.get_by_label("Message", exact=True)).to_be_focused()

    # Bob types: Alice sees it; his message arrives live and ends the indicator.
    bob.get_by_label("Message", exact=True).fill("Hello Alice")
    expect(alice.locator("#typing")).to_have_text(f"{bob_name} is typing…")
    # Alice has it on screen: her page moves the read marker.
    with alice.expect_response(READ) as read:
        bob.get_by_label("Message", exact=True).press("Enter")
    expect(message(alice, "Hello Alice")).to_be_visible()
    expect(alice.locator("#typing")).to_have_text("")
    expect(alice.locator("#announcer")).to_have_text(f"{bob_name}: Hello Alice")
    expect(sidebar_item(alice, bob_name).locator(".badge")).to_have_count(0)
    assert read.value.status == 204
    assert_no_unread(pages.server, token_of(alice))

    # Starting the same direct conversation again opens the existing one.
    start_direct(bob, alice_name)
    expect(bob.locator("#conversation-list .conversation")).to_have_count(2)  # it and general


def assert_no_unread(web: Server, token: str) -> None:
    response = httpx.get(f"{web.url}/conversations", headers={"Authorization": f"Bearer {token}"})
    assert [c["unread_count"] for c in response.json() if c["kind"] == "direct"] == [0]


def test_edit_and_delete_reach_the_other_side(
    pages: Pages, web: Server, names: Callable[[str], str]
) -> None:
    alice_name, bob_name, headers, direct = alice_and_bob(web, names)
    sent = api_send(web, headers, direct, "Lunch at noon?")
    alice, bob = open_as(pages, web, alice_name), open_as(pages, web, bob_name)
    sidebar_item(alice, bob_name).click()
    sidebar_item(bob, alice_name).click()

    # Times are shown in the viewer's zone, not in UTC.
    local = datetime.fromisoformat(sent["created_at"]).astimezone(ZoneInfo(TIMEZONE))
    expect(message(bob, "Lunch at noon?").locator("time")).to_contain_text(local.strftime("%H:%M"))
    # Only your own messages can be edited or deleted; anyone's answered or reacted to.
    expect(message(bob, "Lunch at noon?").get_by_role("button", name=EDIT_OR_DELETE)).to_have_count(
        0
    )
    expect(
        message(bob, "Lunch at noon?").get_by_role("button", name=re.compile("^Reply to "))
    ).to_have_count(1)

    action(alice, "Lunch at noon?", "Edit")
    edit = alice.get_by_role("textbox", name="Edit message")
    expect(edit).to_be_focused()
    edit.fill("Lunch at one?")
    edit.press("Enter")
    expect(message(bob, "Lunch at one?")).to_contain_text("(edited)")
    expect(message(bob, "Lunch at noon?")).to_have_count(0)

    # Deleting asks first, in the page; Escape (or Cancel) keeps the message.
    action(alice, "Lunch at one?", "Delete")
    question = message(alice, "Lunch at one?").get_by_role("alertdialog")
    expect(question.get_by_role("button", name="Cancel")).to_be_focused()
    alice.keyboard.press("Escape")
    expect(question).to_have_count(0)
    expect(
        message(alice, "Lunch at one?").get_by_role("button", name=re.compile("^Delete "))
    ).to_be_focused()
    action(alice, "Lunch at one?", "Delete")
    question.get_by_role("button", name="Delete", exact=True).click()
    expect(bob.locator(".tombstone")).to_have_text("This message was deleted.")
    expect(message(bob, "Lunch at one?")).to_have_count(0)
    expect(alice.locator(".tombstone")).to_have_count(1)
    expect(sidebar_item(bob, alice_name).locator(".preview")).to_have_text(
        f"{alice_name}: message deleted"
    )


def test_html_in_a_message_shows_as_text(
    pages: Pages, web: Server, names: Callable[[str], str]
) -> None:
    alice_name, bob_name = names("alice"), names("bob")
    web.user(bob_name)
    alice, bob = pages.open(), open_as(pages, web, bob_name)
    sign_up(alice, alice_name)
    start_direct(alice, bob_name)
    html = '<script>window.pwned = 1</script><img src=x onerror="window.pwned = 2"><b>bold</b>'
    send(alice, html)

    expect(sidebar_item(bob, alice_name).locator(".preview")).to_have_text(f"{alice_name}: {html}")
    sidebar_item(bob, alice_name).click()
    for page in (alice, bob):
        expect(page.locator("#messages .content").last).to_have_text(html)
        expect(page.locator("#messages img, #messages b, #messages script")).to_have_count(0)
        assert page.evaluate("window.pwned") is None


def test_reload_keeps_the_session_and_logout_ends_it(
    pages: Pages, web: Server, names: Callable[[str], str]
) -> None:
    page = pages.open()
    sign_up(page, names("alice"))
    token = token_of(page)

    page.reload()
    expect(page.get_by_text(f"Signed in as {names('alice')}")).to_be_visible()
    expect(sidebar_item(page, "# general")).to_be_visible()

    page.get_by_role("button", name="Log out").click()
    expect(page.get_by_role("alert")).to_have_text("You have logged out.")
    expect(page.get_by_label("Username", exact=True)).to_be_focused()
    assert page.evaluate("localStorage.getItem('messageapp.session')") is None
    me = httpx.get(f"{web.url}/users/me", headers={"Authorization": f"Bearer {token}"})
    assert me.status_code == 401  # the server revoked the token, not only the page
    page.reload()
    expect(page.get_by_role("button", name="Log in")).to_be_visible()


def test_revoked_token_sends_the_page_back_to_login(
    pages: Pages, web: Server, names: Callable[[str], str]
) -> None:
    page = pages.open()
    sign_up(page, names("alice"))
    expect(page.locator("#connection")).to_have_text("")
    # A request the page has in flight when the token dies gets a 401, and
    # its refresh a 400 (the session has ended), which Chromium logs as
    # console errors: the page handles them as this test wants.
    pages.expected += ["status of 401", "status of 400"]
    # Logged out elsewhere: the server closes this page's socket (4401).
    headers = {"Authorization": f"Bearer {token_of(page)}"}
    assert httpx.post(f"{web.url}/logout", headers=headers).status_code == 204
    expect(page.get_by_role("alert")).to_have_text(
        "Your session has expired or was revoked. Please log in again."
    )
    expect(page.get_by_role("button", name="Log in")).to_be_visible()


def test_expired_token_on_reload_is_refreshed(pages: Pages, names: Callable[[str], str]) -> None:
    page = pages.open()
    sign_up(page, names("alice"))
    old = token_of(page)
    # The page is closed before its token is made to look expired: a page
    # still open would refresh on its own, and a reload in the middle of that
    # refresh would lose the new pair and present the old one again (a reuse).
    page.close()
    page.context.add_init_script(
        """(() => {
          const session = JSON.parse(localStorage.getItem("messageapp.session"));
          session.expiresAt = Date.now() - 1000;
          localStorage.setItem("messageapp.session", JSON.stringify(session));
        })()"""
    )
    page = page.context.new_page()
    page.on("console", pages._console)
    page.goto(pages.server.url)
    expect(page.get_by_text(f"Signed in as {names('alice')}")).to_be_visible()
    assert token_of(page) != old  # refreshed with the refresh token, no password


def test_ended_session_on_reload_asks_to_log_in(
    pages: Pages, web: Server, names: Callable[[str], str]
) -> None:
    page = pages.open()
    sign_up(page, names("alice"))
    headers = {"Authorization": f"Bearer {token_of(page)}"}
    context = page.context
    page.close()  # the session is ended elsewhere while no page is open
    assert httpx.post(f"{web.url}/logout", headers=headers).status_code == 204
    page = context.new_page()  # its 401s are expected: no console check here
    page.goto(web.url)
    expect(page.get_by_role("alert")).to_have_text(
        "Your session has expired or was revoked. Please log in again."
    )


@pytest.fixture(scope="module")
def quick_expiry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server whose access tokens expire after 3 seconds."""
    server = Server(tmp_path_factory.mktemp("quick") / "data", ACCESS_TOKEN_EXPIRE_MINUTES="0.05")
    server.start()
    yield server
    server.kill()


def test_two_tabs_stay_signed_in_across_token_expiries(
    browser: Browser, quick_expiry: Server, names: Callable[[str], str]
) -> None:
    """Both tabs share the session and refresh it one at a time: no refresh
    token is sent twice (which would end the session), and both keep
    chatting, live, across several expiries of the access token."""
    pages = Pages(browser, quick_expiry)
    first = pages.open()
    sign_up(first, names("alice"))
    second = first.context.new_page()  # the same browser: the same localStorage
    second.on("console", pages._console)
    second.on("pageerror", lambda error: pages.problems.append(f"uncaught: {error}"))
    second.goto(quick_expiry.url)
    expect(second.get_by_text(f"Signed in as {names('alice')}")).to_be_visible()
    tokens = {token_of(first)}
    for round_ in range(3):
        first.wait_for_timeout(4000)  # the access token has expired meanwhile
        send(first, f"from the first tab, round {round_}")
        expect(message(second, f"from the first tab, round {round_}")).to_be_visible()
        send(second, f"from the second tab, round {round_}")
        expect(message(first, f"from the second tab, round {round_}")).to_be_visible()
        tokens.add(token_of(first))
    assert len(tokens) >= 3  # refreshed, more than once
    assert token_of(first) == token_of(second)  # one session, shared
    headers = {"Authorization": f"Bearer {token_of(first)}"}
    sessions = httpx.get(f"{quick_expiry.url}/sessions", headers=headers)
    assert sessions.status_code == 200
    assert len(sessions.json()) == 1
    assert "Refresh token reused" not in quick_expiry.log.read_text()
    assert pages.close() == []


def test_an_answer_that_arrives_after_logging_out_is_dropped(
    pages: Pages, web: Server, names: Callable[[str], str]
) -> None:
    """A request on its way when the user logs out: its answer must not be
    rendered into the signed-out page (nor raise there)."""
    alice_name, bob_name = names("alice"), names("bob")
    alice_headers = web.user(alice_name)
    bob_headers = web.user(bob_name)
    direct = api_direct(web, alice_headers, bob_name)
    api_send(web, alice_headers, direct, "Hello Bob")
    bob = open_as(pages, web, bob_name)
    expect(sidebar_item(bob, alice_name)).to_be_visible()
    held: list[Route] = []

    def hold(route: Route) -> None:
        held.append(route)

    bob.route(re.compile(rf"/conversations/{direct}$"), hold)
    # Bob reads on another device: the page hears of it and fetches the
    # conversation again, and that answer is held until he has logged out.
    api_read_all(web, bob_headers, direct)
    for _ in range(200):
        if held:
            break
        bob.wait_for_timeout(25)
    assert [route.request.method for route in held] == ["GET"]
    # The server's answer, as it was before the logout; it reaches the page after.
    answer = httpx.get(f"{web.url}/conversations/{direct}", headers=bob_headers).json()
    bob.get_by_role("button", name="Log out").click()
    expect(bob.get_by_role("button", name="Log in")).to_be_visible()
    held[0].fulfill(json=answer)
    bob.wait_for_timeout(500)  # time enough for the page to take the answer
    expect(bob.locator("#conversation-list .conversation")).to_have_count(0)
    assert pages.problems == []


def test_settings_list_sessions_and_sign_out_another(
    pages: Pages, web: Server, names: Callable[[str], str]
) -> None:
    phone = pages.open(PHONE)
    sign_up(phone, names("alice"))
    laptop = open_as(pages, web, names("alice"))
    laptop.get_by_role("button", name="Settings").click()
    sessions = laptop.get_by_role("list", name="Your sessions").get_by_role("listitem")
    expect(sessions).to_have_count(2)
    expect(sessions.first).to_contain_text("Chrome on Linux")
    expect(sessions.first).to_contain_text("this browser")
    # The phone's request in flight, if any, and its refresh of an ended session.
    pages.expected += ["status of 401", "status of 400"]
    laptop.get_by_role("button", name=re.compile("^Sign out Chrome")).click()
    expect(sessions).to_have_count(1)
    expect(phone.get_by_role("button", name="Log in")).to_be_visible()  # at once, live
    expect(laptop.get_by_role("button", name="Sign out all other sessions")).to_be_disabled()


def test_wrong_password_and_taken_username_are_explained(
    pages: Pages, web: Server, names: Callable[[str], str]
) -> None:
    web.user(names("alice"))
    page = pages.open()
    pages.expected.append("401 (Unauthorized)")  # the browser logs failed requests
    pages.expected.append("409 (Conflict)")
    page.get_by_label("Username", exact=True).fill(names("alice"))
    page.get_by_label("Password", exact=True).fill("not the password")
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("alert")).to_have_text("Wrong username or password")
    page.get_by_role("button", name="Sign up").click()
    expect(page.get_by_role("alert")).to_have_text(
        "That username is taken. Pick another, or log in."
    )


def test_older_messages_load_on_scrolling_up(
    pages: Pages, web: Server, names: Callable[[str], str]
) -> None:
    alice_name, bob_name, headers, direct = alice_and_bob(web, names)
    for n in range(60):
        api_send(web, headers, direct, f"message number {n}.")
    api_read_all(web, web.user(bob_name), direct)  # or the page opens at the first unread
    page = open_as(pages, web, bob_name)
    sidebar_item(page, alice_name).click()

    expect(message(page, "message number 59.")).to_be_in_viewport()  # newest first, at the bottom
    expect(page.locator("#messages .message")).to_have_count(50)
    expect(page.locator("#messages .start")).to_have_count(0)
    page.locator("#messages").evaluate("list => list.scrollTop = 0")
    expect(page.locator("#messages .message")).to_have_count(60)
    expect(page.locator("#messages .start")).to_have_text("This is the start of the conversation.")
    assert page.locator("#messages .content").first.text_content() == "message number 0."


def test_failed_send_stays_with_a_retry_button(
    pages: Pages, web: Server, names: Callable[[str], str]
) -> None:
    alice_name, bob_name = alice_and_bob(web, names)[:2]
    alice, bob = open_as(pages, web, alice_name), open_as(pages, web, bob_name)
    sidebar_item(alice, bob_name).click()
    sidebar_item(bob, alice_name).click()
    pages.expected.append("net::ERR_FAILED")

    # The network drops the request: nothing reached the server.
    alice.route("**/conversations/*/messages", lambda route: route.abort())
    send(alice, "Are you there?")
    failed = alice.locator(".message.failed")
    expect(failed).to_contain_text("Not sent")
    expect(failed).to_contain_text("Are you there?")
    alice.unroute("**/conversations/*/messages")
    failed.get_by_role("button", name="Retry").click()
    expect(message(bob, "Are you there?")).to_have_count(1)
    expect(message(alice, "Are you there?")).to_have_count(1)
    expect(alice.locator(".pending")).to_have_count(0)

    # The request reached the server, the answer was lost: the client_id ties
    # the message the socket brings to the one being sent, so it shows once.
    def lose_answer(route: Route) -> None:
        route.fetch()
        route.abort()

    alice.route("**/conversations/*/messages", lose_answer)
    send(alice, "Only once, please")
    expect(message(bob, "Only once, please")).to_have_count(1)
    expect(message(alice, "Only once, please")).not_to_have_class(re.compile("pending"))
    expect(message(alice, "Only once, please")).to_have_count(1)


def test_catch_up_after_the_socket_drops(
    pages: Pages, web: Server, names: Callable[[str], str]
) -> None:
    alice_name, bob_name, headers, direct = alice_and_bob(web, names)
    first = api_send(web, headers, direct, "Before the cut")
    bob = pages.open()
    sockets: list[WebSocketRoute] = []
    cut = False

    def relay(socket: WebSocketRoute) -> None:
        if cut:
            socket.close(code=1013)  # the server is unreachable
        else:
            socket.connect_to_server()
            sockets.append(socket)

    bob.route_web_socket("**/ws", relay)  # before logging in: the first socket goes through it
    log_in(bob, bob_name)
    sidebar_item(bob, alice_name).click()
    expect(message(bob, "Before the cut")).to_be_visible()

    cut = True
    sockets[-1].close(code=1013)
    expect(bob.locator("#connection")).to_have_text("Reconnecting…")
    api_send(web, headers, direct, "Sent while Bob was away")
    edit = httpx.patch(
        f"{web.url}/messages/{first['id']}", json={"content": "Edited while away"}, headers=headers
    )
    assert edit.status_code == 200
    cut = False

    # Backoff brings the socket back; `after=` brings what the socket missed.
    expect(message(bob, "Sent while Bob was away")).to_be_visible(timeout=20_000)
    expect(message(bob, "Edited while away")).to_contain_text("(edited)")
    expect(bob.locator("#connection")).to_have_text("")
    api_send(web, headers, direct, "Live again")
    expect(message(bob, "Live again")).to_be_visible()


def test_channels_groups_and_search(pages: Pages, web: Server, names: Callable[[str], str]) -> None:
    alice_name, bob_name, carol_name = names("alice"), names("bob"), names("carol")
    for name in (bob_name, carol_name):
        web.user(name)
    alice, bob = pages.open(), open_as(pages, web, bob_name)
    sign_up(alice, alice_name)

    # Alice creates a channel; Bob finds it, reads it, joins it.
    alice.get_by_role("button", name="Channels").click()
    channel = f"design-{alice_name}"
    alice.get_by_label("New channel").fill(channel)
    alice.get_by_role("button", name="Create").click()
    expect(alice.locator("#conversation-title")).to_have_text(f"# {channel}")
    send(alice, "Welcome to design")

    bob.get_by_role("button", name="Channels").click()
    bob.locator("#channel-list li").filter(has_text=channel).get_by_role(
        "button", name="View"
    ).click()
    expect(message(bob, "Welcome to design")).to_be_visible()
    expect(bob.get_by_label("Message", exact=True)).to_be_hidden()
    acts = re.compile("^(React|Reply) to ")  # only members react and reply
    expect(message(bob, "Welcome to design").get_by_role("button", name=acts)).to_have_count(0)
    bob.get_by_role("button", name="Join channel").click()
    expect(sidebar_item(bob, f"# {channel}")).to_be_visible()
    expect(message(bob, "Welcome to design").get_by_role("button", name=acts)).to_have_count(2)
    send(bob, "Glad to be here")
    expect(message(alice, "Glad to be here")).to_be_visible()

    # A group with two members; unknown names are refused with a reason.
    alice.get_by_role("button", name="New group").click()
    alice.get_by_label("Title").fill("Trio")
    alice.get_by_label("Members").fill(f"{bob_name}, nobody-{alice_name}")
    pages.expected.append("422 (Unprocessable")
    alice.get_by_role("button", name="Create group").click()
    expect(alice.locator("#group-dialog .error")).to_contain_text(f"nobody-{alice_name}")
    alice.get_by_label("Members").fill(f"{bob_name}, {carol_name}")
    alice.get_by_role("button", name="Create group").click()
    expect(alice.locator("#conversation-info")).to_have_text("group · 3 members")
    send(alice, "Trio says hello")
    expect(sidebar_item(bob, "Trio").locator(".badge")).to_have_text("1 unread")

    # Search finds messages in every conversation Bob is in; a result opens its conversation.
    bob.get_by_label("Search your messages").fill("HELLO")
    bob.get_by_label("Search your messages").press("Enter")
    results = bob.locator("#search-results .result")
    expect(results).to_have_count(1)
    expect(results).to_contain_text("Trio says hello")
    results.click()
    expect(bob.locator("#conversation-title")).to_have_text("Trio")
    expect(sidebar_item(bob, "Trio").locator(".badge")).to_have_count(0)


def test_phone_width_shows_list_or_conversation(
    pages: Pages, web: Server, names: Callable[[str], str]
) -> None:
    page = pages.open(PHONE)
    sign_up(page, names("alice"))
    expect(page.get_by_role("navigation", name="Conversations")).to_be_visible()
    expect(page.get_by_role("button", name="Back to conversations")).to_be_hidden()
    sidebar_item(page, "# general").click()
    expect(page.get_by_role("navigation", name="Conversations")).to_be_hidden()
    send(page, "Hello from a phone")
    expect(message(page, "Hello from a phone")).to_be_visible()
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    page.get_by_role("button", name="Back to conversations").click()
    expect(sidebar_item(page, "# general")).to_be_focused()


def test_a_crafted_client_id_breaks_nothing(
    pages: Pages, web: Server, names: Callable[[str], str]
) -> None:
    """A client_id is any string the sender likes, and every member receives
    it: the page must never read it as anything but data."""
    alice_name, bob_name, _, direct = alice_and_bob(web, names)
    bob_headers = web.user(bob_name)
    alice = open_as(pages, web, alice_name)
    sidebar_item(alice, bob_name).click()
    send(alice, "Mine, before the trick")
    expect(message(alice, "Mine, before the trick")).not_to_have_class(re.compile("pending"))

    def bob_sends(text: str, client_id: str) -> None:
        response = httpx.post(
            f"{web.url}/conversations/{direct}/messages",
            json={"content": text, "client_id": client_id},
            headers=bob_headers,
        )
        assert response.status_code == 201, response.text

    # A quote and a bracket: built into a selector, querySelector throws.
    bob_sends("Quote bracket", '"]')
    # A selector of its own: built into one, it matches Alice's messages.
    bob_sends("A selector", 'x"], .message, [data-x="')
    expect(message(alice, "Quote bracket")).to_be_visible()
    expect(message(alice, "A selector")).to_be_visible()
    expect(message(alice, "Mine, before the trick")).to_be_visible()

    # One aimed at Alice's message while it is still being sent.
    held: list[Route] = []

    def hold(route: Route) -> None:
        held.append(route)

    alice.route("**/conversations/*/messages", hold)
    send(alice, "Mine, in flight")
    expect(alice.locator(".pending")).to_contain_text("Sending…")
    bob_sends("Another selector", 'x"], .pending, [data-x="')
    expect(message(alice, "Another selector")).to_be_visible()
    expect(alice.locator(".pending")).to_contain_text("Mine, in flight")
    assert [route.request.method for route in held] == ["POST"]
    held[0].continue_()
    alice.unroute("**/conversations/*/messages")
    expect(message(alice, "Mine, in flight")).not_to_have_class(re.compile("pending"))

    send(alice, "Mine, after the trick")
    expect(message(alice, "Mine, after the trick")).not_to_have_class(re.compile("pending"))
    expect(alice.locator("#messages .message")).to_have_count(6)
    expect(alice.locator("#messages .pending")).to_have_count(0)


def test_a_display_name_cannot_pass_for_another_user(
    pages: Pages, web: Server, names: Callable[[str], str]
) -> None:
    alice_name, bob_name, alice_headers, _ = alice_and_bob(web, names)
    mallory_name = names("mallory")
    mallory_headers = web.user(mallory_name)
    renamed = httpx.patch(
        f"{web.url}/users/me", json={"display_name": bob_name}, headers=mallory_headers
    )
    assert renamed.status_code == 200, renamed.text
    group = httpx.post(
        f"{web.url}/conversations",
        json={"kind": "group", "title": "Payroll", "members": [bob_name, mallory_name]},
        headers=alice_headers,
    ).json()["id"]
    api_send(web, web.user(bob_name), group, "The real Bob here")
    api_send(web, mallory_headers, group, "Send me the password")

    alice = open_as(pages, web, alice_name)
    sidebar_item(alice, "Payroll").click()
    # Mallory's display name is Bob's username: her own username follows it.
    expect(message(alice, "Send me the password").locator(".author")).to_have_text(
        f"{bob_name} @{mallory_name}"
    )
    expect(message(alice, "Send me the password").locator(".handle")).to_have_text(
        f"@{mallory_name}"
    )
    expect(sidebar_item(alice, "Payroll").locator(".preview")).to_have_text(
        f"{bob_name} @{mallory_name}: Send me the password"
    )
    # Without a display name the username shows once.
    expect(message(alice, "The real Bob here").locator(".author")).to_have_text(bob_name)

    mallory = open_as(pages, web, mallory_name)
    sidebar_item(mallory, "Payroll").click()
    # Keystrokes made before her socket is up are not lost: the next ones send.
    mallory.get_by_label("Message", exact=True).press_sequentially("Quick question", delay=100)
    expect(alice.locator("#typing")).to_have_text(f"{bob_name} @{mallory_name} is typing…")

    # Search results and the people picker say who it is too.
    alice.get_by_label("Search your messages").fill("password")
    alice.get_by_label("Search your messages").press("Enter")
    expect(alice.locator("#search-results .meta")).to_contain_text(
        f"{bob_name} @{mallory_name} in Payroll"
    )
    alice.locator("#search-dialog").get_by_role("button", name="Close").click()
    alice.get_by_role("button", name="New message").click()
    alice.get_by_label("Find people by username").fill(mallory_name)
    expect(alice.locator("#direct-results button")).to_have_text(f"{bob_name} @{mallory_name}")


# Where a message is in the list: the one given by id, or the first one in view.
POSITION = """(list, id) => {
  const box = list.getBoundingClientRect();
  const items = [...list.querySelectorAll(".message")];
  const item = id
    ? items.find((li) => li.dataset.id === id)
    : items.find((li) => li.getBoundingClientRect().bottom > box.top);
  return {
    id: item.dataset.id,
    offset: item.getBoundingClientRect().top - box.top,
    fromBottom: list.scrollHeight - list.scrollTop - list.clientHeight,
  };
}"""


def test_loading_older_messages_keeps_the_reader_in_place(
    pages: Pages, web: Server, names: Callable[[str], str]
) -> None:
    alice_name, bob_name, alice_headers, direct = alice_and_bob(web, names)
    bob_headers = web.user(bob_name)
    # Over two pages, from both: the older page holds the reader's own too.
    for n in range(120):
        api_send(web, (alice_headers, bob_headers)[n % 2], direct, f"message number {n}.")
    api_read_all(web, bob_headers, direct)  # or the page opens at the first unread
    page = open_as(pages, web, bob_name)
    sidebar_item(page, alice_name).click()
    expect(page.locator("#messages .message")).to_have_count(50)
    expect(message(page, "message number 119.")).to_be_in_viewport()

    # Near the top (not at 0, where Chromium does not anchor): the older page loads.
    before = page.locator("#messages").evaluate(
        f"list => {{ list.scrollTop = 40; return ({POSITION})(list, null); }}"
    )
    expect(page.locator("#messages .message")).to_have_count(100)
    # Two frames: whatever the browser adjusts on layout has been applied.
    page.evaluate("new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")
    after = page.locator("#messages").evaluate(POSITION, before["id"])
    assert abs(after["offset"] - before["offset"]) <= 3, (before, after)
    assert after["fromBottom"] > 1000, after  # nowhere near the bottom


def test_typing_right_after_a_send_shows_within_a_second_or_so(
    pages: Pages, web: Server, names: Callable[[str], str]
) -> None:
    alice_name, bob_name = alice_and_bob(web, names)[:2]
    alice, bob = open_as(pages, web, alice_name), open_as(pages, web, bob_name)
    sidebar_item(alice, bob_name).click()
    sidebar_item(bob, alice_name).click()
    composer = bob.get_by_label("Message", exact=True)
    composer.press_sequentially("First thought", delay=60)
    expect(alice.locator("#typing")).to_have_text(f"{bob_name} is typing…")
    composer.press("Enter")
    expect(message(alice, "First thought")).to_be_visible()
    expect(alice.locator("#typing")).to_have_text("")

    time.sleep(0.5)
    started = time.monotonic()
    composer.press_sequentially("and a second", delay=60)  # about 0.7 s of typing
    left = 1.5 - (time.monotonic() - started)
    expect(alice.locator("#typing")).to_have_text(
        f"{bob_name} is typing…", timeout=max(1, left * 1000)
    )


def test_a_new_user_lands_in_general(pages: Pages, names: Callable[[str], str]) -> None:
    page = pages.open()
    sign_up(page, names("alice"))
    expect(page.locator("#conversation-title")).to_have_text("# general")
    expect(page.get_by_label("Message", exact=True)).to_be_visible()
    expect(sidebar_item(page, "# general")).to_have_attribute("aria-current", "page")


def test_a_busy_server_at_sign_in_does_not_leave_a_dead_page(
    pages: Pages, names: Callable[[str], str]
) -> None:
    """The first conversation list answers 503 (a busy server): the page says
    so, connects its socket anyway, and the catch-up lands the user in general."""
    page = pages.open()
    busy: list[str] = []

    def first_busy(route: Route) -> None:
        if not busy:
            busy.append(route.request.url)
            route.fulfill(status=503, json={"detail": "Busy; try again"})
        else:
            route.fallback()

    page.route(re.compile(r"/conversations\?limit="), first_busy)
    pages.expected.append("503")  # the browser logs the failed request
    sign_up(page, names("alice"))
    expect(page.locator("#conversation-title")).to_have_text("# general")
    expect(page.locator("#connection")).to_have_text("")
    assert len(busy) == 1


# ---- Reactions, replies, formatting, reading --------------------------------


def test_reactions_and_replies_live(pages: Pages, web: Server, names: Callable[[str], str]) -> None:
    alice_name, bob_name, headers, direct = alice_and_bob(web, names)
    api_send(web, headers, direct, "Pizza tonight?")
    alice, bob = open_as(pages, web, alice_name), open_as(pages, web, bob_name)
    sidebar_item(alice, bob_name).click()
    sidebar_item(bob, alice_name).click()

    # Bob reacts from the message's menu; Alice sees it at once.
    action(bob, "Pizza tonight?", "React to")
    bob.get_by_role("button", name="React with 👍").click()
    chip = message(alice, "Pizza tonight?").locator(".reaction")
    expect(chip).to_have_text("👍 1")
    expect(chip).to_have_attribute("aria-pressed", "false")
    expect(message(bob, "Pizza tonight?").locator(".reaction")).to_have_attribute(
        "aria-pressed", "true"
    )
    # Alice adds hers with the chip; Bob takes his back with his.
    chip.click()
    expect(message(bob, "Pizza tonight?").locator(".reaction")).to_have_text("👍 2")
    message(bob, "Pizza tonight?").locator(".reaction").click()
    expect(chip).to_have_text("👍 1")
    expect(chip).to_have_attribute("aria-pressed", "true")

    # Bob replies: the quote comes with the message, on both sides.
    action(bob, "Pizza tonight?", "Reply to")
    expect(bob.locator("#reply-bar")).to_contain_text("Replying to")
    expect(bob.get_by_label("Message", exact=True)).to_be_focused()
    send(bob, "Yes please")
    reply = message(alice, "Yes please")
    expect(reply.locator(".reply-quote")).to_contain_text("Pizza tonight?")
    expect(bob.locator("#reply-bar")).to_be_hidden()
    expect(message(bob, "Yes please").locator(".reply-quote")).to_contain_text(alice_name)


def test_a_reply_quote_leads_to_the_original(
    pages: Pages, web: Server, names: Callable[[str], str]
) -> None:
    alice_name, bob_name, headers, direct = alice_and_bob(web, names)
    bob_headers = web.user(bob_name)
    original = api_send(web, headers, direct, "The original question")
    for n in range(80):
        api_send(web, headers, direct, f"filler {n}.")
    api_send(web, bob_headers, direct, "The late answer", reply_to=original["id"])
    api_read_all(web, bob_headers, direct)  # or the page opens at the first unread, far back
    bob = open_as(pages, web, bob_name)
    sidebar_item(bob, alice_name).click()
    found = bob.locator(f'#messages .message[data-id="{original["id"]}"]')
    # The newest page is on screen, and the original is not in it (only in
    # the answer's quote, which is why it is looked for by its id).
    expect(message(bob, "The late answer")).to_be_visible()
    expect(found).to_have_count(0)
    message(bob, "The late answer").locator(".reply-quote").click()
    expect(found).to_be_in_viewport()
    expect(found).to_have_class(re.compile("found"))
    expect(found).to_be_focused()


def test_formatting_is_rendered_and_nothing_else(
    pages: Pages, web: Server, names: Callable[[str], str]
) -> None:
    alice_name, bob_name, headers, direct = alice_and_bob(web, names)
    text = (
        f"**Bold** and _italic_ and `x < y` for @{bob_name}, see https://example.com/a?b=1. "
        "Not javascript:alert(1) nor [x](javascript:alert(2)) nor <a href=x>html</a>\n"
        "```\nfor (;;) {}\n<img src=x onerror=alert(3)>\n```"
    )
    api_send(web, headers, direct, text)
    bob = open_as(pages, web, bob_name)
    sidebar_item(bob, alice_name).click()
    content = message(bob, "Bold").locator(".content")
    expect(content.locator("strong")).to_have_text("Bold")
    expect(content.locator("em")).to_have_text("italic")
    expect(content.locator("code").first).to_have_text("x < y")  # inline, before the block
    expect(content.locator("pre code")).to_have_text("for (;;) {}\n<img src=x onerror=alert(3)>")
    expect(content.locator(".mention.me")).to_have_text(f"@{bob_name}")
    link = content.get_by_role("link")
    expect(link).to_have_count(1)  # the https one; javascript: and HTML stay text
    expect(link).to_have_attribute("href", "https://example.com/a?b=1")
    expect(link).to_have_attribute("rel", "noopener noreferrer")
    expect(content).to_contain_text(
        "Not javascript:alert(1) nor [x](javascript:alert(2)) nor <a href=x>html</a>"
    )
    expect(bob.locator("#messages img, #messages a[href^=javascript]")).to_have_count(0)


def test_grouping_and_day_separators(
    pages: Pages, web: Server, names: Callable[[str], str]
) -> None:
    alice_name, bob_name, headers, direct = alice_and_bob(web, names)
    bob_headers = web.user(bob_name)
    for text in ("One", "Two", "Three"):
        api_send(web, headers, direct, f"{text} from Alice")
    api_send(web, bob_headers, direct, "Bob answers")
    bob = open_as(pages, web, bob_name)
    sidebar_item(bob, alice_name).click()
    # One name over Alice's three, shown once; Bob's starts a group of its own.
    expect(message(bob, "One from Alice")).not_to_have_class(re.compile("grouped"))
    expect(message(bob, "Two from Alice")).to_have_class(re.compile("grouped"))
    expect(message(bob, "Three from Alice")).to_have_class(re.compile("grouped"))
    expect(message(bob, "Bob answers")).not_to_have_class(re.compile("grouped"))
    expect(message(bob, "Two from Alice").locator(".author")).not_to_be_in_viewport()
    expect(bob.locator("#messages .day-separator")).to_have_text(["Today"])

    # The next day, the same messages are yesterday's.
    tomorrow = datetime.now(UTC) + timedelta(days=1)
    later = open_as(pages, web, bob_name, now=tomorrow)
    sidebar_item(later, alice_name).click()
    expect(later.locator("#messages .day-separator")).to_have_text(["Yesterday"])


def test_opening_at_the_first_unread_message(
    pages: Pages, web: Server, names: Callable[[str], str]
) -> None:
    alice_name, bob_name, headers, direct = alice_and_bob(web, names)
    bob_headers = web.user(bob_name)
    for n in range(20):
        api_send(web, headers, direct, f"old {n}.")
    api_read_all(web, bob_headers, direct)
    for n in range(30):
        api_send(web, headers, direct, f"new {n}.")
    bob = open_as(pages, web, bob_name)
    expect(sidebar_item(bob, alice_name).locator(".badge")).to_have_text("30 unread")
    expect(bob).to_have_title(re.compile(r"^\(\d+\) MessageApp$"))
    sidebar_item(bob, alice_name).click()

    # The line is right before the first unread message, which is in view;
    # the newest is below, unseen, and so still unread.
    line = bob.locator("#messages .new-line")
    expect(line).to_have_text("New messages")
    expect(line).to_be_in_viewport()
    following = bob.locator("#messages .new-line + .message")
    expect(following).to_contain_text("new 0.")
    expect(message(bob, "new 29.")).not_to_be_in_viewport()
    time.sleep(1)  # time enough for a read marker to go out, if one were to
    assert unread_of(web, bob_headers, direct) > 0

    # A message arriving while Bob reads up there: a button, not a jump.
    api_send(web, headers, direct, "Newest of all")
    button = bob.get_by_role("button", name=re.compile("new message"))
    expect(button).to_have_text("1 new message ↓")
    button.click()
    expect(message(bob, "Newest of all")).to_be_in_viewport()
    expect(button).to_be_hidden()
    expect(sidebar_item(bob, alice_name).locator(".badge")).to_have_count(0)
    expect(bob).to_have_title(re.compile(r"^(\(\d+\) )?MessageApp$"))


def test_keyboard_edit_last_and_escape(
    pages: Pages, web: Server, names: Callable[[str], str]
) -> None:
    alice_name, bob_name = alice_and_bob(web, names)[:2]
    alice = open_as(pages, web, alice_name)
    sidebar_item(alice, bob_name).click()
    send(alice, "Frist try")
    expect(message(alice, "Frist try")).not_to_have_class(re.compile("pending"))
    composer = alice.get_by_label("Message", exact=True)
    composer.press("ArrowUp")  # the composer is empty: edit the last message
    edit = alice.get_by_role("textbox", name="Edit message")
    expect(edit).to_be_focused()
    edit.press("Escape")
    expect(edit).to_have_count(0)
    composer.press("ArrowUp")
    alice.get_by_role("textbox", name="Edit message").fill("First try")
    alice.get_by_role("textbox", name="Edit message").press("Enter")
    expect(message(alice, "First try")).to_contain_text("(edited)")

    # The actions bar is reached by keyboard, and says which message it acts on.
    message(alice, "First try").get_by_role("button", name=re.compile("^React to ")).focus()
    expect(message(alice, "First try").locator(".message-actions")).to_have_css("opacity", "1")
    alice.keyboard.press("Enter")
    alice.keyboard.press("Escape")
    expect(alice.locator(".reaction-picker")).to_have_count(0)


def test_settings_panel_name_password_sign_out(
    pages: Pages, web: Server, names: Callable[[str], str]
) -> None:
    alice_name = names("alice")
    web.user(alice_name)
    page = open_as(pages, web, alice_name)
    page.get_by_role("button", name="Settings", exact=True).click()
    page.get_by_label("Display name").fill("Alice Liddell")
    page.get_by_role("button", name="Save", exact=True).click()
    expect(page.locator("#profile-form .status")).to_have_text("Saved.")
    expect(page.locator("#me")).to_have_text(f"Signed in as Alice Liddell @{alice_name}")

    page.get_by_label("Current password").fill(PASSWORD)
    page.get_by_label("New password").fill("a brand new passphrase")
    page.get_by_role("button", name="Change password").click()
    expect(page.locator("#password-form .status")).to_contain_text("Password changed")
    token = httpx.post(
        f"{web.url}/token", data={"username": alice_name, "password": "a brand new passphrase"}
    )
    assert token.status_code == 200
    # The page goes on with its refreshed session.
    page.get_by_role("button", name="Close").last.click()
    send(page, "Still here after the change")
    expect(message(page, "Still here after the change")).not_to_have_class(re.compile("pending"))

    page.get_by_role("button", name="Settings", exact=True).click()
    # A request already on its way when the session ends (a read marker) is
    # answered 401, which Chromium logs: the page is signed out all the same.
    pages.expected.append("status of 401")
    page.get_by_role("button", name="Sign out here").click()
    expect(page.get_by_role("button", name="Log in")).to_be_visible()


def test_members_panel_add_and_leave(
    pages: Pages, web: Server, names: Callable[[str], str]
) -> None:
    alice_name, bob_name, carol_name = names("alice"), names("bob"), names("carol")
    headers = web.user(alice_name)
    web.user(bob_name)
    web.user(carol_name)
    title = f"Crew {alice_name}"
    httpx.post(
        f"{web.url}/conversations",
        json={"kind": "group", "title": title, "members": [bob_name]},
        headers=headers,
    )
    alice = open_as(pages, web, alice_name)
    sidebar_item(alice, title).click()
    alice.get_by_role("button", name="Members").click()
    members = alice.get_by_role("list", name="Who is in it").get_by_role("listitem")
    expect(members).to_have_text([f"{alice_name} (you)", bob_name])
    alice.get_by_label("Add someone (username)").fill(carol_name)
    alice.get_by_role("button", name="Add", exact=True).click()
    expect(members).to_have_count(3)
    expect(alice.locator("#conversation-info")).to_have_text("group · 3 members")
    alice.get_by_role("button", name="Leave group").click()
    expect(sidebar_item(alice, title)).to_have_count(0)
    expect(alice.locator("#conversation-title")).to_have_text("# general")


def test_quick_switcher(pages: Pages, web: Server, names: Callable[[str], str]) -> None:
    alice_name, bob_name, carol_name = names("alice"), names("bob"), names("carol")
    headers = web.user(alice_name)
    web.user(bob_name)
    web.user(carol_name)
    api_direct(web, headers, bob_name)
    alice = open_as(pages, web, alice_name)
    expect(alice.locator("#conversation-title")).to_have_text("# general")
    alice.keyboard.press("Control+k")
    switcher = alice.get_by_label("A conversation or a person")
    expect(switcher).to_be_focused()
    switcher.fill(bob_name)
    expect(alice.locator("#switcher-results button")).to_have_count(1)
    switcher.press("Enter")
    expect(alice.locator("#conversation-title")).to_have_text(bob_name)
    # Someone with no conversation yet: the switcher starts one.
    alice.keyboard.press("Control+k")
    switcher.fill(carol_name)
    alice.locator("#switcher-results").get_by_role("button", name=carol_name).click()
    expect(alice.locator("#conversation-title")).to_have_text(carol_name)


def test_search_result_opens_at_the_hit(
    pages: Pages, web: Server, names: Callable[[str], str]
) -> None:
    alice_name, bob_name, headers, direct = alice_and_bob(web, names)
    api_send(web, headers, direct, "The needle is here")
    for n in range(80):
        api_send(web, headers, direct, f"hay {n}.")
    api_read_all(web, web.user(bob_name), direct)
    bob = open_as(pages, web, bob_name)
    bob.get_by_label("Search your messages").fill("NEEDLE")
    bob.get_by_label("Search your messages").press("Enter")
    expect(bob.locator("#search-results mark")).to_have_text("needle")
    bob.locator("#search-results .result").click()
    hit = message(bob, "The needle is here")
    expect(hit).to_be_in_viewport()
    expect(hit.locator("mark")).to_have_text("needle")
    # The newer messages load as Bob scrolls down to them, a page at a time.
    for _ in range(20):
        bob.locator("#messages").evaluate("list => list.scrollTop = list.scrollHeight")
        if message(bob, "hay 79.").count():
            break
        bob.wait_for_timeout(300)
    expect(message(bob, "hay 79.")).to_be_visible()
    expect(bob.locator("#messages .message")).to_have_count(81)  # no gap, no double


def serious_violations(page: Page) -> list[str]:
    """axe-core's serious and critical findings on the page as it is."""
    results = Axe().run(page)
    return [
        f"{v['id']}: {v['help']} ({len(v['nodes'])}: {v['nodes'][0]['target']})"
        for v in results.response["violations"]
        if v["impact"] in ("serious", "critical")
    ]


def test_accessibility_of_login_chat_and_settings(
    pages: Pages, web: Server, names: Callable[[str], str]
) -> None:
    alice_name, bob_name, headers, direct = alice_and_bob(web, names)
    original = api_send(web, headers, direct, "**Hello** there, see https://example.com")
    api_send(web, web.user(bob_name), direct, "Hi!", reply_to=original["id"])
    page = pages.open()
    expect(page.get_by_role("button", name="Log in")).to_be_visible()
    assert serious_violations(page) == []

    log_in(page, alice_name)
    sidebar_item(page, bob_name).click()
    expect(message(page, "Hi!")).to_be_visible()
    httpx.put(
        f"{web.url}/messages/{original['id']}/reactions/🎉", headers=headers
    ).raise_for_status()
    expect(message(page, "Hello").locator(".reaction")).to_have_text("🎉 1")
    assert serious_violations(page) == []

    page.get_by_role("button", name="Settings", exact=True).click()
    expect(page.get_by_role("heading", name="Change your password")).to_be_visible()
    assert serious_violations(page) == []


def test_screenshots_of_the_main_screens(browser: Browser, server: Server, tmp_path: Path) -> None:
    """The screens the README shows; `make screenshots` writes them to docs/."""
    folder = Path(os.environ.get("SCREENSHOTS_DIR", tmp_path))
    pages = Pages(browser, server)  # a fresh server: only these two people in it
    alice_headers, bob_headers = server.user("alice"), server.user("bob")
    for headers, name in [(alice_headers, "Alice Martin"), (bob_headers, "Bob Chen")]:
        httpx.patch(f"{server.url}/users/me", json={"display_name": name}, headers=headers)
    direct = api_direct(server, alice_headers, "bob")
    question = api_send(server, alice_headers, direct, "Hi Bob! Did the release go out?")
    api_send(
        server,
        bob_headers,
        direct,
        "It did, at four. **No errors** so far: https://example.com/releases/1.0",
        reply_to=question["id"],
    )
    thanks = api_send(server, alice_headers, direct, "Great, I'll tell the others in `#general`.")
    api_send(server, bob_headers, direct, "<b>Tags</b> show as typed, never as HTML.")
    # Emoji that the DejaVu fonts draw: the test machines have no color emoji font.
    for emoji in ("❤", "✔"):
        reacted = httpx.put(
            f"{server.url}/messages/{thanks['id']}/reactions/{emoji}", headers=bob_headers
        )
        assert reacted.status_code == 204
    general = httpx.get(f"{server.url}/conversations", headers=bob_headers).json()[-1]["id"]

    pages.open().screenshot(path=folder / "login.png")
    bob = open_as(pages, server, "bob")
    sidebar_item(bob, "Alice Martin @alice").click()
    alice = open_as(pages, server, "alice")
    sidebar_item(alice, "Bob Chen @bob").click()
    # Sent once both have left general (where they land): unread for Bob.
    api_send(server, alice_headers, general, "Release 1.0 is out: thanks, everyone!")
    expect(message(alice, "never as HTML")).to_be_visible()
    expect(sidebar_item(alice, "Bob Chen @bob").locator(".badge")).to_have_count(0)  # seen: read
    bob.get_by_label("Message", exact=True).fill("Shall we celebrate?")
    expect(alice.locator("#typing")).to_have_text("Bob Chen @bob is typing…")
    alice.screenshot(path=folder / "chat.png")

    phone = open_as(pages, server, "bob", PHONE)
    expect(sidebar_item(phone, "# general").locator(".badge")).to_have_text("1 unread")
    phone.screenshot(path=folder / "phone-list.png")
    sidebar_item(phone, "Alice Martin @alice").click()
    expect(message(phone, "never as HTML")).to_be_visible()
    phone.screenshot(path=folder / "phone-chat.png")
    assert pages.close() == []


# ---- Attachments ---------------------------------------------------------------

# A DataTransfer holding one file made from base64, as a drop or a paste carries it.
FILE_TRANSFER = """([data, name, type]) => {
  const bytes = Uint8Array.from(atob(data), (c) => c.charCodeAt(0));
  const transfer = new DataTransfer();
  transfer.items.add(new File([bytes], name, { type }));
  return transfer;
}"""


def png(width: int, height: int) -> str:
    from PIL import Image

    image = Image.new("RGB", (width, height), (40, 120, 200))
    out = io.BytesIO()
    image.save(out, format="PNG")
    return base64.b64encode(out.getvalue()).decode()


def drop_file(page: Page, data: str, name: str) -> None:
    transfer = page.evaluate_handle(FILE_TRANSFER, [data, name, "image/png"])
    page.dispatch_event("#messages", "dragover", {"dataTransfer": transfer})
    page.dispatch_event("#messages", "drop", {"dataTransfer": transfer})


def paste_file(page: Page, data: str, name: str) -> None:
    transfer = page.evaluate_handle(FILE_TRANSFER, [data, name, "image/png"])
    page.evaluate(
        """(transfer) => document.getElementById("composer-input").dispatchEvent(
            new ClipboardEvent("paste", { clipboardData: transfer, bubbles: true }))""",
        transfer,
    )


def loaded_image(page: Page, alt: str) -> Any:
    image = page.locator(f'#messages img[alt="{alt}"]')
    expect(image).to_be_visible()
    page.wait_for_function(
        "(alt) => [...document.querySelectorAll('#messages img')].some("
        "(i) => i.alt === alt && i.complete && i.naturalWidth > 0)",
        arg=alt,
    )
    return image


def test_images_by_drop_and_paste_reach_the_other_side_live(
    pages: Pages, web: Server, names: Callable[[str], str]
) -> None:
    alice_name, bob_name, _, _ = alice_and_bob(web, names)
    alice, bob = open_as(pages, web, alice_name), open_as(pages, web, bob_name)
    sidebar_item(alice, bob_name).click()
    sidebar_item(bob, alice_name).click()

    # Dropped on the conversation: uploaded, then sent with a line of text.
    drop_file(alice, png(400, 300), "dropped.png")
    expect(alice.locator("#uploads li .size")).to_have_count(1)  # uploaded
    send(alice, "Look at this")
    loaded_image(bob, "dropped.png")  # the thumbnail, live
    expect(message(bob, "Look at this")).to_be_visible()
    expect(alice.locator("#uploads")).to_be_hidden()

    # Pasted into the composer: sent on its own, no text needed.
    paste_file(alice, png(120, 90), "pasted.png")
    expect(alice.locator("#uploads li .size")).to_have_count(1)
    alice.get_by_label("Message", exact=True).press("Enter")
    thumbnail = loaded_image(bob, "pasted.png")
    expect(sidebar_item(bob, alice_name).locator(".preview")).to_have_text(
        f"{alice_name}: shared an image (pasted.png)"
    )
    # The thumbnail opens the full size, which this reader may fetch.
    link = thumbnail.locator("xpath=..")
    href = link.get_attribute("href")
    assert href is not None and href.startswith("/attachments/")
    assert link.get_attribute("target") == "_blank"
    full = httpx.get(f"{web.url}{href}")
    assert full.status_code == 200 and full.headers["content-type"] == "image/png"

    # Any other file, through the attach button: a chip with its name, size and a link.
    with alice.expect_file_chooser() as chooser:
        alice.get_by_role("button", name="Attach files").click()
    notes: FilePayload = {"name": "notes.txt", "mimeType": "text/plain", "buffer": b"x" * 2048}
    chooser.value.set_files(files=[notes])
    expect(alice.locator("#uploads li .size")).to_have_text("2.0 KB")
    send(alice, "and the notes")
    chip = message(bob, "and the notes").locator("a.file-chip")
    expect(chip).to_contain_text("notes.txt")
    expect(chip).to_contain_text("2.0 KB")
    assert chip.get_attribute("download") == "notes.txt"


# ---- Mentions and notifications (issue 19) ---------------------------------------


def api_group(web: Server, headers: dict[str, str], title: str, members: list[str]) -> int:
    response = httpx.post(
        f"{web.url}/conversations",
        json={"kind": "group", "title": title, "members": members},
        headers=headers,
    )
    assert response.status_code == 201, response.text
    return int(response.json()["id"])


def test_unread_count_in_the_title_and_on_the_icon(
    pages: Pages, web: Server, names: Callable[[str], str]
) -> None:
    alice_name, bob_name, headers, direct = alice_and_bob(web, names)
    bob = open_as(pages, web, bob_name)
    expect(bob.locator("#conversation-title")).to_have_text("# general")
    expect(bob).to_have_title("MessageApp")
    api_send(web, headers, direct, "One")
    api_send(web, headers, direct, "Two")
    expect(bob).to_have_title("(2) MessageApp")
    # The icon: favicon.svg with the count drawn on it, at a blob: URL the
    # CSP allows (img-src 'self' blob:); it loads as an image, no violation.
    icon = bob.locator("link[rel=icon]")
    expect(icon).to_have_attribute("href", re.compile("^blob:"))
    size = bob.evaluate(
        """async () => {
          const image = new Image();
          image.src = document.querySelector("link[rel=icon]").href;
          await image.decode();
          return [image.naturalWidth, image.naturalHeight];
        }"""
    )
    assert size == [64, 64]
    sidebar_item(bob, alice_name).click()
    expect(message(bob, "Two")).to_be_visible()
    expect(bob).to_have_title("MessageApp")
    expect(icon).to_have_attribute("href", "favicon.svg")


def test_a_mention_of_me_is_highlighted(
    pages: Pages, web: Server, names: Callable[[str], str]
) -> None:
    alice_name, bob_name, headers, _ = alice_and_bob(web, names)
    carol_name = names("carol")
    web.user(carol_name)
    title = f"Team {alice_name}"
    group = api_group(web, headers, title, [bob_name, carol_name])
    api_send(web, headers, group, f"Hi @{bob_name}, see this")
    api_send(web, headers, group, f"And @{carol_name}, you too")
    bob = open_as(pages, web, bob_name)
    item = sidebar_item(bob, title)
    # Unread, and one of them mentions Bob: "@" beside the count.
    expect(item.locator(".badge")).to_have_text("2 unread")
    expect(item.locator(".mention-badge")).to_have_text("@ 1 mentioning you,")
    item.click()
    mine, other = message(bob, "see this"), message(bob, "you too")
    expect(mine).to_have_class(re.compile(r"\bmentions-me\b"))
    expect(mine.locator(".mention.me")).to_have_text(f"@{bob_name}")
    expect(mine.locator(".meta")).to_contain_text("mentions you")  # said, not only shown
    expect(other).not_to_have_class(re.compile(r"\bmentions-me\b"))
    expect(other.locator(".mention")).to_have_text(f"@{carol_name}")
    expect(item.locator(".mention-badge")).to_have_count(0)  # read
    assert serious_violations(bob) == []

    # Live, while Bob reads another conversation: the badge comes back.
    sidebar_item(bob, "# general").click()
    api_send(web, headers, group, f"@{bob_name} again")
    expect(item.locator(".mention-badge")).to_have_count(1)
    item.click()
    expect(message(bob, "again")).to_have_class(re.compile(r"\bmentions-me\b"))


def test_mention_autocomplete_by_keyboard_and_mouse(
    pages: Pages, web: Server, names: Callable[[str], str]
) -> None:
    alice_name, bob_name, carol_name = names("alice"), names("bob"), names("carol")
    headers = web.user(alice_name)
    web.user(bob_name)
    carol_headers = web.user(carol_name)
    httpx.patch(f"{web.url}/users/me", json={"display_name": "Bea Carol"}, headers=carol_headers)
    title = f"Pick {alice_name}"
    api_group(web, headers, title, [bob_name, carol_name])
    alice = open_as(pages, web, alice_name)
    sidebar_item(alice, title).click()
    box = alice.get_by_label("Message", exact=True)
    listbox = alice.get_by_role("listbox", name="People to mention")
    options = listbox.get_by_role("option")

    # "@" alone: every other member, the first one active.
    box.fill("Hi @")
    expect(options).to_have_text([bob_name, f"Bea Carol @{carol_name}"])
    expect(box).to_have_attribute("aria-activedescendant", "mention-option-0")
    expect(options.nth(0)).to_have_attribute("aria-selected", "true")
    assert serious_violations(alice) == []
    box.press("ArrowDown")
    expect(box).to_have_attribute("aria-activedescendant", "mention-option-1")
    expect(options.nth(1)).to_have_attribute("aria-selected", "true")
    box.press("Enter")  # picks, does not send
    expect(box).to_have_value(f"Hi @{carol_name} ")
    expect(listbox).to_be_hidden()
    expect(box).not_to_have_attribute("aria-activedescendant", re.compile("."))

    # "@B": Bob by his username first, then Carol by her display name; Tab picks.
    box.press_sequentially("and @B")
    expect(options).to_have_text([bob_name, f"Bea Carol @{carol_name}"])
    box.press("Tab")
    expect(box).to_have_value(f"Hi @{carol_name} and @{bob_name} ")
    expect(box).to_be_focused()

    # Nobody matches: no list. Escape closes it, and the next Enter sends.
    box.press_sequentially("@zz")
    expect(listbox).to_be_hidden()
    for _ in range(2):
        box.press("Backspace")
    expect(options).to_have_count(2)
    box.press("Home")  # the caret leaves the @word: the list goes
    expect(listbox).to_be_hidden()
    box.press("End")
    box.press("Backspace")
    box.press_sequentially("@")  # typing one brings it back
    expect(options).to_have_count(2)
    box.press("Escape")
    expect(listbox).to_be_hidden()
    box.press("Backspace")
    box.press("Enter")
    expect(message(alice, f"Hi @{carol_name} and @{bob_name}")).to_be_visible()

    # A click picks too. In a channel the members come from its members route.
    sidebar_item(alice, "# general").click()
    box.fill(f"@{carol_name[:-2]}")
    expect(options).to_have_text([f"Bea Carol @{carol_name}"])
    options.first.click()
    expect(box).to_have_value(f"@{carol_name} ")
    expect(box).to_be_focused()


def test_service_worker_registers_under_the_csp_and_the_app_installs(
    pages: Pages, web: Server
) -> None:
    page = pages.open()
    # The worker at /sw.js, for the whole app, activated; a CSP violation
    # (worker-src) would have refused it and failed the test as a console error.
    scope, script = page.evaluate(
        "navigator.serviceWorker.ready.then((r) => [r.scope, r.active.scriptURL])"
    )
    assert (scope, script) == (f"{web.url}/", f"{web.url}/sw.js")
    # The manifest: linked, served as JSON, read by Chromium without complaint.
    assert page.locator("link[rel=manifest]").get_attribute("href") == "manifest.webmanifest"
    cdp = page.context.new_cdp_session(page)
    manifest = cdp.send("Page.getAppManifest")
    assert manifest["url"] == f"{web.url}/manifest.webmanifest"
    assert manifest["errors"] == []
    assert manifest["manifest"]["display"] == "kStandalone"
    # Installable, but for this being a private (incognito) browser context.
    errors = cdp.send("Page.getInstallabilityErrors")["installabilityErrors"]
    assert [e["errorId"] for e in errors] in ([], ["in-incognito"])


# Stands in for the browser's push service, which headless Chromium has not
# (in a private context it refuses the Push API, with a console error):
# pushManager.subscribe() gives a subscription whose toJSON() is SUBSCRIPTION.
PUSH_STAND_IN = """(() => {
  const json = SUBSCRIPTION;
  let current = null;
  window.pushCalls = [];
  PushManager.prototype.getSubscription = async () => current;
  PushManager.prototype.subscribe = async (options) => {
    const key = new Uint8Array(options.applicationServerKey);
    window.pushCalls.push({ userVisibleOnly: options.userVisibleOnly, key: Array.from(key) });
    current = {
      endpoint: json.endpoint,
      options: { applicationServerKey: key.buffer },
      toJSON: () => json,
      unsubscribe: async () => { current = null; return true; },
    };
    return current;
  };
  // The tab can be made to look hidden: window.pretendHidden = true.
  window.pretendHidden = false;
  Object.defineProperty(Document.prototype, "visibilityState", {
    get: () => (window.pretendHidden ? "hidden" : "visible"),
  });
})()"""
# What a page (or, evaluated there, the service worker) asks the browser to
# show and to close: self.shownNotes, self.closedTags (see `shown` below).
RECORD_NOTIFICATIONS = """(() => {
  self.shownNotes = [];
  self.closedTags = [];
  const show = ServiceWorkerRegistration.prototype.showNotification;
  ServiceWorkerRegistration.prototype.showNotification = function (title, options) {
    self.shownNotes.push([title, options.body, options.tag]);
    return show.call(this, title, options);
  };
  const close = Notification.prototype.close;
  Notification.prototype.close = function () {
    self.closedTags.push(this.tag);
    return close.call(this);
  };
})()"""


def push_stand_in(
    endpoint: str,
    p256dh: str = "BNcRdreALRFXTkOOUHK1EtK2wtaz5Ry4YfYCA",
    auth: str = "tBHItJI5svbpez7KI4CCXg",  # 16 bytes
) -> str:
    """The init script, with the subscription's toJSON() it gives."""
    subscription = {
        "endpoint": endpoint,
        "expirationTime": None,
        "keys": {"p256dh": p256dh, "auth": auth},
    }
    stand_in = PUSH_STAND_IN.replace("SUBSCRIPTION", json.dumps(subscription))
    return f"{stand_in};\n{RECORD_NOTIFICATIONS}"


# A P-256 public key the server accepts: the curve's generator, uncompressed
# (0x04, x, y), the public key of the private key 1. Nothing is encrypted to it.
P256_POINT = (
    base64.urlsafe_b64encode(
        bytes.fromhex(
            "04"
            "6b17d1f2e12c4247f8bce6e563a440f277037d812deb33a0f4a13945d898c296"
            "4fe342e2fe1a7f9b8ee7eb4a7c0f9e162bce33576b315ececbb6406837bf51f5"
        )
    )
    .decode()
    .rstrip("=")
)
# The server's VAPID public key, as GET /push/key gives it (base64url).
VAPID_KEY = (
    "BEl62iUYgUivxIkv69yViEuiBIa-Ib9-SkvMeAtA3LFgDzkrxZJjSgSnfckjBJuBkr3qBUYIHBQFLXYp5Nksh8U"
)
# The notifications Chromium lists as shown. Under load, headless Chromium
# sometimes lists none of those shown (its stand-in for the desktop's
# notification center loses them), so the tests count what the page, or the
# service worker, asked the browser to show: `shown`.
NOTIFICATIONS = """navigator.serviceWorker.ready
  .then((r) => r.getNotifications())
  .then((shown) => shown.map((n) => [n.title, n.body, n.tag]))"""


def shown(where: Page | Worker, count: int) -> list[list[str]]:
    """[title, body, tag] of each notification shown, once there are `count`."""
    deadline = time.monotonic() + 15
    while len(notes := where.evaluate("self.shownNotes")) != count:
        assert time.monotonic() < deadline, f"{len(notes)} notifications, not {count}: {notes}"
        if isinstance(where, Worker):
            time.sleep(0.1)  # a worker has no wait_for_timeout; evaluate() lets events in
        else:
            where.wait_for_timeout(100)
    return list(notes)


def listed(page: Page, tag: str) -> bool:
    """Whether Chromium lists a notification of `tag`, given a moment to."""
    for _ in range(30):
        if any(note[2] == tag for note in page.evaluate(NOTIFICATIONS)):
            return True
        page.wait_for_timeout(100)
    return False


def closed(page: Page, tag: str, was_listed: bool) -> None:
    """The conversation was read: the page closed its notification (when
    Chromium listed it: the page asks for the list), and none stays listed."""
    if was_listed:
        page.wait_for_function("(tag) => self.closedTags.includes(tag)", arg=tag)
    for _ in range(150):
        if not page.evaluate(NOTIFICATIONS):
            return
        page.wait_for_timeout(100)
    raise AssertionError(f"still listed: {page.evaluate(NOTIFICATIONS)}")


def test_notifications_opt_in_levels_and_push_subscription(
    pages: Pages, web: Server, names: Callable[[str], str]
) -> None:
    alice_name, bob_name, headers, direct = alice_and_bob(web, names)
    endpoint = "https://push.example.net/send/abc123"
    bob = pages.open(permissions=["notifications"], init_script=push_stand_in(endpoint))
    # The push routes, as issue 19 defines them, answered here: what matters
    # is what the page sends (the server's side has tests of its own).
    sent: list[tuple[str, Any]] = []

    def push_routes(route: Route) -> None:
        request = route.request
        sent.append(
            (f"{request.method} {request.url.removeprefix(web.url)}", request.post_data_json)
        )
        if request.method == "GET":
            route.fulfill(json={"public_key": VAPID_KEY})
        elif request.method == "POST":
            route.fulfill(status=201, json={"endpoint": "x", "created_at": "2026-01-01T00:00:00Z"})
        else:
            route.fulfill(status=204)

    bob.route(re.compile(r"/push/"), push_routes)
    log_in(bob, bob_name)
    expect(bob.locator("#conversation-title")).to_have_text("# general")
    assert sent == []  # nothing without the user's say-so

    bob.get_by_role("button", name="Settings", exact=True).click()
    bob.get_by_role("button", name="Enable notifications").click()
    expect(bob.locator("#notifications-status")).to_have_text(
        "On: this browser will be notified, with MessageApp open or closed."
    )
    expect(bob.get_by_role("button", name="Disable notifications")).to_be_focused()
    subscription = bob.evaluate("window.pushCalls")
    assert subscription[0]["userVisibleOnly"] is True
    key = base64.urlsafe_b64decode(VAPID_KEY + "=")
    assert bytes(subscription[0]["key"]) == key and len(key) == 65
    assert sent[0] == ("GET /push/key", None)
    assert sent[1][0] == "POST /push/subscriptions" and sent[1][1]["endpoint"] == endpoint
    assert set(sent[1][1]["keys"]) == {"p256dh", "auth"}
    bob.keyboard.press("Escape")

    # The tab hidden: a message from Alice shows as a notification, one per conversation.
    bob.evaluate("window.pretendHidden = true")
    api_send(web, headers, direct, "Are you there?")
    tag = f"conversation-{direct}"
    assert shown(bob, 1) == [[alice_name, "Are you there?", tag]]
    was_listed = listed(bob, tag)
    bob.evaluate("window.pretendHidden = false")
    sidebar_item(bob, alice_name).click()  # read
    closed(bob, tag, was_listed)

    # Level "mentions" for this conversation, in the members panel: a message
    # without a mention shows no notification; one with it does.
    bob.get_by_role("button", name="Members").click()
    level = bob.get_by_label("Notify me of")
    expect(level).to_have_value("all")
    with bob.expect_response(re.compile(r"/notifications$")) as saved:
        level.select_option("mentions")
    assert saved.value.status == 200
    expect(bob.locator("#notifications-form .status")).to_have_text("Saved.")
    bob.keyboard.press("Escape")
    expect(bob.locator("#conversation-info")).to_have_text(
        "direct message · notifies mentions only"
    )
    sidebar_item(bob, "# general").click()
    bob.evaluate("window.pretendHidden = true")
    api_send(web, headers, direct, "No mention here")
    expect(sidebar_item(bob, alice_name).locator(".preview")).to_contain_text("No mention here")
    bob.wait_for_timeout(300)  # time enough to show one, were it wrongly shown
    assert len(shown(bob, 1)) == 1
    api_send(web, headers, direct, f"Now @{bob_name}, please")
    assert shown(bob, 2)[1] == [alice_name, f"Now @{bob_name}, please", tag]

    # A click on it (sw.js tells the open tab): the conversation opens at that message.
    jump = api_send(web, headers, direct, "jump here")
    bob.evaluate("window.pretendHidden = false")
    bob.evaluate(
        "(data) => navigator.serviceWorker.dispatchEvent(new MessageEvent('message', { data }))",
        {"type": "open", "conversationId": direct, "messageId": jump["id"]},
    )
    expect(bob.locator("#conversation-title")).to_have_text(alice_name)
    expect(message(bob, "jump here")).to_have_class(re.compile(r"\bfound\b"))

    # Disable: the server is told to forget the subscription.
    bob.get_by_role("button", name="Settings", exact=True).click()
    bob.get_by_role("button", name="Disable notifications").click()
    expect(bob.locator("#notifications-status")).to_have_text("Off in this browser.")
    assert sent[-1] == ("DELETE /push/subscriptions", {"endpoint": endpoint})
    assert (
        bob.evaluate("navigator.serviceWorker.ready.then((r) => r.pushManager.getSubscription())")
        is None
    )

    # Enabled again, then signing out: deleted too, before the token goes.
    bob.get_by_role("button", name="Enable notifications").click()
    expect(bob.get_by_role("button", name="Disable notifications")).to_be_visible()
    bob.get_by_role("button", name="Sign out here").click()
    expect(bob.get_by_role("button", name="Log in")).to_be_visible()
    assert sent[-1] == ("DELETE /push/subscriptions", {"endpoint": endpoint})


def test_a_push_shows_and_a_link_opens_the_message(
    pages: Pages, web: Server, names: Callable[[str], str]
) -> None:
    alice_name, bob_name, headers, direct = alice_and_bob(web, names)
    for i in range(60):
        api_send(web, headers, direct, f"filler {i}.")
    wanted = api_send(web, headers, direct, "the one the push was about")
    for i in range(60):
        api_send(web, headers, direct, f"later {i}.")
    bob = pages.open(permissions=["notifications"], init_script=RECORD_NOTIFICATIONS)
    # A push as the server sends it (issue 19), delivered to the service
    # worker by Chromium's DevTools protocol, as a push service would.
    cdp = bob.context.new_cdp_session(bob)
    registrations: list[dict[str, Any]] = []
    cdp.on(
        "ServiceWorker.workerRegistrationUpdated",
        lambda e: registrations.extend(e["registrations"]),
    )
    bob.evaluate("navigator.serviceWorker.ready.then(() => true)")
    worker = bob.context.service_workers[0]
    worker.evaluate(RECORD_NOTIFICATIONS)
    cdp.send("ServiceWorker.enable")
    bob.wait_for_timeout(500)  # events arrive while Playwright waits
    assert registrations, "no service worker registration"
    push = {
        "type": "message",
        "conversation_id": direct,
        "message_id": wanted["id"],
        "title": alice_name,
        "sender": alice_name,
        "body": "the one the push was about",
        "mentioned": False,
        "url": f"/?conversation={direct}&message={wanted['id']}",
    }
    cdp.send(
        "ServiceWorker.deliverPushMessage",
        {
            "origin": web.url,
            "registrationId": registrations[0]["registrationId"],
            "data": json.dumps(push),
        },
    )
    # A direct message's title is the sender: the body does not repeat it.
    tag = f"conversation-{direct}"
    assert shown(worker, 1) == [[alice_name, "the one the push was about", tag]]
    was_listed = listed(bob, tag)

    # The URL a click opens with no tab open: signed in, the page opens there
    # at that message, and the address bar is clean again.
    bob.goto(f"{web.url}{push['url']}")
    log_in(bob, bob_name)
    expect(bob.locator("#conversation-title")).to_have_text(alice_name)
    hit = message(bob, "the one the push was about")
    expect(hit).to_have_class(re.compile(r"\bfound\b"))
    expect(hit).to_be_in_viewport()
    assert bob.evaluate("location.search") == ""
    closed(bob, tag, was_listed)  # read: the notification is closed

    # A link to a conversation Bob cannot read: said, and the usual one opens.
    pages.expected.append("status of 404")  # the page asked for it: Chromium logs the 404
    bob.goto(f"{web.url}/?conversation=99999999&message=1")
    expect(bob.locator("#announcer")).to_have_text("That conversation is not open to you.")
    expect(bob.locator("#conversation-title")).to_have_text("# general")
    assert bob.evaluate("location.search") == ""


@pytest.fixture(scope="module")
def push_web(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server that takes push endpoints on this machine (never in production)."""
    server = Server(tmp_path_factory.mktemp("push") / "data", PUSH_ALLOW_LOCALHOST="true")
    server.start()
    yield server
    server.kill()


def test_push_subscription_reaches_the_server(
    browser: Browser, push_web: Server, names: Callable[[str], str]
) -> None:
    """The opt-in against the server's own push routes: the subscription the
    page posts is one it accepts, and Disable and signing out delete it."""
    pages = Pages(browser, push_web)
    bob_name = names("bob")
    bob_headers = push_web.user(bob_name)
    endpoint = f"https://127.0.0.1:9/push/{bob_name}"  # nothing listens: no push arrives
    bob = pages.open(permissions=["notifications"], init_script=push_stand_in(endpoint, P256_POINT))
    log_in(bob, bob_name)
    subscriptions = re.compile(r"/push/subscriptions$")
    bob.get_by_role("button", name="Settings", exact=True).click()
    with bob.expect_response(subscriptions) as posted:
        bob.get_by_role("button", name="Enable notifications").click()
    assert posted.value.status == 201
    expect(bob.locator("#notifications-status")).to_have_text(
        "On: this browser will be notified, with MessageApp open or closed."
    )
    with bob.expect_response(subscriptions) as deleted:
        bob.get_by_role("button", name="Disable notifications").click()
    assert deleted.value.status == 204
    gone = httpx.request(
        "DELETE",
        f"{push_web.url}/push/subscriptions",
        json={"endpoint": endpoint},
        headers=bob_headers,
    )
    assert gone.status_code == 404
    with bob.expect_response(subscriptions) as posted:
        bob.get_by_role("button", name="Enable notifications").click()
    assert posted.value.status == 201
    with bob.expect_response(subscriptions) as deleted:
        bob.get_by_role("button", name="Sign out here").click()
    assert deleted.value.status == 204
    expect(bob.get_by_role("button", name="Log in")).to_be_visible()
    assert pages.close() == []


def test_a_real_push_from_the_server_reaches_the_service_worker(
    browser: Browser, push_web: Server, names: Callable[[str], str]
) -> None:
    """End to end: the page subscribes; with no tab of Bob's open, Alice's
    message makes the server push, encrypted, to a push service this test
    runs (tests/test_push.py's), which decrypts it as the browser would and
    hands it to the service worker (DevTools, as a push service would); its
    notification's link opens the app at that message."""
    from tests.test_push import Browser as PushKeys
    from tests.test_push import PushService

    service = PushService()
    try:
        pages = Pages(browser, push_web)
        alice_name, bob_name, headers, direct = alice_and_bob(push_web, names)
        keys = PushKeys(service, bob_name)
        subscription = keys.subscription()
        bob = pages.open(
            permissions=["notifications"],
            init_script=push_stand_in(
                subscription["endpoint"],
                subscription["keys"]["p256dh"],
                subscription["keys"]["auth"],
            ),
        )
        log_in(bob, bob_name)
        bob.get_by_role("button", name="Settings", exact=True).click()
        with bob.expect_response(re.compile(r"/push/subscriptions$")) as posted:
            bob.get_by_role("button", name="Enable notifications").click()
        assert posted.value.status == 201

        # Bob closes the app (his socket with it): a page of the site without
        # it stays, for DevTools to reach the service worker through.
        pages.expected.append("status of 404")  # that page's /favicon.ico, which is none
        bob.goto(f"{push_web.url}/manifest.webmanifest")
        worker = bob.context.service_workers[0]
        worker.evaluate(RECORD_NOTIFICATIONS)
        cdp = bob.context.new_cdp_session(bob)
        registrations: list[dict[str, Any]] = []
        cdp.on(
            "ServiceWorker.workerRegistrationUpdated",
            lambda e: registrations.extend(e["registrations"]),
        )
        cdp.send("ServiceWorker.enable")
        bob.wait_for_timeout(500)  # events arrive while Playwright waits
        assert registrations, "no service worker registration"

        # The server's presence notices the closed socket in a moment: until
        # then a message gets no push. So Alice writes until one arrives.
        for attempt in range(20):
            sent = api_send(push_web, headers, direct, f"Are you there? ({attempt})")
            try:
                received = service.next(timeout=1)
                break
            except Exception:  # queue.Empty: no push for that one
                continue
        else:
            raise AssertionError("no push arrived")
        payload = keys.read(received)
        assert payload["message_id"] == sent["id"]
        assert payload["url"] == f"/?conversation={direct}&message={sent['id']}"
        cdp.send(
            "ServiceWorker.deliverPushMessage",
            {
                "origin": push_web.url,
                "registrationId": registrations[0]["registrationId"],
                "data": json.dumps(payload),
            },
        )
        tag = f"conversation-{direct}"
        assert shown(worker, 1) == [[alice_name, sent["content"], tag]]

        # Its click, with no app open, opens the URL: the app, at that message.
        bob.goto(f"{push_web.url}{payload['url']}")
        expect(bob.locator("#conversation-title")).to_have_text(alice_name)
        expect(message(bob, sent["content"])).to_have_class(re.compile(r"\bfound\b"))
        assert pages.close() == []
    finally:
        service.http.shutdown()
        service.http.server_close()
