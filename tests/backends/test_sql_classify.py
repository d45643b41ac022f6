"""SQL classification: the corpus, every input error, and properties over arbitrary text."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hoop_mcp.backends.sql_classify import (
    EFFECT_RANK,
    SqlClassification,
    SqlEffect,
    classify_sql,
    normalize_sql,
    parse_statement,
    render_for_people,
    render_tokens,
)
from hoop_mcp.backends.sql_functions import SAFE_FUNCTIONS, dangerous_function, is_safe_function
from hoop_mcp.core.errors import InvalidInput

CORPUS_PATH = Path(__file__).resolve().parents[1] / "corpus" / "sql_corpus.yaml"
CORPUS: list[dict[str, Any]] = yaml.safe_load(CORPUS_PATH.read_text(encoding="utf-8"))


def _rule(exc: pytest.ExceptionInfo[InvalidInput]) -> str:
    return str(exc.value.details["rule_id"])


# --------------------------------------------------------------------------------------------
# Corpus


def test_corpus_is_large_and_covers_honest_reads_and_every_bypass_family() -> None:
    families = {entry["family"] for entry in CORPUS}
    assert len(CORPUS) >= 170
    assert sum(1 for entry in CORPUS if entry["family"] == "honest_read") >= 40
    assert {
        "data_modifying_cte",
        "explain_analyze",
        "select_into_ctas",
        "prepare_execute",
        "copy",
        "server_files",
        "large_objects",
        "dblink",
        "signals",
        "session_config",
        "transaction_control",
        "stacked",
        "comment_tricks",
        "sequence_write",
        "procedural",
        "unknown_function",
        "invalid",
    } <= families


@pytest.mark.parametrize("entry", CORPUS, ids=[f"{i:03d}-{e['family']}" for i, e in enumerate(CORPUS)])
def test_corpus_entry_is_classified_as_documented(entry: dict[str, Any]) -> None:
    sql = entry["sql"]
    if "invalid" in entry:
        with pytest.raises(InvalidInput) as exc:
            classify_sql(sql)
        assert _rule(exc) == entry["invalid"], entry["note"]
        return
    result = classify_sql(sql)
    assert result.effect == SqlEffect(entry["effect"]), (entry["note"], result)
    assert set(entry["flags"]) <= set(result.flags), (entry["note"], result.flags)
    assert not set(entry.get("absent_flags", ())) & set(result.flags), (entry["note"], result.flags)
    if "relations_read" in entry:
        assert list(result.relations_read) == entry["relations_read"], entry["note"]
    if "relations_written" in entry:
        assert list(result.relations_written) == entry["relations_written"], entry["note"]
    if "command" in entry:
        assert result.command == entry["command"], entry["note"]


def test_honest_reads_in_the_corpus_call_only_allow_listed_functions() -> None:
    for entry in CORPUS:
        if entry["family"] == "honest_read":
            result = classify_sql(entry["sql"])
            assert result.unknown_functions == (), entry["sql"]


# --------------------------------------------------------------------------------------------
# Result shape


def test_classification_reports_sorted_distinct_effects_with_the_maximum_as_effect() -> None:
    result = classify_sql(
        "WITH d AS (DELETE FROM orders WHERE id = 1 RETURNING id) SELECT pg_advisory_lock(1) FROM d"
    )
    assert result.effects == (SqlEffect.READ, SqlEffect.WRITE, SqlEffect.SESSION)
    assert result.effect == SqlEffect.SESSION
    assert list(result.effects) == sorted(result.effects, key=EFFECT_RANK.__getitem__)


def test_effect_rank_orders_read_write_ddl_dcl_session_admin_unknown() -> None:
    order = [SqlEffect.READ, SqlEffect.WRITE, SqlEffect.DDL, SqlEffect.DCL, SqlEffect.SESSION]
    order += [SqlEffect.ADMIN, SqlEffect.UNKNOWN]
    assert [EFFECT_RANK[e] for e in order] == list(range(7))


def test_functions_lists_every_call_including_from_clause_functions_sorted() -> None:
    result = classify_sql("SELECT upper(name), count(*) FROM customers, generate_series(1, 2) AS g")
    assert result.functions == ("count", "generate_series", "upper")
    assert result.unknown_functions == ()


def test_unknown_functions_lists_only_calls_outside_both_tables() -> None:
    result = classify_sql("SELECT my_func(lower(name)), nextval('invoice_seq') FROM customers")
    assert result.unknown_functions == ("my_func",)
    assert {"unknown_function", "sequence_write"} <= set(result.flags)


def test_normalize_sql_re_renders_the_statement_with_pglast() -> None:
    assert (
        normalize_sql("select  id   from customers   where id=1 -- hi")
        == "SELECT id FROM customers WHERE id = 1"
    )


def test_classification_is_a_frozen_model() -> None:
    result = classify_sql("SELECT 1")
    assert isinstance(result, SqlClassification)
    with pytest.raises(ValueError, match="frozen"):
        result.effect = SqlEffect.WRITE  # type: ignore[misc]


def test_unqualified_relations_get_the_default_schema() -> None:
    result = classify_sql("SELECT * FROM customers JOIN shop.orders ON true", default_schema="sales")
    assert result.relations_read == ("sales.customers", "shop.orders")


def test_unqualified_pg_names_resolve_to_pg_catalog_and_are_flagged_as_system_catalog() -> None:
    result = classify_sql("SELECT rolname, rolpassword FROM pg_authid", default_schema="sales")
    assert result.relations_read == ("pg_catalog.pg_authid",)
    assert "system_catalog" in result.flags


def test_relation_names_are_lower_cased() -> None:
    assert classify_sql('SELECT * FROM "Public"."Customers"').relations_read == ("public.customers",)


def test_cte_names_are_not_relations_but_a_same_named_table_in_an_earlier_scope_is() -> None:
    result = classify_sql("WITH orders AS (SELECT * FROM customers) SELECT * FROM orders")
    assert result.relations_read == ("public.customers",)


def test_returning_does_not_add_relations_read() -> None:
    result = classify_sql("DELETE FROM orders WHERE id = 1 RETURNING id, status")
    assert result.relations_read == ()
    assert result.relations_written == ("public.orders",)


def test_plain_explain_reports_targets_as_read_not_written() -> None:
    result = classify_sql("EXPLAIN UPDATE orders SET status = 'x'")
    assert (result.effect, result.relations_read, result.relations_written) == (
        SqlEffect.READ,
        ("public.orders",),
        (),
    )


def test_command_names_the_statement_kind() -> None:
    assert classify_sql("DROP VIEW IF EXISTS v").command == "DROP VIEW"
    assert classify_sql("explain analyze select 1").command == "EXPLAIN ANALYZE"
    assert classify_sql("CREATE TABLE t (id int)").command == "CREATE TABLE"
    assert classify_sql("ALTER TABLE orders ADD COLUMN x int").command == "ALTER TABLE"
    assert classify_sql("select 1 into t").command == "SELECT INTO"


# --------------------------------------------------------------------------------------------
# Errors


@pytest.mark.parametrize("sql", ["", "   ", "\n\t ", "-- only a comment", "/* block */", ";", " ; ; "])
def test_empty_whitespace_or_comment_only_input_is_rejected_as_empty(sql: str) -> None:
    with pytest.raises(InvalidInput) as exc:
        classify_sql(sql)
    assert _rule(exc) == "sql.empty"


def test_a_nul_byte_is_rejected_before_parsing() -> None:
    with pytest.raises(InvalidInput) as exc:
        classify_sql("SELECT 1\x00; DROP TABLE customers")
    assert _rule(exc) == "sql.nul_byte"
    assert "NUL" in exc.value.message


def test_text_over_the_byte_limit_is_rejected_counting_utf8_bytes() -> None:
    sql = "SELECT 'é'"  # 11 bytes in UTF-8, 10 characters
    assert classify_sql(sql, max_bytes=11).effect == SqlEffect.READ
    with pytest.raises(InvalidInput) as exc:
        classify_sql(sql, max_bytes=10)
    assert _rule(exc) == "sql.too_large"
    assert "10 bytes" in exc.value.message


def test_lone_surrogates_are_rejected_as_invalid_text() -> None:
    with pytest.raises(InvalidInput) as exc:
        classify_sql("SELECT '\ud800'")
    assert _rule(exc) == "sql.invalid_text"


def test_a_parse_error_carries_postgresqls_message_and_position() -> None:
    with pytest.raises(InvalidInput) as exc:
        classify_sql("SELECT * FROM customers WHERE WHERE id = 1")
    assert _rule(exc) == "sql.parse_error"
    assert 'syntax error at or near "WHERE" at character 31' in exc.value.message
    assert exc.value.details["position"] == 31


def test_a_parse_error_at_the_end_of_the_input_says_so() -> None:
    with pytest.raises(InvalidInput) as exc:
        classify_sql("SELECT * FROM customers WHERE")
    assert _rule(exc) == "sql.parse_error"
    assert "syntax error at end of input" in exc.value.message


def test_stacked_statements_are_rejected_and_the_agent_is_told_to_send_one_per_call() -> None:
    with pytest.raises(InvalidInput) as exc:
        classify_sql("COMMIT; DELETE FROM orders")
    assert _rule(exc) == "sql.stacked"
    assert "send one statement per call" in exc.value.message
    assert exc.value.details["statements"] == 2


def test_deeply_nested_parentheses_fail_as_a_parse_error_not_a_crash() -> None:
    depth = 20_000
    with pytest.raises(InvalidInput) as exc:
        classify_sql("SELECT " + "(" * depth + "1" + ")" * depth)
    assert _rule(exc) == "sql.parse_error"


def test_a_long_operator_chain_is_classified_without_recursion_limits() -> None:
    result = classify_sql("DELETE FROM orders WHERE id = 1" + " + 1" * 5000 + " AND pg_sleep(1) IS NULL")
    assert result.effect == SqlEffect.WRITE
    assert "sleep" in result.flags
    assert "unbounded_write" not in result.flags


# --------------------------------------------------------------------------------------------
# Function tables


def test_dangerous_functions_match_whatever_the_case_or_schema() -> None:
    assert dangerous_function("PG_READ_FILE") is not None
    assert dangerous_function("lo_whatever") == ("admin", "large_objects")
    assert dangerous_function("dblink_exec") == ("admin", "dblink")
    assert dangerous_function("pg_copy_logical_replication_slot") == ("admin", "replication")
    assert dangerous_function("lower") is None


def test_allow_list_accepts_only_unqualified_or_pg_catalog_exact_names() -> None:
    assert is_safe_function(("lower",))
    assert is_safe_function(("pg_catalog", "lower"))
    assert not is_safe_function(("public", "lower"))
    assert not is_safe_function(("Lower",))
    assert not is_safe_function(("x", "pg_catalog", "lower"))


def test_no_dangerous_function_is_also_on_the_allow_list() -> None:
    assert {name for name in SAFE_FUNCTIONS if dangerous_function(name) is not None} == set()


# --------------------------------------------------------------------------------------------
# Properties


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=200))
def test_classify_sql_raises_nothing_but_invalid_input_on_arbitrary_text(text: str) -> None:
    rule_id = ""
    try:
        result = classify_sql(text)
    except InvalidInput as exc:
        rule_id = str(exc.details["rule_id"])
    else:
        assert result.effect == result.effects[-1]
        return
    assert rule_id.startswith("sql.")


_SQL_WORDS = st.sampled_from(
    [
        "SELECT",
        "1",
        "*",
        "FROM",
        "customers",
        "orders",
        "WHERE",
        "id",
        "=",
        "(",
        ")",
        ",",
        ";",
        "AND",
        "OR",
        "NOT",
        "DELETE",
        "UPDATE",
        "SET",
        "INSERT",
        "INTO",
        "VALUES",
        "WITH",
        "x",
        "AS",
        "RETURNING",
        "EXPLAIN",
        "ANALYZE",
        "nextval('s')",
        "pg_read_file('f')",
        "--",
        "/*",
        "*/",
        "$$",
        "'",
        '"',
        "true",
        "COPY",
        "TO",
    ]
)


@settings(max_examples=400, deadline=None)
@given(st.lists(_SQL_WORDS, max_size=25).map(" ".join))
def test_classify_sql_raises_nothing_but_invalid_input_on_sql_like_token_soup(text: str) -> None:
    try:
        result = classify_sql(text)
    except InvalidInput:
        return
    assert result.effect == result.effects[-1]


_PARTS = st.sampled_from(
    [
        "SELECT * FROM orders",
        "SELECT nextval('invoice_seq')",
        "DELETE FROM orders WHERE id = 1 RETURNING id",
        "UPDATE customers SET notes = 'x' WHERE id = 2 RETURNING id",
        "INSERT INTO products (id, sku, title, price_cents) VALUES (9, 'a', 'b', 1) RETURNING id",
        "SELECT pg_read_file('/etc/passwd')",
        "SELECT pg_advisory_lock(1)",
        "SELECT my_func()",
        "SELECT id FROM orders FOR UPDATE",
    ]
)
_WRAPPERS = st.sampled_from(
    [
        "WITH w AS ({}) SELECT * FROM w",
        "EXPLAIN ANALYZE {}",
        "PREPARE p AS {}",
        "WITH a AS (SELECT 1), w AS ({}) SELECT 1",
        "DECLARE c CURSOR FOR {}",
        "COPY ({}) TO STDOUT",
    ]
)


@settings(max_examples=200, deadline=None)
@given(_PARTS, st.lists(_WRAPPERS, min_size=1, max_size=3))
def test_wrapping_a_statement_never_lowers_its_effect(part: str, wrappers: list[str]) -> None:
    inner = classify_sql(part)
    sql = part
    for wrapper in wrappers:
        sql = wrapper.format(sql)
    try:
        outer = classify_sql(sql)
    except InvalidInput:
        return  # some wrappings are not valid SQL (e.g. COPY of a cursor declaration)
    assert EFFECT_RANK[outer.effect] >= EFFECT_RANK[inner.effect], sql
    assert set(inner.flags) - {"returning"} <= set(outer.flags) | {"row_lock"}, sql


@settings(max_examples=200, deadline=None)
@given(_PARTS, _PARTS)
def test_a_subquery_contributes_its_effect_to_the_statement(outer_part: str, inner_part: str) -> None:
    inner = classify_sql(inner_part)
    if inner.effect == SqlEffect.WRITE and "RETURNING" in inner_part:
        sql = f"WITH w AS ({inner_part}) {outer_part}"
    else:
        sql = f"SELECT * FROM ({inner_part}) AS s, ({outer_part}) AS t"
    try:
        combined = classify_sql(sql)
    except InvalidInput:
        return
    assert EFFECT_RANK[combined.effect] >= EFFECT_RANK[inner.effect], sql
    assert EFFECT_RANK[combined.effect] >= EFFECT_RANK[classify_sql(outer_part).effect], sql


def _mask(text: str) -> str:
    return "'[MASKED]'" if "secret" in text or "BEGIN" in text else text


def test_render_tokens_drops_comments_and_masks_only_literals() -> None:
    sql = "UPDATE t SET a = 'secret' /* -----BEGIN PRIVATE KEY----- */ WHERE id = 1 -- c\n OR b = 'x'"
    assert render_tokens(sql, _mask) == "UPDATE t SET a = '[MASKED]' WHERE id = 1 OR b = 'x'"


def test_render_for_people_makes_precedence_explicit_and_masks_only_literals() -> None:
    sql = "DELETE FROM t WHERE a = '-----BEGIN PRIVATE KEY-----' AND b = 1 OR c = 2 /* hidden */"
    rendered = render_for_people(parse_statement(sql), _mask)
    assert rendered == "DELETE FROM t WHERE (a = '''[MASKED]''' AND b = 1) OR c = 2"
