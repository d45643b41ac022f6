"""kubectl_apply and the Kubernetes read tools end to end: a real MCP client (in memory), the kmock
emulator over real HTTP (every request recorded), the real audit log."""

from __future__ import annotations

import base64
import json
import sqlite3
import textwrap
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import types as mt

from tests.support.hoop import HoopSetup
from tests.support.kube import KubeEmulator, conflict_status, forbidden_status
from tests.support.kubesetup import write_kube_config
from tests.support.mcp_client import confirming as accept
from tests.support.mcp_client import connected as _client
from tests.support.mcp_client import declining as decline
from tests.support.mcp_client import tool_data as _data
from tests.support.mcp_client import tool_text as _text

pytestmark = pytest.mark.anyio

RESTRICTED_SC = """\
      securityContext:
        runAsNonRoot: true
        seccompProfile: {type: RuntimeDefault}
"""


def deployment(
    name: str = "web", namespace: str | None = "staging", replicas: int = 2, image: str = "web:1"
) -> str:
    ns = f", namespace: {namespace}" if namespace else ""
    return textwrap.dedent(
        f"""\
        apiVersion: apps/v1
        kind: Deployment
        metadata: {{name: {name}{ns}, labels: {{app: {name}}}}}
        spec:
          replicas: {replicas}
          selector: {{matchLabels: {{app: {name}}}}}
          template:
            metadata: {{labels: {{app: {name}}}}}
            spec:
              securityContext: {{runAsNonRoot: true, seccompProfile: {{type: RuntimeDefault}}}}
              containers:
                - name: {name}
                  image: {image}
                  securityContext:
                    allowPrivilegeEscalation: false
                    capabilities: {{drop: [ALL]}}
        """
    )


CONFIGMAP = """\
apiVersion: v1
kind: ConfigMap
metadata: {name: settings, namespace: staging}
data: {mode: fast}
"""


def _setup(tmp_path: Path, kube: KubeEmulator, **kwargs: Any) -> HoopSetup:
    return write_kube_config(tmp_path / "hoop", server=kube.url, token=kube.token, **kwargs)


def _audit_text(setup: HoopSetup) -> str:
    with sqlite3.connect(setup.workdir / "audit.db") as db:
        return "\n".join(str(row) for row in db.execute("SELECT * FROM audit_records"))


async def test_an_allowed_apply_dry_runs_every_object_first_then_applies_with_the_field_manager(
    tmp_path: Path, kube_emulator: KubeEmulator
) -> None:
    setup = _setup(tmp_path, kube_emulator)
    manifest = deployment() + "---\n" + CONFIGMAP
    async with _client(setup) as (client, _):
        with anyio.fail_after(30):
            data = _data(await client.call_tool("kubectl_apply", {"manifest": manifest}))
    assert data["rule_id"] == "k8s-staging-applies"
    assert [(o["object"], o["action"]) for o in data["objects"]] == [
        ("Deployment/staging/web", "created"),
        ("ConfigMap/staging/settings", "created"),
    ]
    writes = kube_emulator.writes()
    assert [(w.path.rsplit("/", 1)[-1], w.dry_run) for w in writes] == [
        ("web", True),
        ("settings", True),
        ("web", False),
        ("settings", False),
    ]
    for w in writes:
        assert w.method == "PATCH"
        assert w.is_apply
        assert w.field_manager == "hoop-mcp"
        assert "force" not in w.params
        assert w.headers["authorization"] == f"Bearer {kube_emulator.token}"
    stored = kube_emulator.get("apps/v1", "Deployment", "staging", "web")
    assert stored is not None
    assert stored["spec"]["replicas"] == 2
    # What was sent is the JSON the checks read, with the namespace reconciled.
    assert writes[0].json["metadata"]["namespace"] == "staging"


