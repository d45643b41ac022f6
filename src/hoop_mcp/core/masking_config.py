"""Masking configuration (the ``masking:`` section of a policy file)."""

from __future__ import annotations

import re
from enum import StrEnum

from pydantic import Field, field_validator

from hoop_mcp.core.models import FrozenModel


class MaskStrategy(StrEnum):
    #: Replace the whole value with a token such as ``[REDACTED:SSN]``.
    REDACT = "redact"
    #: Keep the last N alphanumeric characters, replace the others with ``*`` (separators kept).
    PARTIAL = "partial"
    #: Replace with a keyed hash (HMAC-SHA256): equal inputs give equal tokens, joins still work.
    HASH = "hash"
    #: Column rules only. Keep the value but mask what the detectors find in it (for free text such
    #: as notes), and treat the column as masked in queries: it may be selected as it is, never
    #: transformed (``reverse(notes)`` would reshape embedded values past the detectors), compared
    #: or copied.
    DETECT = "detect"


#: Every built-in value detector, by name (see docs/policies.md#masking).
BUILTIN_DETECTORS: tuple[str, ...] = (
    "email",
    "phone",
    "us_ssn",
    "payment_card",
    "iban",
    "jwt",
    "aws_access_key",
    "aws_secret_key",
    "github_token",
    "gitlab_token",
    "slack_token",
    "stripe_key",
    "private_key",
    "password_assignment",
)

_COLUMN_RE = re.compile(r"^[a-z_][a-z0-9_$]*\.[a-z_][a-z0-9_$]*\.[a-z_][a-z0-9_$]*$")
_NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,62}$")


class ColumnRule(FrozenModel):
    """Mask one column wherever it appears in a result, however it is aliased."""

    #: ``schema.table.column`` (lower case, as PostgreSQL folds unquoted identifiers).
    column: str
    strategy: MaskStrategy = MaskStrategy.REDACT
    keep_last: int = Field(default=4, ge=0, le=16)
    #: Limit the rule to one connection; ``None`` applies it to every postgres connection.
    connection: str | None = None

    @field_validator("column")
    @classmethod
    def _column_is_qualified(cls, value: str) -> str:
        if not _COLUMN_RE.match(value):
            raise ValueError("must be 'schema.table.column' in lower case, e.g. 'public.customers.ssn'")
        return value

    @property
    def relation(self) -> str:
        return self.column.rsplit(".", 1)[0]

    @property
    def column_name(self) -> str:
        return self.column.rsplit(".", 1)[1]


def _not_detect(value: MaskStrategy) -> MaskStrategy:
    if value is MaskStrategy.DETECT:
        raise ValueError("'detect' is only for column rules; use redact, partial or hash")
    return value


class CustomEntity(FrozenModel):
    """An operator-defined value detector (e.g. internal account numbers)."""

    name: str
    #: A Python regular expression; the whole match is masked.
    pattern: str = Field(max_length=500)
    strategy: MaskStrategy = MaskStrategy.REDACT
    keep_last: int = Field(default=4, ge=0, le=16)

    @field_validator("strategy")
    @classmethod
    def _strategy_ok(cls, value: MaskStrategy) -> MaskStrategy:
        return _not_detect(value)

    @field_validator("name")
    @classmethod
    def _name_ok(cls, value: str) -> str:
        if not _NAME_RE.match(value):
            raise ValueError("must be lower case letters, digits and '_' (starting with a letter)")
        return value

    @field_validator("pattern")
    @classmethod
    def _pattern_compiles(cls, value: str) -> str:
        try:
            compiled = re.compile(value)
        except re.error as exc:
            raise ValueError(f"invalid regular expression: {exc}") from exc
        if compiled.match(""):
            raise ValueError("pattern must not match the empty string")
        return value


class MaskingPolicy(FrozenModel):
    columns: tuple[ColumnRule, ...] = ()
    #: Built-in detectors run on every text cell, argument, error and record. Default: all of them.
    detectors: tuple[str, ...] = BUILTIN_DETECTORS
    detector_strategy: MaskStrategy = MaskStrategy.REDACT
    custom_entities: tuple[CustomEntity, ...] = ()
    #: Masked columns in WHERE / JOIN / ORDER BY / GROUP BY are a comparison oracle and refused by
    #: default. Setting this lets such queries run (the values are still masked in the output).
    unsafe_allow_masked_column_predicates: bool = False

    @field_validator("detector_strategy")
    @classmethod
    def _detector_strategy_ok(cls, value: MaskStrategy) -> MaskStrategy:
        return _not_detect(value)

    @field_validator("detectors")
    @classmethod
    def _known_detectors(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        unknown = sorted(set(value) - set(BUILTIN_DETECTORS))
        if unknown:
            raise ValueError(f"unknown detector(s) {unknown}; known: {list(BUILTIN_DETECTORS)}")
        return value
