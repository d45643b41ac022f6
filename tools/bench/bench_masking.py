"""Benchmark the masking engine: cells per second on one core for several result-set mixes.

Run: ``python tools/bench/bench_masking.py [--rows N] [--repeat R]``. Prints one line per mix and
exits 0. The target is >= 500,000 cells/s for the ``realistic`` mix.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))

from pydantic import JsonValue

from hoop_mcp.core.masking import Masker
from hoop_mcp.core.masking_config import ColumnRule, MaskingPolicy

WORDS = [
    "order",
    "shipped",
    "pending",
    "refund",
    "customer",
    "called",
    "about",
    "delivery",
    "late",
    "package",
    "box",
    "warehouse",
    "item",
    "returned",
    "damaged",
    "thanks",
    "please",
    "check",
    "again",
    "tomorrow",
    "invoice",
    "note",
]
NAMES = ("Ada Quill", "Bram Otter", "Cleo Marsh", "Dov Finch", "Eun Park", "Fay Lind")
STATUSES = ("shipped", "pending", "cancelled", "returned")

Row = list[JsonValue]


def _note(rng: random.Random) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 14))).capitalize() + "."


def _timestamp(rng: random.Random) -> str:
    return (
        f"2024-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}T"
        f"{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d}+00:00"
    )


def realistic(rng: random.Random, i: int) -> Row:
    """id, name, email, status, total_cents, placed_at, customer_id, notes."""
    name = rng.choice(NAMES)
    email = name.lower().replace(" ", ".") + f"{i}@example.com"
    return [
        i,
        name,
        email,
        rng.choice(STATUSES),
        rng.randint(100, 99999),
        _timestamp(rng),
        i % 97,
        _note(rng),
    ]


def no_pii(rng: random.Random, i: int) -> Row:
    return [i, rng.choice(NAMES), rng.choice(STATUSES), rng.randint(1, 10**6), _timestamp(rng),
            rng.random() * 100, None, _note(rng)]  # fmt: skip


def pii_heavy(rng: random.Random, i: int) -> Row:
    return [
        i,
        f"user{i}@example.com",
        f"({rng.randint(200, 999)}) 555-{rng.randint(0, 9999):04d}",
        f"9{rng.randint(10, 99)}-{rng.randint(10, 99)}-{rng.randint(1000, 9999)}",
        "4111 1111 1111 1111",
        "sk_live_FAKE0000000000000000demo1",
        f"Called from 212-555-0199 about card 5555555555554444. password=hunter{i}",
        _timestamp(rng),
    ]


def ints_only(rng: random.Random, i: int) -> Row:
    return [i, i * 2, rng.randint(0, 10**9), rng.random(), True, None, i % 7, -i]


def long_notes(rng: random.Random, i: int) -> Row:
    return [i] + [" ".join(_note(rng) for _ in range(5)) for _ in range(7)]


MIXES: dict[str, Callable[[random.Random, int], Row]] = {
    "realistic": realistic,
    "no_pii": no_pii,
    "pii_heavy": pii_heavy,
    "ints_only": ints_only,
    "long_notes": long_notes,
}


def bench(masker: Masker, make: Callable[[random.Random, int], Row], *, rows: int, repeat: int) -> float:
    rng = random.Random(42)
    data = [make(rng, i) for i in range(rows)]
    width = len(data[0])
    sources: list[str | None] = [None] * width
    sources[0] = "public.customers.id"
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        masker.mask_rows(connection="shop", sources=sources, rows=data)
        best = min(best, time.perf_counter() - start)
    return rows * width / best


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=15)
    args = parser.parse_args()
    policy = MaskingPolicy(columns=(ColumnRule(column="public.customers.ssn"),))
    masker = Masker(policy, hash_key=b"bench-key-0123456789abcdef")
    print(f"masking benchmark: {args.rows} rows, best of {args.repeat}, one core")
    for name, make in MIXES.items():
        rate = bench(masker, make, rows=args.rows, repeat=args.repeat)
        print(f"  {name:<12} {rate:>12,.0f} cells/s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
