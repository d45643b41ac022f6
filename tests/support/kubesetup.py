"""A hoop-mcp configuration with a kubernetes connection pointed at the emulator or a real server."""

from __future__ import annotations

from pathlib import Path

from tests.support.hoop import APPROVALS, STATIC_AGENT, HoopSetup, write_single_connection_config

#: Reads and dry runs allowed; applies allowed in 'staging', confirmed elsewhere; escalation reviewed.
KUBE_POLICY = (Path(__file__).resolve().parents[2] / "examples" / "policy-kubernetes.yaml").read_text()


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
    return write_single_connection_config(
        workdir,
        name="cluster",
        connection="    kind: kubernetes\n"
        + "    description: the test cluster\n"
        + f"    server: {server}\n"
        + f"    token: {{env: {token_env}}}\n"
        + (f"    ca_file: {ca_file}\n" if ca_file else "")
        + f"    timeout_s: {timeout_s:g}\n",
        policy=policy,
        identity=identity,
        extra=extra,
        connection_extra=connection_extra,
        environ={token_env: token},
    )
