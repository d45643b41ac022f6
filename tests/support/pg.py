"""A real PostgreSQL for the tests: one embedded cluster per session, a fresh database per test."""

from __future__ import annotations

import itertools
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import sql

from hoop_mcp.demo_data import seed_shop
from hoop_mcp.embedded_pg import EmbeddedPostgres

APP_ROLE = "hoop_app"
TEMPLATE_DB = "shop_template"
_counter = itertools.count()


@dataclass(frozen=True)
class ShopDb:
    """One fresh copy of the seeded ``shop`` database."""

    cluster: EmbeddedPostgres
    dbname: str
    app_password: str

    @property
    def admin_conninfo(self) -> str:
        return self.cluster.conninfo(dbname=self.dbname)

    @property
    def app_conninfo(self) -> str:
        """What hoop-mcp is configured with: the application role, with its (generated) password."""
        return self.cluster.conninfo(dbname=self.dbname, user=APP_ROLE, password=self.app_password)

    def admin_query(self, query: str, params: tuple[object, ...] | None = None) -> list[tuple[object, ...]]:
        """Run a query as the superuser, bypassing hoop-mcp (to check what really happened)."""
        with psycopg.connect(self.admin_conninfo, autocommit=True) as conn:
            cur = conn.execute(query.encode(), params)  # type: ignore[arg-type]
            return cur.fetchall() if cur.description else []

    def snapshot(self) -> dict[str, object]:
        """A fingerprint of everything a statement could change: data, schema, roles, sequences."""
        return {
            "tables": self.admin_query(
                "SELECT table_schema, table_name, table_type FROM information_schema.tables"
                " WHERE table_schema NOT IN ('pg_catalog','information_schema') ORDER BY 1, 2"
            ),
            "columns": self.admin_query(
                "SELECT table_name, column_name, data_type FROM information_schema.columns"
                " WHERE table_schema = 'public' ORDER BY 1, 2"
            ),
            "customers": self.admin_query("SELECT * FROM customers ORDER BY id"),
            "orders": self.admin_query("SELECT * FROM orders ORDER BY id"),
            "products": self.admin_query("SELECT * FROM products ORDER BY id"),
            "roles": self.admin_query("SELECT rolname, rolsuper, rolcanlogin FROM pg_roles ORDER BY 1"),
            "sequence": self.admin_query("SELECT last_value, is_called FROM invoice_seq"),
            "functions": self.admin_query(
                "SELECT proname FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace"
                " WHERE n.nspname = 'public' ORDER BY 1"
            ),
            "grants": self.admin_query(
                "SELECT grantee, table_name, privilege_type FROM information_schema.role_table_grants"
                " WHERE table_schema = 'public' ORDER BY 1, 2, 3"
            ),
            "large_objects": self.admin_query("SELECT count(*) FROM pg_largeobject_metadata"),
            "settings": self.admin_query("SELECT d.setconfig FROM pg_db_role_setting d ORDER BY 1"),
        }


def start_cluster(base: Path) -> EmbeddedPostgres:
    cluster = EmbeddedPostgres(base / "pgdata")
    cluster.start()
    return cluster


def prepare_template(cluster: EmbeddedPostgres, app_password: str) -> None:
    with psycopg.connect(cluster.conninfo(), autocommit=True) as conn:
        conn.execute(
            sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                sql.Identifier(APP_ROLE), sql.Literal(app_password)
            )
        )
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(TEMPLATE_DB)))
    with psycopg.connect(cluster.conninfo(dbname=TEMPLATE_DB), autocommit=True) as conn:
        seed_shop(conn, app_role=APP_ROLE)


def new_shop_db(cluster: EmbeddedPostgres, app_password: str) -> ShopDb:
    name = f"shop_{next(_counter)}_{secrets.token_hex(3)}"
    with psycopg.connect(cluster.conninfo(), autocommit=True) as conn:
        conn.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                sql.Identifier(name), sql.Identifier(TEMPLATE_DB)
            )
        )
    return ShopDb(cluster=cluster, dbname=name, app_password=app_password)


def drop_shop_db(db: ShopDb) -> None:
    with psycopg.connect(db.cluster.conninfo(), autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(db.dbname)))


def iter_shop(cluster: EmbeddedPostgres, app_password: str) -> Iterator[ShopDb]:
    db = new_shop_db(cluster, app_password)
    try:
        yield db
    finally:
        if cluster.running:
            drop_shop_db(db)