@pytest.mark.parametrize(
    ("manifest", "rule"),
    [
        (deployment(namespace="kube-system"), "k8s.namespace_denied"),
        (
            deployment().replace(
                "allowPrivilegeEscalation: false",
                "privileged: yes\n            allowPrivilegeEscalation: false",
            ),
            "k8s.pod_security.baseline",
        ),
        ("apiVersion: v1\nkind: Namespace\nmetadata: {name: team-x}\n", "k8s.cluster_scoped"),
        (
            "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\nmetadata: {name: me}\n"
            "roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: cluster-admin}\n"
            "subjects: [{kind: ServiceAccount, name: default, namespace: staging}]\n",
            "k8s.cluster_scoped",
        ),
        ("kind: ConfigMap\nmetadata: {name: x}\n", "k8s.missing_api_version"),
        ("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\ndata: {a: 1}\n", "k8s.schema_invalid"),
        ("apiVersion: apps/v1\nkind: Deploymnet\nmetadata: {name: x}\n", "k8s.unknown_kind"),
        (
            'apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\nl0: &l0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n'
            + "".join(f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]\n" for i in range(1, 9)),
            "k8s.yaml_bomb",
        ),
        ("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: [x}\n", "k8s.invalid_yaml"),
        (deployment(name="Web_1"), "k8s.invalid_name"),
    ],
)
async def test_a_refused_manifest_sends_no_request_at_all_and_is_recorded(
    tmp_path: Path, kube_emulator: KubeEmulator, manifest: str, rule: str
) -> None:
    setup = _setup(tmp_path, kube_emulator)
    async with _client(setup) as (client, runtime):
        with anyio.fail_after(30):
            result = await client.call_tool("kubectl_apply", {"manifest": manifest})
            records = [r.event for r in await runtime.audit.records()]
    assert result.is_error
    assert kube_emulator.requests == []
    assert any(r.tool == "kubectl_apply" and r.decision and r.decision.rule_id == rule for r in records), [
        (r.decision.rule_id if r.decision else None) for r in records
    ]


async def test_a_huge_manifest_is_refused_before_parsing(tmp_path: Path, kube_emulator: KubeEmulator) -> None:
    setup = _setup(tmp_path, kube_emulator)
    manifest = CONFIGMAP + "  big: " + "x" * 1_100_000 + "\n"
    async with _client(setup) as (client, _):
        with anyio.fail_after(30):
            result = await client.call_tool("kubectl_apply", {"manifest": manifest})
    assert result.is_error
    assert "k8s.too_large" in _text(result) or "too large" in _text(result).lower()
    assert kube_emulator.requests == []


async def test_a_policy_deny_sends_no_request_at_all(tmp_path: Path, kube_emulator: KubeEmulator) -> None:
    policy = "version: 1\nrules:\n  - {id: reads, description: reads only, verdict: allow, when: {effects: [read]}}\n"
    setup = _setup(tmp_path, kube_emulator, policy=policy)
    async with _client(setup) as (client, _):
        with anyio.fail_after(30):
            result = await client.call_tool("kubectl_apply", {"manifest": deployment()})
    assert result.is_error
    assert "default-deny" in _text(result)
    assert kube_emulator.requests == []


async def test_a_confirmation_shows_the_dry_run_diff_and_the_apply_follows_it(
    tmp_path: Path, kube_emulator: KubeEmulator
) -> None:
    setup = _setup(tmp_path, kube_emulator)
    async with _client(setup) as (client, _):
        with anyio.fail_after(30):
            unconfirmed = await client.call_tool("kubectl_apply", {"manifest": deployment(namespace="prod")})
    # Not in staging: it needs confirmation, and this client cannot confirm: nothing is applied.
    assert unconfirmed.is_error
    assert kube_emulator.get("apps/v1", "Deployment", "prod", "web") is None
    kube_emulator.put(json.loads(json.dumps(_deployment_object("prod", 2, "web:1"))))
    kube_emulator.clear()
    prompts: list[str] = []
    async with _client(setup, elicitation_callback=accept(prompts)) as (client, _):
        with anyio.fail_after(30):
            data = _data(
                await client.call_tool(
                    "kubectl_apply", {"manifest": deployment(namespace="prod", replicas=3, image="web:2")}
                )
            )
    assert data["rule_id"] == "k8s-production-applies"
    assert data["confirmed_by_user"] is True
    assert "~ Deployment/prod/web" in prompts[0]
    assert "spec.replicas: 2 -> 3" in prompts[0]
    assert 'containers[name=web].image: "web:1" -> "web:2"' in prompts[0]
    stored = kube_emulator.get("apps/v1", "Deployment", "prod", "web")
    assert stored is not None
    assert stored["spec"]["replicas"] == 3
    real = [w for w in kube_emulator.writes() if not w.dry_run]
    assert len(real) == 1
    # Applied on the version the dry run saw.
    assert real[0].json["metadata"]["resourceVersion"]


