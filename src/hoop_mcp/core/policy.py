"""Policy files: load and validate them, evaluate a call against them, explain the answer.

A policy is an ordered list of rules. A rule *matches* a call when every condition in its ``when``
block holds and its optional ``unless`` block does not fully hold. Among the matching rules the
verdict with the highest precedence wins (deny > review > confirm > allow); among rules with that verdict the
first one in file order decides. No matching rule means deny (rule ``default-deny``).

The format is public: see ``docs/policies.md`` and ``schemas/policy.schema.json``.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator, Sequence
from fnmatch import fnmatchcase
from importlib import resources
from pathlib import Path
from typing import Any, Literal, get_args

from pydantic import Field, StrictBool, ValidationError, field_validator, model_validator

from hoop_mcp.core.errors import ConfigError
from hoop_mcp.core.masking_config import BUILTIN_DETECTORS, MaskingPolicy
from hoop_mcp.core.models import (
    VERDICT_PRECEDENCE,
    Decision,
    FrozenModel,
    Plan,
    Principal,
    ReviewSettings,
    Verdict,
)
from hoop_mcp.core.yamlfile import MAX_YAML_BYTES, load_yaml_text, read_text_file

#: Effect classes a plan can carry (``Plan.effect`` is the most consequential one).
EffectName = Literal["read", "write", "ddl", "dcl", "session", "admin", "unknown"]
#: Risk markers a plan can carry (``Plan.flags``). Only these are accepted, so a typo fails loudly.
FlagName = Literal[
    "unbounded_write",
    "data_modifying_cte",
    "explain_analyze",
    "select_into",
    "create_table_as",
    "prepare",
    "execute",
    "copy",
    "copy_program",
    "server_files",
    "large_objects",
    "dblink",
    "signals",
    "replication",
    "transaction_control",
    "role_change",
    "set_config",
    "advisory_lock",
    "sequence_write",
    "notify",
    "lock",
    "maintenance",
    "server_config",
    "procedural",
    "unknown_function",
    "truncate",
    "row_lock",
    "returning",
    "system_catalog",
    "merge",
    "xid_assign",
    "dynamic_sql",
    "sleep",
    # git_push
    "new_ref",
    "force_push",
    "ref_delete",
    "tag_push",
    "tag_overwrite",
    # kubectl_apply / kubectl_delete
    "secret_write",
    "cluster_scoped",
    "rbac",
    "rbac_escalation",
    "admission_webhook",
    "crd",
    "pod_security_restricted",
    "scale_to_zero",
    "delete",
]
KNOWN_EFFECTS: tuple[str, ...] = get_args(EffectName)
KNOWN_FLAGS: tuple[str, ...] = get_args(FlagName)

#: Flags whose calls can never be merely allowed or confirmed: a rule that would allow or confirm
#: them is overridden by a deny (rule ``REVIEW_ONLY_RULE``) unless a ``review`` rule decides.
REVIEW_ONLY_FLAGS: tuple[str, ...] = (
    "force_push",
    "ref_delete",
    "tag_overwrite",
    "rbac_escalation",
    "admission_webhook",
    "crd",
)
REVIEW_ONLY_RULE = "git.needs_review"
K8S_REVIEW_ONLY_RULE = "k8s.needs_review"
#: Flags whose calls are never merely allowed: an allow becomes a confirmation (rule
#: ``CONFIRM_FLOOR_RULE``); confirm, review and deny stand.
CONFIRM_FLOOR_FLAGS: tuple[str, ...] = ("secret_write", "scale_to_zero", "delete")
CONFIRM_FLOOR_RULE = "k8s.needs_confirmation"
_RESERVED_RULES = (REVIEW_ONLY_RULE, K8S_REVIEW_ONLY_RULE, CONFIRM_FLOOR_RULE)
_GIT_FLAGS = ("force_push", "ref_delete", "tag_overwrite")

#: Rule id of the implicit last rule: nothing matched, so the call is denied.
DEFAULT_DENY_RULE = "default-deny"
#: Policy files larger than this are refused before parsing.
MAX_POLICY_BYTES = MAX_YAML_BYTES
#: Presets shipped in ``hoop_mcp/policies``.
PRESETS: tuple[str, ...] = ("read-only", "writes-need-confirmation")

_RULE_ID_PATTERN = r"^[a-z0-9][a-z0-9._-]*$"
_RULE_ID_RE = re.compile(_RULE_ID_PATTERN)

Patterns = tuple[str, ...]


def _patterns(description: str) -> Any:
    return Field(default=None, min_length=1, description=description)


class RuleMatch(FrozenModel):
    """Conditions of a rule (``when`` / ``unless``): every given condition must hold; omitted = any.

    String lists are glob patterns (``fnmatch``: ``*``, ``?``, ``[abc]``; case-sensitive).
    """

    tools: Patterns | None = _patterns("The tool name matches one of these patterns.")
    connections: Patterns | None = _patterns(
        "The call's connection matches one of these patterns (never holds for calls without a connection)."
    )
    subjects: Patterns | None = _patterns("The principal's subject matches one of these patterns.")
    groups: Patterns | None = _patterns("The principal has ANY group matching one of these patterns.")
    effects: tuple[EffectName, ...] | None = Field(
        default=None,
        min_length=1,
        description="The plan's effect (the most consequential one) is one of these.",
    )
    relations: Patterns | None = _patterns(
        "ALL relations the call touches match one of these patterns (holds when it touches none)."
    )
    relations_any: Patterns | None = _patterns("ANY relation the call touches matches one of these patterns.")
    functions_any: Patterns | None = _patterns("ANY function the call uses matches one of these patterns.")
    refs: Patterns | None = _patterns(
        "ALL git refs the call writes match one of these patterns, e.g. 'refs/heads/feature/*' "
        "(holds when it writes none: combine with tools)."
    )
    refs_any: Patterns | None = _patterns(
        "ANY git ref the call writes matches one of these patterns, e.g. 'refs/heads/main' "
        "(protected branches)."
    )
    namespaces: Patterns | None = _patterns(
        "ALL Kubernetes namespaces the call touches match one of these patterns (holds when it "
        "touches none: combine with tools)."
    )
    namespaces_any: Patterns | None = _patterns(
        "ANY Kubernetes namespace the call touches matches one of these patterns, e.g. 'prod-*'."
    )
    kinds: Patterns | None = _patterns(
        "ALL Kubernetes kinds the call touches match one of these patterns, e.g. 'Deployment' "
        "(holds when it touches none)."
    )
    kinds_any: Patterns | None = _patterns(
        "ANY Kubernetes kind the call touches matches one of these patterns, e.g. 'Secret'."
    )
    flags_any: tuple[FlagName, ...] | None = Field(
        default=None, min_length=1, description="The plan has ANY of these flags."
    )
    flags_none: tuple[FlagName, ...] | None = Field(
        default=None, min_length=1, description="The plan has NONE of these flags."
    )
    flags_only: tuple[FlagName, ...] | None = Field(
        default=None,
        min_length=1,
        description="Every flag the plan has is one of these (holds when it has none). An allow-list: "
        "flags this policy has never heard of make the condition fail.",
    )
    unsafe_static_principal: StrictBool | None = Field(
        default=None, description="The principal is (true) or is not (false) an unsafe static principal."
    )

    @property
    def is_empty(self) -> bool:
        return all(getattr(self, name) is None for name in type(self).model_fields)


class Rule(FrozenModel):
    """One policy rule."""

    id: str = Field(
        pattern=_RULE_ID_PATTERN,
        max_length=100,
        description="Unique id, named in every decision and audit record.",
    )
    description: str = Field(min_length=1, max_length=1000, description="What the rule is for.")
    verdict: Verdict = Field(
        description="allow, confirm (the user running the client confirms), review (a different, "
        "authenticated human approves; see docs/approvals.md) or deny."
    )
    reason: str | None = Field(
        default=None,
        min_length=1,
        max_length=1000,
        description="Text shown to the agent / approver when this rule decides (default: description).",
    )
    when: RuleMatch = Field(default_factory=RuleMatch, description="Conditions; omitted = every call.")
    unless: RuleMatch | None = Field(
        default=None, description="Exception: the rule does not match when every condition given here holds."
    )
    review: ReviewSettings | None = Field(
        default=None,
        description="Required with verdict 'review' (and only then): who may approve, quorum, expiry.",
    )

    @field_validator("id")
    @classmethod
    def _not_reserved(cls, value: str) -> str:
        if value == DEFAULT_DENY_RULE:
            raise ValueError(f"'{DEFAULT_DENY_RULE}' is reserved for the implicit last rule")
        if value in _RESERVED_RULES:
            raise ValueError(f"'{value}' is reserved for a built-in check")
        return value

    @field_validator("unless")
    @classmethod
    def _unless_not_empty(cls, value: RuleMatch | None) -> RuleMatch | None:
        if value is not None and value.is_empty:
            raise ValueError(
                "an empty 'unless' would disable the rule; give at least one condition or omit it"
            )
        return value

    @model_validator(mode="after")
    def _review_block(self) -> Rule:
        if self.verdict is Verdict.REVIEW and self.review is None:
            raise ValueError(
                f"rule {self.id!r}: verdict 'review' needs a 'review' block naming who may approve "
                "(approver_groups or approver_subjects)"
            )
        if self.verdict is not Verdict.REVIEW and self.review is not None:
            raise ValueError(f"rule {self.id!r}: a 'review' block is only allowed with verdict 'review'")
        return self

    @property
    def effective_reason(self) -> str:
        return self.reason or self.description


class Policy(FrozenModel):
    """A whole policy: ordered rules plus masking settings."""

    version: Literal[1] = Field(description="Format version; must be 1.")
    rules: tuple[Rule, ...] = Field(description="Ordered rules. An empty list denies everything.")
    masking: MaskingPolicy = Field(default_factory=MaskingPolicy, description="How results are masked.")

    @field_validator("version", mode="before")
    @classmethod
    def _version_is_int(cls, value: Any) -> Any:
        if type(value) is not int:
            raise ValueError(f"must be the integer 1, got {value!r}")
        return value

    @model_validator(mode="after")
    def _unique_ids(self) -> Policy:
        seen: set[str] = set()
        for index, rule in enumerate(self.rules):
            if rule.id in seen:
                raise ValueError(f"rules[{index}].id: duplicate rule id {rule.id!r}")
            seen.add(rule.id)
        return self


class CallFacts(FrozenModel):
    """Everything policy looks at for one call."""

    tool: str
    connection: str | None
    principal: Principal
    plan: Plan


#: One checked condition: (condition name, whether it held, why).
Condition = tuple[str, bool, str]


class RuleTrace(FrozenModel):
    """How one rule fared against a call (for ``policy explain``)."""

    rule_id: str
    verdict: Verdict
    matched: bool
    conditions: tuple[Condition, ...]


# --------------------------------------------------------------------------------------------- loading


def _loc_path(loc: Sequence[int | str]) -> str:
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path or "(top level)"


def _model_at(loc: Sequence[int | str]) -> type[FrozenModel] | None:
    """The model class whose keys live at ``loc`` (for listing allowed keys), if any."""
    current: Any = Policy
    for part in loc:
        if isinstance(part, int):
            continue
        if (
            not (isinstance(current, type) and issubclass(current, FrozenModel))
            or part not in current.model_fields
        ):
            return None
        annotation = current.model_fields[part].annotation
        current = None
        stack = [annotation]
        while stack:
            candidate = stack.pop()
            if isinstance(candidate, type) and issubclass(candidate, FrozenModel):
                current = candidate
                break
            stack.extend(get_args(candidate))
    return current if isinstance(current, type) and issubclass(current, FrozenModel) else None


def _describe_error(error: Any) -> str:
    loc = tuple(error["loc"])
    kind = error["type"]
    value = error.get("input")
    if kind == "extra_forbidden":
        model = _model_at(loc[:-1])
        allowed = f" (allowed: {', '.join(model.model_fields)})" if model else ""
        return f"{_loc_path(loc)}: unknown key{allowed}"
    if kind in ("literal_error", "enum"):
        return f"{_loc_path(loc)}: {value!r} is not one of {error['ctx']['expected']}"
    if kind == "too_short" and value == []:
        return f"{_loc_path(loc)}: must not be empty (omit the key to match any value)"
    if kind == "missing":
        return f"{_loc_path(loc)}: required key is missing"
    message = str(error["msg"]).removeprefix("Value error, ")
    if kind == "value_error" and re.match(r"^rules\[\d+\]\.", message):
        return message
    return f"{_loc_path(loc)}: {message}"


def load_policy_text(text: str, *, source: str) -> Policy:
    """Parse and validate one policy document. ``source`` names it in errors (a path or preset name)."""
    data = load_yaml_text(text, source=source, what="policy file")
    if not isinstance(data, dict):
        raise ConfigError(
            f"{source}: the top level must be a mapping ('version', 'rules'), not {type(data).__name__}",
            details={"file": source},
        )
    try:
        return Policy.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors()
        # A list whose items all failed also reports "too short"; the item errors say it better.
        parents = {tuple(e["loc"][:-1]) for e in errors if e["loc"] and isinstance(e["loc"][-1], int)}
        problems = [
            _describe_error(e)
            for e in errors
            if not (e["type"] == "too_short" and tuple(e["loc"]) in parents)
        ]
        raise ConfigError(
            f"{source}: " + "; ".join(problems),
            hint="see docs/policies.md for the policy file format",
            details={"file": source, "errors": len(problems)},
        ) from exc


def _read_file(path: Path) -> str:
    return read_text_file(path, what="policy file")


def _merge_scalar(parts: Sequence[tuple[str, MaskingPolicy]], name: str) -> Any:
    explicit = [
        (source, getattr(masking, name)) for source, masking in parts if name in masking.model_fields_set
    ]
    values = {value for _, value in explicit}
    if len(values) > 1:
        listing = ", ".join(f"{source}: {value!r}" for source, value in explicit)
        raise ConfigError(f"masking.{name} is set differently in several policy files ({listing})")
    return explicit[0][1] if explicit else MaskingPolicy.model_fields[name].default


def _merge_masking(parts: Sequence[tuple[str, MaskingPolicy]]) -> MaskingPolicy:
    columns: dict[tuple[str, str | None], str] = {}
    entities: dict[str, str] = {}
    for source, masking in parts:
        for index, column in enumerate(masking.columns):
            key = (column.column, column.connection)
            if key in columns:
                raise ConfigError(
                    f"{source}: masking.columns[{index}]: column {column.column!r} is already masked "
                    f"in {columns[key]}"
                )
            columns[key] = source
        for index, entity in enumerate(masking.custom_entities):
            if entity.name in entities:
                raise ConfigError(
                    f"{source}: masking.custom_entities[{index}]: entity {entity.name!r} is already "
                    f"defined in {entities[entity.name]}"
                )
            entities[entity.name] = source
    chosen = [set(m.detectors) for _, m in parts if "detectors" in m.model_fields_set]
    detectors = set().union(*chosen) if chosen else set(BUILTIN_DETECTORS)
    return MaskingPolicy(
        columns=tuple(c for _, m in parts for c in m.columns),
        detectors=tuple(d for d in BUILTIN_DETECTORS if d in detectors),
        detector_strategy=_merge_scalar(parts, "detector_strategy"),
        custom_entities=tuple(e for _, m in parts for e in m.custom_entities),
        unsafe_allow_masked_column_predicates=_merge_scalar(parts, "unsafe_allow_masked_column_predicates"),
    )


def merge_policies(parts: Sequence[tuple[str, Policy]]) -> Policy:
    """Concatenate rules in order and merge masking sections; ``parts`` pairs each policy with its source."""
    owners: dict[str, str] = {}
    for source, policy in parts:
        for index, rule in enumerate(policy.rules):
            if rule.id in owners:
                raise ConfigError(
                    f"{source}: rules[{index}].id: duplicate rule id {rule.id!r} "
                    f"(already defined in {owners[rule.id]})",
                    details={"file": source},
                )
            owners[rule.id] = source
    return Policy(
        version=1,
        rules=tuple(rule for _, policy in parts for rule in policy.rules),
        masking=_merge_masking([(source, policy.masking) for source, policy in parts]),
    )


def load_policy_files(paths: Sequence[Path]) -> Policy:
    """Load and merge several policy files in order (see docs/policies.md, "Several files")."""
    if not paths:
        raise ConfigError("no policy file given")
    parts = [(str(path), load_policy_text(_read_file(path), source=str(path))) for path in paths]
    return merge_policies(parts)


def load_preset(name: str) -> Policy:
    """Load a shipped preset (``read-only`` or ``writes-need-confirmation``)."""
    if name not in PRESETS:
        raise ConfigError(f"unknown policy preset {name!r}; available: {', '.join(PRESETS)}")
    resource = resources.files("hoop_mcp").joinpath("policies", f"{name}.yaml")
    return load_policy_text(resource.read_text(encoding="utf-8"), source=f"preset:{name}")


# ------------------------------------------------------------------------------------------ evaluation


def _matching(values: Sequence[str], patterns: Sequence[str]) -> list[str]:
    return [value for value in values if any(fnmatchcase(value, pattern) for pattern in patterns)]


def _fmt(values: Sequence[str]) -> str:
    return "[" + ", ".join(values) + "]"


def _check_any(name: str, what: str, values: Sequence[str], patterns: Sequence[str]) -> Condition:
    hits = _matching(values, patterns)
    if hits:
        return (name, True, f"{what} {_fmt(hits)} match {_fmt(patterns)}")
    return (name, False, f"no {what} in {_fmt(values)} matches {_fmt(patterns)}")


def _conditions(match: RuleMatch, facts: CallFacts) -> Iterator[Condition]:
    plan, principal = facts.plan, facts.principal
    if match.tools is not None:
        held = bool(_matching([facts.tool], match.tools))
        yield (
            "tools",
            held,
            f"tool {facts.tool!r} {'matches' if held else 'does not match'} {_fmt(match.tools)}",
        )
    if match.connections is not None:
        if facts.connection is None:
            yield ("connections", False, "the call has no connection")
        else:
            held = bool(_matching([facts.connection], match.connections))
            verb = "matches" if held else "does not match"
            yield ("connections", held, f"connection {facts.connection!r} {verb} {_fmt(match.connections)}")
    if match.subjects is not None:
        held = bool(_matching([principal.subject], match.subjects))
        verb = "matches" if held else "does not match"
        yield ("subjects", held, f"subject {principal.subject!r} {verb} {_fmt(match.subjects)}")
    if match.groups is not None:
        yield _check_any("groups", "groups", principal.groups, match.groups)
    if match.effects is not None:
        held = plan.effect in match.effects
        yield (
            "effects",
            held,
            f"effect {plan.effect!r} is {'' if held else 'not '}one of {_fmt(match.effects)}",
        )
    if match.relations is not None:
        relations = plan.relations
        outside = [r for r in relations if r not in _matching(relations, match.relations)]
        if not relations:
            yield ("relations", True, "the call touches no relation")
        elif outside:
            yield ("relations", False, f"relations {_fmt(outside)} do not match {_fmt(match.relations)}")
        else:
            yield ("relations", True, f"all relations {_fmt(relations)} match {_fmt(match.relations)}")
    if match.relations_any is not None:
        yield _check_any("relations_any", "relations", plan.relations, match.relations_any)
    if match.functions_any is not None:
        yield _check_any("functions_any", "functions", plan.functions, match.functions_any)
    if match.refs is not None:
        outside = [r for r in plan.refs if r not in _matching(plan.refs, match.refs)]
        if not plan.refs:
            yield ("refs", True, "the call writes no git ref")
        elif outside:
            yield ("refs", False, f"refs {_fmt(outside)} do not match {_fmt(match.refs)}")
        else:
            yield ("refs", True, f"all refs {_fmt(plan.refs)} match {_fmt(match.refs)}")
    if match.refs_any is not None:
        yield _check_any("refs_any", "refs", plan.refs, match.refs_any)
    for name, values, patterns, what in (
        ("namespaces", plan.namespaces, match.namespaces, "namespaces"),
        ("kinds", plan.kinds, match.kinds, "kinds"),
    ):
        if patterns is None:
            continue
        outside = [v for v in values if v not in _matching(values, patterns)]
        if not values:
            yield (name, True, f"the call touches no Kubernetes {what}")
        elif outside:
            yield (name, False, f"{what} {_fmt(outside)} do not match {_fmt(patterns)}")
        else:
            yield (name, True, f"all {what} {_fmt(values)} match {_fmt(patterns)}")
    if match.namespaces_any is not None:
        yield _check_any("namespaces_any", "namespaces", plan.namespaces, match.namespaces_any)
    if match.kinds_any is not None:
        yield _check_any("kinds_any", "kinds", plan.kinds, match.kinds_any)
    if match.flags_any is not None:
        hits = [flag for flag in plan.flags if flag in match.flags_any]
        why = (
            f"flags {_fmt(hits)} present"
            if hits
            else f"none of {_fmt(match.flags_any)} in flags {_fmt(plan.flags)}"
        )
        yield ("flags_any", bool(hits), why)
    if match.flags_none is not None:
        hits = [flag for flag in plan.flags if flag in match.flags_none]
        why = (
            f"flags {_fmt(hits)} present"
            if hits
            else f"none of {_fmt(match.flags_none)} in flags {_fmt(plan.flags)}"
        )
        yield ("flags_none", not hits, why)
    if match.flags_only is not None:
        extra = [flag for flag in plan.flags if flag not in match.flags_only]
        if extra:
            why = f"flags {_fmt(extra)} are not in {_fmt(match.flags_only)}"
        elif plan.flags:
            why = f"all flags {_fmt(plan.flags)} are in {_fmt(match.flags_only)}"
        else:
            why = "the plan has no flags"
        yield ("flags_only", not extra, why)
    if match.unsafe_static_principal is not None:
        held = principal.unsafe_static == match.unsafe_static_principal
        yield (
            "unsafe_static_principal",
            held,
            f"principal is {'' if principal.unsafe_static else 'not '}an unsafe static principal",
        )


def _trace(rule: Rule, facts: CallFacts) -> RuleTrace:
    conditions = list(_conditions(rule.when, facts))
    if rule.unless is not None:
        inner = list(_conditions(rule.unless, facts))
        applies = all(held for _, held, _ in inner)
        detail = "; ".join(f"{name}: {why}" for name, held, why in inner if applies or not held)
        verb = "applies" if applies else "does not apply"
        conditions.append(("unless", not applies, f"exception {verb} ({detail})"))
    return RuleTrace(
        rule_id=rule.id,
        verdict=rule.verdict,
        matched=all(held for _, held, _ in conditions),
        conditions=tuple(conditions),
    )


def _decide(policy: Policy, facts: CallFacts, traces: Sequence[RuleTrace]) -> Decision:
    matched = [rule for rule, trace in zip(policy.rules, traces, strict=True) if trace.matched]
    if not matched:
        plan = facts.plan
        return Decision(
            verdict=Verdict.DENY,
            rule_id=DEFAULT_DENY_RULE,
            reason=(
                f"no policy rule allows this call (tool {facts.tool!r}, connection {facts.connection!r}, "
                f"effect {plan.effect!r}, flags {_fmt(plan.flags)}); everything not allowed is denied"
            ),
        )
    best = max(VERDICT_PRECEDENCE[rule.verdict] for rule in matched)
    winner = next(rule for rule in matched if VERDICT_PRECEDENCE[rule.verdict] == best)
    risky = [flag for flag in facts.plan.flags if flag in REVIEW_ONLY_FLAGS]
    if risky and winner.verdict in (Verdict.ALLOW, Verdict.CONFIRM):
        return Decision(
            verdict=Verdict.DENY,
            rule_id=REVIEW_ONLY_RULE if set(risky) <= set(_GIT_FLAGS) else K8S_REVIEW_ONLY_RULE,
            reason=(
                f"rule {winner.id!r} would {winner.verdict.value} this call, but {_fmt(risky)} can only be "
                "admitted by four-eyes review: a policy rule with verdict 'review' matching "
                f"flags_any: {_fmt(risky)} must decide it"
            ),
            matched=tuple(rule.id for rule in matched),
        )
    floor = [flag for flag in facts.plan.flags if flag in CONFIRM_FLOOR_FLAGS]
    if floor and winner.verdict is Verdict.ALLOW:
        return Decision(
            verdict=Verdict.CONFIRM,
            rule_id=CONFIRM_FLOOR_RULE,
            reason=(
                f"rule {winner.id!r} allows this call, but {_fmt(floor)} always needs the user's "
                "confirmation (or a policy rule with verdict 'review')"
            ),
            matched=tuple(rule.id for rule in matched),
        )
    return Decision(
        verdict=winner.verdict,
        rule_id=winner.id,
        reason=winner.effective_reason,
        matched=tuple(rule.id for rule in matched),
        review=winner.review,
        rule_digest=_rule_digest(winner) if winner.verdict is Verdict.REVIEW else None,
    )


def _rule_digest(rule: Rule) -> str:
    data = json.dumps(rule.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return "sha256:" + hashlib.sha256(data.encode("utf-8")).hexdigest()


def explain(policy: Policy, facts: CallFacts) -> tuple[Decision, tuple[RuleTrace, ...]]:
    """Evaluate and return, for every rule in file order, which conditions held and why."""
    traces = tuple(_trace(rule, facts) for rule in policy.rules)
    return _decide(policy, facts, traces), traces


def evaluate(policy: Policy, facts: CallFacts) -> Decision:
    """deny > review > confirm > allow; among equal verdicts the first matching rule decides; no match -> deny."""
    return explain(policy, facts)[0]


def render_explanation(decision: Decision, traces: Sequence[RuleTrace]) -> str:
    """Human-readable explanation, as printed by ``hoop-mcp policy explain``."""
    lines = [
        f"verdict: {decision.verdict.value.upper()}",
        f"decided by: {decision.rule_id}",
        f"reason: {decision.reason}",
        f"matching rules (file order): {', '.join(decision.matched) if decision.matched else '(none)'}",
        "",
        "rules:",
    ]
    if not traces:
        lines.append("  (the policy has no rules: every call is denied)")
    for trace in traces:
        deciding = "  <- decides" if trace.rule_id == decision.rule_id else ""
        state = "MATCH   " if trace.matched else "no match"
        lines.append(f"  {state} {trace.rule_id} ({trace.verdict.value}){deciding}")
        if not trace.conditions:
            lines.append("           (no conditions: matches every call)")
        for name, held, why in trace.conditions:
            lines.append(f"           {'ok  ' if held else 'FAIL'} {name}: {why}")
    if decision.rule_id == DEFAULT_DENY_RULE:
        lines.append(f"  MATCH    {DEFAULT_DENY_RULE} (deny)  <- decides")
        lines.append("           no rule above matched")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------ JSON Schema

SCHEMA_ID = "https://github.com/hoophq/hoop-mcp/schemas/policy.schema.json"


def policy_json_schema() -> dict[str, Any]:
    """JSON Schema (draft 2020-12) for policy files, for editors and ``schemas/policy.schema.json``."""
    schema = Policy.model_json_schema()
    masking = schema.get("$defs", {}).get("MaskingPolicy", {})
    detectors = masking.get("properties", {}).get("detectors")
    if isinstance(detectors, dict):
        detectors["items"] = {"enum": list(BUILTIN_DETECTORS), "type": "string"}
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        **schema,
        "title": "hoop-mcp policy file",
        "description": "Rules that allow, confirm or deny tool calls, plus masking. See docs/policies.md.",
    }


def render_policy_schema() -> str:
    """Text of ``schemas/policy.schema.json``; regenerate with ``python -m hoop_mcp.core.policy``."""
    return json.dumps(policy_json_schema(), indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":  # pragma: no cover - developer convenience
    import sys

    sys.stdout.write(render_policy_schema())
