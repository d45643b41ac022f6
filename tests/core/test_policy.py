"""Policy files: loading, validation, evaluation semantics, precedence, explain and the JSON Schema."""

from __future__ import annotations

import json
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from hoop_mcp.core.errors import ConfigError
from hoop_mcp.core.masking_config import BUILTIN_DETECTORS, MaskStrategy
from hoop_mcp.core.models import VERDICT_PRECEDENCE, Plan, Principal, Verdict
from hoop_mcp.core.policy import (
    DEFAULT_DENY_RULE,
    KNOWN_EFFECTS,
    KNOWN_FLAGS,
    MAX_POLICY_BYTES,
    CallFacts,
    Policy,
    Rule,
    RuleMatch,
    evaluate,
    explain,
    load_policy_files,
    load_policy_text,
    policy_json_schema,
    render_explanation,
    render_policy_schema,
)

SCHEMA_FILE = Path(__file__).resolve().parents[2] / "src" / "hoop_mcp" / "schemas" / "policy.schema.json"


def facts(
    *,
    tool: str = "query_db",
    connection: str | None = "shop",
    subject: str = "ana@example.com",
    groups: tuple[str, ...] = ("engineers",),
    unsafe_static: bool = False,
    effect: str = "read",
    relations_read: tuple[str, ...] = ("public.customers",),
    relations_written: tuple[str, ...] = (),
    functions: tuple[str, ...] = (),
    flags: tuple[str, ...] = (),
) -> CallFacts:
    return CallFacts(
        tool=tool,
        connection=connection,
        principal=Principal(
            subject=subject, issuer="https://idp.example.com", groups=groups, unsafe_static=unsafe_static
        ),
        plan=Plan(
            effect=effect,
            effects=(effect,),
            relations_read=relations_read,
            relations_written=relations_written,
            functions=functions,
            flags=flags,
        ),
    )


def rule(rule_id: str, verdict: str = "allow", **when: Any) -> Rule:
    data: dict[str, Any] = {"id": rule_id, "description": f"rule {rule_id}", "verdict": verdict, "when": when}
    if verdict == "review":
        data["review"] = {"approver_groups": ["approvers"]}
    return Rule.model_validate(data)


def policy(*rules: Rule) -> Policy:
    return Policy(version=1, rules=rules)


def matches(when: dict[str, Any], call: CallFacts) -> bool:
    return evaluate(policy(rule("r", **when)), call).rule_id == "r"


def config_error(text: str) -> str:
    with pytest.raises(ConfigError) as info:
        load_policy_text(text, source="team.yaml")
    assert info.value.message.startswith("team.yaml")
    return info.value.message


# ------------------------------------------------------------------------------------ conditions


def test_a_rule_without_conditions_matches_every_call() -> None:
    assert matches({}, facts())
    assert matches({}, facts(tool="other", connection=None, effect="ddl", flags=("truncate",)))


def test_tools_match_by_glob() -> None:
    assert matches({"tools": ["query_*"]}, facts(tool="query_db"))
    assert not matches({"tools": ["query_*"]}, facts(tool="list_tables"))


def test_globs_are_case_sensitive() -> None:
    assert not matches({"tools": ["Query_db"]}, facts(tool="query_db"))


def test_connections_match_by_glob() -> None:
    assert matches({"connections": ["shop", "analytics-*"]}, facts(connection="analytics-eu"))
    assert not matches({"connections": ["shop", "analytics-*"]}, facts(connection="billing"))


def test_connections_never_match_a_call_without_a_connection() -> None:
    assert not matches({"connections": ["*"]}, facts(connection=None))


def test_subjects_match_the_principal_subject_by_glob() -> None:
    assert matches({"subjects": ["*@example.com"]}, facts(subject="ana@example.com"))
    assert not matches({"subjects": ["*@example.com"]}, facts(subject="eve@example.org"))


def test_groups_match_when_the_principal_has_any_of_them() -> None:
    assert matches({"groups": ["dba", "engineers"]}, facts(groups=("sales", "engineers")))
    assert not matches({"groups": ["dba"]}, facts(groups=("sales", "engineers")))
    assert not matches({"groups": ["dba"]}, facts(groups=()))


def test_effects_match_the_most_consequential_effect_only() -> None:
    call = CallFacts(
        tool="query_db",
        connection="shop",
        principal=Principal(subject="s", issuer="i"),
        plan=Plan(effect="write", effects=("read", "write")),
    )
    assert matches({"effects": ["write"]}, call)
    assert not matches({"effects": ["read"]}, call)


