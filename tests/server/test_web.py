"""The approval page, end to end: a real uvicorn server on 127.0.0.1, the real test OIDC issuer
(authorization code + PKCE), the real approval service, store and SQLite audit log, and headless
Chromium driven through selenium.

The page is reached as ``http://localhost:PORT`` while the issuer is ``http://127.0.0.1:PORT``, so
the login crosses sites the way it does in production (SameSite rules apply for real).

Browser tests are marked ``browser``: without /usr/bin/chromium and chromedriver they are skipped
locally and fail when ``CI`` is set. The other tests speak plain HTTP to the same server.
"""

from __future__ import annotations

import base64
import concurrent.futures
import html
import http.client
import json
import os
import re
import secrets
import socket
import subprocess
import sys
import textwrap
import urllib.parse
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any

import anyio
import pytest
from anyio.from_thread import BlockingPortal, start_blocking_portal
from selenium.common.exceptions import NoSuchElementException
from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.common.by import By
from starlette.applications import Starlette

from hoop_mcp.config import ApprovalWebConfig
from hoop_mcp.core.approvals import AgentSettings, Approval, ApprovalService, ApprovalState, Pending
from hoop_mcp.core.audit import AuditRecord
from hoop_mcp.core.identity import OidcSettings
from hoop_mcp.core.models import Principal
from hoop_mcp.server.web import MAX_BODY_BYTES, ApprovalPage, build_approval_app, listen_socket, serve_app
from hoop_mcp.stores.sqlite import SqliteAuditLog
from tests.support.approvals import BreakableStore, ManualClock, open_store, review_call
from tests.support.browser import WAIT_S, path_of, wait_for
from tests.support.hoop import preset_text
from tests.support.oidc import OidcIssuer, s256

CLIENT_ID = "hoop-approvals-page"
HOSTILE_STATEMENT = (
    "UPDATE shop.orders SET note = '<script>document.title=\"pwned\"</script>'\n"
    "-- Writes: nothing\u202e,olleh\u200b WHERE id = 1\r-- Flags: none"
)


# --------------------------------------------------------------------------------------------- rig


@dataclass
class Rig:
    """One running approval page with its service, store, audit log and issuer."""

    portal: BlockingPortal
    service: ApprovalService
    store: BreakableStore
    audit: SqliteAuditLog
    clock: ManualClock
    issuer: OidcIssuer
    app: Starlette
    base: str
    client_secret: str

    @property
    def page(self) -> ApprovalPage:
        page = self.app.state.page
        assert isinstance(page, ApprovalPage)
        return page

    def principal(self, sub: str) -> Principal:
        user = self.issuer.users[sub]
        return Principal(
            subject=sub, issuer=self.issuer.issuer, groups=user.groups, name=user.name, email=user.email
        )

    def request_review(self, requester: str = "alice", **options: Any) -> Approval:
        admission = self.portal.call(self.service.admit, review_call(self.principal(requester), **options))
        assert isinstance(admission, Pending), admission
        return admission.approval

    def approval(self, approval_id: str) -> Approval:
        return self.portal.call(self.service.get, approval_id)

    def approval_records(self, approval_id: str) -> list[AuditRecord]:
        records = self.portal.call(self.audit.records)
        return [
            r
            for r in records
            if r.event.kind == "approval"
            and r.event.approval is not None
            and r.event.approval.approval_id == approval_id
        ]

    def events(self, approval_id: str) -> list[str]:
        return [r.event.approval.event for r in self.approval_records(approval_id) if r.event.approval]


async def _serve_until(app: Starlette, sock: socket.socket, stop: anyio.Event) -> None:
    async with anyio.create_task_group() as tg:
        tg.start_soon(serve_app, app, sock)
        await stop.wait()
        tg.cancel_scope.cancel()


@pytest.fixture
def rig(oidc_issuer: OidcIssuer, tmp_path: Path) -> Iterator[Rig]:
    client_secret = "page-secret-" + secrets.token_urlsafe(12)
    oidc_issuer.add_user("alice", groups=["developers"], name="Alice Requester", email="alice@example.com")
    oidc_issuer.add_user("bob", groups=["dba"], name="Bob Approver", email="bob@example.com")
    oidc_issuer.add_user("carol", groups=["dba"], name="Carol Approver", email="carol@example.com")
    oidc_issuer.add_user("dave", groups=["dba"], name="Dave Requester-Approver", email="dave@example.com")
    oidc_issuer.add_user("erin", groups=["developers"], name="Erin Bystander", email="erin@example.com")
    oidc_issuer.add_user("agent-ci", groups=["dba", "agents"], name="CI agent")
    with start_blocking_portal() as portal:
        audit = portal.call(SqliteAuditLog.open, tmp_path / "audit.db")
        store = BreakableStore(portal.call(open_store, tmp_path / "audit.db"))
        clock = ManualClock()
        service = ApprovalService(
            store=store,
            audit=audit,
            agents=AgentSettings(subjects=("agent-*",), groups=("agents",)),
            clock=clock,
        )
        sock = listen_socket("127.0.0.1", 0)
        port = sock.getsockname()[1]
        base = f"http://localhost:{port}"
        web = ApprovalWebConfig(
            listen_host="127.0.0.1", listen_port=port, public_url=base, client_id=CLIENT_ID
        )
        oidc_issuer.register_client(CLIENT_ID, redirect_uris=[base + "/callback"], secret=client_secret)
        app = build_approval_app(
            service=service,
            oidc=OidcSettings(issuer=oidc_issuer.issuer, audience="hoop-mcp-approvers"),
            web=web,
            client_secret=client_secret,
            session_key=secrets.token_bytes(32),
        )
        stop = portal.call(anyio.Event)
        served = portal.start_task_soon(_serve_until, app, sock, stop)
        try:
            yield Rig(portal, service, store, audit, clock, oidc_issuer, app, base, client_secret)
        finally:
            portal.call(stop.set)
            served.result(timeout=WAIT_S)
            sock.close()
            portal.call(store.close)
            portal.call(audit.close)