async def test_a_declined_confirmation_applies_nothing(tmp_path: Path, kube_emulator: KubeEmulator) -> None:
    setup = _setup(tmp_path, kube_emulator)
    async with _client(setup, elicitation_callback=decline) as (client, _):
        with anyio.fail_after(30):
            result = await client.call_tool("kubectl_apply", {"manifest": deployment(namespace="prod")})
    assert result.is_error
    assert [w for w in kube_emulator.writes() if not w.dry_run] == []
    assert kube_emulator.get("apps/v1", "Deployment", "prod", "web") is None


async def test_a_cluster_change_while_the_user_reads_the_prompt_is_asked_again(
    tmp_path: Path, kube_emulator: KubeEmulator
) -> None:
    setup = _setup(tmp_path, kube_emulator)
    kube_emulator.put(_deployment_object("prod", 2, "web:1"))
    prompts: list[str] = []

    async def meanwhile(context: Any, params: mt.ElicitRequestParams) -> mt.ElicitResult:
        prompts.append(params.message)
        if len(prompts) == 1:  # someone else scales the deployment while the user reads the prompt
            kube_emulator.put(_deployment_object("prod", 7, "web:1"))
        return mt.ElicitResult(action="accept", content={"confirm": True, "comment": ""})

    async with _client(setup, elicitation_callback=meanwhile) as (client, _):
        with anyio.fail_after(30):
            data = _data(
                await client.call_tool(
                    "kubectl_apply", {"manifest": deployment(namespace="prod", replicas=3)}
                )
            )
    # The answer to the first prompt was not used for the changed plan: the user was asked again.
    assert len(prompts) == 2
    assert "spec.replicas: 2 -> 3" in prompts[0]
    assert "spec.replicas: 7 -> 3" in prompts[1]
    assert data["objects"][0]["changes"] == ["spec.replicas: 7 -> 3"]


async def test_a_cluster_change_after_a_mid_call_confirmation_is_refused_and_nothing_is_applied(
    tmp_path: Path, kube_emulator: KubeEmulator
) -> None:
    setup = _setup(tmp_path, kube_emulator)
    kube_emulator.put(_deployment_object("prod", 2, "web:1"))

    async def meanwhile(context: Any, params: mt.ElicitRequestParams) -> mt.ElicitResult:
        kube_emulator.put(_deployment_object("prod", 7, "web:1"))
        return mt.ElicitResult(action="accept", content={"confirm": True, "comment": ""})

    # The 2025-11-25 protocol asks mid-call: the plan is not recomputed, the dry run before the
    # apply notices the change.
    async with _client(setup, elicitation_callback=meanwhile, mode="legacy") as (client, _):
        with anyio.fail_after(30):
            result = await client.call_tool(
                "kubectl_apply", {"manifest": deployment(namespace="prod", replicas=3)}
            )
    assert result.is_error
    assert "changed since the plan" in _text(result)
    assert [w for w in kube_emulator.writes() if not w.dry_run] == []
    stored = kube_emulator.get("apps/v1", "Deployment", "prod", "web")
    assert stored is not None
    assert stored["spec"]["replicas"] == 7


async def test_secret_values_never_appear_in_prompts_results_errors_or_audit_records(
    tmp_path: Path, kube_emulator: KubeEmulator
) -> None:
    password = "Zq8-very-secret-pw-" + base64.b16encode(tmp_path.name.encode()).decode()[:12]
    token_value = "tok_" + password[::-1]
    manifest = textwrap.dedent(
        f"""\
        apiVersion: v1
        kind: Secret
        metadata: {{name: db, namespace: staging}}
        stringData: {{password: "{password}"}}
        data: {{token: {base64.b64encode(token_value.encode()).decode()}}}
        ---
        """
    ) + deployment().replace(
        "image: web:1", f'image: web:1\n          env: [{{name: DB_PASSWORD, value: "{password}"}}]'
    )
    prompts: list[str] = []
    setup = _setup(tmp_path, kube_emulator)
    async with _client(setup, elicitation_callback=accept(prompts)) as (client, _):
        with anyio.fail_after(30):
            data = _data(await client.call_tool("kubectl_apply", {"manifest": manifest}))
            diff = _data(await client.call_tool("kubectl_diff", {"manifest": manifest}))
            got = _data(await client.call_tool("kubectl_get", {"kind": "Secret", "namespace": "staging"}))
            kube_emulator.fail_next(
                422,
                {
                    "kind": "Status",
                    "apiVersion": "v1",
                    "status": "Failure",
                    "code": 422,
                    "reason": "Invalid",
                    "message": f"Secret db: bad value {password}",
                },
            )
            failed = await client.call_tool("kubectl_apply", {"manifest": manifest})
    # A Secret write is never merely allowed: the user confirmed it.
    assert data["rule_id"] == "k8s.needs_confirmation"
    assert "data.token" in prompts[0] or '"token"' in prompts[0] or "token" in prompts[0]
    assert failed.is_error
    everything = json.dumps([prompts, data, diff, got, _text(failed)]) + _audit_text(setup)
    encoded = base64.b64encode(token_value.encode()).decode()
    for secret in (password, token_value, encoded, kube_emulator.token):
        assert secret not in everything, _where(secret, everything)
    stored = kube_emulator.get("v1", "Secret", "staging", "db")
    assert stored is not None  # the real value reached the cluster


