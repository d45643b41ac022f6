"""core/ knows nothing of mcp, psycopg, kubernetes, git or the SQL parser; dependencies point one way."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src" / "hoop_mcp"
FORBIDDEN_IN_CORE = (
    "mcp",
    "psycopg",
    "psycopg_pool",
    "kubernetes",
    "git",
    "pglast",
    "hoop_mcp.server",
    "hoop_mcp.backends",
    "hoop_mcp.stores",
    "hoop_mcp.cli",
    "hoop_mcp.runtime",
    "hoop_mcp.config",
)


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def _forbidden(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


@pytest.mark.parametrize("path", sorted((SRC / "core").glob("*.py")), ids=lambda p: p.name)
def test_core_modules_import_no_transport_backend_or_store_library(path: Path) -> None:
    bad = sorted(n for n in _imports(path) if _forbidden(n, FORBIDDEN_IN_CORE))
    assert bad == [], f"{path.name} imports {bad}"


def test_backends_and_stores_do_not_import_the_mcp_layer() -> None:
    for folder in ("backends", "stores"):
        for path in (SRC / folder).glob("*.py"):
            bad = sorted(
                n for n in _imports(path) if _forbidden(n, ("mcp", "hoop_mcp.server", "hoop_mcp.cli"))
            )
            assert bad == [], f"{folder}/{path.name} imports {bad}"


def test_importing_the_core_loads_none_of_those_libraries_at_run_time() -> None:
    code = (
        "import sys, pkgutil, importlib, hoop_mcp.core as c\n"
        "for m in pkgutil.iter_modules(c.__path__): importlib.import_module('hoop_mcp.core.' + m.name)\n"
        "print(','.join(sorted(n for n in sys.modules if n.split('.')[0] in "
        "('mcp', 'psycopg', 'kubernetes', 'git', 'pglast'))))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == ""