# ---------------------------------------------------------------------------------------- plain HTTP


@dataclass
class Reply:
    status: int
    headers: http.client.HTTPMessage
    body: str

    def header(self, name: str) -> str | None:
        return self.headers.get(name)

    @property
    def location(self) -> str:
        value = self.headers.get("Location")
        assert value is not None, f"no Location header (status {self.status})"
        return value

    def set_cookies(self) -> list[str]:
        return self.headers.get_all("Set-Cookie") or []


@dataclass
class Http:
    """A client that keeps cookies per host:port and follows no redirects."""

    cookies: dict[str, dict[str, str]] = field(default_factory=dict)

    def request(
        self,
        method: str,
        url: str,
        *,
        form: Mapping[str, str] | None = None,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        chunked: bool = False,
    ) -> Reply:
        parts = urllib.parse.urlsplit(url)
        assert parts.port is not None
        sent = {"Host": parts.netloc, **(headers or {})}
        jar = self.cookies.setdefault(parts.netloc, {})
        if jar:
            sent["Cookie"] = "; ".join(f"{k}={v}" for k, v in jar.items())
        if form is not None:
            body = urllib.parse.urlencode(form).encode()
            sent.setdefault("Content-Type", "application/x-www-form-urlencoded")
        connection = http.client.HTTPConnection("127.0.0.1", parts.port, timeout=WAIT_S)
        try:
            target = parts.path + (f"?{parts.query}" if parts.query else "")
            if chunked:
                assert body is not None
                connection.request(
                    method,
                    target,
                    body=iter([body[i : i + 4096] for i in range(0, len(body), 4096)]),
                    headers=sent,
                    encode_chunked=True,
                )
            else:
                connection.request(method, target, body=body, headers=sent)
            response = connection.getresponse()
            data = response.read()
        finally:
            connection.close()
        reply = Reply(response.status, response.headers, data.decode("utf-8", "replace"))
        for line in reply.set_cookies():
            cookie = SimpleCookie()
            cookie.load(line)
            for name, morsel in cookie.items():
                if morsel["max-age"] == "0" or not morsel.value or morsel.value == '""':
                    jar.pop(name, None)
                else:
                    jar[name] = morsel.value
        return reply

    def get(self, url: str, **options: Any) -> Reply:
        return self.request("GET", url, **options)

    def post(self, url: str, **options: Any) -> Reply:
        return self.request("POST", url, **options)


def hidden_fields(page: str) -> dict[str, str]:
    """Hidden inputs of the (first) form on a page."""
    found = re.findall(r"""<input type=['"]hidden['"] name=['"]([^'"]+)['"] value=['"]([^'"]*)['"]>""", page)
    return {name: html.unescape(value) for name, value in found}


def decision_fields(page: str) -> dict[str, str]:
    """The hidden fields of the decision form (not the logout form) on an approval page."""
    form = re.search(r"<form method='post' action='[^']*/decision' id='decision'>(.*?)</form>", page, re.S)
    assert form is not None, "the page has no decision form"
    return hidden_fields(form.group(1))


def http_login(rig: Rig, sub: str, *, client: Http | None = None, next_path: str = "/approvals") -> Http:
    """Log in through the issuer's form like a browser would, without one."""
    client = client or Http()
    start = client.get(rig.base + "/login?" + urllib.parse.urlencode({"next": next_path}))
    assert start.status == 303, start.body
    form_page = client.get(start.location)
    assert form_page.status == 200, form_page.body
    submitted = client.post(
        rig.issuer.authorization_endpoint, form={**hidden_fields(form_page.body), "login": sub}
    )
    assert submitted.status == 303, submitted.body
    done = client.get(submitted.location)
    assert done.status == 200, done.body
    return client


def approval_url(rig: Rig, approval_id: str) -> str:
    return f"{rig.base}/approvals/{approval_id}"


def decide_over_http(
    client: Http,
    rig: Rig,
    approval_id: str,
    fields: Mapping[str, str],
    *,
    action: str = "approve",
    reason: str = "looks right",
    headers: Mapping[str, str] | None = None,
) -> Reply:
    """POST a decision form; sent with the page's own Origin unless ``headers`` say otherwise."""
    return client.post(
        approval_url(rig, approval_id) + "/decision",
        form={**fields, "action": action, "reason": reason},
        headers={"Origin": rig.base} if headers is None else headers,
    )


def session_of(rig: Rig, client: Http) -> Any:
    cookie = client.cookies.get(urllib.parse.urlsplit(rig.base).netloc, {}).get(rig.page.session_cookie)
    session = rig.page.session_from_cookie(cookie)
    assert session is not None, "not logged in"
    return session


# ------------------------------------------------------------------------------------------ browser


def browser_login(driver: WebDriver, rig: Rig, sub: str, *, path: str = "/approvals") -> None:
    """Open ``path``, get sent to the issuer, log in as ``sub`` and land back on ``path``."""
    driver.get(rig.base + path)
    login = wait_for(driver, lambda d: d.find_element(By.ID, "login"), "the issuer's login form")
    assert driver.current_url.startswith(rig.issuer.authorization_endpoint)
    login.send_keys(sub)
    driver.find_element(By.ID, "submit").click()
    wait_for(
        driver,
        lambda d: path_of(d) == path and "Logged in as" in d.find_element(By.TAG_NAME, "header").text,
        f"{sub} to land on {path}",
    )


def browser_logout(driver: WebDriver) -> None:
    driver.find_element(By.ID, "logout").click()
    wait_for(driver, lambda d: d.find_element(By.TAG_NAME, "h1").text == "Logged out", "the logout page")


