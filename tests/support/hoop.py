"""Build a real hoop-mcp server (config file, policy files, audit store) around a test database."""

from __future__ import annotations

import textwrap
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from hoop_mcp.demo import MASKING_YAML
from hoop_mcp.runtime import Runtime, open_runtime
from hoop_mcp.server.app import HoopServer
from tests.support.pg import ShopDb

#: The demo's masking rules for the shop database (one definition for the demo and the tests).
SHOP_MASKING = MASKING_YAML

ALLOW_ALL = """\
version: 1
rules:
  - id: test-allow-everything
    description: test-only policy that allows every call
    verdict: allow
"""


def preset_text(name: str) -> str:
    return resources.files("hoop_mcp").joinpath(f"policies/{name}.yaml").read_text()


@dataclass
class HoopSetup:
    config_path: Path
    environ: dict[str, str]
    workdir: Path


def write_config(
    workdir: Path,
    shop: ShopDb,
    *,
    policy: str | None = None,
    masking: str = SHOP_MASKING,
    identity: str | None = None,
    connection_extra: str = "",
    environ: dict[str, str] | None = None,
    extra: str = "",
    config_name: str = "hoop-mcp.yaml",
) -> HoopSetup:
    """Write a config (and its policy files) into ``workdir``; ``extra`` is top-level YAML added
    as is (e.g. an ``approvals:`` section)."""
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "policy.yaml").write_text(
        policy if policy is not None else preset_text("writes-need-confirmation")
    )
    (workdir / "masking.yaml").write_text(masking)
    identity = identity or textwrap.dedent(
        """\
        identity:
          unsafe_static_principal: {subject: agent@example.com, groups: [engineers]}
        """
    )
    conn_extra = textwrap.indent(textwrap.dedent(connection_extra), "    ") if connection_extra else ""
    (workdir / config_name).write_text(
        "version: 1\n"
        + identity
        + textwrap.dedent(extra)
        + "policy_files: [policy.yaml, masking.yaml]\n"
        + "audit: {sqlite_path: audit.db}\n"
        + "connections:\n"
        + "  shop:\n"
        + "    kind: postgres\n"
        + "    dsn: {env: SHOP_DSN}\n"
        + "    statement_timeout_ms: 2000\n"
        + conn_extra
    )
    env = {"SHOP_DSN": shop.app_conninfo, **(environ or {})}
    return HoopSetup(config_path=workdir / config_name, environ=env, workdir=workdir)


#: An unsafe static principal in group ``agents`` (the git and kubernetes tests' caller).
STATIC_AGENT = """\
identity:
  unsafe_static_principal: {subject: agent@example.com, groups: [agents]}
"""

#: Approvals configured (agents in group ``agents``), so ``review`` rules can hold calls.
APPROVALS = """\
approvals:
  agents: {groups: [agents]}
  page_url: https://approvals.example.test
"""


def write_single_connection_config(
    workdir: Path,
    *,
    name: str,
    connection: str,
    policy: str,
    identity: str,
    extra: str,
    connection_extra: str,
    environ: dict[str, str],
) -> HoopSetup:
    """Config + policy in ``workdir`` with one connection ``name`` (``connection``: its keys,
    indented four spaces) plus ``connection_extra`` keys."""
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
        + f"  {name}:\n"
        + connection
        + conn_extra
    )
    return HoopSetup(config_path=workdir / "hoop-mcp.yaml", environ=environ, workdir=workdir)


@asynccontextmanager
async def hoop_server(setup: HoopSetup) -> AsyncIterator[tuple[HoopServer, Runtime]]:
    runtime = await open_runtime(setup.config_path, environ=setup.environ)
    try:
        server = HoopServer(pipeline=runtime.pipeline, name="hoop-mcp-test")
        if runtime.approvals is None:
            yield server, runtime
        else:
            async with runtime.approvals.service.running():
                yield server, runtime
    finally:
        await runtime.aclose()
