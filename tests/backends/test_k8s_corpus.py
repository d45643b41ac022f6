"""The Kubernetes policy-check corpus: honest manifests stay clean, every bypass is found.

Manifests go through the real reader (``parse_manifest``), so YAML 1.1 booleans, anchors, JSON
manifests and ``List`` expansion are exercised end to end.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from hoop_mcp.backends.k8s_checks import CHECKS, check_objects
from hoop_mcp.backends.k8s_manifest import parse_manifest
from hoop_mcp.backends.k8s_mask import mask_object, secret_strings

CORPUS_PATH = Path(__file__).resolve().parents[1] / "corpus" / "k8s_corpus.yaml"
CASES: list[dict[str, Any]] = yaml.safe_load(CORPUS_PATH.read_text(encoding="utf-8"))["cases"]
PSS = frozenset({"pod_security_baseline", "pod_security_restricted"})


def test_the_corpus_is_large_and_has_honest_and_adversarial_cases() -> None:
    honest = [c for c in CASES if c["id"].startswith("honest-")]
    assert len(CASES) >= 70
    assert len(honest) >= 15
    assert len({c["id"] for c in CASES}) == len(CASES)
    for case in honest:
        assert "forbid_categories" in case, case["id"]


def test_the_corpus_exercises_every_check_family() -> None:
    expected = {check for case in CASES for check in case["expect"]}
    unknown = expected - set(CHECKS)
    assert not unknown
    families = {check.rsplit(".", 1)[0] for check in expected}
    assert {
        "pss.baseline",
        "pss.restricted",
        "rbac",
        "webhook",
        "admission",
        "apiservice",
        "crd",
        "secret",
        "workload",
    } <= families


@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_corpus_case_yields_its_documented_findings(case: dict[str, Any]) -> None:
    objects = parse_manifest(case["manifest"])
    found = check_objects(objects)
    checks = {f.check for f in found}
    categories = {f.category for f in found}
    missing = set(case["expect"]) - checks
    assert not missing, (missing, [(f.check, f.path) for f in found])
    forbidden = set(case.get("forbid_categories", ())) & categories
    assert not forbidden, [(f.check, f.path) for f in found if f.category in forbidden]
    if case.get("restricted_clean"):
        assert not categories & PSS, [(f.check, f.path) for f in found if f.category in PSS]
    for f in found:
        assert f.category == CHECKS[f.check]
        assert f.object in {o.label for o in objects}


@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_corpus_case_masks_idempotently_and_leaves_no_secret_string(case: dict[str, Any]) -> None:
    for obj in parse_manifest(case["manifest"]):
        masked = mask_object(obj.body)
        assert mask_object(masked) == masked
        dump = yaml.safe_dump(masked)
        for text in secret_strings(obj.body):
            assert text not in dump