def has_element(driver: WebDriver, element_id: str) -> bool:
    try:
        driver.find_element(By.ID, element_id)
    except NoSuchElementException:
        return False
    return True


def browser_cookie(driver: WebDriver, name: str) -> str | None:
    cookie = driver.get_cookie(name)
    return None if cookie is None else str(cookie["value"])


# ================================================================================== browser tests


@pytest.mark.browser
def test_an_approver_logs_in_at_the_issuer_and_approves_with_a_reason_on_the_page(
    rig: Rig, browser: WebDriver
) -> None:
    approval = rig.request_review("alice", statement="UPDATE shop.orders SET status = 'paid' WHERE id = 7")
    browser_login(browser, rig, "bob")

    link = browser.find_element(By.LINK_TEXT, approval.approval_id)
    row = link.find_element(By.XPATH, "./ancestor::tr").text
    assert "alice@example.com" in row
    assert "writes-need-review" in row
    link.click()
    wait_for(browser, lambda d: path_of(d) == f"/approvals/{approval.approval_id}", "the approval page")
    assert (
        browser.find_element(By.ID, "statement").text == "UPDATE shop.orders SET status = 'paid' WHERE id = 7"
    )
    assert (
        browser.find_element(By.CLASS_NAME, "field-rule").text
        == "writes-need-review: writes to production need a second person"
    )
    assert (
        browser.find_element(By.CLASS_NAME, "field-requested-by").text
        == "Alice Requester <alice@example.com>"
    )
    assert browser.find_element(By.ID, "reason").get_attribute("required") is not None

    browser.find_element(By.ID, "reason").send_keys("checked the order with finance")
    browser.find_element(By.ID, "approve").click()
    wait_for(browser, lambda d: has_element(d, "your-decision"), "the decision to be shown")
    assert browser.find_element(By.ID, "your-decision").text == "You approved this call."
    assert browser.find_element(By.CLASS_NAME, "field-state").text == "approved"
    assert not has_element(browser, "decision")

    after = rig.approval(approval.approval_id)
    assert after.state is ApprovalState.APPROVED
    assert [(v.approver.subject, v.approve, v.reason, v.channel) for v in after.votes] == [
        ("bob", True, "checked the order with finance", "web")
    ]
    approved = [
        r
        for r in rig.approval_records(approval.approval_id)
        if r.event.approval is not None and r.event.approval.event == "approved"
    ]
    assert len(approved) == 1
    evidence = approved[0].event.approval
    assert evidence is not None
    assert evidence.channel == "web"
    assert evidence.reason == "checked the order with finance"
    assert evidence.actor is not None
    assert (evidence.actor.subject, evidence.actor.issuer) == ("bob", rig.issuer.issuer)
    assert evidence.actor.email == "bob@example.com"
    assert approved[0].event.principal == evidence.actor
    assert [a.subject for a in evidence.approvers] == ["bob"]


@pytest.mark.browser
def test_the_requester_cannot_approve_their_own_call_on_the_page(rig: Rig, browser: WebDriver) -> None:
    # dave is in the approver group, but he asked for this call himself.
    approval = rig.request_review("dave")
    browser_login(browser, rig, "dave", path=f"/approvals/{approval.approval_id}")
    notice = browser.find_element(By.ID, "cannot-decide").text
    assert "the requester can never approve their own call" in notice
    assert not has_element(browser, "approve")
    assert not has_element(browser, "decision")

    # Even a well-formed form for his own session is refused by the service (403, nothing changes).
    session = rig.page.session_from_cookie(browser_cookie(browser, rig.page.session_cookie))
    assert session is not None
    assert session.principal.subject == "dave"
    client = Http()
    client.cookies[urllib.parse.urlsplit(rig.base).netloc] = {
        rig.page.session_cookie: browser_cookie(browser, rig.page.session_cookie) or ""
    }
    reply = decide_over_http(
        client, rig, approval.approval_id, rig.page.form_fields(session, target=approval.approval_id)
    )
    assert reply.status == 403
    assert "the requester can never approve their own call" in reply.body
    assert "Nothing was changed" in reply.body
    after = rig.approval(approval.approval_id)
    assert after.state is ApprovalState.PENDING
    assert after.votes == ()
    assert rig.events(approval.approval_id) == ["requested", "vote_refused"]


@pytest.mark.browser
def test_an_agent_principal_is_refused_at_login_and_gets_no_session(rig: Rig, browser: WebDriver) -> None:
    approval = rig.request_review("alice")
    driver = browser
    driver.get(rig.base + "/approvals")
    wait_for(driver, lambda d: d.find_element(By.ID, "login"), "the issuer's login form").send_keys(
        "agent-ci"
    )
    driver.find_element(By.ID, "submit").click()
    wait_for(driver, lambda d: path_of(d) == "/callback" and has_element(d, "message"), "the refusal")
    assert "Agent principals can never approve" in driver.find_element(By.ID, "message").text
    assert driver.find_element(By.TAG_NAME, "h1").text == "Not allowed"
    assert browser_cookie(driver, rig.page.session_cookie) is None

    driver.get(approval_url(rig, approval.approval_id))
    wait_for(driver, lambda d: d.find_element(By.ID, "login"), "a new login, since there is no session")
    after = rig.approval(approval.approval_id)
    assert after.state is ApprovalState.PENDING
    assert after.votes == ()


