"""kubectl_apply against a real kube-apiserver (``real_k8s``; skipped unless ``KUBE_TEST_URL`` is set).

The server's own credential is the test's "agent" user, granted per test only what the test needs,
so RBAC denials of that credential are real ones. See docs/kubernetes.md for the setup.
"""

from __future__ import annotations

import base64
import json
import secrets
from pathlib import Path
from typing import Any

import anyio
import pytest

from hoop_mcp.backends.k8s_diff import diff_object, render_diff
from tests.support.hoop import HoopSetup
from tests.support.kube_real import RealKube
from tests.support.kubesetup import write_kube_config
from tests.support.mcp_client import confirming as accept
from tests.support.mcp_client import connected as _client
from tests.support.mcp_client import tool_data as _data
from tests.support.mcp_client import tool_text as _text

pytestmark = [pytest.mark.anyio, pytest.mark.real_k8s]

WRITE_VERBS = ["get", "list", "create", "patch", "update"]


def _setup(tmp_path: Path, kube: RealKube) -> HoopSetup:
    return write_kube_config(
        tmp_path / "hoop", server=kube.url, token=kube.agent_token, ca_file=kube.ca, timeout_s=20
    )


def _configmap(namespace: str, mode: str, name: str = "settings") -> str:
    return json.dumps(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": namespace, "labels": {"app": "web"}},
            "data": {"mode": mode, "level": "3"},
        }
    )


def _get(kube: RealKube, path: str) -> dict[str, Any] | None:
    with kube.admin_client() as admin:
        resp = admin.get(path)
    if resp.status_code == 404:
        return None
    assert resp.status_code == 200, resp.text
    data: dict[str, Any] = resp.json()
    return data


async def test_a_dry_run_on_a_real_server_leaves_no_object(
    tmp_path: Path, real_kube: RealKube, fresh_namespace: str
) -> None:
    real_kube.grant_agent(fresh_namespace, verbs=WRITE_VERBS, resources=["configmaps"])
    setup = _setup(tmp_path, real_kube)
    async with _client(setup) as (client, _):
        with anyio.fail_after(60):
            diff = _data(
                await client.call_tool("kubectl_diff", {"manifest": _configmap(fresh_namespace, "fast")})
            )
            applied_dry = _data(
                await client.call_tool(
                    "kubectl_apply", {"manifest": _configmap(fresh_namespace, "fast"), "dry_run": True}
                )
            )
    assert [o["action"] for o in diff["objects"]] == ["would create"]
    assert any('data.mode: "fast"' in c for c in diff["objects"][0]["changes"])
    assert applied_dry["dry_run"] is True
    assert _get(real_kube, f"/api/v1/namespaces/{fresh_namespace}/configmaps/settings") is None


async def test_apply_creates_then_changes_and_the_shown_plan_is_what_the_server_did(
    tmp_path: Path, real_kube: RealKube, fresh_namespace: str
) -> None:
    real_kube.grant_agent(fresh_namespace, verbs=WRITE_VERBS, resources=["configmaps"])
    setup = _setup(tmp_path, real_kube)
    path = f"/api/v1/namespaces/{fresh_namespace}/configmaps/settings"
    prompts: list[str] = []
    async with _client(setup, elicitation_callback=accept(prompts)) as (client, _):
        with anyio.fail_after(60):
            created = _data(
                await client.call_tool("kubectl_apply", {"manifest": _configmap(fresh_namespace, "fast")})
            )
            before = _get(real_kube, path)
            changed = _data(
                await client.call_tool("kubectl_apply", {"manifest": _configmap(fresh_namespace, "slow")})
            )
            after = _get(real_kube, path)
    assert created["objects"][0]["action"] == "created"
    assert before is not None
    assert after is not None
    assert before["data"] == {"mode": "fast", "level": "3"}
    assert after["data"] == {"mode": "slow", "level": "3"}
    assert changed["objects"][0]["action"] == "configured"
    # The plan the user confirmed is exactly the difference between the object before and after.
    label = f"ConfigMap/{fresh_namespace}/settings"
    expected = render_diff(diff_object(label=label, kind="ConfigMap", live=before, dry_run=after))
    assert expected[0].startswith(f"~ {label} (1 field(s) change)")
    assert "\n".join("  " + line for line in expected) in prompts[-1]
    assert changed["objects"][0]["changes"] == ['data.mode: "fast" -> "slow"']
    managers = {m["manager"] for m in after["metadata"]["managedFields"]}
    assert "hoop-mcp" in managers