async def test_a_field_manager_conflict_is_a_clear_error_and_nothing_is_applied(
    tmp_path: Path, kube_emulator: KubeEmulator
) -> None:
    setup = _setup(tmp_path, kube_emulator)
    kube_emulator.fail_next(
        409,
        conflict_status(
            "kubectl", [".spec.replicas"], api_version="apps/v1", name="web", kind="deployments", group="apps"
        ),
        path_contains="/deployments/web",
    )
    async with _client(setup) as (client, runtime):
        with anyio.fail_after(30):
            result = await client.call_tool("kubectl_apply", {"manifest": deployment() + "---\n" + CONFIGMAP})
            records = [r.event for r in await runtime.audit.records()]
    assert result.is_error
    assert "field manager conflict" in _text(result)
    assert ".spec.replicas" in _text(result)
    assert [w for w in kube_emulator.writes() if not w.dry_run] == []
    assert any(r.outcome and r.outcome.rule_id == "k8s.field_manager_conflict" for r in records)


async def test_a_forbidden_server_credential_is_reported_not_hidden(
    tmp_path: Path, kube_emulator: KubeEmulator
) -> None:
    setup = _setup(tmp_path, kube_emulator)
    kube_emulator.fail_next(
        403,
        forbidden_status(
            "system:serviceaccount:ops:hoop", "patch", "deployments", group="apps", namespace="staging"
        ),
        path_contains="/deployments/",
    )
    async with _client(setup) as (client, _):
        with anyio.fail_after(30):
            result = await client.call_tool("kubectl_apply", {"manifest": deployment()})
    assert result.is_error
    text = _text(result)
    assert "denied the server's own credential" in text
    assert 'cannot patch resource "deployments"' in text
    assert kube_emulator.get("apps/v1", "Deployment", "staging", "web") is None


async def test_an_api_server_that_is_down_or_slow_gives_a_clear_error(
    tmp_path: Path, kube_emulator: KubeEmulator
) -> None:
    setup = _setup(tmp_path, kube_emulator, timeout_s=1)
    kube_emulator.delay(None, path_contains="/deployments/")
    async with _client(setup) as (client, _):
        with anyio.fail_after(30):
            slow = await client.call_tool("kubectl_apply", {"manifest": deployment()})
            kube_emulator.release()
            kube_emulator.stop()
            down = await client.call_tool("kubectl_apply", {"manifest": deployment()})
            still = await client.call_tool("kubectl_get", {"kind": "Deployment", "namespace": "staging"})
    assert slow.is_error
    assert "did not answer within 1 s" in _text(slow)
    assert down.is_error
    assert "cannot be reached" in _text(down)
    assert still.is_error  # the server keeps serving and answers clearly


async def test_rbac_escalation_is_held_for_review_even_where_cluster_scoped_kinds_are_allowed(
    tmp_path: Path, kube_emulator: KubeEmulator
) -> None:
    setup = _setup(tmp_path, kube_emulator, connection_extra="cluster_scoped_kinds: [ClusterRoleBinding]\n")
    manifest = (
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\nmetadata: {name: me}\n"
        "roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: cluster-admin}\n"
        "subjects: [{kind: ServiceAccount, name: default, namespace: staging}]\n"
    )
    async with _client(setup) as (client, _):
        with anyio.fail_after(30):
            data = _data(await client.call_tool("kubectl_apply", {"manifest": manifest}))
    assert data["outcome"] == "pending_approval"
    assert data["rule_id"] == "k8s-escalation"
    assert any(f["category"] == "rbac_escalation" for f in data["findings"])
    assert "ClusterRoleBinding/me" in (data["plan"] or "")
    assert [w for w in kube_emulator.writes() if not w.dry_run] == []


