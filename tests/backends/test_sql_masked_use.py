"""Masked-column use: evasions that must be found and honest queries that must pass."""

from __future__ import annotations

import pytest

from hoop_mcp.backends.sql_masked_use import PREDICATE_CLAUSES, MaskedColumnUse, find_masked_column_uses
from hoop_mcp.core.errors import InvalidInput

MASKED: dict[str, frozenset[str]] = {
    "public.customers": frozenset({"ssn", "card_number", "api_key", "email", "phone"}),
}

SSN = "public.customers.ssn"


def _uses(sql: str, *, allow_predicates: bool = False) -> set[tuple[str, str]]:
    return {
        (u.column, u.clause) for u in find_masked_column_uses(sql, MASKED, allow_predicates=allow_predicates)
    }


# (sql, a (column, clause) that must be among the findings)
EVASIONS: list[tuple[str, tuple[str, str]]] = [
    # Expressions in the target list.
    ("SELECT upper(ssn) FROM customers", (SSN, "expression")),
    ("SELECT lower(c.ssn) FROM customers c", (SSN, "expression")),
    ("SELECT ssn || '' FROM customers", (SSN, "expression")),
    ("SELECT ssn::text FROM customers", (SSN, "expression")),
    ("SELECT CAST(ssn AS varchar(20)) FROM customers", (SSN, "expression")),
    ("SELECT reverse(ssn) FROM customers", (SSN, "expression")),
    ("SELECT substring(ssn, 1, 1) FROM customers", (SSN, "expression")),
    ("SELECT substring(ssn FROM 2 FOR 1) FROM customers", (SSN, "expression")),
    ("SELECT left(ssn, 3), right(ssn, 4) FROM customers", (SSN, "expression")),
    ("SELECT encode(convert_to(ssn, 'UTF8'), 'base64') FROM customers", (SSN, "expression")),
    ("SELECT decode(replace(ssn, '-', ''), 'hex') FROM customers", (SSN, "expression")),
    ("SELECT md5(ssn) FROM customers", (SSN, "expression")),
    ("SELECT to_jsonb(ssn) FROM customers", (SSN, "expression")),
    ("SELECT json_build_object('s', ssn) FROM customers", (SSN, "expression")),
    ("SELECT json_agg(ssn) FROM customers", (SSN, "expression")),
    ("SELECT string_agg(ssn, ',') FROM customers", (SSN, "expression")),
    ("SELECT array_agg(ssn) FROM customers", (SSN, "expression")),
    ("SELECT format('%s', ssn) FROM customers", (SSN, "expression")),
    ("SELECT CASE WHEN ssn LIKE '9%' THEN 1 ELSE 0 END FROM customers", (SSN, "expression")),
    ("SELECT ascii(substr(ssn, 3, 1)) FROM customers WHERE id = 1", (SSN, "expression")),
    ("SELECT translate(ssn, '0123456789', 'abcdefghij') FROM customers", (SSN, "expression")),
    ("SELECT regexp_split_to_array(ssn, '') FROM customers", (SSN, "expression")),
    ('SELECT ssn COLLATE "C" FROM customers', (SSN, "expression")),
    ("SELECT coalesce(ssn, 'x') FROM customers", (SSN, "expression")),
    ("SELECT ARRAY[ssn] FROM customers", (SSN, "expression")),
    ("SELECT row_number() OVER (ORDER BY ssn) FROM customers", (SSN, "expression")),
    ("SELECT SSN || '' FROM Customers", (SSN, "expression")),
    ("SELECT \"ssn\" || '' FROM customers", (SSN, "expression")),
    ("SELECT upper(card_number) FROM customers", ("public.customers.card_number", "expression")),
    # Subqueries, CTEs, unions, copies.
    ("SELECT x FROM (SELECT ssn AS x FROM customers) s", (SSN, "subquery")),
    ("WITH t AS (SELECT ssn AS x FROM customers) SELECT x FROM t", (SSN, "subquery")),
    ("SELECT name FROM customers UNION SELECT ssn FROM customers", (SSN, "subquery")),
    (
        "SELECT id FROM customers WHERE id IN (SELECT id FROM customers WHERE ssn LIKE '9%')",
        (SSN, "subquery"),
    ),
    ("SELECT (SELECT ssn FROM customers c2 WHERE c2.id = c.id) FROM customers c", (SSN, "subquery")),
    ("SELECT name FROM customers c, LATERAL (SELECT c.ssn AS x) l", (SSN, "subquery")),
    (
        "INSERT INTO orders (id, customer_id, status, total_cents) SELECT id, id, ssn, 0 FROM customers",
        (SSN, "subquery"),
    ),
    ("CREATE TABLE leak AS SELECT ssn FROM customers", (SSN, "subquery")),
    ("SELECT ssn INTO leak FROM customers", (SSN, "subquery")),
    ("COPY (SELECT ssn FROM customers) TO STDOUT", (SSN, "subquery")),
    ("SELECT * FROM (SELECT * FROM customers) s", (SSN, "whole_row")),
    # Whole-row references.
    ("SELECT c FROM customers c", (SSN, "whole_row")),
    ("SELECT customers FROM customers", (SSN, "whole_row")),
    ("SELECT row_to_json(c) FROM customers c", (SSN, "whole_row")),
    ("SELECT to_jsonb(customers) FROM customers", (SSN, "whole_row")),
    ("SELECT json_agg(c) FROM customers c", (SSN, "whole_row")),
    ("SELECT to_jsonb(c.*) FROM customers c", (SSN, "whole_row")),
    ("SELECT c::text FROM customers c", (SSN, "whole_row")),
    ("SELECT ROW(c.*) FROM customers c", (SSN, "whole_row")),
    ("SELECT ssn(c) FROM customers c", (SSN, "whole_row")),
    ("SELECT (c).ssn FROM customers c", (SSN, "whole_row")),
    ("SELECT id FROM customers c WHERE c::text LIKE '%9%'", (SSN, "whole_row")),
    ("COPY customers TO STDOUT", (SSN, "whole_row")),
    # Predicates and ordering (comparison oracles).
    ("SELECT id FROM customers WHERE ssn LIKE '9%'", (SSN, "where")),
    ("SELECT id FROM customers WHERE substr(ssn, 1, 1) = '9'", (SSN, "where")),
    ("SELECT id FROM customers c WHERE c.ssn > '5'", (SSN, "where")),
    ("SELECT o.id FROM orders o JOIN customers c ON c.ssn = o.status", (SSN, "join")),
    ("SELECT o.id FROM orders o JOIN customers c USING (ssn)", (SSN, "join")),
    ("SELECT id FROM customers NATURAL JOIN orders", (SSN, "join")),
    ("SELECT id, name FROM customers ORDER BY ssn", (SSN, "order_by")),
    ("SELECT ssn AS x FROM customers ORDER BY x", (SSN, "order_by")),
    ("SELECT ssn FROM customers ORDER BY 1", (SSN, "positional")),
    ("SELECT * FROM customers ORDER BY 5", (SSN, "positional")),
    ("SELECT ssn, count(*) FROM customers GROUP BY ssn", (SSN, "group_by")),
    ("SELECT ssn, count(*) FROM customers GROUP BY 1", (SSN, "positional")),
    ("SELECT count(*) FROM customers GROUP BY id HAVING min(ssn) > '5'", (SSN, "having")),
    ("SELECT DISTINCT ON (ssn) id FROM customers", (SSN, "distinct")),
    ("SELECT id FROM customers WINDOW w AS (PARTITION BY ssn)", (SSN, "group_by")),
    # Other statements.
    ("UPDATE customers SET notes = 'x' WHERE ssn LIKE '9%'", (SSN, "where")),
    ("UPDATE customers SET notes = ssn WHERE id = 1", (SSN, "expression")),
    ("DELETE FROM customers WHERE id = 1 RETURNING upper(ssn)", (SSN, "expression")),
    ("DELETE FROM orders o USING customers c WHERE c.id = o.customer_id AND c.ssn LIKE '9%'", (SSN, "where")),
    ("EXPLAIN ANALYZE SELECT id FROM customers WHERE ssn = '900-12-3456'", (SSN, "where")),
    ("MERGE INTO orders o USING customers c ON c.ssn = o.status WHEN MATCHED THEN DO NOTHING", (SSN, "join")),
    ("PREPARE p AS SELECT upper(ssn) FROM customers", (SSN, "expression")),
]


