"""Every shipped example and policy preset loads with the real loaders.

``examples/`` holds agent configurations, a server configuration, a team policy and a CI workflow;
``policies/`` exposes the shipped presets. Each file is checked with the code that will read it in
production (``load_config``, ``load_policy_files``, the CLI's own argument parser). A file added to
``examples/`` without a check here fails ``test_every_example_is_covered``.
"""

from __future__ import annotations

import json
import os
import re
import shlex
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from hoop_mcp.cli import _parser
from hoop_mcp.config import load_config
from hoop_mcp.core.errors import ConfigError
from hoop_mcp.core.policy import load_policy_files
from hoop_mcp.runtime import load_policy_for

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
PACKAGE_PRESETS = ROOT / "src" / "hoop_mcp" / "policies"
ROOT_POLICIES = ROOT / "policies"

SERVER_CONFIGS = ("hoop-mcp.yaml",)
POLICIES = ("policy-analysts.yaml",)
REVIEW_POLICIES = ("policy-four-eyes.yaml",)
GIT_POLICIES = ("policy-git.yaml",)
KUBE_POLICIES = ("policy-kubernetes.yaml",)
CLIENT_JSON = ("claude_desktop_config.json", "vscode-mcp.json")
MARKDOWN = ("claude-code.md",)
WORKFLOWS = ("ci-workflow.yaml",)
COVERED = {
    *SERVER_CONFIGS,
    *POLICIES,
    *REVIEW_POLICIES,
    *GIT_POLICIES,
    *KUBE_POLICIES,
    *CLIENT_JSON,
    *MARKDOWN,
    *WORKFLOWS,
}

HEREDOC = re.compile(
    r"^cat > \"?(?P<target>[^\"\s]+)\"? <<'EOF'\n(?P<body>.*?)^EOF$", re.MULTILINE | re.DOTALL
)


def _example_files() -> list[str]:
    return sorted(p.name for p in EXAMPLES.iterdir() if p.is_file() and not p.name.startswith("."))


def test_every_example_is_covered() -> None:
    files = set(_example_files())
    assert files, "examples/ is empty"
    assert files - COVERED == set(), "examples without a test in tests/test_examples.py"
    assert COVERED - files == set(), "tests name examples that do not exist"


# -- server configuration and policy ---------------------------------------------------------------


@pytest.mark.parametrize("name", SERVER_CONFIGS)
def test_server_config_loads_with_its_policies(name: str) -> None:
    path = EXAMPLES / name
    config = load_config(path)
    assert config.version == 1
    assert config.identity.oidc is not None
    assert config.identity.token is not None
    assert config.identity.unsafe_static_principal is None, "a production example must verify tokens"
    assert len(config.connections) >= 2
    for conn in config.connections.values():
        if conn.kind == "postgres":
            assert conn.read_role, "production examples read through a least-privilege role"
        else:
            assert conn.token is not None or conn.ssh_key is not None
    policy = load_policy_for(config, path.resolve())
    assert policy.rules


@pytest.mark.parametrize("name", POLICIES)
def test_policy_example_loads(name: str) -> None:
    policy = load_policy_files([EXAMPLES / name])
    verdicts = {str(rule.verdict) for rule in policy.rules}
    assert {"allow", "confirm", "deny"} <= verdicts
    assert policy.masking.columns


@pytest.mark.parametrize("name", REVIEW_POLICIES)
def test_four_eyes_example_holds_customer_changes_for_a_dba_and_keeps_team_denials(name: str) -> None:
    from hoop_mcp.core.models import Plan, Principal, Verdict
    from hoop_mcp.core.policy import CallFacts, evaluate

    policy = load_policy_files([EXAMPLES / "policy-analysts.yaml", EXAMPLES / name])
    engineer = Principal(subject="ana", issuer="https://login.example.com", groups=("engineers",))
    change = Plan(effect="write", command="UPDATE", relations_written=("public.customers",))
    decision = evaluate(
        policy, CallFacts(tool="query_db", connection="shop", principal=engineer, plan=change)
    )
    assert decision.verdict is Verdict.REVIEW
    assert decision.rule_id == "customer-data-needs-a-dba"
    assert decision.review is not None
    assert decision.review.approver_groups == ("dba",)
    orders = change.model_copy(update={"relations_written": ("public.orders",)})
    plain = evaluate(policy, CallFacts(tool="query_db", connection="shop", principal=engineer, plan=orders))
    assert plain.verdict is Verdict.CONFIRM  # the team policy's confirmed writes are unchanged
    ddl = Plan(effect="ddl", command="DROP", relations_written=("public.customers",))
    denied = evaluate(policy, CallFacts(tool="query_db", connection="shop", principal=engineer, plan=ddl))
    assert denied.verdict is Verdict.DENY  # deny still beats review


