"""One exception tree for every failure. Outcomes (deny, pending) are values, not exceptions.

Every error carries an operator-facing ``diagnostics()`` (safe for logs: no secrets) and a
``public_message`` that is safe to show an agent once masked. ``server/`` is the only layer that
maps these to MCP results.
"""

from __future__ import annotations

from typing import Any


class HoopError(Exception):
    """Root of every error hoop-mcp raises on purpose."""

    #: Short, stable machine code, e.g. ``config.invalid``.
    code: str = "hoop.error"

    def __init__(
        self, message: str, *, hint: str | None = None, details: dict[str, Any] | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.details: dict[str, Any] = dict(details or {})

    @property
    def public_message(self) -> str:
        """Text an agent may see (the server masks it before sending)."""
        return self.message if self.hint is None else f"{self.message} ({self.hint})"

    def diagnostics(self) -> str:
        """Operator-facing explanation: what failed and what to do about it."""
        parts = [f"[{self.code}] {self.message}"]
        if self.hint:
            parts.append(f"hint: {self.hint}")
        for key, value in sorted(self.details.items()):
            parts.append(f"{key}: {value}")
        return "\n".join(parts)


class ConfigError(HoopError):
    """A configuration or policy file is invalid; names the key path."""

    code = "config.invalid"


class AuthenticationError(HoopError):
    """The caller's credential is missing, invalid, expired or not trusted."""

    code = "auth.failed"


class ApprovalError(HoopError):
    """The approval / confirmation stage could not reach a decision (fails closed)."""

    code = "approval.failed"


class BackendError(HoopError):
    """A backend (PostgreSQL, Kubernetes, Git) failed."""

    code = "backend.error"


class BackendUnavailable(BackendError):
    """The backend cannot be reached or timed out; nothing was executed (or the outcome is unknown)."""

    code = "backend.unavailable"


class BackendRejected(BackendError):
    """The backend refused the request (syntax, permission, constraint, caps)."""

    code = "backend.rejected"


class InvalidInput(HoopError):
    """The tool call's arguments are malformed (bad SQL, NUL bytes, over size caps, ...)."""

    code = "input.invalid"


class MaskingError(HoopError):
    """Masking failed; the result is withheld (fail closed)."""

    code = "masking.failed"


class AuditError(HoopError):
    """The audit log failed."""

    code = "audit.error"


class AuditWriteError(AuditError):
    """An audit record could not be written durably; nothing executes."""

    code = "audit.write_failed"


class AuditVerificationError(AuditError):
    """The audit chain does not verify; names the first bad record."""

    code = "audit.verification_failed"