@pytest.mark.browser
def test_a_denial_with_a_reason_is_final_for_every_other_approver(rig: Rig, browser: WebDriver) -> None:
    approval = rig.request_review("alice", quorum=2)
    path = f"/approvals/{approval.approval_id}"
    browser_login(browser, rig, "bob", path=path)
    browser.find_element(By.ID, "reason").send_keys("this would cancel paid orders")
    browser.find_element(By.ID, "deny").click()
    wait_for(browser, lambda d: has_element(d, "your-decision"), "the denial to be shown")
    assert browser.find_element(By.ID, "your-decision").text == "You denied this call."
    assert rig.approval(approval.approval_id).state is ApprovalState.DENIED

    browser_logout(browser)
    assert browser_cookie(browser, rig.page.session_cookie) is None
    browser_login(browser, rig, "carol", path=path)
    assert (
        "This approval is denied; it can no longer be decided." in browser.find_element(By.ID, "decided").text
    )
    assert not has_element(browser, "decision")
    assert (
        browser.find_element(By.CLASS_NAME, "field-decision").text
        == "denied by Bob Approver <bob@example.com> via web: this would cancel paid orders"
    )

    browser.get(rig.base + "/approvals")
    assert browser.find_element(By.ID, "empty").text == "Nothing is waiting for your decision."

    # A well-formed approval from carol now changes nothing: deny is final.
    session = rig.page.session_from_cookie(browser_cookie(browser, rig.page.session_cookie))
    assert session is not None
    client = Http()
    client.cookies[urllib.parse.urlsplit(rig.base).netloc] = {
        rig.page.session_cookie: browser_cookie(browser, rig.page.session_cookie) or ""
    }
    reply = decide_over_http(
        client, rig, approval.approval_id, rig.page.form_fields(session, target=approval.approval_id)
    )
    assert reply.status == 409
    assert "denied" in reply.body
    after = rig.approval(approval.approval_id)
    assert after.state is ApprovalState.DENIED
    assert [(v.approver.subject, v.approve) for v in after.votes] == [("bob", False)]
    assert rig.events(approval.approval_id) == ["requested", "denied", "vote_refused"]


@pytest.mark.browser
def test_a_hostile_statement_is_shown_escaped_with_hidden_characters_visible(
    rig: Rig, browser: WebDriver
) -> None:
    approval = rig.request_review(
        "alice",
        statement=HOSTILE_STATEMENT,
        rule_reason="<b>bold</b> reason\nStatement: forged",
    )
    browser_login(browser, rig, "bob", path=f"/approvals/{approval.approval_id}")
    title = browser.title
    assert title == f"Approval {approval.approval_id} - hoop-mcp approvals"
    shown = browser.find_element(By.ID, "statement").text
    assert shown.splitlines() == [
        "UPDATE shop.orders SET note = '<script>document.title=\"pwned\"</script>'",
        "-- Writes: nothing\\u{202E},olleh\\u{200B} WHERE id = 1\\u{000D}-- Flags: none",
    ]
    source = browser.page_source
    assert "\u202e" not in source
    assert "\u200b" not in source
    assert "&lt;script&gt;" in source
    assert browser.find_elements(By.TAG_NAME, "script") == []
    assert browser.find_elements(By.TAG_NAME, "b") == []
    assert (
        browser.find_element(By.CLASS_NAME, "field-rule").text
        == "writes-need-review: <b>bold</b> reason\\u{000A}Statement: forged"
    )
    # The list page escapes the statement the same way.
    browser.get(rig.base + "/approvals")
    row = browser.find_element(By.LINK_TEXT, approval.approval_id).find_element(By.XPATH, "./ancestor::tr")
    assert "<script>document.title" in row.text
    assert "\\u{202E}" in row.text
    assert browser.title == "Waiting for your decision - hoop-mcp approvals"


# =============================================================================== plain HTTP tests


def test_a_replayed_decision_form_is_refused_and_counts_once(rig: Rig) -> None:
    approval = rig.request_review("alice", quorum=2)
    bob = http_login(rig, "bob")
    fields = decision_fields(bob.get(approval_url(rig, approval.approval_id)).body)

    first = decide_over_http(bob, rig, approval.approval_id, fields, reason="fine by me")
    assert first.status == 303
    assert first.location == f"/approvals/{approval.approval_id}"
    replay = decide_over_http(bob, rig, approval.approval_id, fields, reason="fine by me")
    assert replay.status == 409
    assert "This form was already submitted once" in replay.body

    after = rig.approval(approval.approval_id)
    assert after.state is ApprovalState.PENDING
    assert [v.approver.subject for v in after.votes] == ["bob"]
    assert rig.events(approval.approval_id) == ["requested", "voted"]


def test_a_post_without_a_valid_csrf_token_is_refused(rig: Rig) -> None:
    approval = rig.request_review("alice")
    other = rig.request_review("erin")
    bob = http_login(rig, "bob")
    carol = http_login(rig, "carol")
    fields = decision_fields(bob.get(approval_url(rig, approval.approval_id)).body)
    other_fields = decision_fields(bob.get(approval_url(rig, other.approval_id)).body)

    attempts = {
        "no token": {"nonce": fields["nonce"]},
        "no nonce": {"csrf": fields["csrf"]},
        "forged token": {"nonce": fields["nonce"], "csrf": base64.urlsafe_b64encode(b"x" * 32).decode()},
        "another nonce": {"nonce": secrets.token_urlsafe(18), "csrf": fields["csrf"]},
        "the form of another approval": other_fields,
    }
    for what, attempt in attempts.items():
        reply = decide_over_http(bob, rig, approval.approval_id, attempt)
        assert reply.status == 403, what
        assert "This form is not valid for your session" in reply.body, what
    # A token is bound to the session it was made for: bob's form does not work for carol.
    stolen = decide_over_http(carol, rig, approval.approval_id, fields)
    assert stolen.status == 403

    assert rig.approval(approval.approval_id).votes == ()
    assert rig.events(approval.approval_id) == ["requested"]
    # The real form still works (none of the refusals used it up).
    assert decide_over_http(bob, rig, approval.approval_id, fields).status == 303
    assert rig.approval(approval.approval_id).state is ApprovalState.APPROVED