@pytest.mark.parametrize(("sql", "expected"), EVASIONS, ids=[sql for sql, _ in EVASIONS])
def test_evasion_is_found(sql: str, expected: tuple[str, str]) -> None:
    assert expected in _uses(sql)


HONEST = [
    "SELECT id, ssn FROM customers",
    "SELECT * FROM customers",
    "SELECT c.* FROM customers c",
    "SELECT c.email FROM customers c",
    "SELECT c.ssn, c.name FROM customers AS c WHERE c.id = 3",
    "SELECT public.customers.ssn FROM public.customers",
    "SELECT ssn AS social FROM customers ORDER BY id",
    "SELECT count(*) FROM customers",
    "SELECT id, name FROM customers WHERE name LIKE 'A%' ORDER BY created_at DESC",
    "SELECT o.id, c.name FROM orders o JOIN customers c ON c.id = o.customer_id",
    "SELECT c.name, count(o.id) FROM customers c LEFT JOIN orders o ON o.customer_id = c.id GROUP BY c.name",
    "SELECT * FROM orders WHERE status = 'shipped'",
    "SELECT status, sum(total_cents) FROM orders GROUP BY 1 ORDER BY 2 DESC",
    "SELECT id FROM customers c WHERE EXISTS (SELECT * FROM orders o WHERE o.customer_id = c.id)",
    "SELECT name FROM customers WHERE id IN (SELECT customer_id FROM orders WHERE total_cents > 100)",
    "SELECT id, name FROM customers ORDER BY 2",
    "SELECT ssn FROM products",  # products is not masked (the statement fails in PostgreSQL anyway)
    "SELECT upper(title) FROM products",
    "UPDATE customers SET notes = 'checked' WHERE id = 4",
    "DELETE FROM customers WHERE id = 9 RETURNING id, ssn",
    "INSERT INTO customers (id, name, email, ssn) VALUES (9, 'x', 'x@example.com', '900-00-0000')",
    "WITH x AS (SELECT 1 AS ssn) SELECT upper(ssn) FROM x",
    'SELECT "SSN" FROM customers',
]


