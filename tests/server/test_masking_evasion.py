"""Masking evasion: adversarial queries that try to get seeded PII past the masks.

The shop database (src/hoop_mcp/demo_data.py) holds fake SSNs, card numbers, emails, phones and API
keys in masked columns of public.customers, and some of the same values inside the free-text
``notes`` column, which has no column rule (only the value detectors protect it). Every query below
goes through the real server (in-memory MCP client, ``writes-need-confirmation`` preset, the shop
masking rules) to a real PostgreSQL. For each one, either the call is refused, or nothing in the
result (text content and structured content) contains a seeded value or a recognisable fragment of
one: digits without separators, the email's local part, more of a card than its last four, the
value reversed, re-lettered, base64 or hex encoded, spread one character per row, or hashed.

Comparison oracles (WHERE / ORDER BY / GROUP BY / CASE on a masked column) and hashes of masked
values leak without the value ever appearing, so those must be refused outright.

One database and one server serve the whole suite: the module fixture sends every query once.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client
from mcp import types as mt

from hoop_mcp.demo_data import CUSTOMERS
from hoop_mcp.embedded_pg import EmbeddedPostgres
from tests.support.hoop import hoop_server, write_config
from tests.support.mcp_client import tool_text as _text
from tests.support.pg import ShopDb, iter_shop

pytestmark = pytest.mark.anyio


@dataclass(frozen=True)
class Case:
    id: str
    sql: str
    #: A refusal is the only acceptable outcome (oracles and hashes leak without showing the value).
    must_refuse: bool = False
    #: A masked column selected as is: the call must succeed, and still show nothing.
    must_succeed: bool = False


def case(id: str, sql: str, *, refuse: bool = False, succeed: bool = False) -> Any:
    return pytest.param(Case(id, sql, must_refuse=refuse, must_succeed=succeed), id=id)


# Fixed leaks, kept as regressions: a column alias list in FROM renamed masked columns out of the
# masked-use analysis (now refused as ``masking.renamed``), and expressions over the free-text
# ``notes`` column reshaped embedded values past the detectors (``notes`` now has a ``detect``
# column rule, so it may be selected as it is but not transformed).

CASES = [
    # ---- Baseline: masked columns selected as they are (masked by the protocol's column metadata) ----
    case(
        "direct-columns",
        "SELECT id, name, email, phone, ssn, card_number, api_key FROM customers",
        succeed=True,
    ),
    case("star", "SELECT * FROM customers", succeed=True),
    case("qualified-star", "SELECT c.* FROM customers c", succeed=True),
    case("notes-plain", "SELECT id, notes FROM customers", succeed=True),
    # ---- Aliases and renaming --------------------------------------------------------------------------
    case("column-aliases", "SELECT ssn AS not_secret, card_number AS x, email AS e FROM customers"),
    case("alias-to-unmasked-name", 'SELECT c.ssn AS "name", c.email AS id FROM customers AS c'),
    case("from-column-alias-list", "SELECT s, k FROM customers AS c(i, n, e, p, s, cn, k)"),
    case("subquery-rename", "SELECT t.s FROM (SELECT ssn AS s FROM customers) t"),
    case("cte-rename", "WITH x AS (SELECT ssn AS plain, api_key AS k FROM customers) SELECT plain, k FROM x"),
    case("table-command", "TABLE customers", succeed=True),
    case(
        "subquery-alias-list", "SELECT upper(x.k) FROM (SELECT * FROM customers) AS x(i, n, e, p, s, cn, k)"
    ),
    case("cte-shadowing-table", "WITH customers AS (SELECT * FROM customers) SELECT * FROM customers"),
    # ---- Casts -------------------------------------------------------------------------------------------
    case("cast-text", "SELECT ssn::text FROM customers"),
    case("cast-varchar", "SELECT CAST(card_number AS varchar(40)) FROM customers"),
    case("cast-bytea", "SELECT api_key::bytea FROM customers"),
    case(
        "cast-renamed-column",
        "SELECT k::bytea, s::bytea FROM customers AS c(i, n, e, p, s, cn, k)",
    ),
    # ---- Concatenation and formatting ----------------------------------------------------------------
    case("concat-operator", "SELECT ssn || '' FROM customers"),
    case("concat-prefix", "SELECT 'x' || email FROM customers"),
    case("concat-function", "SELECT concat(ssn, '') FROM customers"),
    case("concat-ws", "SELECT concat_ws('-', card_number, api_key) FROM customers"),
    case("format", "SELECT format('%s', ssn) FROM customers"),
    case("format-two", "SELECT format('%s|%s', email, phone) FROM customers"),
    # ---- Case changes ----------------------------------------------------------------------------------
    case("upper-email", "SELECT upper(email) FROM customers"),
    case("lower-api-key", "SELECT lower(api_key) FROM customers"),
    case("initcap-email", "SELECT initcap(email) FROM customers"),
    case(
        "upper-renamed-key",
        "SELECT upper(k) FROM customers AS c(i, n, e, p, s, cn, k)",
    ),
    # ---- Substrings and character-by-character extraction --------------------------------------------
    case("substring-first-char", "SELECT substring(ssn, 1, 1) FROM customers"),
    case("left-right", "SELECT left(card_number, 6), right(card_number, 6) FROM customers"),
    case("split-part-email", "SELECT split_part(email, '@', 1) FROM customers"),
    case(
        "ssn-char-by-char",
        "SELECT c.id, i, substring(c.ssn, i, 1) AS ch FROM customers c, generate_series(1, 11) AS i"
        " ORDER BY c.id, i",
    ),
    case(
        "card-char-codes",
        "SELECT c.id, i, ascii(substr(c.card_number, i, 1)) FROM customers c, generate_series(1, 19) AS i"
        " ORDER BY c.id, i",
    ),
    case(
        "renamed-ssn-char-by-char",
        "SELECT c.i, g, substring(c.s, g, 1) FROM customers AS c(i, n, e, p, s), generate_series(1, 11) AS g"
        " ORDER BY c.i, g",
    ),
    # ---- Obfuscating transforms ----------------------------------------------------------------------
    case("reverse-ssn", "SELECT reverse(ssn) FROM customers"),
    case("translate-ssn", "SELECT translate(ssn, '0123456789', 'abcdefghij') FROM customers"),
    case("replace-at", "SELECT replace(email, '@', ' at ') FROM customers"),
    case("regexp-space-digits", "SELECT regexp_replace(card_number, '(\\d)', '\\1 ', 'g') FROM customers"),
    case("lpad", "SELECT lpad(ssn, 20, '*') FROM customers"),
    case("overlay", "SELECT overlay(ssn placing 'X' from 1 for 1) FROM customers"),
    # ---- Encodings and hashes --------------------------------------------------------------------------
    case("base64", "SELECT encode(convert_to(ssn, 'UTF8'), 'base64') FROM customers"),
    case("hex", "SELECT encode(convert_to(card_number, 'UTF8'), 'hex') FROM customers"),
    case("escape", "SELECT encode(api_key::bytea, 'escape') FROM customers"),
    case("md5", "SELECT md5(ssn) FROM customers", refuse=True),
    case("sha256", "SELECT sha256(convert_to(card_number, 'UTF8')) FROM customers", refuse=True),
    case("md5-renamed", "SELECT md5(s) FROM customers AS c(i, n, e, p, s)", refuse=True),
    # ---- JSON, rows, arrays and aggregation -----------------------------------------------------------
    case("to-jsonb-row", "SELECT to_jsonb(c) FROM customers c"),
    case("row-to-json", "SELECT row_to_json(c) FROM customers c"),
    case("json-agg-row", "SELECT json_agg(c) FROM customers c"),
    case("json-build-object", "SELECT json_build_object('s', ssn, 'k', api_key) FROM customers"),
    case("jsonb-agg-column", "SELECT jsonb_agg(email) FROM customers"),
    case("string-agg", "SELECT string_agg(ssn, ',') FROM customers"),
    case("array-agg", "SELECT array_agg(card_number) FROM customers"),
    case("array-constructor", "SELECT ARRAY[ssn] FROM customers"),
    case("row-constructor", "SELECT ROW(ssn, email) FROM customers"),
    case("whole-row-column", "SELECT c FROM customers c"),
    case("whole-row-field", "SELECT (c).ssn FROM customers c"),
    case("whole-row-text", "SELECT c::text FROM customers c"),
    case("xml-element", "SELECT xmlelement(name x, ssn) FROM customers"),
    # ---- Subqueries, lateral joins and unions ----------------------------------------------------------
    case("scalar-subquery", "SELECT (SELECT ssn FROM customers LIMIT 1)"),
    case(
        "correlated-subquery",
        "SELECT id, (SELECT c2.ssn FROM customers c2 WHERE c2.id = c.id) FROM customers c",
    ),
    case("star-over-subquery", "SELECT * FROM (SELECT ssn, api_key FROM customers) s"),
    case("lateral", "SELECT x.s FROM customers c, LATERAL (SELECT c.ssn AS s) x"),
    case("union-under-unmasked-name", "SELECT name FROM customers UNION ALL SELECT ssn FROM customers"),
    case("union-literal-first", "SELECT 'x' UNION SELECT api_key FROM customers"),
    case("intersect", "SELECT card_number FROM customers INTERSECT SELECT card_number FROM customers"),
    # ---- Comparison oracles: the value never appears, the answer still reveals it ---------------------
    case("where-like", "SELECT id FROM customers WHERE ssn LIKE '9%'", refuse=True),
    case("where-equals", "SELECT count(*) FROM customers WHERE ssn = '900-12-3456'", refuse=True),
    case("case-when", "SELECT id, CASE WHEN ssn LIKE '9%' THEN 1 END FROM customers", refuse=True),
    case("comparison-in-select", "SELECT id, ssn > '930' FROM customers", refuse=True),
    case("length", "SELECT id, length(card_number) FROM customers", refuse=True),
    case("order-by", "SELECT id FROM customers ORDER BY ssn", refuse=True),
    case("order-by-position", "SELECT id, ssn FROM customers ORDER BY 2", refuse=True),
    case("group-by", "SELECT ssn, count(*) FROM customers GROUP BY ssn", refuse=True),
    case("distinct-on", "SELECT DISTINCT ON (ssn) id FROM customers", refuse=True),
    case("window-order", "SELECT id, rank() OVER (ORDER BY ssn) FROM customers", refuse=True),
    case(
        "window-partition",
        "SELECT id, row_number() OVER (PARTITION BY card_number) FROM customers",
        refuse=True,
    ),
    case("max", "SELECT max(ssn) FROM customers", refuse=True),
    case("join-on-masked", "SELECT o.id FROM orders o JOIN customers c ON c.email = o.status", refuse=True),
    case(
        "exists-oracle",
        "SELECT id FROM orders WHERE EXISTS (SELECT 1 FROM customers c WHERE c.ssn LIKE '90%')",
        refuse=True,
    ),
    case(
        "where-renamed",
        "SELECT i FROM customers AS c(i, n, e, p, s) WHERE s LIKE '9%'",
        refuse=True,
    ),
    case(
        "order-by-renamed",
        "SELECT i FROM customers AS c(i, n, e, p, s) ORDER BY s",
        refuse=True,
    ),
    # ---- notes: no column rule, only the detectors -----------------------------------------------------
    case("notes-upper", "SELECT upper(notes) FROM customers"),
    case("notes-lower", "SELECT lower(notes) FROM customers"),
    case("notes-string-agg", "SELECT string_agg(notes, ' | ') FROM customers"),
    case("notes-json-agg", "SELECT json_agg(notes) FROM customers"),
    case("notes-split-part", "SELECT split_part(notes, ' ', 4) FROM customers"),
    case("notes-reverse", "SELECT reverse(notes) FROM customers"),
    case("notes-replace-at", "SELECT replace(notes, '@', ' at ') FROM customers"),
    case(
        "notes-strip-dashes",
        "SELECT regexp_replace(notes, '[- ]', '', 'g') FROM customers",
    ),
    case(
        "notes-space-digits",
        "SELECT regexp_replace(notes, '(\\d)', '\\1.', 'g') FROM customers",
    ),
    case(
        "notes-translate",
        "SELECT translate(notes, '0123456789', 'abcdefghij') FROM customers",
    ),
    case("notes-base64", "SELECT encode(convert_to(notes, 'UTF8'), 'base64') FROM customers"),
    case(
        "notes-char-by-char",
        "SELECT c.id, i, substring(c.notes, i, 1) FROM customers c, generate_series(1, 90) AS i ORDER BY c.id, i",
    ),
]


# --------------------------------------------------------------------------------------------------
# What counts as a leak


def _digits(value: str) -> str:
    return re.sub(r"\D", "", value)


def _fragments() -> set[str]:
    """Seeded values and recognisable pieces of them (compared case-insensitively)."""
    out: set[str] = set()
    for _id, _name, email, phone, ssn, card, api_key, _notes in CUSTOMERS:
        local = email.split("@")[0]
        out |= {email, email.replace("@", " at "), local + "@"}
        if "." in local:  # "cleo" alone is also the customer's (unmasked) first name
            out.add(local)
        out |= {phone, _digits(phone), _digits(phone)[-10:], phone[-8:]}
        out |= {ssn, _digits(ssn), ssn[4:], _digits(ssn)[3:]}
        # partial masking shows the last four digits of a card: anything beyond that is a leak
        out |= {card, _digits(card), _digits(card)[:6], _digits(card)[-5:]}
        out |= {api_key, api_key[-12:]}
    out.add("hunter2")  # the password in a note
    return out


FRAGMENTS = frozenset(f.lower() for f in _fragments())
#: Hashes of the low-entropy values: a hash of an SSN is as good as the SSN.
HASHES = frozenset(
    h
    for value in (v for c in CUSTOMERS for v in c[2:7])
    for raw in {value, _digits(value)}
    for h in (
        hashlib.md5(raw.encode(), usedforsecurity=False).hexdigest(),
        hashlib.sha256(raw.encode()).hexdigest(),
    )
)
_UNTRANSLATE = str.maketrans("abcdefghij", "0123456789")
_B64 = re.compile(r"[A-Za-z0-9+/]{8,}={0,2}")
_HEX = re.compile(r"(?:[0-9a-f]{2}){6,}")


def _cells(data: dict[str, Any]) -> list[list[Any]]:
    rows = data.get("rows") or []
    width = max((len(r) for r in rows), default=0)
    return [[r[i] for r in rows if i < len(r)] for i in range(width)]


def _decoded(text: str) -> list[str]:
    out = []
    for token in _B64.findall(text.replace("\\n", "")):
        with contextlib.suppress(binascii.Error, ValueError):
            out.append(base64.b64decode(token + "=" * (-len(token) % 4)).decode("utf-8", "ignore"))
    for token in _HEX.findall(text):
        out.append(bytes.fromhex(token).decode("utf-8", "ignore"))
    return out


def views(result: mt.CallToolResult) -> list[str]:
    """The result as text, plus the ways an attacker would put a disguised value back together."""
    data = dict(result.structured_content or {})
    data.pop("call_id", None)  # random hex: must not be mistaken for an encoded value
    content = " ".join(getattr(c, "text", "") for c in result.content)
    if isinstance(result.structured_content, dict) and "call_id" in result.structured_content:
        content = content.replace(str(result.structured_content["call_id"]), "")
    text = content + "\n" + json.dumps(data, ensure_ascii=False)
    out = [text, text[::-1], text.lower().translate(_UNTRANSLATE), re.sub(r"[\s.]", "", text)]
    out += _decoded(text)
    # one character (or character code) per row: read each column top to bottom
    for column in _cells(data):
        out.append("".join(c for c in column if isinstance(c, str) and len(c) == 1))
        out.append("".join(chr(c) for c in column if isinstance(c, int) and 32 <= c < 127))
    return out


def leaks(result: mt.CallToolResult) -> list[str]:
    found = set()
    for view in views(result):
        low = view.lower()
        found |= {f for f in FRAGMENTS if f in low}
        found |= {f"hash {h}" for h in HASHES if h in low}
    return sorted(found)


# --------------------------------------------------------------------------------------------------
# The run


@pytest.fixture(scope="module")
def evasion_shop(pg_cluster: EmbeddedPostgres, app_password: str) -> Iterator[ShopDb]:
    yield from iter_shop(pg_cluster, app_password)


@pytest.fixture(scope="module")
async def results(
    evasion_shop: ShopDb, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, mt.CallToolResult]:
    """Every case's result, from one server (each query is sent once)."""

    async def decline(context: Any, params: mt.ElicitRequestParams) -> mt.ElicitResult:
        return mt.ElicitResult(action="decline")

    setup = write_config(Path(tmp_path_factory.mktemp("masking-evasion")), evasion_shop)
    out: dict[str, mt.CallToolResult] = {}
    async with hoop_server(setup) as (hoop, _), Client(hoop.mcp, elicitation_callback=decline) as client:
        for param in CASES:
            c: Case = param.values[0]
            with anyio.fail_after(30):
                out[c.id] = await client.call_tool("query_db", {"connection": "shop", "sql": c.sql})
    return out