def test_a_post_from_a_foreign_origin_is_refused_even_with_a_valid_form(rig: Rig) -> None:
    approval = rig.request_review("alice")
    bob = http_login(rig, "bob")
    fields = decision_fields(bob.get(approval_url(rig, approval.approval_id)).body)
    foreign = [
        {"Origin": "http://evil.example"},
        {"Origin": "null"},
        {"Origin": rig.issuer.issuer},  # another port is another origin
        {"Origin": "http://evil.example", "Referer": approval_url(rig, approval.approval_id)},
        {"Referer": "http://evil.example/approvals"},
    ]
    for headers in foreign:
        reply = decide_over_http(bob, rig, approval.approval_id, fields, headers=headers)
        assert reply.status == 403, headers
        assert "the form was sent from another site" in reply.body
    assert rig.approval(approval.approval_id).votes == ()
    assert rig.events(approval.approval_id) == ["requested"]
    # A same-origin Referer without Origin is fine (so is neither: the token still protects).
    same_site = {"Referer": approval_url(rig, approval.approval_id)}
    assert decide_over_http(bob, rig, approval.approval_id, fields, headers=same_site).status == 303
    assert rig.approval(approval.approval_id).state is ApprovalState.APPROVED


def test_a_post_without_a_session_is_refused(rig: Rig) -> None:
    approval = rig.request_review("alice")
    bob = http_login(rig, "bob")
    fields = decision_fields(bob.get(approval_url(rig, approval.approval_id)).body)
    reply = decide_over_http(Http(), rig, approval.approval_id, fields)
    assert reply.status == 401
    assert "You are not logged in" in reply.body
    assert rig.approval(approval.approval_id).votes == ()


def test_a_missing_reason_is_refused_and_the_same_form_can_then_be_sent_with_one(rig: Rig) -> None:
    approval = rig.request_review("alice")
    bob = http_login(rig, "bob")
    fields = decision_fields(bob.get(approval_url(rig, approval.approval_id)).body)
    for reason in ("", "   \n "):
        reply = decide_over_http(bob, rig, approval.approval_id, fields, action="deny", reason=reason)
        assert reply.status == 400
        assert "A reason is required" in reply.body
    assert decide_over_http(bob, rig, approval.approval_id, fields, action="bogus").status == 400
    assert rig.approval(approval.approval_id).votes == ()
    assert decide_over_http(bob, rig, approval.approval_id, fields, action="deny", reason="no").status == 303
    assert rig.approval(approval.approval_id).state is ApprovalState.DENIED


def test_an_oversized_body_is_refused_and_changes_nothing(rig: Rig) -> None:
    approval = rig.request_review("alice")
    bob = http_login(rig, "bob")
    fields = decision_fields(bob.get(approval_url(rig, approval.approval_id)).body)
    body = urllib.parse.urlencode({**fields, "action": "approve", "reason": "x" * MAX_BODY_BYTES}).encode()
    headers = {"Origin": rig.base, "Content-Type": "application/x-www-form-urlencoded"}
    url = approval_url(rig, approval.approval_id) + "/decision"
    assert bob.post(url, body=body, headers=headers).status == 413
    assert bob.post(url, body=body, headers=headers, chunked=True).status == 413
    assert rig.approval(approval.approval_id).votes == ()
    assert rig.events(approval.approval_id) == ["requested"]


def test_only_form_posts_are_accepted(rig: Rig) -> None:
    approval = rig.request_review("alice")
    bob = http_login(rig, "bob")
    fields = decision_fields(bob.get(approval_url(rig, approval.approval_id)).body)
    reply = bob.post(
        approval_url(rig, approval.approval_id) + "/decision",
        body=json.dumps({**fields, "action": "approve", "reason": "ok"}).encode(),
        headers={"Origin": rig.base, "Content-Type": "application/json"},
    )
    assert reply.status == 415
    assert rig.approval(approval.approval_id).votes == ()


def test_every_response_carries_the_security_headers(rig: Rig) -> None:
    approval = rig.request_review("alice")
    bob = http_login(rig, "bob")
    replies = {
        "healthz": bob.get(rig.base + "/healthz"),
        "page": bob.get(approval_url(rig, approval.approval_id)),
        "redirect": Http().get(rig.base + "/approvals"),
        "not found": bob.get(rig.base + "/nowhere"),
        "method": bob.get(approval_url(rig, approval.approval_id) + "/decision"),
    }
    assert replies["healthz"].status == 200
    assert replies["healthz"].body == "ok"
    assert replies["page"].status == 200
    assert replies["redirect"].status == 303
    assert replies["not found"].status == 404
    assert replies["method"].status == 405
    for what, reply in replies.items():
        csp = reply.header("Content-Security-Policy") or ""
        directives = {d.strip().split(" ", 1)[0]: d.strip() for d in csp.split(";")}
        assert directives["default-src"] == "default-src 'none'", what
        assert directives["form-action"] == "form-action 'self'", what
        assert directives["frame-ancestors"] == "frame-ancestors 'none'", what
        assert directives["base-uri"] == "base-uri 'none'", what
        assert directives["style-src"].startswith("style-src 'sha256-"), what
        assert "script-src" not in directives, what
        assert reply.header("X-Content-Type-Options") == "nosniff", what
        assert reply.header("Referrer-Policy") == "same-origin", what
        assert reply.header("Cache-Control") == "no-store", what
        assert reply.header("X-Frame-Options") == "DENY", what
        assert reply.header("Server") is None, what
    assert (replies["page"].header("Content-Type") or "").startswith("text/html; charset=utf-8")


