"""Built-in value detectors: regular expressions plus validators, combined into one scanner.

Design (see ``docs/policies.md#masking``):

* Every detector is one or more *alternatives*. Each alternative is a regular expression that
  starts with a single character class or literal (so the regex engine's alternation can reject it
  with one character test) and ends with an empty named group that marks which alternative
  matched (``Match.lastgroup``). Boundary look-behinds are placed *after* the first character
  (``X(?<!Y.)``) for the same reason.
* All enabled alternatives are joined, in priority order, into one compiled pattern; text is scanned
  once. A candidate is then checked by its validator (Luhn, mod-97, SSN ranges, JWT header, ...),
  which returns the span to mask (for assignments only the value part) or ``None``. When a
  candidate is rejected, the lower-priority alternatives are tried at the same position before the
  scan moves on, so a rejected 16-digit number does not hide a phone number starting there.
* Masked tokens (``[REDACTED:EMAIL]``, ``hash:`` + 16 letters, ``*``-partial output) never match
  any detector, which makes masking idempotent.

Deliberate choices (documented trade-offs):

* ``us_ssn`` matches ``ddd-dd-dddd`` and ``ddd dd dddd``; it rejects area 000/666, group 00 and
  serial 0000 but *accepts* area 9xx (never issued as real SSNs, but the demo seeds use it and
  ITINs share the shape). Bare 9-digit integers are not matched (too many false positives).
* ``payment_card`` needs 13-19 digits (optional single spaces/dashes), a known network prefix
  (2221-2720, 3, 4, 5, 6) and a valid Luhn checksum.
* ``phone`` needs structure: a ``+`` country code (E.164/international, 8-15 digits), ``(NXX)``
  area code, or ``NXX-NXX-XXXX`` with one consistent separator. Bare 10-digit integers, dates,
  times and order ids do not match.
* ``aws_access_key`` masks AWS's published example key ``AKIAIOSFODNN7EXAMPLE`` too: masking a
  placeholder costs nothing, whereas an allow-list is a way to smuggle data.
* ``aws_secret_key`` and ``password_assignment`` need a key name (``aws_secret_access_key=``,
  ``"password": ...``) and mask only the value.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Callable
from dataclasses import dataclass

#: Returns the span to mask (absolute offsets) or ``None`` to reject the candidate.
Validator = Callable[[re.Match[str]], "tuple[int, int] | None"]


@dataclass(frozen=True, slots=True)
class Alternative:
    """One regular expression of a detector (a detector may have several)."""

    detector: str
    pattern: str
    validator: Validator | None = None


@dataclass(frozen=True, slots=True)
class Hit:
    """A validated match: ``text[start:end]`` is masked and counted under ``name``."""

    start: int
    end: int
    name: str


def _whole(m: re.Match[str]) -> tuple[int, int]:
    return m.span()


# --- validators ---------------------------------------------------------------------------------


def luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def _card_prefix_ok(digits: str) -> bool:
    first = digits[0]
    if first in "3456":
        return True
    return first == "2" and 2221 <= int(digits[:4]) <= 2720


def _card_ok(digits: str) -> bool:
    return 13 <= len(digits) <= 19 and _card_prefix_ok(digits) and luhn_ok(digits)


_GROUP_RE = re.compile(r"\d+")


def _validate_card(m: re.Match[str]) -> tuple[int, int] | None:
    text = m.group()
    digits = text.replace(" ", "").replace("-", "")
    if _card_ok(digits):
        return m.span()
    # A grouped card can sit next to other digit groups ("ref 12 4111 1111 1111 1111"): try every
    # run of whole groups.
    groups = [g.span() for g in _GROUP_RE.finditer(text)]
    if len(groups) < 2:
        return None
    base = m.start()
    for i in range(len(groups)):
        for j in range(len(groups) - 1, i - 1, -1):
            if (i, j) == (0, len(groups) - 1):
                continue
            s, e = groups[i][0], groups[j][1]
            candidate = text[s:e].replace(" ", "").replace("-", "")
            if _card_ok(candidate):
                return base + s, base + e
    return None


def _validate_ssn(m: re.Match[str]) -> tuple[int, int] | None:
    text = m.group()
    area, group, serial = text[:3], text[4:6], text[7:]
    if area in ("000", "666") or group == "00" or serial == "0000":
        return None
    return m.span()


def _validate_phone_intl(m: re.Match[str]) -> tuple[int, int] | None:
    n = sum(ch.isdigit() for ch in m.group())
    return m.span() if 8 <= n <= 15 else None


#: ISO 13616 lengths of the countries that use IBANs (unknown countries: any length 15-34).
_IBAN_LENGTHS: dict[str, int] = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22,
    "BR": 29, "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DK": 18, "DO": 28,
    "EE": 20, "EG": 29, "ES": 24, "FI": 18, "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23,
    "GL": 18, "GR": 27, "GT": 28, "HR": 21, "HU": 28, "IE": 22, "IL": 23, "IQ": 23, "IS": 26,
    "IT": 27, "JO": 30, "KW": 30, "KZ": 20, "LB": 28, "LC": 32, "LI": 21, "LT": 20, "LU": 20,
    "LV": 21, "MC": 27, "MD": 24, "ME": 22, "MK": 19, "MR": 27, "MT": 31, "MU": 30, "NL": 18,
    "NO": 15, "PK": 24, "PL": 28, "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22, "SA": 24,
    "SC": 31, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "ST": 25, "SV": 28, "TL": 23, "TN": 24,
    "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20,
}  # fmt: skip


def iban_ok(compact: str) -> bool:
    if not 15 <= len(compact) <= 34:
        return False
    expected = _IBAN_LENGTHS.get(compact[:2])
    if expected is not None and expected != len(compact):
        return False
    rearranged = compact[4:] + compact[:4]
    number = "".join(str(int(ch, 36)) for ch in rearranged)
    return int(number) % 97 == 1


def _validate_iban(m: re.Match[str]) -> tuple[int, int] | None:
    text = m.group()
    # Try the whole match, then shorter prefixes ending at a space (trailing words in capitals).
    ends = [len(text)] + [i for i in range(len(text) - 1, 0, -1) if text[i] == " "]
    for end in ends:
        if iban_ok(text[:end].replace(" ", "")):
            return m.start(), m.start() + end
    return None


def _validate_jwt(m: re.Match[str]) -> tuple[int, int] | None:
    header = m.group().split(".", 1)[0]
    try:
        raw = base64.urlsafe_b64decode(header + "=" * (-len(header) % 4))
        decoded = json.loads(raw)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        return None
    if isinstance(decoded, dict) and "alg" in decoded:
        return m.span()
    return None


def _value_of(group: str) -> Validator:
    def validate(m: re.Match[str]) -> tuple[int, int] | None:
        return m.span(group)

    return validate


# --- patterns -----------------------------------------------------------------------------------

#: Text that is already a mask token (must not be masked again).
TOKEN_PATTERN = r"\[REDACTED(?::[A-Z0-9_]{1,64})?\]|hash:[a-p]{16}(?![A-Za-z0-9])"

_KEYCHARS = "A-Za-z0-9_"
_SEP_ASSIGN = r"""["']?[ \t]{0,3}(?:=>|[:=])[ \t]{0,3}"""

_ALTERNATIVES: tuple[Alternative, ...] = (
    # PEM / OpenSSH / PGP private keys: header through footer (or to the end of a truncated cell).
    Alternative(
        "private_key",
        r"-(?<!-.)----BEGIN[A-Z0-9 ]{0,30}PRIVATE KEY(?: BLOCK)?-----"
        r"(?s:.*?-----END[A-Z0-9 ]{0,30}PRIVATE KEY(?: BLOCK)?-----|.*)",
        _whole,
    ),
    Alternative(
        "jwt",
        r"e(?<![A-Za-z0-9_\-].)yJ[A-Za-z0-9_-]{5,}+\.[A-Za-z0-9_-]{2,}+\.[A-Za-z0-9_-]*+",
        _validate_jwt,
    ),
    Alternative(
        "aws_secret_key",
        r"[aA](?i:ws[_.-]?secret(?:[_.-]?access)?[_.-]?key)" + _SEP_ASSIGN
        + r"""["']?(?P<aws_v1>[A-Za-z0-9/+]{40})(?![A-Za-z0-9/+=])""",
        _value_of("aws_v1"),
    ),
    Alternative(
        "aws_secret_key",
        r"[sS](?<![A-Za-z0-9].)(?i:ecret[_.-]?access[_.-]?key)" + _SEP_ASSIGN
        + r"""["']?(?P<aws_v2>[A-Za-z0-9/+]{40})(?![A-Za-z0-9/+=])""",
        _value_of("aws_v2"),
    ),
    Alternative(
        "password_assignment",
        r"[pPsStTaA](?<![A-Za-z0-9].)"
        r"(?i:(?<=p)(?:assword|asswd|assphrase|wd)|(?<=s)ecret|(?<=t)oken"
        r"|(?<=a)(?:pi[_-]?key|ccess[_-]?key|uth[_-]?token|ccess[_-]?token))"
        + _SEP_ASSIGN
        + r"""(?P<pw_q>["'])?(?!\[REDACTED|hash:[a-p]{16}(?![A-Za-z0-9]))"""
        r"""(?P<pw_v>(?(pw_q)[^"'\r\n]{1,256}|[^\s"'`,;&<>(){}\[\]]{1,256}))""",
        _value_of("pw_v"),
    ),
    Alternative(
        "aws_access_key",
        r"A(?<![A-Za-z0-9].)(?:KIA|SIA)[A-Z0-9]{16}(?![A-Za-z0-9])",
        _whole,
    ),
    Alternative(
        "github_token",
        r"g(?<![A-Za-z0-9_].)(?:h[pousr]_[A-Za-z0-9]{36,255}|ithub_pat_[A-Za-z0-9_]{22,255})(?![A-Za-z0-9_])",
        _whole,
    ),
    Alternative(
        "gitlab_token",
        r"g(?<![A-Za-z0-9_].)l(?:pat|dt|rt|ptt|ft|soat|oas|cbt)-[A-Za-z0-9_-]{20,255}+",
        _whole,
    ),
    Alternative(
        "slack_token",
        r"x(?<![A-Za-z0-9].)ox[abposr]-[A-Za-z0-9-]{10,255}+",
        _whole,
    ),
    Alternative(
        "stripe_key",
        r"[spr](?<![A-Za-z0-9_].)k_(?:live|test)_[A-Za-z0-9]{10,247}+",
        _whole,
    ),
    Alternative(
        "iban",
        r"[A-Z](?<![A-Za-z0-9].)[A-Z]\d{2}(?:[ ]?[A-Z0-9]){11,30}(?![A-Za-z0-9])",
        _validate_iban,
    ),
    Alternative(
        "email",
        r"[A-Za-z0-9._%+-](?<![A-Za-z0-9._%+-].)[A-Za-z0-9._%+-]{0,63}+@"
        r"(?:[A-Za-z0-9-]{1,63}+\.)+[A-Za-z]{2,24}(?![A-Za-z0-9-])",
        _whole,
    ),
    Alternative(
        "payment_card",
        r"\d(?<!\d.)(?:[ -]?\d){12,18}(?!\d)",
        _validate_card,
    ),
    Alternative(
        "us_ssn",
        r"\d(?<!\d.)(?<!\d-.)\d{2}(?P<ssn_sep>[- ])\d{2}(?P=ssn_sep)\d{4}(?!\d|-\d)",
        _validate_ssn,
    ),
    # +country code, optional "(0)"-style trunk/area group, digits with single separators.
    Alternative(
        "phone",
        r"\+(?<![A-Za-z0-9+].)[1-9]\d{0,3}(?:[ .-]?\(\d{1,4}\))?(?:[ .-]?\d){6,14}(?!\d)",
        _validate_phone_intl,
    ),
    # (NXX) NXX-XXXX
    Alternative(
        "phone",
        r"\((?<![A-Za-z0-9].)[2-9]\d{2}\)[ ]?[2-9]\d{2}[ .-]?\d{4}(?!\d)",
        _whole,
    ),
    # NXX-NXX-XXXX, NXX.NXX.XXXX, NXX NXX XXXX (one consistent separator), optional leading "1-".
    Alternative(
        "phone",
        r"[12-9](?<![A-Za-z0-9_.+/-].)(?:(?<=1)[ .-][2-9]\d{2}|(?<=[2-9])\d{2})(?P<ph_sep>[ .-])"
        r"[2-9]\d{2}(?P=ph_sep)\d{4}(?!\d|[.-]\d)",
        _whole,
    ),
)

BUILTIN_ALTERNATIVES: tuple[Alternative, ...] = _ALTERNATIVES

#: Short labels used in ``[REDACTED:<LABEL>]`` tokens.
LABELS: dict[str, str] = {
    "email": "EMAIL",
    "phone": "PHONE",
    "us_ssn": "SSN",
    "payment_card": "CARD",
    "iban": "IBAN",
    "jwt": "JWT",
    "aws_access_key": "AWS_KEY",
    "aws_secret_key": "AWS_SECRET",
    "github_token": "GITHUB_TOKEN",
    "gitlab_token": "GITLAB_TOKEN",
    "slack_token": "SLACK_TOKEN",
    "stripe_key": "STRIPE_KEY",
    "private_key": "PRIVATE_KEY",
    "password_assignment": "SECRET",
}


class Scanner:
    """Finds validated detector hits in text with one combined regular expression."""

    __slots__ = ("_alts", "_combined", "_marker_index", "_singles")

    def __init__(self, enabled: frozenset[str] | set[str] | tuple[str, ...]) -> None:
        wanted = set(enabled)
        self._alts = tuple(a for a in _ALTERNATIVES if a.detector in wanted)
        parts = [f"(?:{a.pattern})(?P<_m{i}>)" for i, a in enumerate(self._alts)]
        self._combined: re.Pattern[str] | None = re.compile("|".join(parts)) if parts else None
        self._marker_index = {f"_m{i}": i for i in range(len(self._alts))}
        self._singles = tuple(re.compile(a.pattern) for a in self._alts)

    def find(self, text: str) -> list[Hit] | None:
        """Validated, non-overlapping hits in text order, or ``None`` when there are none."""
        combined = self._combined
        if combined is None:
            return None
        search = combined.search
        m = search(text)
        if m is None:
            return None
        hits: list[Hit] | None = None
        alts = self._alts
        while m is not None:
            index = self._marker_index[m.lastgroup or ""]
            alt = alts[index]
            span = alt.validator(m) if alt.validator is not None else m.span()
            start = m.start()
            if span is None:
                # Lower-priority alternatives at the same position.
                for j in range(index + 1, len(alts)):
                    other = self._singles[j].match(text, start)
                    if other is None:
                        continue
                    v = alts[j].validator
                    span = v(other) if v is not None else other.span()
                    if span is not None:
                        alt = alts[j]
                        break
            if span is None or span[1] <= span[0]:
                m = search(text, start + 1)
                continue
            if hits is None:
                hits = []
            hits.append(Hit(span[0], span[1], alt.detector))
            m = search(text, max(span[1], start + 1))
        return hits