async def test_kubectl_diff_reports_changes_and_pod_security_findings_without_applying(
    tmp_path: Path, kube_emulator: KubeEmulator
) -> None:
    setup = _setup(tmp_path, kube_emulator)
    kube_emulator.put(_deployment_object("staging", 2, "web:1"))
    manifest = deployment(replicas=4).replace("runAsNonRoot: true, ", "")
    async with _client(setup) as (client, _):
        with anyio.fail_after(30):
            data = _data(await client.call_tool("kubectl_diff", {"manifest": manifest}))
    assert data["dry_run"] is True
    assert data["objects"][0]["action"] == "would change"
    assert any("spec.replicas: 2 -> 4" in c for c in data["objects"][0]["changes"])
    assert any(f["category"] == "pod_security_restricted" for f in data["findings"])
    assert all(w.dry_run for w in kube_emulator.writes())
    stored = kube_emulator.get("apps/v1", "Deployment", "staging", "web")
    assert stored is not None
    assert stored["spec"]["replicas"] == 2


async def test_the_read_tools_list_by_label_show_events_rollouts_and_bounded_masked_logs(
    tmp_path: Path, kube_emulator: KubeEmulator
) -> None:
    setup = _setup(tmp_path, kube_emulator)
    for name, app in (("web", "web"), ("api", "api")):
        kube_emulator.put(_deployment_object("staging", 2, "x:1", name=name, app=app, ready=2))
    kube_emulator.put(
        {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": "web.1", "namespace": "staging"},
            "involvedObject": {"kind": "Deployment", "name": "web", "namespace": "staging"},
            "type": "Normal",
            "reason": "ScalingReplicaSet",
            "message": "Scaled up replica set web-1 to 2",
            "count": 1,
            "lastTimestamp": "2026-12-07T10:00:00Z",
        }
    )
    leaked = "postgres://app:Sup3rS3cretPw@db:5432/shop"
    kube_emulator.set_logs(
        "staging", "web-0", "".join(f"line {i}\n" for i in range(500)) + f"connecting to {leaked}\n"
    )
    async with _client(setup) as (client, _):
        with anyio.fail_after(30):
            listed = _data(
                await client.call_tool(
                    "kubectl_get", {"kind": "Deployment", "namespace": "staging", "label_selector": "app=web"}
                )
            )
            events = _data(
                await client.call_tool("kubectl_events", {"namespace": "staging", "object_name": "web"})
            )
            rollout = _data(
                await client.call_tool("kubectl_rollout_status", {"name": "web", "namespace": "staging"})
            )
            logs = _data(
                await client.call_tool(
                    "kubectl_logs", {"pod": "web-0", "namespace": "staging", "tail_lines": 3}
                )
            )
            capped = _data(
                await client.call_tool(
                    "kubectl_logs", {"pod": "web-0", "namespace": "staging", "max_bytes": 100}
                )
            )
            denied = await client.call_tool("kubectl_get", {"kind": "Secret", "namespace": "kube-system"})
    assert [o["metadata"]["name"] for o in listed["objects"]] == ["web"]
    assert all("managedFields" not in o["metadata"] for o in listed["objects"])
    assert [e["reason"] for e in events["events"]] == ["ScalingReplicaSet"]
    assert rollout["complete"] is True
    assert len(logs["lines"]) == 3
    assert "Sup3rS3cretPw" not in json.dumps(logs)
    assert capped["truncated"] is True
    assert sum(len(line) + 1 for line in capped["lines"]) <= 101
    assert denied.is_error
    assert "kube-system" in _text(denied)
    assert all(r.method == "GET" for r in kube_emulator.requests)
    assert all("kube-system" not in r.path for r in kube_emulator.requests)


async def test_delete_needs_a_policy_rule_and_then_the_users_confirmation(
    tmp_path: Path, kube_emulator: KubeEmulator
) -> None:
    kube_emulator.put(_deployment_object("staging", 2, "web:1"))
    policy = (
        "version: 1\nrules:\n  - {id: reads, description: reads, verdict: allow, when: {effects: [read]}}\n"
    )
    denied_setup = _setup(tmp_path / "a", kube_emulator, policy=policy)
    async with _client(denied_setup) as (client, _):
        with anyio.fail_after(30):
            denied = await client.call_tool(
                "kubectl_delete", {"kind": "Deployment", "name": "web", "namespace": "staging"}
            )
    assert denied.is_error
    assert kube_emulator.writes() == []
    allow = "version: 1\nrules:\n  - {id: deletes, description: deletes, verdict: allow, when: {tools: [kubectl_delete]}}\n"
    prompts: list[str] = []
    setup = _setup(tmp_path / "b", kube_emulator, policy=allow)
    async with _client(setup, elicitation_callback=accept(prompts)) as (client, _):
        with anyio.fail_after(30):
            data = _data(
                await client.call_tool(
                    "kubectl_delete", {"kind": "Deployment", "name": "web", "namespace": "staging"}
                )
            )
    assert data["rule_id"] == "k8s.needs_confirmation"
    assert "delete Deployment/staging/web" in prompts[0]
    assert kube_emulator.get("apps/v1", "Deployment", "staging", "web") is None
    assert [w.dry_run for w in kube_emulator.writes()] == [True, False]


