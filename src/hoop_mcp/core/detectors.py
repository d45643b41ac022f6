"""Built-in value detectors: regular expressions plus validators, combined into one scanner.

Design (see ``docs/policies.md#masking``):

* Every detector is one or more *alternatives*, each anchored on one rare character (a digit,
  ``@``, ``_``, ``-``, ``:``/``=``, ``+``, ``(``, ``I`` or ``J``), so the regex engine skips
  ordinary words at C speed; boundaries are look-behinds after the anchor. An empty named group
  at the end of each alternative tells which one matched (``Match.lastgroup``). Whole cells shaped
  like ISO timestamps, UUIDs or short numbers are skipped before scanning.
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
class Hit:
    """A validated match: ``text[start:end]`` is masked and counted under ``name``."""

    start: int
    end: int
    name: str


# --- validators ---------------------------------------------------------------------------------


_LUHN_DOUBLE = (0, 2, 4, 6, 8, 1, 3, 5, 7, 9)


def luhn_ok(digits: str) -> bool:
    """The Luhn (mod 10) checksum of a string of ASCII digits."""
    total = sum(map(int, digits[-1::-2])) + sum(_LUHN_DOUBLE[int(c)] for c in digits[-2::-2])
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
    """The longest run of whole digit groups (13-19 digits) from the anchor that is a valid card.

    Only runs starting at the anchor are considered: a card further along the run has its own
    anchor (the scan visits the start of every digit group), and so does anything before it.
    """
    text = m.group()
    if len(text) - text.count(" ") - text.count("-") < 13:
        return None
    best: tuple[int, int] | None = None
    count = 0
    for g in _GROUP_RE.finditer(text):
        count += g.end() - g.start()
        if count > 19:
            break
        if count >= 13 and _card_ok(text[: g.end()].replace(" ", "").replace("-", "")):
            best = (m.start(), m.start() + g.end())
    return best


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
    # The anchor is the first check digit: the country code is the two characters before it.
    start = m.start() - 2
    text = m.string[start : m.end()]
    # Try the whole match, then shorter prefixes ending at a space (trailing words in capitals).
    ends = [len(text)] + [i for i in range(len(text) - 1, 0, -1) if text[i] == " "]
    for end in ends:
        if iban_ok(text[:end].replace(" ", "")):
            return start, start + end
    return None


# --- patterns -----------------------------------------------------------------------------------
#
# Every alternative is anchored on one rare character (``anchor``): a digit, ``@``, ``_``, ``-``,
# ``:``/``=``, ``+``, ``(``, ``I`` (AKIA/ASIA) or ``J`` (``eyJ``). The scanner's regular expression
# starts with the class of all anchors, so the engine skips plain words at C speed. ``pattern`` is
# matched right *after* the anchor character; ``back`` is how many characters before the anchor
# belong to the secret (checked by a look-behind in ``pattern``).

#: Text that is already a mask token (must not be masked again).
TOKEN_PATTERN = r"\[REDACTED(?::[A-Z0-9_]{1,64})?\]|hash:[a-p]{16}(?![A-Za-z0-9])"  # noqa: S105

_DIGITS = "0123456789"


def _back(n: int, validate: Validator | None = None) -> Validator:
    def shift(m: re.Match[str]) -> tuple[int, int] | None:
        span = m.span() if validate is None else validate(m)
        return None if span is None else (span[0] - n, span[1])

    return shift


def _validate_jwt_at(m: re.Match[str]) -> tuple[int, int] | None:
    start = m.start() - 2
    header = m.string[start : m.string.index(".", start)]
    try:
        raw = base64.urlsafe_b64decode(header + "=" * (-len(header) % 4))
        decoded = json.loads(raw)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        return None
    if isinstance(decoded, dict) and "alg" in decoded:
        return start, m.end()
    return None


_LOCAL_RUN = re.compile(r"[A-Za-z0-9._%+-]{1,64}\Z")


def _validate_email_at(m: re.Match[str]) -> tuple[int, int] | None:
    at = m.start()
    local = _LOCAL_RUN.search(m.string, max(0, at - 64), at)
    if local is None:
        return None
    return local.start(), m.end()


#: Key names (lower case, without ``_``/``-``/``.``) whose assigned value is a secret.
ASSIGNMENT_KEYS: tuple[str, ...] = (
    "password", "passwd", "passphrase", "pwd", "secret", "token", "apikey", "accesskey", "secretkey",
    "privatekey", "clientsecret",
)  # fmt: skip
_AWS_SECRET_KEYS = ("secretaccesskey", "awssecretkey", "awssecret")
_ASSIGN_VALUE = re.compile(
    r"""(?:(?<==)>|(?<=:)=)?[ \t]{0,3}(?:"(?P<dq>[^"\r\n]{1,256})"?|'(?P<sq>[^'\r\n]{1,256})'?"""
    r"""|(?P<bare>[^\s"'`,;&<>(){}\[\]]{1,256}))"""
)
_ALREADY_MASKED = re.compile(TOKEN_PATTERN + r"|\*")
_KEY_TAIL = re.compile(r"""[A-Za-z0-9_.\-]{1,64}["']?[ \t]{0,3}\Z""")
_AWS_SECRET_VALUE = re.compile(r"[A-Za-z0-9/+]{40}")