def test_relations_hold_only_when_every_relation_matches() -> None:
    call = facts(relations_read=("public.customers",), relations_written=("audit.log",))
    assert matches({"relations": ["public.*", "audit.*"]}, call)
    assert not matches({"relations": ["public.*"]}, call)


def test_relations_hold_vacuously_when_nothing_is_touched() -> None:
    assert matches({"relations": ["public.*"]}, facts(relations_read=()))


def test_relations_any_holds_when_one_relation_matches() -> None:
    call = facts(relations_read=("public.orders",), relations_written=("public.customers",))
    assert matches({"relations_any": ["public.customers"]}, call)
    assert not matches({"relations_any": ["secret.*"]}, call)
    assert not matches({"relations_any": ["*"]}, facts(relations_read=()))


def test_functions_any_holds_when_one_function_matches() -> None:
    assert matches({"functions_any": ["pg_sleep"]}, facts(functions=("lower", "pg_sleep")))
    assert not matches({"functions_any": ["pg_sleep"]}, facts(functions=("lower",)))


def test_flags_any_needs_one_of_the_flags() -> None:
    assert matches({"flags_any": ["truncate", "lock"]}, facts(flags=("lock",)))
    assert not matches({"flags_any": ["truncate"]}, facts(flags=("lock",)))
    assert not matches({"flags_any": ["truncate"]}, facts(flags=()))


def test_flags_none_fails_when_any_listed_flag_is_present() -> None:
    assert matches({"flags_none": ["truncate"]}, facts(flags=("lock",)))
    assert not matches({"flags_none": ["truncate", "lock"]}, facts(flags=("lock",)))


def test_flags_only_is_an_allow_list_of_flags() -> None:
    assert matches({"flags_only": ["returning"]}, facts(flags=()))
    assert matches({"flags_only": ["returning"]}, facts(flags=("returning",)))
    assert not matches({"flags_only": ["returning"]}, facts(flags=("returning", "merge")))


def test_unsafe_static_principal_matches_either_way() -> None:
    assert matches({"unsafe_static_principal": True}, facts(unsafe_static=True))
    assert not matches({"unsafe_static_principal": True}, facts(unsafe_static=False))
    assert matches({"unsafe_static_principal": False}, facts(unsafe_static=False))


def test_every_condition_must_hold() -> None:
    when = {"groups": ["engineers"], "effects": ["read"], "connections": ["shop"]}
    assert matches(when, facts())
    assert not matches(when, facts(connection="billing"))
    assert not matches(when, facts(effect="write"))


def test_unless_excludes_calls_where_every_exception_condition_holds() -> None:
    deny_ddl = Rule.model_validate(
        {
            "id": "deny-ddl",
            "description": "no DDL except for DBAs on staging",
            "verdict": "deny",
            "when": {"effects": ["ddl"]},
            "unless": {"groups": ["dba"], "connections": ["staging"]},
        }
    )
    p = policy(deny_ddl)
    assert evaluate(p, facts(effect="ddl", groups=("engineers",), connection="staging")).rule_id == "deny-ddl"
    assert evaluate(p, facts(effect="ddl", groups=("dba",), connection="prod")).rule_id == "deny-ddl"
    assert (
        evaluate(p, facts(effect="ddl", groups=("dba",), connection="staging")).rule_id == DEFAULT_DENY_RULE
    )


# ------------------------------------------------------------------------------------ precedence


def test_no_matching_rule_is_default_deny() -> None:
    decision = evaluate(policy(rule("reads", effects=["read"])), facts(effect="write"))
    assert decision.verdict is Verdict.DENY
    assert decision.rule_id == DEFAULT_DENY_RULE
    assert "no policy rule allows this call" in decision.reason
    assert decision.matched == ()


def test_an_empty_policy_denies_everything() -> None:
    empty = load_policy_text("version: 1\nrules: []\n", source="empty.yaml")
    for call in (facts(), facts(effect="write"), facts(tool="list_tables", connection=None)):
        assert evaluate(empty, call).rule_id == DEFAULT_DENY_RULE


def test_deny_beats_confirm_beats_allow_whatever_the_order() -> None:
    allow, confirm, deny = rule("a", "allow"), rule("c", "confirm"), rule("d", "deny")
    assert evaluate(policy(allow, confirm, deny), facts()).rule_id == "d"
    assert evaluate(policy(deny, confirm, allow), facts()).rule_id == "d"
    assert evaluate(policy(allow, confirm), facts()).rule_id == "c"
    assert evaluate(policy(confirm, allow), facts()).verdict is Verdict.CONFIRM
    assert evaluate(policy(allow), facts()).verdict is Verdict.ALLOW


