"""A third-party client end to end: MCP Inspector's CLI drives ``hoop-mcp serve`` over stdio."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from hoop_mcp.demo_data import SENSITIVE_VALUES
from tests.support.hoop import HoopSetup, write_config
from tests.support.pg import ShopDb

pytestmark = pytest.mark.inspector

ROOT = Path(__file__).resolve().parents[2]
INSPECTOR_DIR = ROOT / "tools" / "inspector"
INSPECTOR = INSPECTOR_DIR / "node_modules" / ".bin" / "mcp-inspector"
HOOP_BIN = Path(sys.executable).parent / "hoop-mcp"


@pytest.fixture(scope="module")
def inspector() -> Path:
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip("MCP Inspector's CLI needs node and npm, which are not installed")
    if not INSPECTOR.exists():
        try:
            res = subprocess.run(
                ["npm", "ci", "--no-audit", "--no-fund"],
                cwd=INSPECTOR_DIR,
                capture_output=True,
                text=True,
                timeout=600,
                check=False,
            )
        except subprocess.TimeoutExpired:
            pytest.skip("`npm ci` in tools/inspector timed out (no registry access?)")
        if res.returncode != 0 or not INSPECTOR.exists():
            pytest.skip(f"`npm ci` in tools/inspector failed: {res.stderr.strip()[-500:]}")
    return INSPECTOR


def run_inspector(inspector: Path, setup: HoopSetup, *args: str) -> tuple[dict[str, Any], str]:
    """Run one Inspector CLI method against ``hoop-mcp serve``; the parsed JSON output and stderr."""
    home = setup.workdir / "inspector-home"
    home.mkdir(exist_ok=True)
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "MCP_CATALOG_PATH": str(home / "mcp.json"),
    }
    server_env = [arg for key, value in setup.environ.items() for arg in ("-e", f"{key}={value}")]
    cmd = [
        str(inspector),
        "--cli",
        *server_env,
        *args,
        "--",
        str(HOOP_BIN),
        "serve",
        "--config",
        str(setup.config_path),
    ]
    res = subprocess.run(
        cmd, capture_output=True, text=True, timeout=120, env=env, cwd=setup.workdir, check=False
    )
    try:
        data = json.loads(res.stdout)
    except json.JSONDecodeError:
        pytest.fail(
            f"Inspector printed no JSON (exit {res.returncode}): {res.stdout[-1000:]} {res.stderr[-2000:]}"
        )
    assert isinstance(data, dict)
    return data, res.stderr


def call_query(inspector: Path, setup: HoopSetup, sql: str) -> dict[str, Any]:
    data, _ = run_inspector(
        inspector,
        setup,
        "--method",
        "tools/call",
        "--tool-name",
        "query_db",
        "--tool-arg",
        "connection=shop",
        f"sql={sql}",
    )
    return data


def test_tools_list_shows_the_three_tools_with_their_schemas(
    inspector: Path, shop: ShopDb, tmp_path: Path
) -> None:
    setup = write_config(tmp_path, shop)
    data, _ = run_inspector(inspector, setup, "--method", "tools/list")
    tools = {t["name"]: t for t in data["tools"]}
    assert set(tools) == {"query_db", "list_tables", "describe_table"}
    assert tools["query_db"]["inputSchema"]["required"] == ["connection", "sql"]
    assert set(tools["query_db"]["inputSchema"]["properties"]) == {"connection", "sql"}
    assert set(tools["describe_table"]["inputSchema"]["properties"]) == {"connection", "table"}
    assert set(tools["list_tables"]["inputSchema"]["properties"]) == {"connection"}
    assert "rows" in tools["query_db"]["outputSchema"]["properties"]
    assert tools["query_db"]["annotations"]["destructiveHint"] is True
    assert tools["list_tables"]["annotations"]["readOnlyHint"] is True


def test_a_read_through_the_inspector_returns_masked_rows(
    inspector: Path, shop: ShopDb, tmp_path: Path
) -> None:
    setup = write_config(tmp_path, shop)
    data = call_query(inspector, setup, "SELECT id, name, email, ssn, card_number FROM customers ORDER BY id")
    assert data.get("isError") is not True, data
    structured = data["structuredContent"]
    assert [c["name"] for c in structured["columns"]] == ["id", "name", "email", "ssn", "card_number"]
    assert structured["rows"][0][0] == 1
    assert structured["rows"][0][1] == "Ada Quill"
    assert structured["columns"][3]["masked"] is True
    assert structured["rows"][0][4].endswith("1111")
    everything = json.dumps(data)
    for value in SENSITIVE_VALUES:
        assert value not in everything


def test_a_drop_through_the_inspector_is_refused_and_the_table_survives(
    inspector: Path, shop: ShopDb, tmp_path: Path
) -> None:
    setup = write_config(tmp_path, shop)
    data = call_query(inspector, setup, "DROP TABLE orders")
    assert data.get("isError") is True, data
    text = " ".join(c.get("text", "") for c in data["content"])
    assert "Denied by rule 'deny-ddl'" in text
    assert shop.admin_query("SELECT count(*) FROM orders") == [(6,)]
