"""The masking engine: strategies, column rules, nested JSON, counts, fail-closed, properties."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import JsonValue

from hoop_mcp import demo_data
from hoop_mcp.core.detectors import Scanner, luhn_ok
from hoop_mcp.core.errors import MaskingError
from hoop_mcp.core.masking import MaskedRows, Masker, partial_mask
from hoop_mcp.core.masking_config import (
    BUILTIN_DETECTORS,
    ColumnRule,
    CustomEntity,
    MaskingPolicy,
    MaskStrategy,
)

KEY = b"test-key-0123456789abcdef"
HASH_RE = re.compile(r"^hash:[a-p]{16}$")


def masker(**policy: Any) -> Masker:
    return Masker(MaskingPolicy(**policy), hash_key=KEY)


DEFAULT = masker()


# --- strategies ---------------------------------------------------------------------------------


def test_detector_hits_are_replaced_by_labelled_tokens_and_counted_by_detector_name() -> None:
    text, counts = DEFAULT.mask_text("mail ada@example.com or bob@example.org, ssn 900-12-3456")
    assert text == "mail [REDACTED:EMAIL] or [REDACTED:EMAIL], ssn [REDACTED:SSN]"
    assert counts == {"email": 2, "us_ssn": 1}


def test_partial_keeps_the_last_alphanumerics_and_the_separators() -> None:
    assert partial_mask("900-12-3456", 4) == "***-**-3456"
    assert partial_mask("4111 1111 1111 1111", 4) == "**** **** **** 1111"
    assert partial_mask("+1 (650) 555-0177", 2) == "+* (***) ***-**77"


def test_partial_never_reveals_more_than_half_of_a_short_value() -> None:
    assert partial_mask("abcd", 4) == "**cd"
    assert partial_mask("a", 4) == "*"
    assert partial_mask("", 4) == ""


def test_hash_strategy_gives_equal_letter_tokens_for_equal_values_and_depends_on_the_key() -> None:
    m = masker(detector_strategy=MaskStrategy.HASH)
    first, _ = m.mask_text("ada@example.com")
    again, _ = m.mask_text("x ada@example.com")
    other, _ = m.mask_text("bob@example.com")
    assert HASH_RE.match(first)
    assert again == "x " + first
    assert other != first
    rekeyed = Masker(MaskingPolicy(detector_strategy=MaskStrategy.HASH), hash_key=b"another-key-000000")
    assert rekeyed.mask_text("ada@example.com")[0] != first


def test_partial_detector_strategy_masks_a_card_but_keeps_its_last_four() -> None:
    m = masker(detector_strategy=MaskStrategy.PARTIAL)
    assert m.mask_text("card 4111 1111 1111 1111.")[0] == "card **** **** **** 1111."


# --- column rules -------------------------------------------------------------------------------

RULES = (
    ColumnRule(column="public.customers.ssn", strategy=MaskStrategy.PARTIAL),
    ColumnRule(column="public.customers.card_number"),
    ColumnRule(column="public.customers.email", strategy=MaskStrategy.HASH),
    ColumnRule(column="public.customers.api_key", connection="prod"),
    ColumnRule(column="public.customers.notes", connection="prod", strategy=MaskStrategy.HASH),
    ColumnRule(column="public.customers.notes", strategy=MaskStrategy.PARTIAL),
)
RULED = masker(columns=RULES)


def test_column_rule_lookup_respects_the_connection_and_prefers_a_connection_specific_rule() -> None:
    ssn = RULED.column_rule(connection="dev", column="public.customers.ssn")
    assert ssn is not None
    assert ssn.strategy is MaskStrategy.PARTIAL
    assert RULED.column_rule(connection="dev", column="public.customers.api_key") is None
    assert RULED.column_rule(connection="prod", column="public.customers.api_key") is not None
    prod_notes = RULED.column_rule(connection="prod", column="public.customers.notes")
    dev_notes = RULED.column_rule(connection="dev", column="public.customers.notes")
    assert prod_notes is not None
    assert prod_notes.strategy is MaskStrategy.HASH
    assert dev_notes is not None
    assert dev_notes.strategy is MaskStrategy.PARTIAL
    assert RULED.column_rule(connection="dev", column="public.customers.name") is None


def test_masked_columns_lists_each_relations_masked_columns_for_a_connection() -> None:
    assert RULED.masked_columns(connection="dev") == {
        "public.customers": frozenset({"ssn", "card_number", "email", "notes"})
    }
    assert RULED.masked_columns(connection="prod")["public.customers"] >= {"api_key", "notes"}
    assert masker().masked_columns(connection="dev") == {}


def test_a_rule_masks_the_whole_value_whatever_it_contains() -> None:
    rule = ColumnRule(column="public.t.c")
    assert DEFAULT.mask_value("harmless", rule=rule) == ("[REDACTED]", {"rule:public.t.c": 1})
    assert DEFAULT.mask_value(None, rule=rule) == (None, {})


def test_non_string_values_under_a_rule_become_strings() -> None:
    partial = ColumnRule(column="public.t.c", strategy=MaskStrategy.PARTIAL)
    hashed = ColumnRule(column="public.t.c", strategy=MaskStrategy.HASH)
    assert DEFAULT.mask_value(123456789, rule=partial)[0] == "*****6789"
    assert DEFAULT.mask_value(True, rule=ColumnRule(column="public.t.c"))[0] == "[REDACTED]"
    token = DEFAULT.mask_value({"b": 1, "a": [2]}, rule=hashed)[0]
    assert isinstance(token, str)
    assert HASH_RE.match(token)
    assert token == DEFAULT.mask_value({"a": [2], "b": 1}, rule=hashed)[0]  # canonical JSON
    assert token == DEFAULT.mask_value('{"a": [2], "b": 1}', rule=hashed)[0]


def test_detectors_still_run_after_a_partial_rule_and_without_a_rule() -> None:
    value, counts = DEFAULT.mask_value(["x ada@example.com", {"k": 1}])
    assert value == ["x [REDACTED:EMAIL]", {"k": 1}]
    assert counts == {"email": 1}


# --- JSON ---------------------------------------------------------------------------------------


def test_mask_json_masks_strings_at_any_depth_including_dict_keys() -> None:
    value: JsonValue = {
        "sql": "SELECT 1 -- ada@example.com",
        "nested": [{"ssn": "900-12-3456"}, 4111111111111111, None, True, 1.5],
        "bob@example.org": "key",
    }
    masked, counts = DEFAULT.mask_json(value)
    assert masked == {
        "sql": "SELECT 1 -- [REDACTED:EMAIL]",
        "nested": [{"ssn": "[REDACTED:SSN]"}, 4111111111111111, None, True, 1.5],
        "[REDACTED:EMAIL]": "key",
    }
    assert counts == {"email": 2, "us_ssn": 1}


def test_two_keys_masked_to_the_same_token_keep_both_values() -> None:
    masked, _ = DEFAULT.mask_json({"a@example.com": 1, "b@example.com": 2})
    assert masked == {"[REDACTED:EMAIL]": 1, "[REDACTED:EMAIL]#2": 2}


def test_non_json_values_fail_closed_with_a_masking_error() -> None:
    with pytest.raises(MaskingError):
        DEFAULT.mask_json({"x": object()})  # type: ignore[dict-item]
    with pytest.raises(MaskingError):
        DEFAULT.mask_rows(connection="c", sources=[None], rows=[[b"bytes"]])  # type: ignore[list-item]


def test_non_finite_floats_become_strings_because_json_cannot_carry_them() -> None:
    result = DEFAULT.mask_rows(connection="c", sources=[None], rows=[[float("inf")], [float("nan")], [1.5]])
    assert result.rows == (("Infinity",), ("NaN",), (1.5,))
    assert DEFAULT.mask_json([float("-inf")])[0] == ["-Infinity"]


def test_deeply_nested_json_fails_closed_instead_of_recursing_forever() -> None:
    value: JsonValue = "x"
    for _ in range(500):
        value = [value]
    with pytest.raises(MaskingError):
        DEFAULT.mask_json(value)


def test_an_unexpected_exception_inside_masking_surfaces_as_masking_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    m = masker()

    def boom(self: Scanner, text: str) -> None:
        raise RuntimeError("detector crashed")

    monkeypatch.setattr(Scanner, "find", boom)
    with pytest.raises(MaskingError) as info:
        m.mask_text("anything")
    assert isinstance(info.value.__cause__, RuntimeError)
    with pytest.raises(MaskingError):
        m.mask_rows(connection="c", sources=[None], rows=[["anything"]])


# --- result sets --------------------------------------------------------------------------------


def test_mask_rows_applies_rules_by_source_column_and_detectors_to_every_text_cell() -> None:
    sources = ["public.customers.id", "public.customers.ssn", None, "public.customers.card_number"]
    rows: list[list[JsonValue]] = [
        [1, "900-12-3456", "call 212-555-0199 or ada@example.com", "4111 1111 1111 1111"],
        [2, None, "nothing here", "5555555555554444"],
    ]
    result = RULED.mask_rows(connection="dev", sources=sources, rows=rows)
    assert isinstance(result, MaskedRows)
    assert result.rows == (
        (1, "***-**-3456", "call [REDACTED:PHONE] or [REDACTED:EMAIL]", "[REDACTED]"),
        (2, None, "nothing here", "[REDACTED]"),
    )
    assert result.masked_columns == (1, 3)
    assert result.redactions == {
        "column:1": 1,
        "column:2": 2,
        "column:3": 2,
        "rule:public.customers.ssn": 1,
        "rule:public.customers.card_number": 2,
        "detector:phone": 1,
        "detector:email": 1,
    }


def test_an_aliased_or_computed_column_is_still_caught_by_the_detectors() -> None:
    # SELECT ssn || '' AS x: no source column, but the value is still an SSN.
    result = RULED.mask_rows(connection="dev", sources=[None], rows=[["900-12-3456"]])
    assert result.rows == (("[REDACTED:SSN]",),)
    assert result.redactions == {"column:0": 1, "detector:us_ssn": 1}
    assert result.masked_columns == ()


def test_mask_rows_refuses_a_row_whose_width_does_not_match_the_metadata() -> None:
    with pytest.raises(MaskingError):
        DEFAULT.mask_rows(connection="c", sources=[None, None], rows=[["a"]])


def test_every_seeded_sensitive_value_is_masked_in_the_demo_customers_table() -> None:
    sources: list[str | None] = [f"public.customers.{c}" for c in
        ("id", "name", "email", "phone", "ssn", "card_number", "api_key", "notes")]  # fmt: skip
    rows: list[list[JsonValue]] = [list(c) for c in demo_data.CUSTOMERS]
    result = DEFAULT.mask_rows(connection="shop", sources=sources, rows=rows)  # detectors only
    dumped = json.dumps(result.rows)
    for secret in demo_data.SENSITIVE_VALUES:
        assert secret not in dumped
    assert "hunter2" not in dumped
    assert "Ada Quill" in dumped


# --- custom entities ----------------------------------------------------------------------------


def test_custom_entities_use_their_own_strategy_and_are_counted_by_name() -> None:
    m = masker(
        custom_entities=(
            CustomEntity(name="account_id", pattern=r"ACCT-\d{6}"),
            CustomEntity(name="badge", pattern=r"B\d{4}", strategy=MaskStrategy.PARTIAL, keep_last=2),
        )
    )
    text, counts = m.mask_text("ACCT-123456 badge B1234 mail ada@example.com")
    assert text == "[REDACTED:ACCOUNT_ID] badge ***34 mail [REDACTED:EMAIL]"
    assert counts == {"account_id": 1, "badge": 1, "email": 1}
    assert m.mask_text(text)[0] == text


def test_a_custom_entity_never_re_masks_an_existing_token_but_still_sees_text_next_to_it() -> None:
    m = masker(custom_entities=(CustomEntity(name="caps", pattern=r"[A-Z]{3,}"),))
    text, _ = m.mask_text("[REDACTED:EMAIL]SECRETWORD")
    assert text == "[REDACTED:EMAIL][REDACTED:CAPS]"
    assert m.mask_text(text)[0] == text


def test_disabled_detectors_do_not_run() -> None:
    m = masker(detectors=("email",))
    assert m.mask_text("900-12-3456 ada@example.com")[0] == "900-12-3456 [REDACTED:EMAIL]"


# --- properties ---------------------------------------------------------------------------------


def _luhn_complete(prefix: str) -> str:
    for last in "0123456789":
        if luhn_ok(prefix + last):
            return prefix + last
    raise AssertionError("unreachable")


emails = st.builds(
    lambda user, host, tld: f"{user}@{host}.{tld}",
    st.from_regex(r"[a-z][a-z0-9._+-]{0,15}", fullmatch=True).filter(lambda s: not s.endswith(".")),
    st.from_regex(r"[a-z][a-z0-9-]{0,10}[a-z0-9]", fullmatch=True),
    st.sampled_from(["com", "org", "net", "io", "co.uk", "example"]),
)
cards = st.builds(
    lambda prefix, body, sep: _group(_luhn_complete((prefix + body)[:15]), sep),
    st.sampled_from(["4", "51", "55", "37", "6011", "2221"]),
    st.text(alphabet="0123456789", min_size=14, max_size=14),
    st.sampled_from(["", " ", "-"]),
)
ssns = st.builds(
    lambda a, g, s, sep: f"{a:03d}{sep}{g:02d}{sep}{s:04d}",
    st.integers(1, 999).filter(lambda a: a != 666),
    st.integers(1, 99),
    st.integers(1, 9999),
    st.sampled_from(["-", " "]),
)
phones = st.builds(
    lambda a, e, n, fmt: fmt.format(a=a, e=e, n=f"{n:04d}"),
    st.integers(200, 999),
    st.integers(200, 999),
    st.integers(0, 9999),
    st.sampled_from(["({a}) {e}-{n}", "{a}-{e}-{n}", "{a}.{e}.{n}", "+1 {a}-{e}-{n}", "+1{a}{e}{n}"]),
)
seeded = st.sampled_from(demo_data.SENSITIVE_VALUES)
pii = st.one_of(emails, cards, ssns, phones, seeded)
# Filler text: words, punctuation and digits, but separated from the PII by whitespace.
filler = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=30)


def _group(digits: str, sep: str) -> str:
    return sep.join(digits[i : i + 4] for i in range(0, len(digits), 4)) if sep else digits


@st.composite
def text_with_pii(draw: st.DrawFn) -> tuple[str, list[str]]:
    parts: list[str] = []
    secrets: list[str] = []
    for _ in range(draw(st.integers(1, 4))):
        parts.append(draw(filler))
        secret = draw(pii)
        secrets.append(secret)
        parts.append(secret)
    parts.append(draw(filler))
    return " ".join(parts), secrets


PROPERTY_SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPERTY_SETTINGS
@given(text_with_pii())
def test_no_generated_or_seeded_secret_survives_mask_text(case: tuple[str, list[str]]) -> None:
    text, secrets = case
    masked, counts = DEFAULT.mask_text(text)
    for secret in secrets:
        assert secret not in masked
    assert sum(counts.values()) >= 1


any_text = st.one_of(text_with_pii().map(lambda c: c[0]), filler, st.text(max_size=60))


@PROPERTY_SETTINGS
@given(any_text)
@pytest.mark.parametrize("strategy", [MaskStrategy.REDACT, MaskStrategy.HASH])
def test_masking_is_idempotent(strategy: MaskStrategy, text: str) -> None:
    m = masker(detector_strategy=strategy)
    once, _ = m.mask_text(text)
    twice, _ = m.mask_text(once)
    assert twice == once


@PROPERTY_SETTINGS
@given(any_text)
def test_masking_partially_masked_text_again_only_hides_more(text: str) -> None:
    # The kept characters of a partial mask are data: "****5029" next to other digits can form a
    # new card number, which the second pass then masks. It never reveals anything.
    m = masker(detector_strategy=MaskStrategy.PARTIAL)
    once, _ = m.mask_text(text)
    twice, _ = m.mask_text(once)
    assert len(twice) == len(once)
    assert all(a == b or b == "*" for a, b in zip(once, twice, strict=True))


json_values: st.SearchStrategy[JsonValue] = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20) | pii,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3)
    ),
    max_leaves=8,
)


@PROPERTY_SETTINGS
@given(
    st.integers(1, 5).flatmap(
        lambda width: st.tuples(
            st.lists(st.sampled_from([None, "public.customers.ssn", "public.customers.email", "x.y.z"]),
                     min_size=width, max_size=width),
            st.lists(st.lists(json_values, min_size=width, max_size=width), max_size=6),
        )
    )
)  # fmt: skip
def test_mask_rows_keeps_the_shape_and_only_produces_json(
    case: tuple[list[str | None], list[list[JsonValue]]],
) -> None:
    sources, rows = case
    result = RULED.mask_rows(connection="dev", sources=sources, rows=rows)
    assert len(result.rows) == len(rows)
    assert all(len(row) == len(sources) for row in result.rows)
    assert json.loads(json.dumps(result.rows, allow_nan=False)) == [list(r) for r in result.rows]
    for i, source in enumerate(sources):
        if source is not None and source != "x.y.z":
            assert all(row[i] is None or isinstance(row[i], str) for row in result.rows)
    assert all(n > 0 for n in result.redactions.values())


def test_all_builtin_detectors_are_enabled_by_default() -> None:
    assert MaskingPolicy().detectors == BUILTIN_DETECTORS


def test_a_value_hidden_by_an_overlapping_match_is_masked_in_the_same_pass() -> None:
    # Found by hypothesis: masking the card exposed a phone number that the first scan missed.
    m = masker(detector_strategy=MaskStrategy.HASH)
    once, counts = m.mask_text(" +12002000000 0 4000 0000 0000 0002 ")
    assert "+12002000000" not in once
    assert "4000" not in once
    assert m.mask_text(once)[0] == once
    assert counts["payment_card"] == 1