def test_the_first_matching_rule_decides_among_equal_verdicts() -> None:
    p = policy(rule("first", "deny", effects=["write"]), rule("second", "deny"), rule("third", "deny"))
    assert evaluate(p, facts(effect="read")).rule_id == "second"
    assert evaluate(p, facts(effect="write")).rule_id == "first"


def test_the_decision_lists_every_matching_rule_in_file_order_with_the_winners_reason() -> None:
    p = policy(
        rule("allow-all", "allow"),
        Rule(id="no-writes", description="d", verdict=Verdict.DENY, reason="read-only", when=RuleMatch()),
        rule("ddl-only", "deny", effects=["ddl"]),
        rule("confirm-all", "confirm"),
    )
    decision = evaluate(p, facts())
    assert decision.matched == ("allow-all", "no-writes", "confirm-all")
    assert decision.rule_id == "no-writes"
    assert decision.reason == "read-only"


def test_the_reason_defaults_to_the_description() -> None:
    assert evaluate(policy(rule("r", "allow")), facts()).reason == "rule r"


# --------------------------------------------------------------------------------------- explain


def test_explain_names_the_deciding_rule_and_every_failing_condition() -> None:
    p = policy(
        rule("reads", "allow", effects=["read"], flags_only=["explain_analyze"], connections=["shop"]),
        rule("no-truncate", "deny", flags_any=["truncate"]),
    )
    decision, traces = explain(p, facts(effect="write", flags=("returning",), connection="billing"))
    assert decision.rule_id == DEFAULT_DENY_RULE
    assert [t.rule_id for t in traces] == ["reads", "no-truncate"]
    failing = [(name, why) for name, held, why in traces[0].conditions if not held]
    assert [name for name, _ in failing] == ["connections", "effects", "flags_only"]
    text = render_explanation(decision, traces)
    assert "decided by: default-deny" in text
    assert "FAIL effects: effect 'write' is not one of [read]" in text
    assert "FAIL flags_only: flags [returning] are not in [explain_analyze]" in text
    assert "FAIL connections: connection 'billing' does not match [shop]" in text
    assert "FAIL flags_any: none of [truncate] in flags [returning]" in text


def test_explain_marks_matched_rules_and_the_decider() -> None:
    p = policy(
        rule("reads", "allow", effects=["read"]), rule("catalog", "deny", flags_any=["system_catalog"])
    )
    decision, traces = explain(p, facts(flags=("system_catalog",)))
    assert decision.rule_id == "catalog"
    assert [t.matched for t in traces] == [True, True]
    text = render_explanation(decision, traces)
    assert "MATCH    catalog (deny)  <- decides" in text
    assert "MATCH    reads (allow)\n" in text
    assert "matching rules (file order): reads, catalog" in text


def test_explain_of_an_empty_policy_says_everything_is_denied() -> None:
    decision, traces = explain(policy(), facts())
    assert traces == ()
    assert "the policy has no rules" in render_explanation(decision, traces)


def test_explain_shows_why_an_exception_applied() -> None:
    p = policy(
        Rule.model_validate(
            {"id": "d", "description": "d", "verdict": "deny", "unless": {"groups": ["dba"]}},
        )
    )
    decision, traces = explain(p, facts(groups=("dba",)))
    assert decision.rule_id == DEFAULT_DENY_RULE
    assert traces[0].conditions == (
        ("unless", False, "exception applies (groups: groups [dba] match [dba])"),
    )


def test_explain_and_evaluate_agree() -> None:
    p = policy(rule("a", "allow", effects=["read"]), rule("c", "confirm", effects=["write"]))
    for call in (facts(), facts(effect="write"), facts(effect="ddl")):
        assert explain(p, call)[0] == evaluate(p, call)


# -------------------------------------------------------------------------------- file validation

VALID = """\
version: 1
rules:
  - id: reads-on-shop
    description: Engineers may read shop data
    verdict: allow
    when:
      tools: [query_db]
      connections: [shop, "analytics-*"]
      subjects: ["*@example.com"]
      groups: [engineers]
      effects: [read]
      relations: ["public.*"]
      relations_any: ["public.customers"]
      functions_any: ["lower"]
      flags_any: [explain_analyze]
      flags_none: [unknown_function]
      flags_only: [explain_analyze]
      unsafe_static_principal: false
  - id: no-ddl
    description: No schema changes
    verdict: deny
    reason: Schema changes go through migrations.
    when: {effects: [ddl]}
    unless: {groups: [dba]}
masking:
  columns:
    - {column: public.customers.ssn, strategy: partial, keep_last: 4}
  detectors: [email, us_ssn]
"""