def test_session_and_login_cookies_are_signed_httponly_and_samesite(rig: Rig) -> None:
    client = Http()
    start = client.get(rig.base + "/login")
    (login_cookie,) = start.set_cookies()
    assert login_cookie.startswith(rig.page.login_cookie + "=")
    attributes = {a.strip().split("=")[0].lower(): a.strip() for a in login_cookie.split(";")[1:]}
    assert "httponly" in attributes
    assert attributes["samesite"].lower() == "samesite=lax"
    assert attributes["path"] == "Path=/"
    assert int(attributes["max-age"].split("=")[1]) <= 600
    authorize = urllib.parse.parse_qs(urllib.parse.urlsplit(start.location).query)
    assert authorize["code_challenge_method"] == ["S256"]
    assert authorize["client_id"] == [CLIENT_ID]
    assert authorize["redirect_uri"] == [rig.base + "/callback"]
    # The state, nonce and verifier are in the cookie only, never in the URL (the challenge is).
    assert len(authorize["state"][0]) >= 32
    assert len(authorize["nonce"][0]) >= 32

    http_login(rig, "bob", client=client)
    netloc = urllib.parse.urlsplit(rig.base).netloc
    value = client.cookies[netloc][rig.page.session_cookie]
    assert rig.page.login_cookie not in client.cookies[netloc]  # single use: cleared by the callback
    # Tampering with the signed session (e.g. becoming carol) is detected.
    body, _, mac = value.partition(".")
    payload = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    assert payload["p"]["subject"] == "bob"
    payload["p"]["subject"] = "carol"
    forged = base64.urlsafe_b64encode(json.dumps(payload).encode()).rstrip(b"=").decode() + "." + mac
    client.cookies[netloc][rig.page.session_cookie] = forged
    assert client.get(rig.base + "/approvals").status == 303


def test_the_session_cookie_is_httponly_strict_and_ends_at_logout(rig: Rig) -> None:
    client = Http()
    start = client.get(rig.base + "/login")
    form_page = client.get(start.location)
    submitted = client.post(
        rig.issuer.authorization_endpoint, form={**hidden_fields(form_page.body), "login": "bob"}
    )
    done = client.get(submitted.location)
    assert done.status == 200
    session_line = next(c for c in done.set_cookies() if c.startswith(rig.page.session_cookie + "="))
    attributes = {a.strip().split("=")[0].lower(): a.strip() for a in session_line.split(";")[1:]}
    assert "httponly" in attributes
    assert attributes["samesite"].lower() == "samesite=strict"
    assert "secure" not in attributes  # http base URL; https would make it Secure and __Host-
    # The callback continues by itself to the target (a same-site navigation, no JavaScript).
    assert "<meta http-equiv='refresh' content='0; url=/approvals'>" in done.body

    page = client.get(rig.base + "/approvals")
    assert page.status == 200
    netloc = urllib.parse.urlsplit(rig.base).netloc
    old_cookie = client.cookies[netloc][rig.page.session_cookie]
    logout = client.post(rig.base + "/logout", form=hidden_fields(page.body), headers={"Origin": rig.base})
    assert logout.status == 200
    assert rig.page.session_cookie not in client.cookies[netloc]
    # The old cookie value no longer works, even if someone kept a copy.
    client.cookies[netloc][rig.page.session_cookie] = old_cookie
    assert client.get(rig.base + "/approvals").status == 303


@pytest.mark.parametrize(
    "next_path",
    [
        "https://evil.example/",
        "//evil.example/approvals",
        "/\\evil.example",
        "javascript:alert(1)",
        "/approvals\r\nSet-Cookie: x=1",
        "/approvals' onload='x",
    ],
)
def test_login_never_sends_the_browser_off_site(rig: Rig, next_path: str) -> None:
    client = Http()
    start = client.get(rig.base + "/login?" + urllib.parse.urlencode({"next": next_path}))
    assert start.status == 303
    form_page = client.get(start.location)
    submitted = client.post(
        rig.issuer.authorization_endpoint, form={**hidden_fields(form_page.body), "login": "bob"}
    )
    done = client.get(submitted.location)
    assert done.status == 200
    assert "<meta http-equiv='refresh' content='0; url=/approvals'>" in done.body
    assert "<a id='continue' href='/approvals'>" in done.body
    assert "evil" not in done.body
    assert "javascript" not in done.body


def test_a_local_next_path_is_kept_through_the_login(rig: Rig) -> None:
    approval = rig.request_review("alice")
    unauthenticated = Http().get(approval_url(rig, approval.approval_id))
    assert unauthenticated.status == 303
    assert unauthenticated.location == "/login?" + urllib.parse.urlencode(
        {"next": f"/approvals/{approval.approval_id}"}
    )
    client = Http()
    start = client.get(rig.base + unauthenticated.location)
    form_page = client.get(start.location)
    submitted = client.post(
        rig.issuer.authorization_endpoint, form={**hidden_fields(form_page.body), "login": "bob"}
    )
    done = client.get(submitted.location)
    assert f"url=/approvals/{approval.approval_id}'" in done.body
    assert Http().get(rig.base + "/").location == "/approvals"


def test_a_callback_that_does_not_belong_to_the_login_is_refused(rig: Rig) -> None:
    client = Http()
    start = client.get(rig.base + "/login")
    form_page = client.get(start.location)
    fields = hidden_fields(form_page.body)
    submitted = client.post(rig.issuer.authorization_endpoint, form={**fields, "login": "bob"})
    callback = urllib.parse.urlsplit(submitted.location)
    params = dict(urllib.parse.parse_qsl(callback.query))

    # Another browser (no login cookie) presenting the code: refused, and no session.
    thief = Http()
    stolen = thief.get(submitted.location)
    assert stolen.status == 400
    assert "this login was not started here" in stolen.body
    assert thief.cookies.get(callback.netloc, {}) == {}

    # The right browser, but a state from another login: refused.
    wrong_state = {**params, "state": secrets.token_urlsafe(24)}
    reply = client.get(rig.base + "/callback?" + urllib.parse.urlencode(wrong_state))
    assert reply.status == 400
    assert "does not belong to this login" in reply.body
    assert rig.page.session_cookie not in client.cookies.get(callback.netloc, {})
    # The login cookie was used up by that attempt: the real answer no longer works either.
    assert client.get(submitted.location).status == 400
    # Nothing was exchanged at the token endpoint.
    assert rig.issuer.token_requests == []