@pytest.mark.parametrize("sql", HONEST)
def test_honest_query_has_no_masked_column_use(sql: str) -> None:
    assert find_masked_column_uses(sql, MASKED) == ()


def test_there_are_at_least_forty_evasions_and_twenty_honest_queries() -> None:
    assert len(EVASIONS) >= 40
    assert len(HONEST) >= 20


def test_allow_predicates_permits_where_and_order_by_but_not_expressions() -> None:
    sql = "SELECT upper(ssn) FROM customers WHERE ssn LIKE '9%' ORDER BY ssn"
    assert _uses(sql) == {(SSN, "expression"), (SSN, "where"), (SSN, "order_by")}
    assert _uses(sql, allow_predicates=True) == {(SSN, "expression")}


def test_allow_predicates_still_refuses_subqueries_and_whole_rows() -> None:
    sql = "SELECT row_to_json(c) FROM customers c WHERE id IN (SELECT id FROM customers WHERE ssn > '5')"
    clauses = {clause for _, clause in _uses(sql, allow_predicates=True)}
    assert clauses == {"whole_row", "subquery"}


def test_predicate_clauses_are_exactly_the_ordering_and_filtering_ones() -> None:
    assert {"where", "join", "order_by", "group_by", "having", "distinct", "positional"} == PREDICATE_CLAUSES


