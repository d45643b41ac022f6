"""The shipped presets: what each one decides for the plans the SQL classifier produces, and why."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import jsonschema
import pytest
import yaml

from hoop_mcp.core.errors import ConfigError
from hoop_mcp.core.models import Plan, Principal, Verdict
from hoop_mcp.core.policy import (
    DEFAULT_DENY_RULE,
    KNOWN_EFFECTS,
    KNOWN_FLAGS,
    PRESETS,
    CallFacts,
    RuleMatch,
    evaluate,
    explain,
    load_preset,
    policy_json_schema,
    render_explanation,
)

RO = "read-only"
WNC = "writes-need-confirmation"
ALLOW, CONFIRM, DENY = Verdict.ALLOW, Verdict.CONFIRM, Verdict.DENY

# (preset, statement, plan effect, plan flags, expected verdict, deciding rule). Effect and flags are
# what the SQL classifier reports for the statement (checked below when it is importable); statements
# in parentheses are synthetic plans the classifier does not produce today.
CASES: list[tuple[str, str, str, tuple[str, ...], Verdict, str]] = [
    # ---- read-only
    (RO, "SELECT * FROM customers", "read", (), ALLOW, "allow-reads"),
    (RO, "SELECT 1", "read", (), ALLOW, "allow-reads"),
    (RO, "SELECT now(), lower('A')", "read", (), ALLOW, "allow-reads"),
    (RO, "EXPLAIN ANALYZE SELECT * FROM orders", "read", ("explain_analyze",), ALLOW, "allow-reads"),
    (RO, "EXPLAIN DELETE FROM orders", "read", (), ALLOW, "allow-reads"),
    (RO, "SELECT * FROM pg_stat_activity", "read", ("system_catalog",), DENY, "deny-system-catalog"),
    (RO, "SELECT table_name FROM information_schema.tables", "read", ("system_catalog",), DENY,
     "deny-system-catalog"),
    (RO, "SELECT my_func()", "unknown", ("unknown_function",), DENY, "deny-unknown-functions"),
    (RO, "SELECT query_to_xml('select 1', true, true, '')", "unknown", ("dynamic_sql",),
     DENY, "deny-dynamic-sql"),
    (RO, "SELECT pg_read_file('/etc/passwd')", "admin", ("server_files",), DENY, "deny-server-files"),
    (RO, "COPY orders TO PROGRAM 'sh'", "admin", ("copy", "copy_program"), DENY, "deny-server-files"),
    (RO, "COPY orders TO '/tmp/x'", "admin", ("copy", "server_files"), DENY, "deny-server-files"),
    (RO, "SELECT dblink_exec('x', 'DELETE FROM t')", "admin", ("dblink",), DENY, "deny-dblink"),
    (RO, "SELECT lo_import('/etc/passwd')", "admin", ("large_objects",), DENY, "deny-large-objects"),
    (RO, "SELECT pg_terminate_backend(42)", "admin", ("signals",), DENY, "deny-signals"),
    (RO, "SELECT pg_create_logical_replication_slot('s', 'p')", "admin", ("replication",), DENY,
     "deny-replication"),
    (RO, "SET ROLE postgres", "session", ("role_change",), DENY, "deny-role-change"),
    (RO, "SET TRANSACTION READ WRITE", "session", ("transaction_control",), DENY, "deny-transaction-control"),
    (RO, "SET statement_timeout = 0", "session", (), DENY, "deny-session-control"),
    (RO, "SELECT set_config('search_path', 'x', false)", "session", ("set_config",),
     DENY, "deny-config-changes"),
    (RO, "ALTER SYSTEM SET fsync = off", "admin", ("server_config",), DENY, "deny-config-changes"),
    (RO, "EXECUTE p", "unknown", ("execute",), DENY, "deny-prepared-statements"),
    (RO, "DO $$ BEGIN END $$", "unknown", ("procedural",), DENY, "deny-procedural"),
    (RO, "SELECT * FROM orders FOR UPDATE", "write", ("row_lock",), DENY, "deny-locks"),
    (RO, "SELECT pg_advisory_lock(1)", "session", ("advisory_lock",), DENY, "deny-locks"),
    (RO, "NOTIFY jobs", "session", ("notify",), DENY, "deny-notify"),
    (RO, "SELECT pg_sleep(10)", "read", ("sleep",), DENY, "deny-sleep"),
    (RO, "VACUUM FULL orders", "admin", ("maintenance",), DENY, "deny-maintenance"),
    (RO, "COPY (SELECT 1) TO STDOUT", "admin", ("copy",), DENY, "deny-copy"),
    (RO, "SELECT * INTO copy FROM customers", "ddl", ("select_into",), DENY, "deny-create-from-query"),
    (RO, "TRUNCATE orders", "write", ("truncate",), DENY, "deny-truncate"),
    (RO, "CREATE TABLE x (id int)", "ddl", (), DENY, "deny-ddl"),
    (RO, "GRANT ALL ON customers TO public", "dcl", (), DENY, "deny-dcl"),
    (RO, "(an administrative statement without a flag)", "admin", (), DENY, "deny-admin"),
    (RO, "UPDATE orders SET status = 'x' WHERE id = 1", "write", (), DENY, "deny-writes"),
    (RO, "DELETE FROM orders", "write", ("unbounded_write",), DENY, "deny-writes"),
    (RO, "SELECT nextval('orders_id_seq')", "write", ("sequence_write",), DENY, "deny-writes"),
    (RO, "(a read that carries a write marker)", "read", ("sequence_write",), DENY, "deny-hidden-writes"),
    (RO, "(a statement kind the classifier does not know)", "unknown", (), DENY, "deny-unknown"),
    (RO, "(a read with a flag the preset has never heard of)", "read", ("future_flag",),
     DENY, DEFAULT_DENY_RULE),
    # ---- writes-need-confirmation
    (WNC, "SELECT * FROM customers", "read", (), ALLOW, "allow-reads"),
    (WNC, "EXPLAIN ANALYZE SELECT * FROM orders", "read", ("explain_analyze",), ALLOW, "allow-reads"),
    (WNC, "UPDATE orders SET status = 'x' WHERE id = 1", "write", (), CONFIRM, "confirm-single-writes"),
    (WNC, "DELETE FROM orders WHERE id = 1", "write", (), CONFIRM, "confirm-single-writes"),
    (WNC, "INSERT INTO orders (id) VALUES (1) RETURNING id", "write", ("returning",), CONFIRM,
     "confirm-single-writes"),
    (WNC, "MERGE INTO orders o USING customers c ON o.id = c.id WHEN MATCHED THEN DELETE",
     "write", ("merge",),
     CONFIRM, "confirm-single-writes"),
    (WNC, "EXPLAIN ANALYZE DELETE FROM orders WHERE id = 1", "write", ("explain_analyze",), CONFIRM,
     "confirm-single-writes"),
    (WNC, "SELECT nextval('orders_id_seq')", "write", ("sequence_write",), CONFIRM, "confirm-single-writes"),
    (WNC, "SELECT txid_current()", "write", ("xid_assign",), CONFIRM, "confirm-single-writes"),
    (WNC, "DELETE FROM orders", "write", ("unbounded_write",), DENY, "deny-unbounded-writes"),
    (WNC, "UPDATE orders SET x = 1 WHERE true", "write", ("unbounded_write",), DENY, "deny-unbounded-writes"),
    (WNC, "TRUNCATE orders", "write", ("truncate",), DENY, "deny-truncate"),
    (WNC, "WITH d AS (DELETE FROM orders WHERE id = 1 RETURNING *) INSERT INTO archive SELECT * FROM d",
     "write",
     ("data_modifying_cte", "returning"), DENY, "deny-data-modifying-cte"),
    (WNC, "REFRESH MATERIALIZED VIEW mv", "ddl", (), DENY, "deny-ddl"),
    (WNC, "CREATE TABLE t AS SELECT * FROM customers", "ddl", ("create_table_as",),
     DENY, "deny-create-from-query"),
    (WNC, "GRANT ALL ON customers TO public", "dcl", (), DENY, "deny-dcl"),
    (WNC, "COPY orders FROM STDIN", "admin", ("copy",), DENY, "deny-copy"),
    (WNC, "COPY orders TO PROGRAM 'sh'", "admin", ("copy", "copy_program"), DENY, "deny-server-files"),
    (WNC, "SELECT dblink_exec('x', 'DELETE FROM t')", "admin", ("dblink",), DENY, "deny-dblink"),
    (WNC, "SELECT lo_import('/etc/passwd')", "admin", ("large_objects",), DENY, "deny-large-objects"),
    (WNC, "SELECT pg_reload_conf()", "admin", ("signals",), DENY, "deny-signals"),
    (WNC, "SELECT pg_create_logical_replication_slot('s', 'p')", "admin", ("replication",), DENY,
     "deny-replication"),
    (WNC, "RESET ALL", "session", ("role_change",), DENY, "deny-role-change"),
    (WNC, "BEGIN", "session", ("transaction_control",), DENY, "deny-transaction-control"),
    (WNC, "COMMIT", "session", ("transaction_control",), DENY, "deny-transaction-control"),
    (WNC, "SET statement_timeout = 0", "session", (), DENY, "deny-session-control"),
    (WNC, "LOAD 'plugin'", "admin", ("server_config",), DENY, "deny-config-changes"),
    (WNC, "PREPARE p AS DELETE FROM orders", "session", ("prepare", "unbounded_write"), DENY,
     "deny-prepared-statements"),
    (WNC, "CALL archive()", "unknown", ("procedural", "unknown_function"), DENY, "deny-procedural"),
    (WNC, "SELECT query_to_xml('select 1', true, true, '')", "unknown", ("dynamic_sql",),
     DENY, "deny-dynamic-sql"),
    (WNC, "SELECT my_func()", "unknown", ("unknown_function",), DENY, "deny-unknown-functions"),
    (WNC, "LOCK TABLE orders", "session", ("lock",), DENY, "deny-locks"),
    (WNC, "SELECT * FROM orders FOR UPDATE", "write", ("row_lock",), DENY, "deny-locks"),
    (WNC, "LISTEN jobs", "session", ("notify",), DENY, "deny-notify"),
    (WNC, "SELECT pg_sleep(10)", "read", ("sleep",), DENY, "deny-sleep"),
    (WNC, "CHECKPOINT", "admin", ("maintenance",), DENY, "deny-maintenance"),
    (WNC, "UPDATE pg_catalog.pg_class SET relname = 'x' WHERE oid = 1", "write", ("system_catalog",), DENY,
     "deny-system-catalog"),
    (WNC, "(an administrative statement without a flag)", "admin", (), DENY, "deny-admin"),
    (WNC, "(a statement kind the classifier does not know)", "unknown", (), DENY, "deny-unknown"),
    (WNC, "(a write with a flag the preset has never heard of)", "write", ("future_flag",), DENY,
     DEFAULT_DENY_RULE),
]  # fmt: skip


def call(
    effect: str, flags: tuple[str, ...], *, statement: str = "", unsafe_static: bool = False
) -> CallFacts:
    return CallFacts(
        tool="query_db",
        connection="shop",
        principal=Principal(
            subject="ana@example.com", issuer="https://idp.example.com", unsafe_static=unsafe_static
        ),
        plan=Plan(
            effect=effect,
            effects=(effect,),
            relations_read=("public.orders",),
            flags=flags,
            statement=statement,
        ),
    )


@pytest.mark.parametrize(
    ("preset", "statement", "effect", "flags", "verdict", "rule_id"),
    CASES,
    ids=[f"{c[0]}: {c[1]}" for c in CASES],
)
def test_each_preset_decides_each_plan_as_documented(
    preset: str, statement: str, effect: str, flags: tuple[str, ...], verdict: Verdict, rule_id: str
) -> None:
    decision = evaluate(load_preset(preset), call(effect, flags, statement=statement))
    assert (decision.verdict, decision.rule_id) == (verdict, rule_id)


def test_the_case_table_matches_what_the_sql_classifier_reports() -> None:
    classifier = pytest.importorskip("hoop_mcp.backends.sql_classify")
    mismatches = []
    for _, statement, effect, flags, _, _ in CASES:
        if statement.startswith("("):
            continue
        got = classifier.classify_sql(statement)
        if (got.effect.value, tuple(got.flags)) != (effect, tuple(sorted(flags))):
            mismatches.append((statement, got.effect.value, got.flags, effect, flags))
    assert mismatches == []


def test_the_case_table_is_large_enough() -> None:
    assert len(CASES) >= 30
    assert {c[0] for c in CASES} == set(PRESETS)


@pytest.mark.parametrize("preset", PRESETS)
def test_every_rule_of_a_preset_decides_at_least_one_case(preset: str) -> None:
    rule_ids = {r.id for r in load_preset(preset).rules}
    decided = {c[5] for c in CASES if c[0] == preset}
    assert rule_ids - decided == set()


@pytest.mark.parametrize("preset", PRESETS)
def test_every_preset_rule_is_commented(preset: str) -> None:
    lines = resources.files("hoop_mcp").joinpath("policies", f"{preset}.yaml").read_text("utf-8").splitlines()
    uncommented = [
        line.strip()
        for i, line in enumerate(lines)
        if line.lstrip().startswith("- id:") and not lines[i - 1].lstrip().startswith("#")
    ]
    assert uncommented == []


@pytest.mark.parametrize("preset", PRESETS)
def test_every_preset_validates_against_the_json_schema(preset: str) -> None:
    text = resources.files("hoop_mcp").joinpath("policies", f"{preset}.yaml").read_text("utf-8")
    errors = list(jsonschema.Draft202012Validator(policy_json_schema()).iter_errors(yaml.safe_load(text)))
    assert errors == []


@pytest.mark.parametrize("preset", PRESETS)
def test_every_preset_deny_rule_gives_the_agent_a_reason(preset: str) -> None:
    for rule in load_preset(preset).rules:
        if rule.verdict is Verdict.DENY:
            assert rule.reason, rule.id


def test_the_read_only_preset_never_allows_or_confirms_anything_but_reads() -> None:
    p = load_preset(RO)
    for effect in ("write", "ddl", "dcl", "session", "admin", "unknown"):
        assert evaluate(p, call(effect, ())).verdict is DENY
    assert all(r.verdict is not CONFIRM for r in p.rules)


def test_presets_decide_the_same_for_unsafe_static_principals() -> None:
    for preset in PRESETS:
        p = load_preset(preset)
        for effect, flags in (("read", ()), ("write", ()), ("ddl", ())):
            assert evaluate(p, call(effect, flags)) == evaluate(p, call(effect, flags, unsafe_static=True))


def test_explaining_a_preset_decision_names_the_rule_and_its_reason() -> None:
    decision, traces = explain(load_preset(WNC), call("write", ("unbounded_write",)))
    text = render_explanation(decision, traces)
    assert "decided by: deny-unbounded-writes" in text
    assert "add a WHERE" in text
    assert "MATCH    deny-unbounded-writes (deny)  <- decides" in text
    assert "FAIL flags_only: flags [unbounded_write] are not in" in text


def test_an_unknown_preset_name_is_a_config_error_listing_the_presets() -> None:
    with pytest.raises(ConfigError, match="available: read-only, writes-need-confirmation"):
        load_preset("yolo")


def test_the_policy_documentation_covers_every_preset_rule_condition_and_flag() -> None:
    docs = (Path(__file__).resolve().parents[2] / "docs" / "policies.md").read_text(encoding="utf-8")
    rule_ids = {r.id for preset in PRESETS for r in load_preset(preset).rules}
    names = rule_ids | set(RuleMatch.model_fields) | set(KNOWN_FLAGS) | set(KNOWN_EFFECTS)
    missing = sorted(name for name in names if f"`{name}`" not in docs)
    assert missing == []