def test_a_complete_policy_file_loads() -> None:
    p = load_policy_text(VALID, source="team.yaml")
    assert [r.id for r in p.rules] == ["reads-on-shop", "no-ddl"]
    assert p.rules[0].when.flags_none == ("unknown_function",)
    assert p.rules[1].effective_reason == "Schema changes go through migrations."
    assert p.masking.columns[0].strategy is MaskStrategy.PARTIAL
    assert p.masking.detectors == ("email", "us_ssn")
    call = facts(functions=("lower",), flags=("explain_analyze",))
    assert evaluate(p, call).rule_id == "reads-on-shop"


def test_a_misspelt_effect_is_reported_with_its_key_path() -> None:
    message = config_error(VALID.replace("effects: [ddl]", "effects: [reed]"))
    assert "rules[1].when.effects[0]: 'reed' is not one of 'read', 'write'" in message
    assert "at least 1 item" not in message


def test_a_misspelt_flag_is_rejected_rather_than_silently_never_matching() -> None:
    message = config_error(VALID.replace("flags_none: [unknown_function]", "flags_none: [unknown_functions]"))
    assert "rules[0].when.flags_none[0]: 'unknown_functions' is not one of" in message


def test_unknown_keys_are_rejected_with_the_key_path_and_the_allowed_keys() -> None:
    message = config_error(VALID.replace("      tools:", "      tool:"))
    assert "rules[0].when.tool: unknown key (allowed: tools, connections," in message
    assert (
        "rules[1].colour: unknown key (allowed: id, description, verdict, reason, when, unless, review)"
        in config_error(VALID.replace("    verdict: deny", "    verdict: deny\n    colour: red"))
    )
    assert "owner: unknown key (allowed: version, rules, masking)" in config_error(VALID + "owner: me\n")


def test_a_bad_verdict_is_rejected() -> None:
    assert "rules[1].verdict: 'block' is not one of 'allow', 'confirm', 'review' or 'deny'" in config_error(
        VALID.replace("verdict: deny", "verdict: block")
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("rules: []\n", "version: required key is missing"),
        ("version: 2\nrules: []\n", "version: 2 is not one of 1"),
        ("version: true\nrules: []\n", "version: must be the integer 1"),
        ("version: '1'\nrules: []\n", "version: must be the integer 1"),
        ("version: 1\n", "rules: required key is missing"),
        ("version: 1\nrules: {}\n", "rules: Input should be a valid tuple"),
    ],
)
def test_the_version_and_rules_keys_are_required_and_exact(text: str, expected: str) -> None:
    assert expected in config_error(text)


@pytest.mark.parametrize(
    ("snippet", "expected"),
    [
        ("{id: Bad_Id, description: d, verdict: allow}", "rules[0].id: String should match pattern"),
        ("{id: default-deny, description: d, verdict: allow}", "rules[0].id: 'default-deny' is reserved"),
        ("{id: a, verdict: allow}", "rules[0].description: required key is missing"),
        (
            "{id: a, description: d, verdict: allow, when: {tools: []}}",
            "rules[0].when.tools: must not be empty (omit the key",
        ),
        (
            "{id: a, description: d, verdict: allow, when: {tools: query_db}}",
            "rules[0].when.tools: Input should be",
        ),
        ("{id: a, description: d, verdict: allow, unless: {}}", "rules[0].unless: an empty 'unless'"),
        (
            "{id: a, description: d, verdict: allow, when: {unsafe_static_principal: 'yes'}}",
            "rules[0].when.unsafe_static_principal: Input should be a valid boolean",
        ),
    ],
)
def test_bad_rules_are_reported_with_their_key_path(snippet: str, expected: str) -> None:
    message = config_error(f"version: 1\nrules:\n  - {snippet}\n")
    assert expected in message


def test_duplicate_rule_ids_are_rejected() -> None:
    text = (
        "version: 1\nrules:\n"
        "  - {id: a, description: d, verdict: allow}\n"
        "  - {id: a, description: e, verdict: deny}\n"
    )
    assert "rules[1].id: duplicate rule id 'a'" in config_error(text)


def test_masking_errors_carry_their_key_path() -> None:
    message = config_error(
        "version: 1\nrules: []\nmasking:\n  columns: [{column: SSN}]\n  detectors: [psychic]\n"
    )
    assert "masking.columns[0].column: must be 'schema.table.column'" in message
    assert "masking.detectors: unknown detector(s) ['psychic']" in message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("- version: 1\n", "the top level must be a mapping"),
        ("just text\n", "the top level must be a mapping"),
        ("", "the top level must be a mapping"),
        ("version: 1\nrules: [\n", "invalid YAML (line"),
        ("version: 1\nversion: 1\nrules: []\n", "invalid YAML (line 2, column 1): duplicate key 'version'"),
        ("version: 1\nrules: []\nmasking: {columns: [], columns: []}\n", "duplicate key 'columns'"),
        ("version: 1\nrules: &r []\n", "anchors (&r) are not allowed"),
        ("? [a]\n: 1\n", "mapping keys must be plain values"),
    ],
)
def test_malformed_yaml_is_a_config_error_naming_the_file(text: str, expected: str) -> None:
    assert expected in config_error(text)