def test_whole_row_reports_every_masked_column_of_the_relation() -> None:
    columns = {
        column for column, clause in _uses("SELECT to_jsonb(c) FROM customers c") if clause == "whole_row"
    }
    assert columns == {f"public.customers.{c}" for c in MASKED["public.customers"]}


def test_each_use_carries_a_message_naming_the_column_and_what_to_do() -> None:
    (use,) = find_masked_column_uses("SELECT upper(ssn) FROM customers", MASKED)
    assert isinstance(use, MaskedColumnUse)
    assert use.column == SSN
    assert SSN in use.message
    assert "Select the column on its own" in use.message


def test_unqualified_masked_relation_keys_get_the_default_schema() -> None:
    uses = find_masked_column_uses(
        "SELECT upper(ssn) FROM crm.customers", {"customers": frozenset({"ssn"})}, default_schema="crm"
    )
    assert [(u.column, u.clause) for u in uses] == [("crm.customers.ssn", "expression")]


def test_a_masked_relation_in_another_schema_is_not_in_play() -> None:
    assert find_masked_column_uses("SELECT upper(ssn) FROM archive.customers", MASKED) == ()


def test_quoted_column_names_are_case_sensitive() -> None:
    masked = {"public.t": frozenset({"Secret"})}
    assert find_masked_column_uses('SELECT upper("Secret") FROM t', masked) != ()
    assert find_masked_column_uses("SELECT upper(secret) FROM t", masked) == ()


def test_a_cte_shadowing_a_masked_table_still_puts_the_real_table_in_play() -> None:
    sql = "WITH customers AS (SELECT ssn AS id FROM customers) SELECT id FROM customers"
    assert (SSN, "subquery") in _uses(sql)


def test_no_masked_relations_means_no_uses() -> None:
    assert find_masked_column_uses("SELECT upper(ssn) FROM customers", {}) == ()


def test_invalid_sql_raises_invalid_input_like_the_classifier() -> None:
    with pytest.raises(InvalidInput) as exc:
        find_masked_column_uses("SELECT 1; SELECT upper(ssn) FROM customers", MASKED)
    assert exc.value.details["rule_id"] == "sql.stacked"


def test_results_are_sorted_and_free_of_duplicates() -> None:
    uses = find_masked_column_uses("SELECT upper(ssn), lower(ssn), md5(api_key) FROM customers", MASKED)
    pairs = [(u.clause, u.column) for u in uses]
    assert pairs == sorted(set(pairs))


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT s FROM customers AS c(i, n, e, p, s)",
        "SELECT x FROM (customers JOIN orders ON orders.customer_id = customers.id) AS j(x, y)",
    ],
)
def test_renaming_columns_of_a_masked_table_in_from_is_refused(sql: str) -> None:
    uses = find_masked_column_uses(sql, {"public.customers": frozenset({"ssn"})})
    assert [u.clause for u in uses] == ["renamed"]
    assert "column alias list" in uses[0].message


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT DISTINCT ssn FROM customers",
        "SELECT DISTINCT c.ssn, id FROM customers c",
        "SELECT DISTINCT * FROM customers",
    ],
)
def test_plain_distinct_over_a_masked_column_is_a_predicate_use(sql: str) -> None:
    uses = find_masked_column_uses(sql, {"public.customers": frozenset({"ssn"})})
    assert [(u.column, u.clause) for u in uses] == [("public.customers.ssn", "distinct")]
    assert find_masked_column_uses(sql, {"public.customers": frozenset({"ssn"})}, allow_predicates=True) == ()


def test_plain_distinct_over_unmasked_columns_is_fine() -> None:
    assert (
        find_masked_column_uses(
            "SELECT DISTINCT name FROM customers", {"public.customers": frozenset({"ssn"})}
        )
        == ()
    )