@pytest.mark.parametrize("name", KUBE_POLICIES)
def test_kubernetes_example_frees_staging_confirms_elsewhere_and_reviews_escalation(name: str) -> None:
    from hoop_mcp.core.models import Plan, Principal, Verdict
    from hoop_mcp.core.policy import CallFacts, evaluate

    policy = load_policy_files([EXAMPLES / name])
    agent = Principal(subject="agent-7", issuer="https://login.example.com", groups=("ai-agents",))

    def decide(tool: str, effect: str, namespaces: tuple[str, ...], *flags: str) -> tuple[Verdict, str]:
        plan = Plan(effect=effect, command="APPLY", namespaces=namespaces, kinds=("Deployment",), flags=flags)
        d = evaluate(policy, CallFacts(tool=tool, connection="prod", principal=agent, plan=plan))
        return d.verdict, d.rule_id

    assert decide("kubectl_apply", "write", ("staging",)) == (Verdict.ALLOW, "k8s-staging-applies")
    assert decide("kubectl_apply", "write", ("staging-eu",)) == (Verdict.ALLOW, "k8s-staging-applies")
    assert decide("kubectl_apply", "write", ("shop",)) == (Verdict.CONFIRM, "k8s-production-applies")
    assert decide("kubectl_apply", "write", ("staging", "shop")) == (
        Verdict.CONFIRM,
        "k8s-production-applies",
    )
    assert decide("kubectl_apply", "write", ("staging",), "secret_write") == (
        Verdict.CONFIRM,
        "k8s.needs_confirmation",
    )
    assert decide("kubectl_apply", "write", ("shop",), "rbac", "rbac_escalation") == (
        Verdict.REVIEW,
        "k8s-escalation",
    )
    assert decide("kubectl_apply", "write", ("shop",), "crd", "cluster_scoped") == (
        Verdict.REVIEW,
        "k8s-escalation",
    )
    assert decide("kubectl_apply", "write", (), "cluster_scoped") == (Verdict.DENY, "default-deny")
    assert decide("kubectl_apply", "read", ("shop",)) == (Verdict.ALLOW, "k8s-dry-run-apply")
    assert decide("kubectl_diff", "read", ("kube-system",)) == (Verdict.ALLOW, "k8s-reads")
    assert decide("kubectl_delete", "write", ("shop",), "delete") == (Verdict.CONFIRM, "k8s-deletes")


@pytest.mark.parametrize("name", GIT_POLICIES)
def test_git_example_frees_feature_branches_and_holds_main_and_history_rewrites(name: str) -> None:
    from hoop_mcp.core.models import Plan, Principal, Verdict
    from hoop_mcp.core.policy import CallFacts, evaluate

    policy = load_policy_files([EXAMPLES / name])
    agent = Principal(subject="agent-7", issuer="https://login.example.com", groups=("ai-agents",))

    def decide(ref: str, *flags: str) -> tuple[Verdict, str]:
        plan = Plan(effect="write", command="PUSH", refs=(ref,), flags=flags)
        d = evaluate(policy, CallFacts(tool="git_push", connection="app", principal=agent, plan=plan))
        return d.verdict, d.rule_id

    assert decide("refs/heads/feature/login") == (Verdict.ALLOW, "feature-pushes")
    assert decide("refs/heads/feature/login", "new_ref") == (Verdict.ALLOW, "feature-pushes")
    assert decide("refs/heads/main") == (Verdict.REVIEW, "protected-branches")
    assert decide("refs/heads/release/2.0") == (Verdict.REVIEW, "protected-branches")
    assert decide("refs/heads/feature/login", "force_push") == (Verdict.REVIEW, "history-rewrites")
    assert decide("refs/heads/feature/old", "ref_delete") == (Verdict.REVIEW, "history-rewrites")
    assert decide("refs/tags/v1", "tag_push", "new_ref") == (Verdict.DENY, "no-tags-from-agents")
    assert decide("refs/heads/experiments/x") == (Verdict.DENY, "default-deny")
    read = Plan(effect="read", command="PUSH")
    outgoing = evaluate(policy, CallFacts(tool="git_outgoing", connection="app", principal=agent, plan=read))
    assert outgoing.verdict is Verdict.ALLOW