def test_a_yaml_bomb_is_refused_before_it_expands() -> None:
    lines = ['a: &a ["x", "x", "x", "x", "x", "x", "x", "x", "x"]']
    for i in range(1, 10):
        lines.append(
            f"{chr(97 + i)}: &{chr(97 + i)} [*{chr(96 + i)}, *{chr(96 + i)}, *{chr(96 + i)}, *{chr(96 + i)}]"
        )
    assert "anchors (&a) are not allowed" in config_error("\n".join(lines) + "\n")


def test_aliases_are_refused_even_without_anchors_in_view() -> None:
    assert "aliases (*name) are not allowed" in config_error("version: 1\nrules: *x\n")


def test_deep_nesting_is_refused_without_a_recursion_error() -> None:
    assert "nesting deeper than" in config_error("[" * 200_000)


def test_huge_policy_text_is_refused() -> None:
    text = "version: 1\nrules: []\n# " + "x" * MAX_POLICY_BYTES + "\n"
    assert f"larger than {MAX_POLICY_BYTES} bytes" in config_error(text)


def test_python_object_tags_are_refused() -> None:
    assert "invalid YAML" in config_error("version: !!python/object/apply:os.system ['true']\nrules: []\n")


def test_config_errors_point_to_the_documentation() -> None:
    with pytest.raises(ConfigError) as info:
        load_policy_text("version: 1\nrules: [{}]\n", source="team.yaml")
    assert "docs/policies.md" in info.value.diagnostics()


# ------------------------------------------------------------------------------------ several files


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_several_files_merge_their_rules_in_order(tmp_path: Path) -> None:
    a = write(tmp_path, "a.yaml", "version: 1\nrules:\n  - {id: one, description: d, verdict: allow}\n")
    b = write(tmp_path, "b.yaml", "version: 1\nrules:\n  - {id: two, description: d, verdict: confirm}\n")
    merged = load_policy_files([a, b])
    assert [r.id for r in merged.rules] == ["one", "two"]
    assert evaluate(merged, facts()).rule_id == "two"


def test_duplicate_rule_ids_across_files_are_rejected_naming_both_files(tmp_path: Path) -> None:
    a = write(tmp_path, "a.yaml", "version: 1\nrules:\n  - {id: one, description: d, verdict: allow}\n")
    b = write(tmp_path, "b.yaml", "version: 1\nrules:\n  - {id: one, description: d, verdict: deny}\n")
    with pytest.raises(ConfigError) as info:
        load_policy_files([a, b])
    assert str(b) in info.value.message
    assert f"already defined in {a}" in info.value.message


def test_masking_sections_merge_columns_and_unite_explicit_detectors(tmp_path: Path) -> None:
    a = write(
        tmp_path,
        "a.yaml",
        "version: 1\nrules: []\nmasking:\n"
        "  columns: [{column: public.customers.ssn}]\n  detectors: [email]\n",
    )
    b = write(
        tmp_path,
        "b.yaml",
        "version: 1\nrules: []\nmasking:\n"
        "  columns: [{column: public.customers.phone}]\n  detectors: [us_ssn]\n",
    )
    c = write(tmp_path, "c.yaml", "version: 1\nrules: []\n")
    merged = load_policy_files([a, b, c]).masking
    assert [col.column for col in merged.columns] == ["public.customers.ssn", "public.customers.phone"]
    assert merged.detectors == ("email", "us_ssn")
    assert load_policy_files([c]).masking.detectors == BUILTIN_DETECTORS


def test_the_same_masked_column_in_two_files_is_rejected(tmp_path: Path) -> None:
    text = "version: 1\nrules: []\nmasking:\n  columns: [{column: public.customers.ssn}]\n"
    a, b = write(tmp_path, "a.yaml", text), write(tmp_path, "b.yaml", text)
    with pytest.raises(
        ConfigError, match=r"masking.columns\[0\]: column 'public.customers.ssn' is already masked"
    ):
        load_policy_files([a, b])


