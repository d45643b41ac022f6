"""The benchmark scripts keep working (tiny sizes; the numbers are not checked, the output shape is)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "tools" / "bench"


@pytest.mark.parametrize(
    ("script", "args", "expected"),
    [
        ("bench_masking.py", ["--rows", "50", "--repeat", "1"], "realistic"),
        ("bench_audit.py", ["--appends", "20", "--tasks", "4", "--verify", "200"], "records/s"),
        ("bench_query_db.py", ["--iterations", "3", "--breakdown"], "1000 rows x 8 cols"),
        ("bench_approvals.py", ["--iterations", "3", "--idle", "0.3"], "decision -> waiter awake: median"),
        (
            "bench_git.py",
            ["--scan-mb", "0.2", "--scan-commits", "2", "--pushes", "2"],
            "ratio git_push / plain",
        ),
        ("bench_k8s.py", ["--iterations", "3", "--repeat", "3"], "ratio kubectl_apply / raw client"),
    ],
)
def test_a_benchmark_script_runs_and_reports(
    script: str, args: list[str], expected: str, tmp_path: Path
) -> None:
    proc = subprocess.run(
        [sys.executable, str(BENCH / script), *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert expected in proc.stdout
