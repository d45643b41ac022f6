"""Webhook notifications about new pending approvals (``approvals.webhooks``).

Each configured destination gets one POST per new pending approval, as generic JSON
(``format: json``) or as a Slack incoming-webhook message (``format: slack``). Free text goes
through the server's masker first; nothing in a notification is needed to decide (the approval
page and ``hoop-mcp approvals show`` are), so a masked word costs little.

Delivery: ``attempts`` tries per destination, ``timeout_s`` each, exponential backoff between them
(0.25 s, 0.5 s, 1 s, ...), retried on connection errors, timeouts, 5xx and 429 only; redirects are
refused (a redirect could carry the body elsewhere). With a ``secret`` the body is signed:
``X-Hoop-Signature: sha256=<hex HMAC-SHA256(secret, body)>``. Failures are returned as short
descriptions (host and reason: webhook URLs often hold a secret in their path or query, so neither
is ever shown) and never raised.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import socket
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any
from urllib.parse import urlsplit

import anyio
import anyio.to_thread

from hoop_mcp import __version__
from hoop_mcp.config import WebhookConfig
from hoop_mcp.core.approval import visible
from hoop_mcp.core.approvals import Approval

log = logging.getLogger(__name__)

EVENT_TYPE = "hoop.approval.pending"
#: Longest statement put into a notification (Slack's section text limit is 3000 characters).
MAX_STATEMENT = 2500
_MAX_RESPONSE_READ = 64 * 1024


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # urllib then raises HTTPError with the 3xx status


_OPENER = urllib.request.build_opener(_NoRedirects())


@dataclass(frozen=True, slots=True)
class _Attempt:
    """How one POST ended: ``status`` for an HTTP answer, else ``error`` (connection problems)."""

    status: int | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300

    @property
    def retryable(self) -> bool:
        if self.status is None:
            return True
        return self.status >= 500 or self.status == 429

    def describe(self) -> str:
        if self.status is not None:
            if 300 <= self.status < 400:
                return f"redirect refused (HTTP {self.status})"
            return f"HTTP {self.status}"
        return self.error or "failed"


def _post(url: str, body: bytes, headers: dict[str, str], timeout_s: float) -> _Attempt:
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")  # noqa: S310 (http(s) only: checked by WebhookConfig)
    try:
        with _OPENER.open(request, timeout=timeout_s) as response:
            response.read(_MAX_RESPONSE_READ)
            return _Attempt(status=int(response.status))
    except urllib.error.HTTPError as exc:
        exc.close()
        return _Attempt(status=int(exc.code))
    except urllib.error.URLError as exc:
        return _Attempt(error=_os_reason(exc.reason))
    except TimeoutError:
        return _Attempt(error=f"timed out after {timeout_s:g} s")
    except OSError as exc:
        return _Attempt(error=_os_reason(exc))
    except Exception as exc:  # noqa: BLE001 - never raise out of a notification
        return _Attempt(error=f"request failed ({type(exc).__name__})")


def _os_reason(reason: object) -> str:
    """A reason without any URL in it: the OS error text, or the exception's class."""
    if isinstance(reason, TimeoutError):
        return "timed out"
    if isinstance(reason, ConnectionRefusedError):
        return "connection refused"
    if isinstance(reason, socket.gaierror):
        return "host name not resolved"
    if isinstance(reason, OSError):
        return (reason.strerror or type(reason).__name__).lower()
    if isinstance(reason, str):
        return "connection failed"
    return f"connection failed ({type(reason).__name__})"


def _host(url: str) -> str:
    parts = urlsplit(url)
    host = parts.hostname or "?"
    return f"{host}:{parts.port}" if parts.port else host