async def test_a_field_manager_conflict_on_a_real_server_is_a_clear_error_and_changes_nothing(
    tmp_path: Path, real_kube: RealKube, fresh_namespace: str
) -> None:
    real_kube.grant_agent(fresh_namespace, verbs=WRITE_VERBS, resources=["configmaps"])
    path = f"/api/v1/namespaces/{fresh_namespace}/configmaps/settings"
    with real_kube.admin_client() as admin:
        resp = admin.patch(
            path,
            params={"fieldManager": "kubectl"},
            content=_configmap(fresh_namespace, "owned-by-someone-else"),
            headers={"Content-Type": "application/apply-patch+yaml"},
        )
        assert resp.status_code == 201, resp.text
    setup = _setup(tmp_path, real_kube)
    async with _client(setup, elicitation_callback=accept([])) as (client, runtime):
        with anyio.fail_after(60):
            result = await client.call_tool(
                "kubectl_apply", {"manifest": _configmap(fresh_namespace, "mine")}
            )
            records = [r.event for r in await runtime.audit.records()]
    assert result.is_error
    text = _text(result)
    assert "field manager conflict" in text
    assert '"kubectl"' in text
    assert ".data.mode" in text
    stored = _get(real_kube, path)
    assert stored is not None
    assert stored["data"]["mode"] == "owned-by-someone-else"
    assert any(r.outcome and r.outcome.rule_id == "k8s.field_manager_conflict" for r in records)


async def test_rbac_denials_of_the_servers_own_credential_are_reported(
    tmp_path: Path, real_kube: RealKube, fresh_namespace: str
) -> None:
    real_kube.grant_agent(fresh_namespace, verbs=["get", "list"], resources=["configmaps"])
    setup = _setup(tmp_path, real_kube)
    async with _client(setup, elicitation_callback=accept([])) as (client, _):
        with anyio.fail_after(60):
            result = await client.call_tool(
                "kubectl_apply", {"manifest": _configmap(fresh_namespace, "fast")}
            )
            listed = _data(
                await client.call_tool("kubectl_get", {"kind": "ConfigMap", "namespace": fresh_namespace})
            )
            secrets_read = await client.call_tool(
                "kubectl_get", {"kind": "Secret", "namespace": fresh_namespace}
            )
    assert result.is_error
    text = _text(result)
    assert "denied the server's own credential" in text
    assert 'cannot patch resource "configmaps"' in text
    assert listed["objects"] == []
    assert secrets_read.is_error
    assert 'cannot list resource "secrets"' in _text(secrets_read)
    assert _get(real_kube, f"/api/v1/namespaces/{fresh_namespace}/configmaps/settings") is None


async def test_a_secret_reaches_the_real_server_but_its_value_is_never_shown(
    tmp_path: Path, real_kube: RealKube, fresh_namespace: str
) -> None:
    real_kube.grant_agent(fresh_namespace, verbs=WRITE_VERBS, resources=["secrets"])
    password = "pw-" + secrets.token_urlsafe(18)
    manifest = json.dumps(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "db", "namespace": fresh_namespace},
            "stringData": {"password": password},
        }
    )
    prompts: list[str] = []
    setup = _setup(tmp_path, real_kube)
    async with _client(setup, elicitation_callback=accept(prompts)) as (client, _):
        with anyio.fail_after(60):
            data = _data(await client.call_tool("kubectl_apply", {"manifest": manifest}))
            got = _data(
                await client.call_tool(
                    "kubectl_get", {"kind": "Secret", "name": "db", "namespace": fresh_namespace}
                )
            )
    stored = _get(real_kube, f"/api/v1/namespaces/{fresh_namespace}/secrets/db")
    assert stored is not None
    assert base64.b64decode(stored["data"]["password"]).decode() == password
    shown = json.dumps([prompts, data, got])
    encoded = base64.b64encode(password.encode()).decode()
    assert password not in shown
    assert encoded not in shown
    assert "password" in prompts[0]  # the key is shown, the value is not