def test_conflicting_masking_settings_across_files_are_rejected(tmp_path: Path) -> None:
    a = write(
        tmp_path, "a.yaml", "version: 1\nrules: []\nmasking: {unsafe_allow_masked_column_predicates: true}\n"
    )
    b = write(
        tmp_path, "b.yaml", "version: 1\nrules: []\nmasking: {unsafe_allow_masked_column_predicates: false}\n"
    )
    c = write(tmp_path, "c.yaml", "version: 1\nrules: []\n")
    with pytest.raises(ConfigError, match="set differently"):
        load_policy_files([a, b])
    assert load_policy_files([a, c]).masking.unsafe_allow_masked_column_predicates is True


def test_unreadable_huge_and_non_utf8_files_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read policy file"):
        load_policy_files([tmp_path / "missing.yaml"])
    big = tmp_path / "big.yaml"
    big.write_bytes(b"#" * (MAX_POLICY_BYTES + 1))
    with pytest.raises(ConfigError, match="larger than"):
        load_policy_files([big])
    latin = tmp_path / "latin.yaml"
    latin.write_bytes(b"version: 1\nrules: []\n# caf\xe9\n")
    with pytest.raises(ConfigError, match="not valid UTF-8"):
        load_policy_files([latin])
    with pytest.raises(ConfigError, match="no policy file"):
        load_policy_files([])


# ------------------------------------------------------------------------------------- JSON Schema


def test_the_committed_json_schema_is_up_to_date() -> None:
    assert SCHEMA_FILE.read_text(encoding="utf-8") == render_policy_schema(), (
        "regenerate: python -m hoop_mcp.core.policy > src/hoop_mcp/schemas/policy.schema.json"
    )


def test_the_json_schema_accepts_a_valid_file_and_rejects_unknown_keys_and_effects() -> None:
    schema = policy_json_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    document = yaml.safe_load(VALID)
    assert list(validator.iter_errors(document)) == []
    document["rules"][0]["when"]["tool"] = ["x"]
    assert list(validator.iter_errors(document))
    bad_effect = yaml.safe_load(VALID.replace("effects: [ddl]", "effects: [reed]"))
    assert list(validator.iter_errors(bad_effect))
    bad_detector = yaml.safe_load(VALID.replace("detectors: [email, us_ssn]", "detectors: [psychic]"))
    assert list(validator.iter_errors(bad_detector))


def test_the_json_schema_lists_every_effect_and_flag() -> None:
    text = json.dumps(policy_json_schema())
    for name in KNOWN_EFFECTS + KNOWN_FLAGS:
        assert f'"{name}"' in text


# -------------------------------------------------------------------------------------- properties

VERDICTS = [v.value for v in Verdict]
TOOLS = ["query_db", "list_tables"]
CONNECTIONS = ["shop", "analytics-eu", None]
GROUPS = ["engineers", "dba", "sales"]
RELATIONS = ["public.customers", "public.orders", "audit.log"]
FLAGS = ["truncate", "unbounded_write", "returning", "system_catalog", "unknown_function"]
EFFECTS = ["read", "write", "ddl", "unknown"]

when_strategy = st.fixed_dictionaries(
    {},
    optional={
        "tools": st.lists(st.sampled_from([*TOOLS, "query_*", "*"]), min_size=1, max_size=2),
        "connections": st.lists(st.sampled_from(["shop", "analytics-*"]), min_size=1, max_size=2),
        "groups": st.lists(st.sampled_from(GROUPS), min_size=1, max_size=2),
        "effects": st.lists(st.sampled_from(EFFECTS), min_size=1, max_size=2),
        "relations": st.lists(st.sampled_from([*RELATIONS, "public.*"]), min_size=1, max_size=2),
        "relations_any": st.lists(st.sampled_from([*RELATIONS, "public.*"]), min_size=1, max_size=2),
        "flags_any": st.lists(st.sampled_from(FLAGS), min_size=1, max_size=2),
        "flags_none": st.lists(st.sampled_from(FLAGS), min_size=1, max_size=2),
        "flags_only": st.lists(st.sampled_from(FLAGS), min_size=1, max_size=2),
        "unsafe_static_principal": st.booleans(),
    },
)


@st.composite
def rule_sets(draw: st.DrawFn) -> list[Rule]:
    specs = draw(st.lists(st.tuples(st.sampled_from(VERDICTS), when_strategy), max_size=6))
    return [rule(f"r{i}", verdict, **when) for i, (verdict, when) in enumerate(specs)]


call_strategy = st.builds(
    facts,
    tool=st.sampled_from(TOOLS),
    connection=st.sampled_from(CONNECTIONS),
    groups=st.lists(st.sampled_from(GROUPS), max_size=2, unique=True).map(tuple),
    unsafe_static=st.booleans(),
    effect=st.sampled_from(EFFECTS),
    relations_read=st.lists(st.sampled_from(RELATIONS), max_size=2, unique=True).map(tuple),
    relations_written=st.lists(st.sampled_from(RELATIONS), max_size=1, unique=True).map(tuple),
    flags=st.lists(st.sampled_from(FLAGS), max_size=3, unique=True).map(tuple),
)


