"""The README's first command: `hoop-mcp demo` runs end to end on an embedded PostgreSQL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from hoop_mcp.demo_data import SENSITIVE_VALUES

HOOP = str(Path(sys.executable).with_name("hoop-mcp"))


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("SHOP_", "HOOP_"))}


def test_the_demo_narrates_the_whole_pipeline_and_exits_zero_twice_on_one_workdir(tmp_path: Path) -> None:
    workdir = tmp_path / "demo"
    for attempt in (1, 2):  # the second run reuses the database, secrets and audit log
        proc = subprocess.run(
            [HOOP, "demo", "--workdir", str(workdir)],
            capture_output=True,
            text=True,
            timeout=240,
            env=_env(),
            check=False,
        )
        out = proc.stdout
        assert proc.returncode == 0, f"run {attempt}: {out}\n{proc.stderr}"
        assert (
            "Tools: query_db, approval_wait, approval_execute, list_tables, describe_table" in out
        )  # no approver tools for the agent
        assert "masked: api_key, card_number, email, notes, phone, ssn" in out
        assert "[REDACTED]" in out
        assert "Denied by rule 'masking.where'" in out
        assert "Denied by rule 'deny-ddl'" in out
        assert "confirmation prompt shown to the user" in out
        assert "UPDATE 1" in out
        assert "Denied by rule 'deny-unbounded-writes'" in out
        # Four-eyes: held, approved by another identity through the CLI, executed once.
        assert "held for approval apr_" in out
        assert "approved (by Dana (DBA) <dana@example.com>: customer asked, ticket CS-481)" in out
        assert "(rule: customer-changes-need-a-dba)" in out
        assert "approval: executed apr_" in out
        assert "OK: " in out
        assert "records verified" in out
        assert "local OIDC issuer" in out
        assert "UNSAFE" not in out  # a verified OIDC principal, not a static one
        assert "demo-agent@example.com" in out  # the replay names who made each call
        for value in SENSITIVE_VALUES:
            assert value not in out, value
    assert (workdir / "hoop-mcp.yaml").exists()
    assert oct((workdir / "secrets" / "shop-dsn").stat().st_mode & 0o777) == "0o600"
    assert oct((workdir / "secrets" / "agent-token").stat().st_mode & 0o777) == "0o600"
    assert oct((workdir / "audit.db").stat().st_mode & 0o777) == "0o600"


def test_demo_serve_prints_how_to_connect_each_client_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [HOOP, "demo", "--serve", "--workdir", str(tmp_path / "demo")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
    )
    lines: list[str] = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if "Press Ctrl+C" in line:
                break
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()
    text = "".join(lines)
    assert "claude mcp add hoop-shop -- " in text
    assert '"mcpServers"' in text
    assert '"servers"' in text
    assert "serve --config" in text
    assert proc.returncode == 0
