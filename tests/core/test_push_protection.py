"""Push protection: the secret scanner against an adversarial corpus (true secrets, traps, evasions),
with measured true- and false-positive totals, and invariants under hostile input."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from hoop_mcp.core.secret_scan import RULES, ScanSettings, SecretScanner, checksum_ok, looks_binary
from tests.support.secret_factory import GENERATORS, bad_checksum, checksummed, fill

CORPUS = Path(__file__).resolve().parents[1] / "corpus" / "secret_corpus.yaml"
CASES: list[dict[str, Any]] = yaml.safe_load(CORPUS.read_text())["cases"]

#: Measured on the corpus (reported in docs/secret-scanning.md); a change here is a change in accuracy.
EXPECTED_TOTALS = {
    "cases": 65,
    "secret_cases": 36,
    "trap_cases": 29,
    "true_positives": 36,
    "false_positives": 0,
    "false_negatives": 2,
}


def _lines(text: str) -> list[tuple[int, str]]:
    return [(i + 1, line) for i, line in enumerate(text.split("\n"))]


def scan(path: str, text: str, scanner: SecretScanner | None = None) -> list[tuple[str, int]]:
    findings = (scanner or SecretScanner()).scan_added(path, _lines(text))
    return [(f.rule_id, f.line) for f in findings]


def test_the_corpus_has_at_least_sixty_files_with_traps_and_every_rule() -> None:
    assert len(CASES) >= 60
    assert len({c["path"] for c in CASES}) == len(CASES), "one case per path"
    rules = {rule for c in CASES for rule, _ in c["expect"]}
    assert rules == {r.id for r in RULES}, "every rule has at least one true secret in the corpus"
    assert sum(1 for c in CASES if not c["expect"] and not c.get("known_miss")) >= 25


@pytest.mark.parametrize("case", CASES, ids=[c["path"] for c in CASES])
def test_each_corpus_file_yields_exactly_its_expected_findings(case: dict[str, Any]) -> None:
    text, values = fill(case["content"])
    found = scan(case["path"], text)
    assert sorted(found) == sorted((r, n) for r, n in case["expect"]), case["why"]
    # The secret never appears in what a finding shows.
    for finding in SecretScanner().scan_added(case["path"], _lines(text)):
        for value in values.values():
            if len(value) >= 12:
                assert value not in finding.preview
                assert value[6:] not in finding.preview


def test_corpus_totals_true_and_false_positives_are_as_measured() -> None:
    tp = fp = fn = 0
    for case in CASES:
        text, _ = fill(case["content"])
        found = set(scan(case["path"], text))
        expected = {(r, n) for r, n in case["expect"]}
        tp += len(found & expected)
        fp += len(found - expected)
        fn += len(expected - found) + (1 if case.get("known_miss") and not found else 0)
    totals = {
        "cases": len(CASES),
        "secret_cases": sum(1 for c in CASES if c["expect"] or c.get("known_miss")),
        "trap_cases": sum(1 for c in CASES if not c["expect"] and not c.get("known_miss")),
        "true_positives": tp,
        "false_positives": fp,
        "false_negatives": fn,
    }
    print(f"secret corpus: {totals}")
    assert totals == EXPECTED_TOTALS


def test_checksums_tell_real_token_formats_from_lookalikes() -> None:
    token = checksummed("ghp_")
    assert checksum_ok(token[4:])
    assert not checksum_ok(bad_checksum("ghp_")[4:])
    assert scan("a.py", f'T = "{token}"') == [("github-token", 1)]


def test_a_lookalike_token_with_a_bad_checksum_is_excused_only_as_a_marked_fixture() -> None:
    lookalike = bad_checksum("ghp_")
    assert scan("src/a.py", f'T = "{lookalike}"') == [("github-token", 1)]
    assert scan("tests/fixtures/a.py", f'T = "{lookalike}"  # fake') == []
    real = checksummed("ghp_")
    assert scan("tests/fixtures/a.py", f'T = "{real}"  # fake') == [("github-token", 1)]


def test_the_operator_can_skip_paths_and_turn_rules_off_but_not_name_unknown_rules() -> None:
    text = f'KEY = "{GENERATORS["stripe_live"]()}"'
    skipping = SecretScanner(ScanSettings(allow_paths=("docs/examples/*",)))
    assert scan("docs/examples/stripe.py", text, skipping) == []
    assert scan("src/stripe.py", text, skipping) == [("stripe-live-key", 1)]
    off = SecretScanner(ScanSettings(disabled_rules=("stripe-live-key",)))
    assert scan("src/stripe.py", text, off) == []
    with pytest.raises(ValueError, match="unknown rule"):
        SecretScanner(ScanSettings(disabled_rules=("no-such-rule",)))


def test_in_repository_allow_markers_are_not_honoured() -> None:
    token = checksummed("ghp_")
    assert scan("src/a.py", f'T = "{token}"  # gitleaks:allow') == [("github-token", 1)]
    assert scan("src/a.py", f'T = "{token}"  # nosec pragma: allowlist secret') == [("github-token", 1)]


@pytest.mark.parametrize(
    "text",
    [
        "\x00" * 10_000,
        "a" * 1_000_000,
        "password=" + "A1" * 200_000,
        "://" + ":" * 100_000 + "@",
        "eyJ" + "a" * 100_000 + ".eyJ" + "b" * 100_000,
        "-----BEGIN PRIVATE KEY-----" * 10_000,
        "token" * 200_000,
        "\ud800\udfff" * 1000,
        "ghp_" * 100_000,
        ("eyJ" + "a" * 8) * 40_000,  # quadratic before the JWT regex was anchored and bounded
    ],
    ids=[
        "nul",
        "one-mb-line",
        "long-value",
        "colons",
        "jwt-ish",
        "headers",
        "keywords",
        "surrogates",
        "prefixes",
        "jwt-prefix-runs",
    ],
)
def test_hostile_input_finishes_without_raising(text: str) -> None:
    findings = SecretScanner().scan_added("x.txt", [(1, text)])
    assert isinstance(findings, list)


def test_binary_looking_text_is_recognised() -> None:
    assert looks_binary("PNG\x00\x01")
    assert not looks_binary("plain text")


@settings(max_examples=150, deadline=None)
@given(
    prefix=st.text(max_size=40),
    suffix=st.text(max_size=40),
    kind=st.sampled_from(["github_classic", "npm", "stripe_live", "google", "slack_bot", "gitlab"]),
)
def test_a_provider_token_is_found_wherever_it_sits_and_its_preview_never_holds_it(
    prefix: str, suffix: str, kind: str
) -> None:
    token = GENERATORS[kind]()
    line = f"{prefix} {token} {suffix}".replace("\n", " ").replace("\r", " ")
    findings = SecretScanner().scan_added("src/x.py", [(7, line)])
    assert findings, line
    assert all(f.line == 7 for f in findings)
    for f in findings:
        assert token not in f.preview
        assert token[8:] not in f.preview


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(max_size=200), max_size=20))
def test_the_scanner_never_raises_and_line_numbers_are_the_callers(texts: list[str]) -> None:
    lines = [(i * 3 + 1, t.replace("\n", " ")) for i, t in enumerate(texts)]
    for f in SecretScanner().scan_added("f.py", lines):
        assert f.line in {n for n, _ in lines}


def test_a_token_in_a_file_named_like_a_lock_file_is_still_found() -> None:
    token = checksummed("ghp_")
    assert scan("sub/yarn.lock", f'"x": "{token}"') == [("github-token", 1)]
    # ...while its integrity hashes stay quiet.
    assert scan("yarn.lock", f"integrity sha512-{GENERATORS['high_entropy']()}") == []
