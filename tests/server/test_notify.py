"""Webhook notifications, delivered to a real HTTP receiver on 127.0.0.1."""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import anyio
import pytest

from hoop_mcp.config import WebhookConfig
from hoop_mcp.core.approvals import Approval, ApprovalRequest
from hoop_mcp.core.models import Plan, Principal, ReviewSettings
from hoop_mcp.server.notify import EVENT_TYPE, WebhookNotifier, slack_escape

T0 = datetime(2031, 5, 4, 12, 0, tzinfo=UTC)
PAGE = "https://approvals.example.com/approvals/apr_test123"


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float


@dataclass
class Receiver:
    """A webhook receiver answering with ``statuses`` in turn (the last one repeats)."""

    statuses: list[int] = field(default_factory=lambda: [200])
    location: str | None = None
    hang: threading.Event | None = None
    received: list[Received] = field(default_factory=list)
    url: str = ""

    def start(self) -> Callable[[], None]:
        receiver = self
        lock = threading.Lock()

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                with lock:
                    receiver.received.append(
                        Received(self.path, dict(self.headers.items()), body, time.monotonic())
                    )
                    index = min(len(receiver.received), len(receiver.statuses)) - 1
                    status = receiver.statuses[index]
                if receiver.hang is not None:
                    receiver.hang.wait(timeout=30)
                    return
                self.send_response(status)
                if receiver.location:
                    self.send_header("Location", receiver.location)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, format: str, *args: Any) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        self.url = f"http://127.0.0.1:{server.server_address[1]}/hook"
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
        thread.start()

        def stop() -> None:
            if self.hang is not None:
                self.hang.set()
            server.shutdown()
            server.server_close()
            thread.join(timeout=10)

        return stop


@pytest.fixture
def receivers() -> Iterator[Callable[..., Receiver]]:
    stops: list[Callable[[], None]] = []

    def make(**kwargs: Any) -> Receiver:
        receiver = Receiver(**kwargs)
        stops.append(receiver.start())
        return receiver

    yield make
    for stop in stops:
        stop()


def make_approval(
    *, statement: str = "UPDATE orders SET status = $1 WHERE id = $2", reason: str = ""
) -> Approval:
    plan = Plan(
        effect="write",
        effects=("write",),
        command="UPDATE",
        relations_read=("public.customers",),
        relations_written=("public.orders",),
        statement=statement,
        summary="UPDATE (write); writes public.orders",
    )
    review = ReviewSettings(approver_groups=("dba",), quorum=2)
    request = ApprovalRequest(
        approval_id="apr_test123",
        call_id="call-1",
        session_id="s-1",
        requester=Principal(
            subject="agent-1", issuer="https://idp", name="Deploy Bot", email="bot@example.com"
        ),
        tool="query_db",
        connection="shop",
        arguments={"sql": statement},
        arguments_digest="sha256:" + "1" * 64,
        plan=plan,
        plan_digest="sha256:" + "2" * 64,
        rule_id="writes-need-review",
        rule_reason=reason or "writes to production need a DBA",
        review=review,
        binding="b",
        created_at=T0,
        expires_at=T0 + timedelta(hours=1),
    )
    return Approval(request=request)


def hook(url: str, **kwargs: Any) -> WebhookConfig:
    return WebhookConfig.model_validate({"url": url, "timeout_s": 5, **kwargs})


async def deliver(
    notifier: WebhookNotifier, approval: Approval | None = None, url: str | None = PAGE
) -> list[str]:
    with anyio.fail_after(30):
        return await notifier.notify(approval or make_approval(), url=url)


@pytest.mark.anyio
async def test_the_json_body_describes_the_approval_and_is_signed_with_the_secret(
    receivers: Callable[..., Receiver],
) -> None:
    receiver = receivers()
    secret = secrets.token_bytes(32)
    notifier = WebhookNotifier([(hook(receiver.url), secret)], text=lambda t: t)
    assert await deliver(notifier) == []
    (got,) = receiver.received
    expected_sig = "sha256=" + hmac.new(secret, got.body, hashlib.sha256).hexdigest()
    assert got.headers["X-Hoop-Signature"] == expected_sig
    assert got.headers["X-Hoop-Approval-Id"] == "apr_test123"
    assert got.headers["Content-Type"].startswith("application/json")
    body = json.loads(got.body)
    assert body == {
        "type": EVENT_TYPE,
        "approval_id": "apr_test123",
        "url": PAGE,
        "requester": "Deploy Bot <bot@example.com>",
        "tool": "query_db",
        "connection": "shop",
        "rule_id": "writes-need-review",
        "rule_reason": "writes to production need a DBA",
        "effect": "write",
        "relations_written": ["public.orders"],
        "relations_read": ["public.customers"],
        "statement": "UPDATE orders SET status = $1 WHERE id = $2",
        "expires_at": "2031-05-04T13:00:00+00:00",
        "quorum": 2,
    }