def test_the_example_config_configures_approvals_for_its_review_rules() -> None:
    config = load_config(EXAMPLES / "hoop-mcp.yaml")
    assert config.approvals is not None
    assert config.approvals.agents.subjects or config.approvals.agents.groups
    assert config.approvals.link_base == "https://hoop.example.com"
    assert {hook.format for hook in config.approvals.webhooks} == {"slack", "json"}


# -- agent client configurations -------------------------------------------------------------------


def _hoop_args(command: str, args: list[str]) -> list[str]:
    """The arguments after the hoop-mcp executable (or ``python -m hoop_mcp.cli``)."""
    if Path(command).name == "hoop-mcp":
        return args
    if args[:2] == ["-m", "hoop_mcp.cli"]:
        return args[2:]
    raise AssertionError(f"{command!r} does not start hoop-mcp")


def _assert_serve(argv: list[str]) -> None:
    assert argv[:1] == ["serve"], argv
    assert "--config" in argv, argv
    ns = _parser().parse_args(argv)
    assert ns.command == "serve"
    assert ns.config.is_absolute(), "client configs should give an absolute --config path"


@pytest.mark.parametrize("name", CLIENT_JSON)
def test_client_json_starts_hoop_mcp_serve(name: str) -> None:
    data = json.loads((EXAMPLES / name).read_text(encoding="utf-8"))
    servers = data.get("mcpServers") or data.get("servers")
    assert isinstance(servers, dict), "no MCP server defined"
    assert servers, "no MCP server defined"
    for server in servers.values():
        assert server.get("type", "stdio") == "stdio"
        _assert_serve(_hoop_args(server["command"], list(server["args"])))
        assert not server.get("env"), "secrets belong in the hoop-mcp config as references, not here"


def _shell_lines(markdown: str) -> Iterator[str]:
    for block in re.findall(r"```(?:sh|bash|console)\n(.*?)```", markdown, re.DOTALL):
        yield from block.replace("\\\n", " ").splitlines()


@pytest.mark.parametrize("name", MARKDOWN)
def test_markdown_command_line_parses(name: str) -> None:
    lines = [
        ln for ln in _shell_lines((EXAMPLES / name).read_text(encoding="utf-8")) if "claude mcp add" in ln
    ]
    assert lines, "no `claude mcp add` command in the example"
    for line in lines:
        words = shlex.split(line)
        assert words[:3] == ["claude", "mcp", "add"]
        server = words[words.index("--") + 1 :]
        _assert_serve(_hoop_args(server[0], server[1:]))


def test_markdown_other_hoop_commands_parse() -> None:
    for line in _shell_lines((EXAMPLES / "claude-code.md").read_text(encoding="utf-8")):
        words = shlex.split(line)
        if words[:1] == ["hoop-mcp"]:
            _parser().parse_args(words[1:])


# -- CI workflow -----------------------------------------------------------------------------------