def test_an_issuer_error_is_shown_without_logging_in(rig: Rig) -> None:
    client = Http()
    start = client.get(rig.base + "/login")
    state = urllib.parse.parse_qs(urllib.parse.urlsplit(start.location).query)["state"][0]
    reply = client.get(
        rig.base
        + "/callback?"
        + urllib.parse.urlencode(
            {"error": "access_denied", "error_description": "<b>user said no</b>", "state": state}
        )
    )
    assert reply.status == 403
    assert "access_denied" in reply.body
    assert "&lt;b&gt;user said no&lt;/b&gt;" in reply.body
    assert "<b>user said no" not in reply.body
    assert rig.page.session_cookie not in client.cookies.get(urllib.parse.urlsplit(rig.base).netloc, {})


@pytest.mark.parametrize(
    ("tamper", "refusal"),
    [
        ({"nonce": "a-nonce-from-another-login-0000000"}, "nonce mismatch"),
        ({"aud": "some-other-client"}, "audience mismatch"),
        ({"aud": [CLIENT_ID, "another-client"], "azp": "another-client"}, "issued to another client"),
        ({"exp": 1_000_000}, "expired"),
        ({"iss": "http://127.0.0.1:1"}, "issuer mismatch"),
    ],
)
def test_an_id_token_that_is_not_for_this_login_is_refused(
    rig: Rig, tamper: dict[str, Any], refusal: str
) -> None:
    approval = rig.request_review("alice")
    rig.issuer.id_token_extra = tamper
    client = Http()
    start = client.get(rig.base + "/login")
    form_page = client.get(start.location)
    submitted = client.post(
        rig.issuer.authorization_endpoint, form={**hidden_fields(form_page.body), "login": "bob"}
    )
    reply = client.get(submitted.location)
    assert reply.status == 403
    assert refusal in reply.body
    assert rig.page.session_cookie not in client.cookies.get(urllib.parse.urlsplit(rig.base).netloc, {})
    assert Http().get(approval_url(rig, approval.approval_id)).status == 303


def test_the_code_is_exchanged_with_pkce_and_the_client_secret(rig: Rig) -> None:
    client = Http()
    start = client.get(rig.base + "/login")
    challenge = urllib.parse.parse_qs(urllib.parse.urlsplit(start.location).query)["code_challenge"][0]
    form_page = client.get(start.location)
    submitted = client.post(
        rig.issuer.authorization_endpoint, form={**hidden_fields(form_page.body), "login": "bob"}
    )
    assert client.get(submitted.location).status == 200
    (exchange,) = rig.issuer.token_requests
    assert exchange["client_secret"] == rig.client_secret  # client_secret_post
    assert exchange["client_id"] == CLIENT_ID
    assert exchange["redirect_uri"] == rig.base + "/callback"
    assert s256(exchange["code_verifier"]) == challenge
    # The verifier never travelled through the browser.
    assert exchange["code_verifier"] not in start.location + submitted.location


def test_the_test_issuer_refuses_a_wrong_verifier_a_reused_code_and_a_wrong_secret(rig: Rig) -> None:
    def fresh_code() -> tuple[str, str]:
        verifier = secrets.token_urlsafe(48)
        params = {
            "client_id": CLIENT_ID,
            "redirect_uri": rig.base + "/callback",
            "response_type": "code",
            "scope": "openid",
            "state": "s",
            "code_challenge": s256(verifier),
            "code_challenge_method": "S256",
            "login": "bob",
        }
        reply = Http().post(rig.issuer.authorization_endpoint, form=params)
        assert reply.status == 303
        code = urllib.parse.parse_qs(urllib.parse.urlsplit(reply.location).query)["code"][0]
        return code, verifier

    def exchange(code: str, verifier: str, secret: str) -> Reply:
        return Http().post(
            rig.issuer.token_endpoint,
            form={
                "grant_type": "authorization_code",
                "code": code,
                "redirect_uri": rig.base + "/callback",
                "client_id": CLIENT_ID,
                "client_secret": secret,
                "code_verifier": verifier,
            },
        )

    code, verifier = fresh_code()
    assert exchange(code, secrets.token_urlsafe(48), rig.client_secret).status == 400
    code, verifier = fresh_code()
    assert exchange(code, verifier, "wrong").status == 401
    code, verifier = fresh_code()
    assert exchange(code, verifier, rig.client_secret).status == 200
    assert exchange(code, verifier, rig.client_secret).status == 400


def test_a_non_approver_can_neither_list_nor_open_an_approval(rig: Rig) -> None:
    approval = rig.request_review("alice")
    erin = http_login(rig, "erin")
    listing = erin.get(rig.base + "/approvals")
    assert listing.status == 200
    assert approval.approval_id not in listing.body
    assert "Nothing is waiting for your decision." in listing.body
    page = erin.get(approval_url(rig, approval.approval_id))
    assert page.status == 403
    assert "you are not an approver for rule" in page.body
    assert "UPDATE shop.orders" not in page.body
    assert erin.get(rig.base + "/approvals/apr_doesnotexist").status == 404
    assert erin.get(rig.base + "/approvals/%3Cscript%3E").status == 404
    # A well-formed form for her own session is refused by the service (403, nothing changes).
    fields = rig.page.form_fields(session_of(rig, erin), target=approval.approval_id)
    reply = decide_over_http(erin, rig, approval.approval_id, fields)
    assert reply.status == 403
    assert "you are not an approver for rule 'writes-need-review'" in html.unescape(reply.body)
    assert rig.approval(approval.approval_id).votes == ()
    assert rig.events(approval.approval_id) == ["requested", "vote_refused"]


