"""The masking engine: column rules and value detectors applied to everything that leaves.

* ``mask_rows`` masks a result set: a column rule (matched on the protocol's source column, so
  aliases and ``SELECT *`` do not escape it) replaces the whole cell, then the detectors run on every
  string, recursively inside JSON. Computed columns (source ``None``) get the detectors only.
* ``mask_text`` / ``mask_json`` run the detectors on arbitrary text (arguments, errors, plans).
* Any unexpected failure raises :class:`~hoop_mcp.core.errors.MaskingError` (the pipeline then
  withholds the result: fail closed).

Tokens: ``[REDACTED]`` (column rule), ``[REDACTED:<LABEL>]`` (detector), ``hash:`` + 16 letters
``a``-``p`` (keyed HMAC-SHA256, 64 bits; never digits so it cannot look like a card number), and
partial values such as ``***-**-3456``. No token matches any detector, so masking is idempotent.

Non-finite floats (which JSON cannot carry) become the strings ``NaN`` / ``Infinity`` /
``-Infinity``. Non-string values under a column rule become strings: the rule is applied to their compact JSON
text (``123456789`` -> ``"*****6789"``, ``true`` -> ``"[REDACTED]"``); ``null`` stays ``null``.

Redaction counts (``MaskedRows.redactions``):

* ``column:<i>``: masked items in result column ``i`` (1 per cell masked by a rule + 1 per detector
  hit), present only when non-zero.
* ``detector:<name>``: detector (or custom entity) hits across the result.
* ``rule:<schema.table.column>``: cells replaced by that column rule.
"""

from __future__ import annotations

import hmac
import json
import math
import re
from collections import Counter
from collections.abc import Sequence

from pydantic import JsonValue

from hoop_mcp.core.detectors import LABELS, TOKEN_PATTERN, Hit, Scanner
from hoop_mcp.core.errors import HoopError, MaskingError
from hoop_mcp.core.masking_config import ColumnRule, MaskingPolicy, MaskStrategy
from hoop_mcp.core.models import FrozenModel

__all__ = ["MaskedRows", "Masker", "partial_mask"]

REDACTED = "[REDACTED]"
_HASH_LETTERS = str.maketrans("0123456789abcdef", "abcdefghijklmnop")
_TOKEN_RE = re.compile(TOKEN_PATTERN)
_DETECTOR_KEEP_LAST = 4


class MaskedRows(FrozenModel):
    """A masked result set: same shape as the input, JSON values only."""

    rows: tuple[tuple[JsonValue, ...], ...]
    #: ``column:<i>`` / ``detector:<name>`` / ``rule:<schema.table.column>`` -> count (see module doc).
    redactions: dict[str, int]
    #: Result column indices replaced wholesale by a column rule.
    masked_columns: tuple[int, ...]