def _workflow() -> dict[Any, Any]:
    data = yaml.safe_load((EXAMPLES / "ci-workflow.yaml").read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def _run_scripts() -> list[str]:
    return [step["run"] for job in _workflow()["jobs"].values() for step in job["steps"] if "run" in step]


def _heredocs() -> dict[str, str]:
    docs: dict[str, str] = {}
    for script in _run_scripts():
        for m in HEREDOC.finditer(script):
            docs[Path(m["target"]).name] = m["body"]
    return docs


def test_ci_workflow_runs_hoop_mcp_serve_over_stdio() -> None:
    wf = _workflow()
    assert wf["permissions"]["id-token"] == "write"
    scripts = "\n".join(_run_scripts())
    assert "ACTIONS_ID_TOKEN_REQUEST_URL" in scripts
    assert "ACTIONS_ID_TOKEN_REQUEST_TOKEN" in scripts
    assert "audience=hoop-mcp" in scripts
    assert '"serve", "--config"' in scripts
    assert 'hoop-mcp" audit verify' in scripts


def test_ci_workflow_embedded_config_and_policy_load(tmp_path: Path) -> None:
    docs = _heredocs()
    assert {"hoop-mcp.yaml", "ci-scope.yaml"} <= set(docs)
    for name, body in docs.items():
        (tmp_path / name).write_text(body, encoding="utf-8")
    # The workflow copies the shipped preset next to the config at run time.
    (tmp_path / "read-only.yaml").write_text((PACKAGE_PRESETS / "read-only.yaml").read_text(encoding="utf-8"))
    config = load_config(tmp_path / "hoop-mcp.yaml")
    assert config.identity.oidc is not None
    assert config.identity.oidc.issuer == "https://token.actions.githubusercontent.com"
    assert config.identity.oidc.audience == "hoop-mcp"
    policy = load_policy_for(config, tmp_path / "hoop-mcp.yaml")
    assert policy.rules[-1].id == "deny-other-workflows"


def test_ci_workflow_mcp_client_config_names_hoop_mcp_serve() -> None:
    script = next(s for s in _run_scripts() if "mcp.json" in s and "--mcp-config" in s)
    body = script.split("<<EOF\n", 1)[1].split("\nEOF", 1)[0].replace("$HOOP_DIR", "/tmp/hoop")
    server = json.loads(body)["mcpServers"]["hoop"]
    _assert_serve(_hoop_args(server["command"], server["args"]))


# -- policies/ -------------------------------------------------------------------------------------


def _preset_files(directory: Path) -> list[Path]:
    """YAML files under ``directory``, following symlinks (``policies/`` links to the package)."""
    found = []
    for base, _dirs, files in os.walk(directory, followlinks=True):
        found += [Path(base) / f for f in files if f.endswith(".yaml") and (Path(base) / f).is_file()]
    return sorted(found)


def test_shipped_presets_load() -> None:
    presets = _preset_files(PACKAGE_PRESETS)
    assert {p.name for p in presets} >= {"read-only.yaml", "writes-need-confirmation.yaml"}
    for preset in presets:
        assert load_policy_files([preset]).rules, preset


def test_root_policies_directory_exposes_the_presets() -> None:
    reachable = _preset_files(ROOT_POLICIES)
    dangling = [p for p in ROOT_POLICIES.rglob("*") if p.is_symlink() and not p.exists()]
    if not reachable and dangling:
        link = dangling[0]
        pytest.skip(f"policies/ holds a dangling symlink ({link.relative_to(ROOT)} -> {link.readlink()})")
    assert reachable, "policies/ exposes no policy file"
    for path in reachable:
        assert load_policy_files([path]).rules, path


def test_a_literal_secret_is_refused(tmp_path: Path) -> None:
    """The documented rule (docs/configuration.md): secrets are references, never literals."""
    text = (EXAMPLES / "hoop-mcp.yaml").read_text(encoding="utf-8")
    bad = text.replace("dsn: {env: HOOP_WAREHOUSE_DSN}", 'dsn: "host=db user=app password=hunter2"')
    assert bad != text
    (tmp_path / "bad.yaml").write_text(bad, encoding="utf-8")
    with pytest.raises(ConfigError, match=r"connections\.warehouse\.dsn") as info:
        load_config(tmp_path / "bad.yaml")
    assert "hunter2" not in str(info.value)
