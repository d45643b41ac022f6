"""query_db through an in-process MCP client vs plain psycopg on the same query and database.

Prints median latencies, the added latency and the ratio for 1 row and 1,000 rows x 8 columns,
masking on (column rules + every detector). Also times the audit appends that are part of the path.
Run: python tools/bench/bench_query_db.py [--iterations N]
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import textwrap
import time
from pathlib import Path

import anyio
import psycopg
from mcp import Client
from timing import instrument, median_ms

from hoop_mcp.embedded_pg import EmbeddedPostgres
from hoop_mcp.runtime import open_runtime
from hoop_mcp.server.app import HoopServer

POLICY = """\
version: 1
rules:
  - id: bench-reads
    description: reads for the benchmark
    verdict: allow
    when: {effects: [read]}
masking:
  columns:
    - {column: public.people.ssn, strategy: redact}
    - {column: public.people.email, strategy: hash}
"""

SETUP = """
CREATE TABLE people (
  id integer PRIMARY KEY, name text, email text, ssn text, city text,
  score integer, created_at timestamptz, notes text
);
INSERT INTO people
SELECT i, 'Person ' || i, 'person' || i || '@example.com', '900-' || lpad((i % 100)::text, 2, '0') || '-' || lpad(i::text, 4, '0'),
       (ARRAY['Oslo','Lima','Pune','Kyiv'])[1 + i % 4], i * 7 % 1000, now() - (i || ' minutes')::interval,
       CASE WHEN i % 10 = 0 THEN 'call +1 415-555-01' || lpad((i % 100)::text, 2, '0') ELSE 'regular customer since 2019' END
FROM generate_series(1, 1000) AS i;
ANALYZE people;
"""

QUERIES = {
    "1 row": "SELECT id, name, email, ssn, city, score, created_at, notes FROM people WHERE id = 42",
    "1000 rows x 8 cols": "SELECT id, name, email, ssn, city, score, created_at, notes FROM people ORDER BY id",
}


async def bench(iterations: int, timings: dict[str, list[float]] | None = None) -> None:
    with tempfile.TemporaryDirectory(prefix="hoop-bench-") as tmp:
        work = Path(tmp)
        pg = EmbeddedPostgres(work / "pgdata")
        pg.start()
        try:
            with psycopg.connect(pg.conninfo(), autocommit=True) as conn:
                conn.execute("CREATE DATABASE bench")
            dsn = pg.conninfo(dbname="bench")
            with psycopg.connect(dsn, autocommit=True) as conn:
                conn.execute(SETUP.encode())
            (work / "policy.yaml").write_text(POLICY)
            (work / "hoop-mcp.yaml").write_text(
                textwrap.dedent(
                    """\
                    version: 1
                    identity:
                      unsafe_static_principal: {subject: bench@example.com}
                    policy_files: [policy.yaml]
                    audit: {sqlite_path: audit.db}
                    connections:
                      bench: {kind: postgres, dsn: {env: BENCH_DSN}, max_rows: 5000, max_bytes: 50000000}
                    """
                )
            )
            runtime = await open_runtime(work / "hoop-mcp.yaml", environ={"BENCH_DSN": dsn})
            hoop = HoopServer(pipeline=runtime.pipeline)
            print(
                f"machine: {platform.machine()}, {os.cpu_count()} cpu(s), Python {platform.python_version()},"
                f" PostgreSQL 16 (embedded, loopback TCP); {iterations} iterations, median"
            )
            print(f"{'query':<22}{'psycopg ms':>12}{'query_db ms':>13}{'added ms':>10}{'ratio':>8}")
            try:
                async with Client(hoop.mcp) as client:
                    with psycopg.connect(dsn, autocommit=True) as direct:
                        for label, query in QUERIES.items():
                            direct_s: list[float] = []
                            hoop_s: list[float] = []
                            for _ in range(5):  # warm up both paths
                                direct.execute(query).fetchall()
                                await client.call_tool("query_db", {"connection": "bench", "sql": query})
                            for _ in range(iterations):
                                t0 = time.perf_counter()
                                direct.execute(query).fetchall()
                                direct_s.append(time.perf_counter() - t0)
                                t0 = time.perf_counter()
                                res = await client.call_tool(
                                    "query_db", {"connection": "bench", "sql": query}
                                )
                                hoop_s.append(time.perf_counter() - t0)
                                assert not res.is_error, res.content
                            d, h = median_ms(direct_s), median_ms(hoop_s)
                            print(f"{label:<22}{d:>12.2f}{h:>13.2f}{h - d:>10.2f}{h / d:>8.1f}")
                            if timings is not None:
                                for stage, samples in timings.items():
                                    print(f"    {stage:<55}{median_ms(samples):>8.2f} ms")
                                timings.clear()
            finally:
                await runtime.aclose()
        finally:
            pg.destroy()


def _instrument() -> dict[str, list[float]]:
    """Time the pipeline's stages (a seam we own): where the added latency goes."""
    from hoop_mcp.backends import postgres
    from hoop_mcp.core import pipeline

    return instrument(
        [
            (pipeline.Pipeline, "prepare", "prepare (identity, parse, classify, policy, render)"),
            (pipeline.Pipeline, "_record", "one durable audit append (x2 per call)"),
            (postgres.PostgresBackend, "execute", "backend execute (5 round trips incl. pool reset)"),
            (pipeline.Pipeline, "run", "run (records + execute + mask)"),
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--iterations", type=int, default=200)
    parser.add_argument("--breakdown", action="store_true", help="also print median time per pipeline stage")
    args = parser.parse_args()
    timings = _instrument() if args.breakdown else None
    anyio.run(bench, args.iterations, timings)


if __name__ == "__main__":
    main()