def partial_mask(value: str, keep_last: int) -> str:
    """Keep the last ``keep_last`` letters/digits, ``*`` for the others; separators are kept.

    Never reveals more than half of the alphanumerics (a 4-character value keeps 2).
    """
    n_alnum = sum(1 for ch in value if ch.isalnum())
    keep = min(keep_last, n_alnum // 2)
    hide = n_alnum - keep
    out: list[str] = []
    for ch in value:
        if ch.isalnum():
            out.append("*" if hide > 0 else ch)
            hide -= 1
        else:
            out.append(ch)
    return "".join(out)


class _Custom:
    __slots__ = ("keep_last", "label", "name", "regex", "strategy")

    def __init__(self, name: str, pattern: str, strategy: MaskStrategy, keep_last: int) -> None:
        self.name = name
        self.regex = re.compile(pattern)
        self.strategy = strategy
        self.keep_last = keep_last
        self.label = name.upper()


_MAX_PASSES = 8
_CACHE_LIMIT = 8192


class Masker:
    """Applies one :class:`MaskingPolicy`. Thread-safe (immutable after construction)."""

    def __init__(self, policy: MaskingPolicy, *, hash_key: bytes) -> None:
        if not hash_key:
            raise MaskingError("the masking hash key must not be empty")
        self._policy = policy
        self._key = bytes(hash_key)
        self._scanner = Scanner(policy.detectors)
        self._strategy = policy.detector_strategy
        self._customs = tuple(
            _Custom(c.name, c.pattern, c.strategy, c.keep_last) for c in policy.custom_entities
        )
        self._custom_by_name = {c.name: c for c in self._customs}
        # (connection or None, column) -> rule; a connection-specific rule wins over a global one.
        self._rules: dict[tuple[str | None, str], ColumnRule] = {}
        for rule in policy.columns:
            self._rules.setdefault((rule.connection, rule.column), rule)

    # --- column rules ---------------------------------------------------------------------------

    def column_rule(self, *, connection: str, column: str) -> ColumnRule | None:
        """The rule masking ``schema.table.column`` on ``connection``, if any."""
        return self._rules.get((connection, column)) or self._rules.get((None, column))

    def masked_columns(self, *, connection: str) -> dict[str, frozenset[str]]:
        """Relation (``schema.table``) -> names of its masked columns, for ``connection``."""
        out: dict[str, set[str]] = {}
        for rule in self._policy.columns:
            if rule.connection is None or rule.connection == connection:
                out.setdefault(rule.relation, set()).add(rule.column_name)
        return {rel: frozenset(cols) for rel, cols in out.items()}

    # --- public masking -------------------------------------------------------------------------

    def mask_text(self, text: str) -> tuple[str, Counter[str]]:
        """Run the detectors (and custom entities) on ``text``; counts by detector/entity name."""
        counts: Counter[str] = Counter()
        try:
            return self._text(text, counts), counts
        except HoopError:
            raise
        except Exception as exc:
            raise MaskingError("masking failed", details={"error": type(exc).__name__}) from exc

    def mask_json(self, value: JsonValue) -> tuple[JsonValue, Counter[str]]:
        """Run the detectors on every string (dict keys too) of an arbitrary JSON value."""
        counts: Counter[str] = Counter()
        try:
            return self._json(value, counts, 0), counts
        except HoopError:
            raise
        except Exception as exc:
            raise MaskingError("masking failed", details={"error": type(exc).__name__}) from exc

    def mask_value(
        self, value: JsonValue, *, rule: ColumnRule | None = None
    ) -> tuple[JsonValue, Counter[str]]:
        """Apply ``rule`` to the whole (non-null) value, then the detectors.

        Counts: ``rule:<column>`` for the rule, detector names for detector hits.
        """
        counts: Counter[str] = Counter()
        try:
            if rule is not None and value is not None and rule.strategy is not MaskStrategy.DETECT:
                value = self._apply_rule(value, rule)
                counts["rule:" + rule.column] += 1
            return self._json(value, counts, 0), counts
        except HoopError:
            raise
        except Exception as exc:
            raise MaskingError("masking failed", details={"error": type(exc).__name__}) from exc

    def mask_rows(
        self,
        *,
        connection: str,
        sources: Sequence[str | None],
        rows: Sequence[Sequence[JsonValue]],
    ) -> MaskedRows:
        """Mask a result set. ``sources[i]`` is result column ``i``'s ``schema.table.column`` or ``None``."""
        try:
            return self._rows(connection, sources, rows)
        except HoopError:
            raise
        except Exception as exc:
            raise MaskingError("masking failed", details={"error": type(exc).__name__}) from exc

    # --- internals ------------------------------------------------------------------------------

    def _rows(
        self, connection: str, sources: Sequence[str | None], rows: Sequence[Sequence[JsonValue]]
    ) -> MaskedRows:
        width = len(sources)
        rules = [
            None if src is None else self.column_rule(connection=connection, column=src) for src in sources
        ]
        per_column = [0] * width
        counts: Counter[str] = Counter()
        # Results repeat values (statuses, cities): strings found clean are remembered for the call.
        # Every string with a hit goes through ``_text``, which rescans until nothing changes.
        clean: set[str] = set()
        find = self._scanner.find
        has_custom = bool(self._customs)
        out_rows: list[tuple[JsonValue, ...]] = []
        for row in rows:
            if len(row) != width:
                raise MaskingError(
                    "result row width does not match its column metadata",
                    details={"expected": width, "got": len(row)},
                )
            out: list[JsonValue] = []
            for i, value in enumerate(row):
                rule = rules[i]
                if rule is not None and value is not None and rule.strategy is not MaskStrategy.DETECT:
                    value = self._apply_rule(value, rule)
                    counts["rule:" + rule.column] += 1
                    per_column[i] += 1
                    if rule.strategy is not MaskStrategy.PARTIAL:
                        out.append(value)  # a whole-value token of ours: nothing left to detect
                        continue
                if isinstance(value, str):
                    if value in clean:
                        pass
                    else:
                        first = None if has_custom else find(value)
                        if first is None and not has_custom:
                            if len(clean) < _CACHE_LIMIT:
                                clean.add(value)  # the common case: nothing to mask
                        else:
                            before = counts.total()
                            value = self._text(value, counts, first)
                            per_column[i] += counts.total() - before
                elif value is None or isinstance(value, bool | int):
                    pass
                elif isinstance(value, float):
                    if not math.isfinite(value):
                        value = _nonfinite(value)
                elif isinstance(value, list | dict):
                    before = counts.total()
                    value = self._json(value, counts, 0)
                    per_column[i] += counts.total() - before
                else:
                    raise MaskingError(
                        "result cell is not a JSON value", details={"type": type(value).__name__}
                    )
                out.append(value)
            out_rows.append(tuple(out))
        redactions: dict[str, int] = {f"column:{i}": n for i, n in enumerate(per_column) if n}
        for name, n in sorted(counts.items()):
            if name.startswith("rule:"):
                redactions[name] = n
            else:
                redactions["detector:" + name] = n
        masked = tuple(
            i for i, rule in enumerate(rules) if rule is not None and rule.strategy is not MaskStrategy.DETECT
        )
        return MaskedRows.model_construct(rows=tuple(out_rows), redactions=redactions, masked_columns=masked)

    def _json(self, value: JsonValue, counts: Counter[str], depth: int) -> JsonValue:
        if isinstance(value, str):
            return self._text(value, counts)
        if value is None or isinstance(value, bool | int):
            return value
        if isinstance(value, float):
            return value if math.isfinite(value) else _nonfinite(value)
        if depth > 200:
            raise MaskingError("JSON value nested too deeply to mask")
        if isinstance(value, list):
            return [self._json(v, counts, depth + 1) for v in value]
        if isinstance(value, dict):
            result: dict[str, JsonValue] = {}
            for key, item in value.items():
                if not isinstance(key, str):
                    raise MaskingError("JSON object key is not a string")
                new_key = self._text(key, counts)
                if new_key in result:
                    # Two keys masked to the same token: keep both values.
                    n = 2
                    while f"{new_key}#{n}" in result:
                        n += 1
                    new_key = f"{new_key}#{n}"
                result[new_key] = self._json(item, counts, depth + 1)
            return result
        raise MaskingError("value is not JSON", details={"type": type(value).__name__})

    def _text(self, text: str, counts: Counter[str], first_hits: list[Hit] | None = None) -> str:
        # Masking one value can expose another (a card masked out of "+1200… 0 4000 …" leaves a phone
        # number that the overlapping match had hidden), so rescan until nothing changes. Tokens never
        # match a detector, so this converges; a value still changing after a few passes fails closed.
        hits = first_hits
        for _ in range(_MAX_PASSES):
            masked = self._text_once(text, counts, hits)
            if masked is text:
                return masked
            text, hits = masked, None
        raise MaskingError("masking did not converge", details={"passes": _MAX_PASSES})

    def _text_once(self, text: str, counts: Counter[str], hits: list[Hit] | None = None) -> str:
        """One scan-and-replace; returns ``text`` itself (same object) when nothing matched."""
        if hits is None:
            hits = self._scanner.find(text)
        if self._customs:
            extra = self._custom_hits(text)
            if extra:
                hits = _merge((hits or []) + extra)
        if not hits:
            return text
        return self._replace(text, hits, counts)

    def _custom_hits(self, text: str) -> list[Hit]:
        # Custom patterns are arbitrary: search only between existing mask tokens so a token is never
        # masked again (idempotence), while text next to a token is still searched.
        segments: list[tuple[int, int]] = []
        pos = 0
        if "[REDACTED" in text or "hash:" in text:
            for tok in _TOKEN_RE.finditer(text):
                segments.append((pos, tok.start()))
                pos = tok.end()
        segments.append((pos, len(text)))
        hits: list[Hit] = []
        for custom in self._customs:
            for start, end in segments:
                if start >= end:
                    continue
                for m in custom.regex.finditer(text, start, end):
                    if m.end() > m.start():
                        hits.append(Hit(m.start(), m.end(), custom.name))
        return hits

    def _replace(self, text: str, hits: list[Hit], counts: Counter[str]) -> str:
        parts: list[str] = []
        pos = 0
        for hit in hits:
            parts.append(text[pos : hit.start])
            parts.append(self._token(hit.name, text[hit.start : hit.end]))
            counts[hit.name] += 1
            pos = hit.end
        parts.append(text[pos:])
        return "".join(parts)

    def _token(self, name: str, secret: str) -> str:
        custom = self._custom_by_name.get(name)
        if custom is not None:
            strategy, keep, label = custom.strategy, custom.keep_last, custom.label
        else:
            strategy, keep, label = self._strategy, _DETECTOR_KEEP_LAST, LABELS.get(name, name.upper())
        if strategy is MaskStrategy.HASH:
            return self._hash(secret)
        if strategy is MaskStrategy.PARTIAL:
            return partial_mask(secret, keep)
        return f"[REDACTED:{label}]"

    def _hash(self, secret: str) -> str:
        digest = hmac.digest(self._key, secret.encode("utf-8", "surrogatepass"), "sha256").hex()
        return "hash:" + digest[:16].translate(_HASH_LETTERS)

    def _apply_rule(self, value: JsonValue, rule: ColumnRule) -> str:
        text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, ensure_ascii=False)
        if rule.strategy is MaskStrategy.HASH:
            return self._hash(text)
        if rule.strategy is MaskStrategy.PARTIAL:
            return partial_mask(text, rule.keep_last)
        return REDACTED


def _nonfinite(value: float) -> str:
    """JSON has no NaN/Infinity: use PostgreSQL's spelling as a string."""
    if math.isnan(value):
        return "NaN"
    return "Infinity" if value > 0 else "-Infinity"


def _merge(hits: list[Hit]) -> list[Hit]:
    """Sort and merge overlapping hits (the union is masked; the earliest hit names it)."""
    hits.sort(key=lambda h: (h.start, -h.end))
    merged: list[Hit] = []
    for hit in hits:
        if merged and hit.start < merged[-1].end:
            last = merged[-1]
            if hit.end > last.end:
                merged[-1] = Hit(last.start, hit.end, last.name)
            continue
        merged.append(hit)
    return merged