def slack_escape(text: str) -> str:
    """Escape Slack's control sequences (``<`` links and mentions, ``&`` entities, ``>``)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


class WebhookNotifier:
    """:class:`~hoop_mcp.core.approvals.Notifier` for ``approvals.webhooks``.

    ``hooks`` pairs each destination with its resolved signing secret (``None``: unsigned).
    ``text`` masks free text the way the pipeline does. ``backoff_s`` is the first pause between
    attempts (doubled after each).
    """

    def __init__(
        self,
        hooks: Sequence[tuple[WebhookConfig, bytes | None]],
        *,
        text: Callable[[str], str] = lambda t: t,
        backoff_s: float = 0.25,
    ) -> None:
        self.hooks = tuple(hooks)
        self._text = text
        self.backoff_s = backoff_s

    # -- bodies -----------------------------------------------------------------------------------

    def _masked(self, value: str) -> str:
        try:
            return self._text(value)
        except Exception:  # noqa: BLE001 - withhold, never raise out of a notification
            log.warning("masking failed on notification text; it is withheld")
            return "[withheld: masking failed]"

    def json_body(self, approval: Approval, *, url: str | None) -> dict[str, Any]:
        request = approval.request
        plan = request.plan
        statement = plan.statement or ""
        if len(statement) > MAX_STATEMENT:
            statement = statement[:MAX_STATEMENT] + " ..."
        return {
            "type": EVENT_TYPE,
            "approval_id": request.approval_id,
            "url": url,
            "requester": request.requester.label,
            "tool": request.tool,
            "connection": request.connection,
            "rule_id": request.rule_id,
            "rule_reason": self._masked(request.rule_reason),
            "effect": plan.effect,
            "relations_written": [self._masked(r) for r in plan.relations_written],
            "relations_read": [self._masked(r) for r in plan.relations_read],
            "statement": self._masked(statement) if plan.statement is not None else None,
            "expires_at": approval.deadline.isoformat(timespec="seconds"),
            "quorum": request.review.quorum,
        }

    def slack_body(self, approval: Approval, *, url: str | None) -> dict[str, Any]:
        data = self.json_body(approval, url=url)

        def esc(value: object) -> str:
            return slack_escape(visible(str(value)))

        where = f"{esc(data['tool'])} on {esc(data['connection'] or '(no connection)')}"
        headline = (
            f"Approval needed: {esc(data['requester'])} wants to run {where} "
            f"(effect {esc(data['effect'])}), held by rule {esc(data['rule_id'])}"
        )
        lines = [
            f"*{headline}*",
            f"*Rule:* {esc(data['rule_id'])}: {esc(data['rule_reason'])}",
        ]
        if data["relations_written"]:
            lines.append(f"*Writes:* {esc(', '.join(data['relations_written']))}")
        if data["relations_read"]:
            lines.append(f"*Reads:* {esc(', '.join(data['relations_read']))}")
        lines.append(
            f"*Needs:* {data['quorum']} approver(s) other than the requester, before {esc(data['expires_at'])}"
        )
        if url:
            link = f"<{_slack_url(url)}|Review approval {esc(data['approval_id'])}>"
        else:
            link = f"Review it with: `hoop-mcp approvals show {esc(data['approval_id'])}`"
        lines.append(link)
        blocks: list[dict[str, Any]] = [
            {"type": "section", "text": {"type": "mrkdwn", "text": "\n".join(lines)}},
        ]
        if data["statement"]:
            # Backticks would end the code block early: show them as a look-alike.
            # Line breaks stay; bidi overrides and other hiding characters are shown as escapes.
            shown = "\n".join(visible(line) for line in str(data["statement"]).split("\n"))
            statement = slack_escape(shown).replace("`", "\u02cb")
            blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": f"```{statement}```"}})
        if url:
            blocks.append(
                {
                    "type": "actions",
                    "elements": [
                        {
                            "type": "button",
                            "text": {"type": "plain_text", "text": "Review"},
                            "url": url,
                        }
                    ],
                }
            )
        return {"text": f"{headline}. {link}", "blocks": blocks}

    def body(self, hook: WebhookConfig, approval: Approval, *, url: str | None) -> bytes:
        data = (
            self.slack_body(approval, url=url)
            if hook.format == "slack"
            else self.json_body(approval, url=url)
        )
        return json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode("utf-8")

    # -- delivery ---------------------------------------------------------------------------------

    async def notify(self, approval: Approval, *, url: str | None) -> list[str]:
        """POST to every destination concurrently; one description per destination that failed."""
        failures: list[str] = []

        async def one(hook: WebhookConfig, secret: bytes | None) -> None:
            try:
                problem = await self._deliver(hook, secret, approval, url=url)
            except Exception as exc:  # never raise out of a notification
                log.exception("approval %s: webhook to %s crashed", approval.approval_id, _host(hook.url))
                problem = f"{_host(hook.url)}: notifier error ({type(exc).__name__})"
            if problem is not None:
                failures.append(problem)

        async with anyio.create_task_group() as tg:
            for hook, secret in self.hooks:
                tg.start_soon(one, hook, secret)
        return failures

    async def _deliver(
        self, hook: WebhookConfig, secret: bytes | None, approval: Approval, *, url: str | None
    ) -> str | None:
        host = _host(hook.url)
        body = self.body(hook, approval, url=url)
        headers = {
            "Content-Type": "application/json; charset=utf-8",
            "User-Agent": f"hoop-mcp/{__version__}",
            "X-Hoop-Approval-Id": approval.approval_id,
        }
        if secret:
            headers["X-Hoop-Signature"] = "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()
        attempt = _Attempt(error="not attempted")
        for number in range(1, hook.attempts + 1):
            if number > 1:
                await anyio.sleep(self.backoff_s * 2 ** (number - 2))
            attempt = _Attempt(error=f"timed out after {hook.timeout_s:g} s")
            with anyio.move_on_after(hook.timeout_s + 0.5):
                attempt = await anyio.to_thread.run_sync(
                    partial(_post, hook.url, body, headers, hook.timeout_s), abandon_on_cancel=True
                )
            if attempt.ok:
                log.info("approval %s: notified %s (attempt %d)", approval.approval_id, host, number)
                return None
            log.warning(
                "approval %s: webhook to %s failed (attempt %d of %d): %s",
                approval.approval_id,
                host,
                number,
                hook.attempts,
                attempt.describe(),
            )
            if not attempt.retryable:
                return f"{host}: {attempt.describe()} (not retried)"
        return f"{host}: {attempt.describe()} after {hook.attempts} attempt(s)"


def _slack_url(url: str) -> str:
    """A URL as a Slack link target: ``|`` and ``>`` would end it early."""
    return url.replace("&", "&amp;").replace("<", "%3C").replace(">", "%3E").replace("|", "%7C")