def oracle_matches(r: Rule, call: CallFacts) -> bool:
    """An independent, deliberately plain restatement of the documented semantics."""
    w, plan, who = r.when, call.plan, call.principal
    rels = set(plan.relations_read) | set(plan.relations_written)

    def hit(value: str, patterns: tuple[str, ...]) -> bool:
        return any(fnmatchcase(value, p) for p in patterns)

    checks = [
        w.tools is None or hit(call.tool, w.tools),
        w.connections is None or (call.connection is not None and hit(call.connection, w.connections)),
        w.groups is None or any(hit(g, w.groups) for g in who.groups),
        w.effects is None or plan.effect in w.effects,
        w.relations is None or all(hit(x, w.relations) for x in rels),
        w.relations_any is None or any(hit(x, w.relations_any) for x in rels),
        w.flags_any is None or bool(set(plan.flags) & set(w.flags_any)),
        w.flags_none is None or not set(plan.flags) & set(w.flags_none),
        w.flags_only is None or set(plan.flags) <= set(w.flags_only),
        w.unsafe_static_principal is None or who.unsafe_static == w.unsafe_static_principal,
    ]
    return all(checks)


@settings(max_examples=300, deadline=None)
@given(rules=rule_sets(), call=call_strategy)
def test_the_verdict_is_the_strongest_matching_verdict_or_default_deny(
    rules: list[Rule], call: CallFacts
) -> None:
    decision = evaluate(policy(*rules), call)
    matched = [r for r in rules if oracle_matches(r, call)]
    assert decision.matched == tuple(r.id for r in matched)
    if not matched:
        assert (decision.verdict, decision.rule_id) == (Verdict.DENY, DEFAULT_DENY_RULE)
        return
    strongest = max(matched, key=lambda r: VERDICT_PRECEDENCE[r.verdict])
    assert decision.verdict is strongest.verdict
    first = next(r for r in matched if r.verdict is strongest.verdict)
    assert decision.rule_id == first.id


@settings(max_examples=200, deadline=None)
@given(rules=rule_sets(), call=call_strategy, where=st.integers(min_value=0, max_value=6))
def test_adding_a_matching_deny_rule_always_denies(rules: list[Rule], call: CallFacts, where: int) -> None:
    extra = rule("extra-deny", "deny")
    rules.insert(min(where, len(rules)), extra)
    decision = evaluate(policy(*rules), call)
    assert decision.verdict is Verdict.DENY
    assert decision.rule_id != DEFAULT_DENY_RULE


@settings(max_examples=200, deadline=None)
@given(rules=rule_sets(), call=call_strategy, when=when_strategy, where=st.integers(min_value=0, max_value=6))
def test_adding_an_allow_rule_never_changes_a_deny_by_rule(
    rules: list[Rule], call: CallFacts, when: dict[str, Any], where: int
) -> None:
    before = evaluate(policy(*rules), call)
    rules.insert(min(where, len(rules)), rule("extra-allow", "allow", **when))
    after = evaluate(policy(*rules), call)
    if before.verdict is Verdict.DENY and before.rule_id != DEFAULT_DENY_RULE:
        assert (after.verdict, after.rule_id) == (before.verdict, before.rule_id)
    assert VERDICT_PRECEDENCE[after.verdict] >= VERDICT_PRECEDENCE[before.verdict] or (
        before.rule_id == DEFAULT_DENY_RULE
    )


# ------------------------------------------------------------------------------- review (four-eyes)

REVIEW_RULE = """\
version: 1
rules:
  - id: deletes-need-review
    description: Deletes need a DBA
    verdict: review
    review: {approver_groups: [dba], quorum: 2, ttl_seconds: 600}
    when: {effects: [write]}
"""


def test_a_review_rule_carries_its_approver_settings_into_the_decision() -> None:
    decision = evaluate(load_policy_text(REVIEW_RULE, source="team.yaml"), facts(effect="write"))
    assert decision.verdict is Verdict.REVIEW
    assert decision.review is not None
    assert (decision.review.approver_groups, decision.review.quorum, decision.review.ttl_seconds) == (
        ("dba",),
        2,
        600,
    )


def test_a_review_verdict_without_a_review_block_is_rejected() -> None:
    text = REVIEW_RULE.replace("    review: {approver_groups: [dba], quorum: 2, ttl_seconds: 600}\n", "")
    assert "verdict 'review' needs a 'review' block" in config_error(text)