@pytest.mark.anyio
async def test_without_a_secret_the_body_is_not_signed(receivers: Callable[..., Receiver]) -> None:
    receiver = receivers()
    assert await deliver(WebhookNotifier([(hook(receiver.url), None)])) == []
    (got,) = receiver.received
    assert "X-Hoop-Signature" not in got.headers
    assert got.headers["X-Hoop-Approval-Id"] == "apr_test123"


@pytest.mark.anyio
async def test_free_text_goes_through_the_masker(receivers: Callable[..., Receiver]) -> None:
    receiver, slack = receivers(), receivers()
    approval = make_approval(
        statement="UPDATE users SET note = 'ssn 123-45-6789' WHERE id = $1",
        reason="ask 123-45-6789 first",
    )

    def mask(text: str) -> str:
        return text.replace("123-45-6789", "[REDACTED:US_SSN]")

    notifier = WebhookNotifier(
        [(hook(receiver.url), None), (hook(slack.url, format="slack"), None)], text=mask
    )
    assert await deliver(notifier, approval) == []
    for got in (receiver.received[0], slack.received[0]):
        assert b"123-45-6789" not in got.body
        assert b"[REDACTED:US_SSN]" in got.body


@pytest.mark.anyio
async def test_masking_failure_withholds_the_text_instead_of_raising(
    receivers: Callable[..., Receiver],
) -> None:
    receiver = receivers()

    def broken(text: str) -> str:
        raise RuntimeError("masker down")

    assert await deliver(WebhookNotifier([(hook(receiver.url), None)], text=broken)) == []
    body = json.loads(receiver.received[0].body)
    assert body["rule_reason"] == "[withheld: masking failed]"
    assert body["statement"] == "[withheld: masking failed]"


@pytest.mark.anyio
async def test_the_slack_message_summarises_links_and_escapes_control_sequences(
    receivers: Callable[..., Receiver],
) -> None:
    receiver = receivers()
    approval = make_approval(
        statement="UPDATE t SET a = '<!channel> & <https://evil.example|click>' -- ``` `x`",
        reason="ping <!here> & <@U123>",
    )
    assert await deliver(WebhookNotifier([(hook(receiver.url, format="slack"), None)]), approval) == []
    body = json.loads(receiver.received[0].body)
    assert set(body) == {"text", "blocks"}
    assert "Deploy Bot" in body["text"]
    assert f"<{PAGE}|Review approval apr_test123>" in body["text"]
    section, statement, actions = body["blocks"]
    assert section["type"] == "section"
    assert section["text"]["type"] == "mrkdwn"
    summary = section["text"]["text"]
    for expected in (
        "query_db",
        "shop",
        "writes-need-review",
        "public.orders",
        "public.customers",
        "2 approver(s)",
    ):
        assert expected in summary
    assert "ping &lt;!here&gt; &amp; &lt;@U123&gt;" in summary
    assert statement["text"]["text"].startswith("```")
    assert statement["text"]["text"].endswith("```")
    assert statement["text"]["text"].count("```") == 2
    inner = statement["text"]["text"][3:-3]
    assert "&lt;!channel&gt; &amp; &lt;https://evil.example|click&gt;" in inner
    assert actions["elements"][0]["url"] == PAGE
    raw = receiver.received[0].body.decode()
    for control in ("<!channel>", "<!here>", "<@U123>", "<https://evil"):
        assert control not in raw


def test_slack_escaping_covers_ampersand_and_angle_brackets() -> None:
    assert slack_escape("a & <b> &amp;") == "a &amp; &lt;b&gt; &amp;amp;"


@pytest.mark.anyio
async def test_the_slack_message_without_a_page_says_how_to_review_from_the_cli(
    receivers: Callable[..., Receiver],
) -> None:
    receiver = receivers()
    assert await deliver(WebhookNotifier([(hook(receiver.url, format="slack"), None)]), url=None) == []
    body = json.loads(receiver.received[0].body)
    assert "hoop-mcp approvals show apr_test123" in body["text"]
    assert all(block["type"] != "actions" for block in body["blocks"])