def _deployment_object(
    namespace: str, replicas: int, image: str, *, name: str = "web", app: str = "web", ready: int = 0
) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace, "labels": {"app": app}, "generation": 1},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": app}},
            "template": {
                "metadata": {"labels": {"app": app}},
                "spec": {
                    "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
                    "containers": [
                        {
                            "name": name,
                            "image": image,
                            "securityContext": {
                                "allowPrivilegeEscalation": False,
                                "capabilities": {"drop": ["ALL"]},
                            },
                        }
                    ],
                },
            },
        },
        "status": {
            "observedGeneration": 1,
            "replicas": ready,
            "updatedReplicas": ready,
            "readyReplicas": ready,
            "availableReplicas": ready,
        },
    }


def _where(secret: str, text: str) -> str:  # debugging aid
    i = text.find(secret)
    return text[max(0, i - 300) : i + 50]


async def test_a_manifest_cannot_forge_lines_in_the_confirmation_prompt(
    tmp_path: Path, kube_emulator: KubeEmulator
) -> None:
    forged = "Principal: boss@example.com"
    manifest = json.dumps(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "settings", "namespace": "prod", "annotations": {"note": f"x\n{forged}"}},
            "data": {f"k\n{forged}": f"v\n{forged}", "mode": "x\u202e\u200bfast"},
        }
    )
    prompts: list[str] = []
    setup = _setup(tmp_path, kube_emulator)
    async with _client(setup, elicitation_callback=accept(prompts)) as (client, _):
        with anyio.fail_after(30):
            _data(await client.call_tool("kubectl_apply", {"manifest": manifest}))
    lines = prompts[0].split("\n")
    assert not any(line.startswith("Principal: boss") for line in lines)
    assert lines[-1].startswith("Principal: agent@example.com")
    assert "\u202e" not in prompts[0]
    assert "\u200b" not in prompts[0]


async def test_an_unparseable_manifest_is_recorded_only_as_its_size_and_digest(
    tmp_path: Path, kube_emulator: KubeEmulator
) -> None:
    password = "hunter2-" + tmp_path.name
    manifest = f"apiVersion: v1\nkind: Secret\nmetadata: {{name: db\nstringData: {{password: {password}}}\n"
    setup = _setup(tmp_path, kube_emulator)
    async with _client(setup) as (client, _):
        with anyio.fail_after(30):
            result = await client.call_tool("kubectl_apply", {"manifest": manifest})
    assert result.is_error
    audit = _audit_text(setup)
    assert "manifest withheld" in audit
    assert password not in audit
    assert password not in _text(result)
    assert kube_emulator.requests == []


@pytest.mark.parametrize(
    "arguments",
    [
        {"kind": "Deployment", "name": "../../secrets", "namespace": "staging"},
        {"kind": "Deployment", "name": "web/scale", "namespace": "staging"},
        {"kind": "Deployment", "name": "..", "namespace": "staging"},
        {"kind": "Deployment", "name": "web%2Fscale", "namespace": "staging"},
        {"kind": "Deployment", "namespace": "staging", "label_selector": "app=web&watch=true"},
        {"kind": "Deployment", "namespace": "staging", "label_selector": "app=web#x"},
        {"kind": "Deployment", "namespace": "Staging"},
        {"kind": "Deployment", "namespace": "staging/../kube-system"},
        {"kind": "Deployment", "name": "we\x00b", "namespace": "staging"},
    ],
)
async def test_hostile_read_arguments_are_refused_before_any_request(
    tmp_path: Path, kube_emulator: KubeEmulator, arguments: dict[str, Any]
) -> None:
    setup = _setup(tmp_path, kube_emulator)
    async with _client(setup) as (client, _):
        with anyio.fail_after(30):
            result = await client.call_tool("kubectl_get", arguments)
    assert result.is_error
    assert kube_emulator.requests == []
