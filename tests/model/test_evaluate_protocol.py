"""Fresh-seed protocol of model/evaluate.py: seeds drawn at run time, negatives rotate, merges check cases."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from model.evaluate import NEGATIVE_KINDS, fresh_seeds, merge_reports, plan


def _args(**kw: object) -> argparse.Namespace:
    base = {"seeds_from": "", "families": "training,independent", "seeds": "", "fresh": 3, "negatives": 4}
    return argparse.Namespace(**{**base, **kw})


def test_fresh_seeds_differ_between_draws_and_fit_31_bits() -> None:
    a, b = fresh_seeds(8), fresh_seeds(8)
    assert a != b and all(0 <= s < 2**31 for s in a + b)


def test_plan_draws_per_family_and_rotates_negative_kinds() -> None:
    cases = plan(_args())
    fams = [f for f, _ in cases]
    assert fams[:6] == ["training"] * 3 + ["independent"] * 3
    assert fams[6:] == [NEGATIVE_KINDS[i % len(NEGATIVE_KINDS)] for i in range(4)]
    assert len({s for _, s in cases}) == len(cases)


def test_seeds_from_replays_the_cases_and_merge_refuses_other_cases(tmp_path: Path) -> None:
    cases = plan(_args())
    rep = {
        "protocol": {"cases": [{"family": f, "seed": s} for f, s in cases]},
        "bundles": {"a": {"cases": []}},
        "wall_seconds": 1.0,
        "summary": {},
    }
    first = tmp_path / "a.json"
    first.write_text(json.dumps(rep))
    assert plan(_args(seeds_from=str(first))) == cases
    other = tmp_path / "b.json"
    other.write_text(json.dumps({**rep, "bundles": {"b": {"cases": []}}}))
    assert set(merge_reports([first, other])["bundles"]) == {"a", "b"}
    rep["protocol"]["cases"] = rep["protocol"]["cases"][:-1]
    other.write_text(json.dumps(rep))
    with pytest.raises(ValueError, match="evaluated other cases"):
        merge_reports([first, other])


def test_concat_joins_separate_draws_per_bundle(tmp_path: Path) -> None:
    def case(family: str, seed: int, found: bool) -> dict[str, object]:
        return {
            "seed": seed,
            "shape": [1, 1, 1],
            "spacing": [1, 1, 1],
            "patient_position": "HFS",
            "phase": "portal",
            "dice": 0.0,
            "true_volume_ml": 0.0,
            "predicted_volume_ml": 5.0 * found,
            "volume_error_pct": None,
            "seconds": 1.0,
            "family": family,
            "found": found,
        }

    paths = []
    for n, found in enumerate((True, False)):
        rep = {
            "protocol": {"cases": [{"family": NEGATIVE_KINDS[0], "seed": n}]},
            "wall_seconds": 1.0,
            "bundles": {"a": {"cases": [case(NEGATIVE_KINDS[0], n, found)]}},
            "summary": {},
        }
        paths.append(tmp_path / f"{n}.json")
        paths[-1].write_text(json.dumps(rep))
    merged = merge_reports(paths, concat=True)
    assert len(merged["protocol"]["draws"]) == 2
    assert merged["bundles"]["a"]["negatives"]["cases"] == 2
    assert merged["bundles"]["a"]["negatives"]["no_spleen_pct"] == 50.0