@pytest.mark.anyio
async def test_a_receiver_failing_twice_with_500_gets_it_on_the_third_attempt_after_backoff(
    receivers: Callable[..., Receiver],
) -> None:
    receiver = receivers(statuses=[500, 500, 200])
    notifier = WebhookNotifier([(hook(receiver.url, attempts=3), None)], backoff_s=0.1)
    assert await deliver(notifier) == []
    assert len(receiver.received) == 3
    first, second, third = (r.at for r in receiver.received)
    assert second - first >= 0.1
    assert third - second >= 0.2
    assert receiver.received[0].body == receiver.received[2].body


@pytest.mark.anyio
async def test_429_is_retried(receivers: Callable[..., Receiver]) -> None:
    receiver = receivers(statuses=[429, 204])
    assert await deliver(WebhookNotifier([(hook(receiver.url), None)], backoff_s=0.01)) == []
    assert len(receiver.received) == 2


@pytest.mark.anyio
async def test_a_receiver_that_always_fails_yields_a_failure_description_and_nothing_is_raised(
    receivers: Callable[..., Receiver],
) -> None:
    receiver = receivers(statuses=[503])
    notifier = WebhookNotifier([(hook(receiver.url, attempts=4), None)], backoff_s=0.01)
    host = receiver.url.split("/")[2]
    assert await deliver(notifier) == [f"{host}: HTTP 503 after 4 attempt(s)"]
    assert len(receiver.received) == 4


@pytest.mark.anyio
async def test_a_400_is_not_retried(receivers: Callable[..., Receiver]) -> None:
    receiver = receivers(statuses=[400, 200])
    failures = await deliver(WebhookNotifier([(hook(receiver.url), None)], backoff_s=0.01))
    assert len(receiver.received) == 1
    assert failures == [f"{receiver.url.split('/')[2]}: HTTP 400 (not retried)"]


@pytest.mark.anyio
async def test_a_redirect_is_not_followed(receivers: Callable[..., Receiver]) -> None:
    elsewhere = receivers()
    receiver = receivers(statuses=[302], location=elsewhere.url)
    failures = await deliver(WebhookNotifier([(hook(receiver.url), None)], backoff_s=0.01))
    assert len(receiver.received) == 1
    assert elsewhere.received == []
    assert failures == [f"{receiver.url.split('/')[2]}: redirect refused (HTTP 302) (not retried)"]


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.anyio
async def test_connection_refused_is_a_failure_without_the_url_path_query_or_secret() -> None:
    port = _closed_port()
    path_secret, query_secret = secrets.token_hex(8), secrets.token_hex(8)
    url = f"http://127.0.0.1:{port}/services/{path_secret}?token={query_secret}"
    secret = secrets.token_bytes(16)
    notifier = WebhookNotifier([(hook(url, attempts=2), secret)], backoff_s=0.01)
    failures = await deliver(notifier)
    assert failures == [f"127.0.0.1:{port}: connection refused after 2 attempt(s)"]
    text = " ".join(failures)
    for hidden in (path_secret, query_secret, secret.hex(), "services", "token"):
        assert hidden not in text


@pytest.mark.anyio
async def test_a_receiver_that_never_answers_times_out_per_attempt(
    receivers: Callable[..., Receiver],
) -> None:
    receiver = receivers(hang=threading.Event())
    url = receiver.url + "?sig=" + secrets.token_hex(8)
    notifier = WebhookNotifier([(hook(url, timeout_s=0.3, attempts=2), None)], backoff_s=0.01)
    failures = await deliver(notifier)
    assert len(receiver.received) == 2
    (failure,) = failures
    assert failure.startswith(receiver.url.split("/")[2] + ": timed out")
    assert "sig=" not in failure


@pytest.mark.anyio
async def test_each_destination_gets_its_own_delivery_and_only_failures_are_reported(
    receivers: Callable[..., Receiver],
) -> None:
    good, bad = receivers(), receivers(statuses=[404])
    notifier = WebhookNotifier(
        [(hook(good.url), None), (hook(bad.url, format="slack"), None)], backoff_s=0.01
    )
    failures = await deliver(notifier)
    assert len(good.received) == 1
    assert failures == [f"{bad.url.split('/')[2]}: HTTP 404 (not retried)"]
