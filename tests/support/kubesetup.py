"""A hoop-mcp configuration with a kubernetes connection pointed at the emulator or a real server."""

from __future__ import annotations

import textwrap
from pathlib import Path

from tests.support.hoop import HoopSetup

#: Reads and dry runs allowed; applies allowed in 'staging', confirmed elsewhere; escalation reviewed.
KUBE_POLICY = (Path(__file__).resolve().parents[2] / "examples" / "policy-kubernetes.yaml").read_text()

STATIC_AGENT = """\
identity:
  unsafe_static_principal: {subject: agent@example.com, groups: [agents]}
"""

APPROVALS = """\
approvals:
  agents: {groups: [agents]}
  page_url: https://approvals.example.test
"""


def write_kube_config(
    workdir: Path,
    *,
    server: str,
    token: str,
    ca_file: Path | None = None,
    policy: str = KUBE_POLICY,
    identity: str = STATIC_AGENT,
    extra: str = APPROVALS,
    connection_extra: str = "",
    token_env: str = "CLUSTER_TOKEN",  # noqa: S107 - the name of an env var, not a secret
    timeout_s: float = 10,
) -> HoopSetup:
    """Config + policy in ``workdir``; the cluster token reaches the server as ``token_env``."""
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "policy.yaml").write_text(policy)
    conn_extra = textwrap.indent(textwrap.dedent(connection_extra), "    ") if connection_extra else ""
    (workdir / "hoop-mcp.yaml").write_text(
        "version: 1\n"
        + identity
        + textwrap.dedent(extra)
        + "policy_files: [policy.yaml]\n"
        + "audit: {sqlite_path: audit.db}\n"
        + "connections:\n"
        + "  cluster:\n"
        + "    kind: kubernetes\n"
        + "    description: the test cluster\n"
        + f"    server: {server}\n"
        + f"    token: {{env: {token_env}}}\n"
        + (f"    ca_file: {ca_file}\n" if ca_file else "")
        + f"    timeout_s: {timeout_s:g}\n"
        + conn_extra
    )
    return HoopSetup(config_path=workdir / "hoop-mcp.yaml", environ={token_env: token}, workdir=workdir)