def test_a_review_block_naming_nobody_is_rejected() -> None:
    text = REVIEW_RULE.replace("approver_groups: [dba], ", "")
    assert "nobody can approve" in config_error(text)


def test_a_review_block_on_another_verdict_is_rejected() -> None:
    text = REVIEW_RULE.replace("verdict: review", "verdict: allow")
    assert "only allowed with verdict 'review'" in config_error(text)


def test_review_beats_confirm_and_allow_but_deny_beats_review() -> None:
    call = facts(effect="write")
    assert (
        evaluate(policy(rule("a", "allow"), rule("c", "confirm"), rule("r", "review")), call).rule_id == "r"
    )
    assert evaluate(policy(rule("r", "review"), rule("d", "deny")), call).rule_id == "d"


def test_a_review_decision_names_the_rule_as_written_so_an_edit_is_detectable() -> None:
    call = facts(effect="write")
    before = evaluate(load_policy_text(REVIEW_RULE, source="team.yaml"), call)
    after = evaluate(
        load_policy_text(REVIEW_RULE.replace("quorum: 2", "quorum: 3"), source="team.yaml"), call
    )
    assert before.rule_id == after.rule_id
    assert before.rule_digest is not None
    assert before.rule_digest.startswith("sha256:")
    assert before.rule_digest != after.rule_digest
    assert evaluate(policy(rule("a", "allow")), call).rule_digest is None


# ------------------------------------------------------------------------------------ git refs


def push(*refs: str, flags: tuple[str, ...] = ()) -> CallFacts:
    base = facts(tool="git_push", connection="app", effect="write", relations_read=(), flags=flags)
    return base.model_copy(update={"plan": base.plan.model_copy(update={"refs": refs})})


def test_refs_hold_only_when_every_written_ref_matches() -> None:
    assert matches({"refs": ["refs/heads/feature/*"]}, push("refs/heads/feature/a"))
    assert not matches({"refs": ["refs/heads/feature/*"]}, push("refs/heads/main"))
    assert matches({"refs": ["refs/heads/feature/*"]}, facts())  # vacuous for calls writing no ref


def test_refs_any_holds_when_one_written_ref_matches() -> None:
    assert matches({"refs_any": ["refs/heads/main"]}, push("refs/heads/main"))
    assert not matches({"refs_any": ["refs/heads/main"]}, push("refs/heads/main-old"))
    assert not matches({"refs_any": ["refs/heads/main"]}, facts())


@pytest.mark.parametrize("flag", ["force_push", "ref_delete", "tag_overwrite"])
@pytest.mark.parametrize("verdict", ["allow", "confirm"])
def test_history_rewrites_are_never_merely_allowed_or_confirmed(flag: str, verdict: str) -> None:
    decision = evaluate(
        policy(rule("broad", verdict, tools=["git_push"])), push("refs/heads/x", flags=(flag,))
    )
    assert decision.verdict is Verdict.DENY
    assert decision.rule_id == "git.needs_review"
    assert "broad" in decision.reason
    assert decision.matched == ("broad",)


def test_a_review_rule_admits_history_rewrites_and_deny_still_wins() -> None:
    flagged = push("refs/heads/x", flags=("force_push",))
    held = evaluate(
        policy(rule("broad", tools=["git_push"]), rule("rewrites", "review", flags_any=["force_push"])),
        flagged,
    )
    assert (held.verdict, held.rule_id) == (Verdict.REVIEW, "rewrites")
    denied = evaluate(
        policy(rule("rewrites", "review"), rule("no", "deny", flags_any=["force_push"])), flagged
    )
    assert (denied.verdict, denied.rule_id) == (Verdict.DENY, "no")


def test_the_review_only_rule_id_is_reserved() -> None:
    message = config_error("version: 1\nrules:\n  - {id: git.needs_review, description: x, verdict: allow}\n")
    assert "reserved" in message


@settings(max_examples=200)
@given(
    verdicts=st.lists(st.sampled_from(["allow", "confirm", "review", "deny"]), min_size=0, max_size=5),
    flags=st.sets(st.sampled_from(["force_push", "ref_delete", "tag_overwrite", "new_ref", "tag_push"])),
)
def test_a_plan_with_a_review_only_flag_is_never_allowed_or_confirmed(
    verdicts: list[str], flags: set[str]
) -> None:
    rules = [rule(f"r{i}", v) for i, v in enumerate(verdicts)]
    decision = evaluate(policy(*rules), push("refs/heads/x", flags=tuple(sorted(flags))))
    if flags & {"force_push", "ref_delete", "tag_overwrite"}:
        assert decision.verdict in (Verdict.REVIEW, Verdict.DENY)