def test_an_expired_approval_cannot_be_decided(rig: Rig) -> None:
    approval = rig.request_review("alice", ttl_seconds=60)
    bob = http_login(rig, "bob")
    fields = decision_fields(bob.get(approval_url(rig, approval.approval_id)).body)
    rig.clock.advance(3600)
    reply = decide_over_http(bob, rig, approval.approval_id, fields)
    assert reply.status == 409
    assert "expired" in reply.body
    assert "Nothing was changed" in reply.body
    assert rig.approval(approval.approval_id).state is ApprovalState.EXPIRED
    assert "can no longer be decided" in bob.get(approval_url(rig, approval.approval_id)).body


def test_a_store_outage_is_shown_as_unavailable_and_changes_nothing(rig: Rig) -> None:
    approval = rig.request_review("alice")
    bob = http_login(rig, "bob")
    fields = decision_fields(bob.get(approval_url(rig, approval.approval_id)).body)
    rig.store.broken = True
    reply = decide_over_http(bob, rig, approval.approval_id, fields)
    assert reply.status == 503
    assert "The approval store cannot be reached" in reply.body
    assert bob.get(rig.base + "/approvals").status == 503
    rig.store.broken = False
    assert rig.approval(approval.approval_id).votes == ()


def test_the_page_never_shows_raw_arguments(rig: Rig) -> None:
    approval = rig.request_review("alice")
    raw_nonce = approval.request.arguments["nonce"]
    assert isinstance(raw_nonce, str)
    bob = http_login(rig, "bob")
    page = bob.get(approval_url(rig, approval.approval_id)).body
    listing = bob.get(rig.base + "/approvals").body
    assert raw_nonce not in page
    assert raw_nonce not in listing
    assert approval.request.arguments_digest in page


def test_run_web_serves_the_page_from_a_config_file(rig: Rig, tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    (tmp_path / "policy.yaml").write_text(preset_text("writes-need-confirmation"))
    (tmp_path / "hoop-mcp.yaml").write_text(
        textwrap.dedent(
            f"""\
            version: 1
            identity:
              oidc: {{issuer: '{rig.issuer.issuer}', audience: hoop-mcp-tests}}
              token: {{env: HOOP_TOKEN}}
            policy_files: [policy.yaml]
            audit: {{sqlite_path: web-audit.db}}
            approvals:
              agents: {{subjects: ['agent-*']}}
              web:
                listen_host: 127.0.0.1
                listen_port: {port}
                client_id: {CLIENT_ID}
                client_secret: {{env: PAGE_SECRET}}
                session_key: {{env: PAGE_SESSION_KEY}}
            connections:
              shop: {{kind: postgres, dsn: {{env: SHOP_DSN}}}}
            """
        )
    )
    env = {
        **os.environ,
        "PAGE_SECRET": rig.client_secret,
        "PAGE_SESSION_KEY": secrets.token_urlsafe(32),
    }
    code = (
        "import anyio, os, sys; from functools import partial; from pathlib import Path;"
        "from hoop_mcp.server.web import run_web;"
        "anyio.run(partial(run_web, Path(sys.argv[1]), environ=os.environ))"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", code, str(tmp_path / "hoop-mcp.yaml")],
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert process.stderr is not None
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            line = pool.submit(process.stderr.readline).result(timeout=WAIT_S)
        assert line.startswith(f"hoop-mcp approval page: http://127.0.0.1:{port}/approvals"), line
        base = f"http://127.0.0.1:{port}"
        assert Http().get(base + "/healthz").body == "ok"
        login = Http().get(base + "/login")
        assert login.status == 303
        assert login.location.startswith(rig.issuer.authorization_endpoint + "?")
        assert "redirect_uri=" + urllib.parse.quote(base + "/callback", safe="") in login.location
    finally:
        process.terminate()
        process.wait(timeout=WAIT_S)
        if process.stderr is not None:
            process.stderr.close()
    assert (tmp_path / "web-audit.db").exists()


def test_an_agent_session_is_refused_even_when_correctly_signed(rig: Rig) -> None:
    # Agents cannot log in; a session made with the page's own key (e.g. before the agent patterns
    # changed) still gets nowhere, and its well-formed form changes nothing.
    approval = rig.request_review("alice")
    session, cookie = rig.page.new_session(rig.principal("agent-ci"))
    agent = Http()
    agent.cookies[urllib.parse.urlsplit(rig.base).netloc] = {rig.page.session_cookie: cookie}
    for url in (rig.base + "/approvals", approval_url(rig, approval.approval_id)):
        reply = agent.get(url)
        assert reply.status == 403
        assert "Agent principals can never approve" in reply.body
    fields = rig.page.form_fields(session, target=approval.approval_id)
    reply = decide_over_http(agent, rig, approval.approval_id, fields)
    assert reply.status == 403
    assert rig.approval(approval.approval_id).votes == ()
    assert rig.events(approval.approval_id) == ["requested"]


def test_an_unusable_issuer_makes_login_fail_clearly(rig: Rig) -> None:
    rig.issuer.override_body["/.well-known/openid-configuration"] = b"not json"
    reply = Http().get(rig.base + "/login")
    assert reply.status == 502
    assert "discovery document" in reply.body
    assert reply.set_cookies() == []


def test_a_reason_longer_than_the_service_keeps_is_refused_and_changes_nothing(rig: Rig) -> None:
    approval = rig.request_review("alice")
    bob = http_login(rig, "bob")
    fields = decision_fields(bob.get(approval_url(rig, approval.approval_id)).body)
    reply = decide_over_http(bob, rig, approval.approval_id, fields, reason="x" * 1001)
    assert reply.status == 400
    assert "the reason is longer than 1000 characters" in reply.body
    assert rig.approval(approval.approval_id).votes == ()
    assert rig.events(approval.approval_id) == ["requested", "vote_refused"]
