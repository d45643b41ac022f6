"""The Kubernetes tools through real third-party transports: ``hoop-mcp serve`` over stdio with the
SDK's client, and MCP Inspector's CLI, against the emulator."""

from __future__ import annotations

import json
from pathlib import Path

import anyio
import pytest

from tests.server.test_inspector_cli import inspector, run_inspector  # noqa: F401 - fixture
from tests.server.test_stdio import stdio_session
from tests.support.kube import KubeEmulator
from tests.support.kubesetup import write_kube_config

CONFIGMAP = json.dumps(
    {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "settings", "namespace": "staging"},
        "data": {"mode": "fast"},
    }
)


@pytest.mark.anyio
async def test_kubectl_apply_over_stdio_applies_and_kube_system_stays_out_of_reach(
    tmp_path: Path, kube_emulator: KubeEmulator
) -> None:
    setup = write_kube_config(tmp_path, server=kube_emulator.url, token=kube_emulator.token)
    async with stdio_session(setup) as client:
        with anyio.fail_after(60):
            tools = {t.name for t in (await client.list_tools()).tools}
            applied = await client.call_tool("kubectl_apply", {"manifest": CONFIGMAP})
            denied = await client.call_tool(
                "kubectl_apply", {"manifest": CONFIGMAP.replace('"staging"', '"kube-system"')}
            )
    assert {"kubectl_apply", "kubectl_diff", "kubectl_get", "kubectl_logs"} <= tools
    assert not applied.is_error
    assert applied.structured_content is not None
    assert applied.structured_content["objects"][0]["action"] == "created"
    assert denied.is_error
    assert kube_emulator.get("v1", "ConfigMap", "staging", "settings") is not None
    assert all("kube-system" not in r.path for r in kube_emulator.requests)


@pytest.mark.inspector
def test_the_inspector_lists_and_calls_the_kubernetes_tools(
    inspector: Path,  # noqa: F811 - the fixture
    tmp_path: Path,
    kube_emulator: KubeEmulator,
) -> None:
    setup = write_kube_config(tmp_path, server=kube_emulator.url, token=kube_emulator.token)
    listed, _ = run_inspector(inspector, setup, "--method", "tools/list")
    names = {t["name"] for t in listed["tools"]}
    assert {
        "kubectl_apply",
        "kubectl_diff",
        "kubectl_delete",
        "kubectl_events",
        "kubectl_rollout_status",
    } <= names
    kube_emulator.put(json.loads(CONFIGMAP))
    got, _ = run_inspector(
        inspector,
        setup,
        "--method",
        "tools/call",
        "--tool-name",
        "kubectl_get",
        "--tool-arg",
        "kind=ConfigMap",
        "namespace=staging",
    )
    assert not got.get("isError"), got
    assert [o["metadata"]["name"] for o in got["structuredContent"]["objects"]] == ["settings"]
    assert kube_emulator.writes() == []
