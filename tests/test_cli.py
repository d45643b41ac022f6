"""The `hoop-mcp` command line: help, policy check/explain, audit verify (tampering), replay."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from hoop_mcp.cli import main

HOOP = str(Path(sys.executable).with_name("hoop-mcp"))
PRESETS = Path(__file__).resolve().parents[1] / "src" / "hoop_mcp" / "policies"


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([HOOP, *args], capture_output=True, text=True, timeout=120, check=False)


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["serve"],
        ["demo"],
        ["audit"],
        ["audit", "verify"],
        ["replay"],
        ["policy"],
        ["policy", "check"],
        ["policy", "explain"],
    ],
)
def test_every_command_has_help(args: list[str]) -> None:
    proc = _run(*args, "--help")
    assert proc.returncode == 0
    assert "usage: hoop-mcp" in proc.stdout


def test_a_usage_error_exits_2_and_a_bad_file_exits_1_with_the_reason(tmp_path: Path) -> None:
    assert _run("serve").returncode == 2
    bad = tmp_path / "policy.yaml"
    bad.write_text("version: 1\nrules:\n  - id: x\n    description: d\n    verdict: allw\n")
    proc = _run("policy", "check", str(bad))
    assert proc.returncode == 1
    assert "rules[0].verdict" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("preset", sorted(PRESETS.glob("*.yaml")), ids=lambda p: p.stem)
def test_policy_check_accepts_each_preset(preset: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["policy", "check", str(preset)]) == 0
    assert "OK: 1 file(s)" in capsys.readouterr().out


def test_policy_check_refuses_two_files_that_define_the_same_rule_id(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["policy", "check", *(str(p) for p in sorted(PRESETS.glob("*.yaml")))]) == 1
    assert "duplicate rule id" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("sql", "group", "expected"),
    [
        ("SELECT * FROM orders", "engineers", "ALLOW"),
        ("DELETE FROM orders WHERE id = 7", "engineers", "CONFIRM"),
        ("DELETE FROM orders", "engineers", "DENY"),
        ("DROP TABLE orders", "engineers", "DENY"),
        ("WITH d AS (DELETE FROM orders RETURNING *) SELECT * FROM d", "engineers", "CONFIRM"),
    ],
)
def test_policy_explain_names_the_deciding_rule_without_executing_anything(
    sql: str, group: str, expected: str, capsys: pytest.CaptureFixture[str]
) -> None:
    rc = main(
        [
            "policy",
            "explain",
            "--policy",
            str(PRESETS / "writes-need-confirmation.yaml"),
            "--principal",
            "alice@example.com",
            "--group",
            group,
            "--connection",
            "shop",
            "--sql",
            sql,
        ]
    )
    out = capsys.readouterr().out
    assert rc == 0
    assert expected in out.upper()
    assert "statement:" in out


def test_policy_explain_reports_invalid_sql_as_an_error(capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(
        [
            "policy",
            "explain",
            "--policy",
            str(PRESETS / "read-only.yaml"),
            "--principal",
            "a",
            "--connection",
            "shop",
            "--sql",
            "SELEC 1",
        ]
    )
    assert rc == 1
    assert "could not parse" in capsys.readouterr().err


def _make_log(tmp_path: Path) -> Path:
    import anyio

    from hoop_mcp.core.models import AuditEvent
    from hoop_mcp.stores.sqlite import SqliteAuditLog

    path = tmp_path / "audit.db"

    async def fill() -> None:
        log = await SqliteAuditLog.open(path)
        for i in range(5):
            await log.append(
                AuditEvent(
                    kind="intent", call_id=f"c{i}", session_id="s1", tool="query_db", arguments_digest="d"
                )
            )
        await log.close()

    anyio.run(fill)
    return path


def test_audit_verify_passes_then_names_the_first_edited_record(tmp_path: Path) -> None:
    path = _make_log(tmp_path)
    ok = _run("audit", "verify", "--db", str(path))
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "5 records" in ok.stdout
    with sqlite3.connect(path) as conn:
        body = conn.execute("SELECT body FROM audit_records WHERE seq = 3").fetchone()[0]
        conn.execute(
            "UPDATE audit_records SET body = ? WHERE seq = 3", (body.replace(b"query_db", b"query_xx"),)
        )
    bad = _run("audit", "verify", "--db", str(path))
    assert bad.returncode == 1
    assert "3" in bad.stdout


def test_audit_verify_of_a_missing_file_is_an_error_not_an_empty_ok(tmp_path: Path) -> None:
    proc = _run("audit", "verify", "--db", str(tmp_path / "nope.db"))
    assert proc.returncode == 1
    assert not (tmp_path / "nope.db").exists()


def test_replay_lists_sessions_and_prints_a_timeline(tmp_path: Path) -> None:
    path = _make_log(tmp_path)
    listed = _run("replay", "--db", str(path), "--list")
    assert listed.returncode == 0
    assert "s1" in listed.stdout
    timeline = _run("replay", "--db", str(path), "--session", "s1")
    assert timeline.returncode == 0
    assert timeline.stdout.count("query_db") >= 5


def test_policy_explain_with_a_config_applies_its_masking_rules(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.support.hoop import SHOP_MASKING

    (tmp_path / "policy.yaml").write_text((PRESETS / "writes-need-confirmation.yaml").read_text())
    (tmp_path / "masking.yaml").write_text(SHOP_MASKING)
    (tmp_path / "hoop-mcp.yaml").write_text(
        "version: 1\nidentity: {unsafe_static_principal: {subject: a}}\n"
        "policy_files: [policy.yaml, masking.yaml]\n"
        "connections: {shop: {kind: postgres, dsn: {env: NOT_READ_BY_EXPLAIN}}}\n"
    )
    args = ["policy", "explain", "--config", str(tmp_path / "hoop-mcp.yaml"), "--principal", "a"]
    assert main([*args, "--connection", "shop", "--sql", "SELECT id FROM customers WHERE ssn = '1'"]) == 0
    assert "DENY by masking.where" in capsys.readouterr().out
    assert main([*args, "--connection", "other", "--sql", "SELECT 1"]) == 1
    assert "no connection 'other'" in capsys.readouterr().err
