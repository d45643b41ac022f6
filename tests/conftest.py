"""Shared fixtures: real PostgreSQL (embedded), fresh database per test."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from hoop_mcp.embedded_pg import EmbeddedPostgres
from tests.support.pg import ShopDb, iter_shop, prepare_template, start_cluster


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def app_password() -> str:
    """The application role's password, generated for this run (never committed)."""
    return "pw-" + secrets.token_urlsafe(18)


@pytest.fixture(scope="session")
def pg_cluster(tmp_path_factory: pytest.TempPathFactory, app_password: str) -> Iterator[EmbeddedPostgres]:
    cluster = start_cluster(Path(tmp_path_factory.mktemp("pg")))
    try:
        prepare_template(cluster, app_password)
        yield cluster
    finally:
        cluster.destroy()


@pytest.fixture
def shop(pg_cluster: EmbeddedPostgres, app_password: str) -> Iterator[ShopDb]:
    """A fresh copy of the seeded shop database, reached as the application role."""
    yield from iter_shop(pg_cluster, app_password)


pytest_plugins = [
    "tests.support.oidc",
    "tests.support.browser",
    "tests.support.git_remote",
    "tests.support.kube",
    "tests.support.kube_real",
]