def test_the_suite_has_at_least_45_distinct_queries() -> None:
    sqls = [p.values[0].sql for p in CASES]
    assert len(sqls) >= 45
    assert len(set(sqls)) == len(sqls)
    assert len({p.values[0].id for p in CASES}) == len(CASES)


def test_the_leak_check_sees_every_seeded_value_and_its_disguises() -> None:
    """Guard against a vacuous suite: the detector of leaks must fire on every disguise it claims."""
    for _id, _name, email, phone, ssn, card, api_key, _notes in CUSTOMERS:
        for value in (email, phone, ssn, card, api_key):
            for disguise in (
                value,
                value.upper(),
                value[::-1],
                base64.b64encode(value.encode()).decode(),
                value.encode().hex(),
                hashlib.md5(value.encode(), usedforsecurity=False).hexdigest(),
            ):
                fake = mt.CallToolResult(
                    content=[mt.TextContent(type="text", text="ok")],
                    structured_content={"rows": [[disguise]]},
                )
                assert leaks(fake), (value, disguise)
        spread = mt.CallToolResult(
            content=[], structured_content={"rows": [[i, ch] for i, ch in enumerate(ssn)]}
        )
        assert leaks(spread), ssn
        codes = mt.CallToolResult(content=[], structured_content={"rows": [[ord(ch)] for ch in card]})
        assert leaks(codes), card
        letters = mt.CallToolResult(
            content=[],
            structured_content={"rows": [[ssn.translate(str.maketrans("0123456789", "abcdefghij"))]]},
        )
        assert leaks(letters), ssn


@pytest.mark.parametrize("attempt", CASES)
async def test_an_evasion_attempt_is_refused_or_shows_no_seeded_value(
    attempt: Case, results: dict[str, mt.CallToolResult]
) -> None:
    result = results[attempt.id]
    if attempt.must_refuse:
        assert result.is_error, f"{attempt.sql!r} was answered: {_text(result)[:500]}"
    if attempt.must_succeed:
        assert not result.is_error, f"{attempt.sql!r} was refused: {_text(result)[:500]}"
    if result.is_error:
        assert "rule '" in _text(result) or "Invalid input (" in _text(result), _text(result)
    found = leaks(result)
    assert not found, f"{attempt.sql!r} leaked {found}: {_text(result)[:1500]}"