def validate_assignment(m: re.Match[str]) -> Hit | None:
    """``key = value`` / ``"key": "value"`` where the key names a secret: the value's span."""
    text = m.string
    op = m.start()
    tail = _KEY_TAIL.search(text, max(0, op - 70), op)
    if tail is None:
        return None
    key = tail.group().rstrip(" \t\"'").lower()
    norm = key.replace("_", "").replace("-", "").replace(".", "")
    if not norm.endswith(ASSIGNMENT_KEYS):
        return None
    value = _ASSIGN_VALUE.match(text, op + 1)
    if value is None:
        return None
    group = "dq" if value.group("dq") is not None else "sq" if value.group("sq") is not None else "bare"
    start, end = value.span(group)
    if _ALREADY_MASKED.match(text, start):
        return None
    secret = text[start:end]
    if norm.endswith(_AWS_SECRET_KEYS) and _AWS_SECRET_VALUE.fullmatch(secret):
        return Hit(start, end, "aws_secret_key")
    return Hit(start, end, "password_assignment")


@dataclass(frozen=True, slots=True)
class Anchored:
    """An alternative anchored on one of ``anchors``; ``pattern`` follows the anchor character."""

    detector: str
    anchors: str
    pattern: str
    validator: Validator | None = None
    #: Validates and names the hit itself (assignments decide between two detectors).
    hit_validator: Callable[[re.Match[str]], Hit | None] | None = None
    #: Other detectors this alternative may report (enable it when any of them is enabled).
    also: tuple[str, ...] = ()


