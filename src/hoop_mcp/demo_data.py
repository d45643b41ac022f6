"""The sample ``shop`` database used by ``hoop-mcp demo`` and the tests.

Every value is fake: names are invented, SSNs use the 9xx area (never issued), card numbers are
the networks' published test numbers, API keys are obviously fake but shaped like real ones.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql

SCHEMA_SQL = """
CREATE TABLE customers (
    id          integer PRIMARY KEY,
    name        text NOT NULL,
    email       text NOT NULL,
    phone       text,
    ssn         text,
    card_number text,
    api_key     text,
    notes       text,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE orders (
    id          integer PRIMARY KEY,
    customer_id integer NOT NULL REFERENCES customers(id),
    status      text NOT NULL,
    total_cents integer NOT NULL,
    placed_at   timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE products (
    id          integer PRIMARY KEY,
    sku         text NOT NULL UNIQUE,
    title       text NOT NULL,
    price_cents integer NOT NULL
);
CREATE SEQUENCE invoice_seq;
"""

#: (id, name, email, phone, ssn, card, api_key, notes)
CUSTOMERS: tuple[tuple[int, str, str, str, str, str, str, str], ...] = (
    (
        1,
        "Ada Quill",
        "ada.quill@example.com",
        "+1 415-555-0101",
        "900-12-3456",
        "4111 1111 1111 1111",
        "sk_live_FAKE0000000000000000demo1",
        "VIP. Prefers email ada.quill@example.com; card 4111 1111 1111 1111 on file.",
    ),
    (
        2,
        "Bram Otter",
        "bram.otter@example.org",
        "(212) 555-0199",
        "912-34-5678",
        "5555555555554444",
        "sk_live_FAKE0000000000000000demo2",
        "Called from 212-555-0199 about SSN 912-34-5678 verification.",
    ),
    (
        3,
        "Cleo Marsh",
        "cleo@example.net",
        "+44 20 7946 0958",
        "923-45-6789",
        "378282246310005",
        "ghp_FAKEFAKEFAKEFAKEFAKEFAKEFAKEFAKEFAKE",
        "Asked to rotate her key ghp_FAKEFAKEFAKEFAKEFAKEFAKEFAKEFAKEFAKE.",
    ),
    (
        4,
        "Dov Finch",
        "dov.finch@example.com",
        "415.555.0142",
        "934-56-7890",
        "6011111111111117",
        "xoxb-000000000000-000000000000-FAKEFAKEFAKEFAKEFAKEFAKE",
        "Refund pending. password=hunter2-FAKE",
    ),
    (
        5,
        "Eun Park",
        "eun.park@example.com",
        "+1 (650) 555-0177",
        "945-67-8901",
        "4012888888881881",
        "AKIAFAKEFAKEFAKE1234",
        "No notes.",
    ),
)

ORDERS: tuple[tuple[int, int, str, int], ...] = (
    (101, 1, "shipped", 12999),
    (102, 1, "pending", 4500),
    (103, 2, "shipped", 899),
    (104, 3, "cancelled", 15000),
    (105, 4, "pending", 2300),
    (106, 5, "shipped", 7800),
)

PRODUCTS: tuple[tuple[int, str, str, int], ...] = (
    (1, "MUG-01", "Mug", 1200),
    (2, "TEE-02", "T-shirt", 2500),
    (3, "CAP-03", "Cap", 1800),
)


def seed_statements() -> list[tuple[str, tuple[object, ...] | None]]:
    """Statements (with parameters) that create and fill the ``shop`` database."""
    stmts: list[tuple[str, tuple[object, ...] | None]] = [(SCHEMA_SQL, None)]
    stmts += [
        (
            "INSERT INTO customers (id, name, email, phone, ssn, card_number, api_key, notes)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
            row,
        )
        for row in CUSTOMERS
    ]
    stmts += [
        ("INSERT INTO orders (id, customer_id, status, total_cents) VALUES (%s, %s, %s, %s)", o)
        for o in ORDERS
    ]
    stmts += [
        ("INSERT INTO products (id, sku, title, price_cents) VALUES (%s, %s, %s, %s)", p) for p in PRODUCTS
    ]
    stmts.append(("ANALYZE", None))
    return stmts


def seed_shop(conn: psycopg.Connection[Any], *, app_role: str, read_role: str | None = None) -> None:
    """Create and fill the ``shop`` schema on ``conn`` (autocommit) and grant what the roles need:
    the application role reads and writes rows, the optional read role only reads."""
    for stmt, params in seed_statements():
        conn.execute(stmt.encode() if params is None else stmt, params)
    grants = [
        ("GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {}", app_role),
        ("GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA public TO {}", app_role),
    ]
    if read_role is not None:
        grants.append(("GRANT SELECT ON ALL TABLES IN SCHEMA public TO {}", read_role))
    for template, role in grants:
        conn.execute(sql.SQL(template).format(sql.Identifier(role)))


#: Values that must never leave the server unmasked (used by tests and the demo's narration).
SENSITIVE_VALUES: tuple[str, ...] = tuple(v for c in CUSTOMERS for v in (c[2], c[3], c[4], c[5], c[6]))