_ALTERNATIVES: tuple[Anchored, ...] = (
    # PEM / OpenSSH / PGP private keys: header through footer (or to the end of a truncated cell).
    Anchored(
        "private_key",
        "-",
        r"(?<!--)----BEGIN[A-Z0-9 ]{0,30}PRIVATE KEY(?: BLOCK)?-----"
        r"(?s:.*?-----END[A-Z0-9 ]{0,30}PRIVATE KEY(?: BLOCK)?-----|.*)",
    ),
    Anchored(
        "jwt",
        "J",
        r"(?<=eyJ)(?<![A-Za-z0-9_\-]eyJ)[A-Za-z0-9_-]{5,}+\.[A-Za-z0-9_-]{2,}+\.[A-Za-z0-9_-]*+",
        _validate_jwt_at,
    ),
    # key=value / "key": "value": the anchor is the operator, the key is checked in Python.
    Anchored(
        "password_assignment",
        ":=",
        r"""(?<=[A-Za-z"' \t][:=])""",
        hit_validator=validate_assignment,
        also=("aws_secret_key",),
    ),
    Anchored(
        "aws_access_key",
        "I",
        r"(?<=A[KS]I)(?<![A-Za-z0-9]A[KS]I)A[A-Z0-9]{16}(?![A-Za-z0-9])",
        _back(2),
    ),
    Anchored(
        "github_token",
        "_",
        r"(?<=(?i:gh[pousr])_)(?<![A-Za-z0-9_](?i:gh)._)[A-Za-z0-9]{36,255}(?![A-Za-z0-9_])",
        _back(3),
    ),
    Anchored(
        "github_token",
        "_",
        r"(?<=(?i:github)_)(?<![A-Za-z0-9_](?i:github)_)(?i:pat)_[A-Za-z0-9_]{22,255}(?![A-Za-z0-9_])",
        _back(6),
    ),
    Anchored(
        "stripe_key",
        "_",
        r"(?<=(?i:[spr]k)_)(?<![A-Za-z0-9_](?i:[spr]k)_)(?i:live|test)_[A-Za-z0-9]{10,247}+",
        _back(2),
    ),
    Anchored(
        "gitlab_token",
        "-",
        r"(?<=(?i:gl(?:dt|rt|ft))-)(?<![A-Za-z0-9_](?i:gl)..-)[A-Za-z0-9_-]{20,255}+",
        _back(4),
    ),
    Anchored(
        "gitlab_token",
        "-",
        r"(?<=(?i:gl(?:pat|ptt|oas|cbt))-)(?<![A-Za-z0-9_](?i:gl)...-)[A-Za-z0-9_-]{20,255}+",
        _back(5),
    ),
    Anchored(
        "slack_token",
        "-",
        r"(?<=(?i:xox[abposr])-)(?<![A-Za-z0-9](?i:xox).-)[A-Za-z0-9-]{10,255}+",
        _back(4),
    ),
    Anchored(
        "email",
        "@",
        r"(?<=[A-Za-z0-9._%+-]@)(?:[A-Za-z0-9-]{1,63}+\.)+[A-Za-z]{2,24}(?![A-Za-z0-9-])",
        _validate_email_at,
    ),
    # Country code, two check digits (the anchor is the first one), 11-30 more characters.
    Anchored(
        "iban",
        _DIGITS,
        r"(?<=[A-Z]{2}\d)(?<![A-Za-z0-9][A-Z]{2}\d)\d(?:[ ]?[A-Z0-9]){11,30}(?![A-Za-z0-9])",
        _validate_iban,
    ),
    # A maximal run of digit groups with single space/dash separators; the validator picks the card.
    Anchored("payment_card", _DIGITS, r"(?=[\d -]{12})\d*+(?:[ -]\d++)*+", _validate_card),
    Anchored(
        "us_ssn",
        _DIGITS,
        r"\d{2}(?:-\d{2}-| \d{2} )\d{4}(?!\d|-\d)(?<!\d-\d{3}-\d{2}-\d{4})",
        _validate_ssn,
    ),
    # NXX-NXX-XXXX, NXX.NXX.XXXX, NXX NXX XXXX (one consistent separator), optional leading "1-".
    Anchored(
        "phone",
        _DIGITS,
        r"(?<=[2-9])(?<![A-Za-z_.+/-][2-9])\d{2}(?:-[2-9]\d{2}-|\.[2-9]\d{2}\.| [2-9]\d{2} )\d{4}"
        r"(?!\d|[.-]\d)",
    ),
    Anchored(
        "phone",
        "1",
        r"(?<![A-Za-z_.+/-]1)"
        r"(?:-[2-9]\d{2}-[2-9]\d{2}-|\.[2-9]\d{2}\.[2-9]\d{2}\.| [2-9]\d{2} [2-9]\d{2} )"
        r"\d{4}(?!\d|[.-]\d)",
    ),
    # +country code, optional "(0)"-style trunk/area group, digits with single separators.
    Anchored(
        "phone",
        "+",
        r"(?<![A-Za-z0-9+]\+)[1-9]\d{0,3}(?:[ .-]?\(\d{1,4}\))?(?:[ .-]?\d){6,14}(?!\d)",
        _validate_phone_intl,
    ),
    # (NXX) NXX-XXXX
    Anchored(
        "phone",
        "(",
        r"(?<![A-Za-z0-9]\()[2-9]\d{2}\)[ ]?[2-9]\d{2}[ .-]?\d{4}(?!\d)",
    ),
)

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

    __slots__ = ("_alts", "_by_anchor", "_combined", "_enabled", "_marker_index", "_singles")

    def __init__(self, enabled: frozenset[str] | set[str] | tuple[str, ...]) -> None:
        wanted = set(enabled)
        self._enabled = frozenset(wanted)
        self._alts = tuple(a for a in _ALTERNATIVES if a.detector in wanted or wanted & set(a.also))
        self._marker_index: dict[str, int] = {}
        anchors = "".join(sorted({c for a in self._alts for c in a.anchors}))
        # Group the alternatives by anchor kind, keeping priority order inside each group.
        groups: dict[str, list[int]] = {}
        for i, alt in enumerate(self._alts):
            groups.setdefault(alt.anchors, []).append(i)
        branches: list[str] = []
        for anchor_set, indices in groups.items():
            inner = "|".join(f"(?:{self._alts[i].pattern})(?P<_m{i}>)" for i in indices)
            for i in indices:
                self._marker_index[f"_m{i}"] = i
            prefix = f"(?<={_char_class(anchor_set)})"
            if set(anchor_set) <= set(_DIGITS):
                prefix += r"(?<!\d\d)"  # digit detectors start at the first digit of a run
            branches.append(f"{prefix}(?:{inner})")
        self._combined: re.Pattern[str] | None = (
            re.compile(f"{_char_class(anchors)}(?:{'|'.join(branches)})") if branches else None
        )
        self._singles = tuple(
            re.compile(
                _char_class(a.anchors)
                + (r"(?<!\d\d)" if set(a.anchors) <= set(_DIGITS) else "")
                + f"(?:{a.pattern})"
            )
            for a in self._alts
        )
        self._by_anchor = {c: tuple(i for i, a in enumerate(self._alts) if c in a.anchors) for c in anchors}

    def _check(self, index: int, m: re.Match[str]) -> Hit | None:
        alt = self._alts[index]
        if alt.hit_validator is not None:
            hit = alt.hit_validator(m)
            if hit is None or hit.name in self._enabled:
                return hit
            # e.g. an AWS secret found by the assignment rule while only password_assignment is on.
            return Hit(hit.start, hit.end, alt.detector) if alt.detector in self._enabled else None
        span = alt.validator(m) if alt.validator is not None else m.span()
        if span is None or span[1] <= span[0]:
            return None
        return Hit(span[0], span[1], alt.detector)

    def find(self, text: str) -> list[Hit] | None:
        """Validated, non-overlapping hits in text order, or ``None`` when there are none."""
        combined = self._combined
        if combined is None:
            return None
        if text[:1].isdigit() and _SAFE_SHAPE.fullmatch(text) is not None:
            return None
        search = combined.search
        m = search(text)
        if m is None:
            return None
        hits: list[Hit] | None = None
        while m is not None:
            index = self._marker_index[m.lastgroup or ""]
            anchor = m.start()
            hit = self._check(index, m)
            if hit is None:
                # Lower-priority alternatives on the same anchor character.
                for j in self._by_anchor[text[anchor]]:
                    if j <= index:
                        continue
                    other = self._singles[j].match(text, anchor)
                    if other is not None:
                        hit = self._check(j, other)
                        if hit is not None:
                            break
            if hit is None:
                m = search(text, anchor + 1)
                continue
            if hits is None:
                hits = []
            if hits and hit.start < hits[-1].end:
                last = hits[-1]
                hits[-1] = Hit(last.start, max(last.end, hit.end), last.name)
            else:
                hits.append(hit)
            m = search(text, max(hit.end, anchor + 1))
        return hits


#: Whole-cell shapes that cannot hold a secret: ISO dates/times/timestamps, UUIDs, short numbers.
_SAFE_SHAPE = re.compile(
    r"\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d{1,9})?)?(?:Z|[+-]\d{2}(?::?\d{2})?)?)?"
    r"|\d{2}:\d{2}(?::\d{2}(?:\.\d{1,9})?)?(?:Z|[+-]\d{2}(?::?\d{2})?)?"
    r"|[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
    r"|-?\d{1,12}(?:\.\d+)?"
)


def _char_class(chars: str) -> str:
    return "[" + "".join("\\" + c if c in "\\]^-[" else c for c in chars) + "]"
