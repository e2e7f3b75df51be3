import json
import subprocess
import sys

import numpy as np
import pytest
from scipy import stats

from challenge.definition import load_challenge
from challenge.labels import STRUCTURES
from evaluator.ranking import bootstrap_ranks, kendall_tau, min_ranks, rank_teams, wilcoxon_significance
from evaluator.scores import CaseTable, aggregate
from tests.conftest import ROOT

PSFHS = load_challenge("psfhs2023")


def make_result(rng, n, dice_mean, aop_mean):
    cases = {}
    for i in range(n):
        case = {"error": None}
        for s in STRUCTURES:
            case[f"dice_{s}"] = float(np.clip(rng.normal(dice_mean, 0.02), 0, 1))
            case[f"hd_{s}"] = float(abs(rng.normal(20 * (1 - dice_mean) * 10, 2)))
            case[f"asd_{s}"] = float(abs(rng.normal(5 * (1 - dice_mean) * 10, 0.5)))
        case["aop_error"] = float(abs(rng.normal(aop_mean, 2)))
        case["hsd_error"] = None
        cases[f"c{i:03d}"] = case
    agg = aggregate(CaseTable.from_cases(cases), PSFHS)
    return {"challenge": "psfhs2023", "cases": cases, "aggregates": agg}


@pytest.fixture(scope="module")
def results():
    rng = np.random.default_rng(0)
    return {
        "strong": make_result(rng, 60, 0.95, 5),
        "middle": make_result(rng, 60, 0.90, 9),
        "weak": make_result(rng, 60, 0.80, 20),
    }


def test_min_ranks_share_the_lower_rank():
    assert min_ranks([3.0, 1.0, 3.0, 2.0], higher_is_better=False) == [3, 1, 3, 2]
    assert min_ranks([0.5, 0.5, 0.9], higher_is_better=True) == [2, 2, 1]
    assert min_ranks([None, 1.0], higher_is_better=True) == [2, 1]


def test_score_and_mean_rank_orders(results):
    by_score = rank_teams(results, PSFHS, "score")
    assert [r["team"] for r in by_score] == ["strong", "middle", "weak"]
    assert by_score[0]["score"] > by_score[1]["score"] > by_score[2]["score"]
    by_rank = rank_teams(results, PSFHS, "mean-rank")
    assert [r["mean_rank"] for r in by_rank] == [1.0, 2.0, 3.0]


def test_mean_rank_can_disagree_with_the_score():
    # A wins dice, hd and asd by a hair but loses AoP badly: mean rank favours A, the
    # score (AoP weighs 0.5) favours B.
    a = {"dice": 0.91, "hd": 10.0, "asd": 3.0, "aop_error": 30.0}
    b = {"dice": 0.90, "hd": 10.5, "asd": 3.1, "aop_error": 5.0}
    results = {"A": {"aggregates": a}, "B": {"aggregates": b}}
    assert rank_teams(results, PSFHS, "mean-rank")[0]["team"] == "A"
    assert rank_teams(results, PSFHS, "score")[0]["team"] == "B"


def test_kendall_tau_matches_scipy():
    rng = np.random.default_rng(1)
    for _ in range(50):
        a, b = rng.integers(1, 5, 7), rng.integers(1, 5, 7)
        expected = stats.kendalltau(a, b).statistic
        ours = kendall_tau(a.tolist(), b.tolist())
        assert (np.isnan(expected) and np.isnan(ours)) or ours == pytest.approx(expected, abs=1e-12)


def test_bootstrap_is_stable_for_separated_teams_and_reproducible(results):
    boot = bootstrap_ranks(results, PSFHS, "score", samples=200, seed=3)
    assert boot["teams"]["strong"]["p_first"] == 1.0
    assert boot["kendall_tau"]["median"] == 1.0
    assert all(sum(t["rank_counts"].values()) == 200 for t in boot["teams"].values())
    assert boot == bootstrap_ranks(results, PSFHS, "score", samples=200, seed=3)


def test_bootstrap_is_unstable_for_identical_teams():
    rng = np.random.default_rng(2)
    twins = {"a": make_result(rng, 40, 0.9, 8), "b": make_result(rng, 40, 0.9, 8)}
    boot = bootstrap_ranks(twins, PSFHS, "score", samples=300, seed=0)
    assert 0.1 < boot["teams"]["a"]["p_first"] < 0.9


def test_wilcoxon_matches_scipy_on_per_case_scores(results):
    sig = wilcoxon_significance(results, PSFHS)

    def per_case(team):
        out = []
        for case in results[team]["cases"].values():
            dice = np.mean([case[f"dice_{s}"] for s in STRUCTURES])
            hd = np.mean([case[f"hd_{s}"] for s in STRUCTURES])
            asd = np.mean([case[f"asd_{s}"] for s in STRUCTURES])
            out.append(0.25 * round(dice, 8) + 0.125 * (1 - round(hd / 100, 8)) + 0.125 * (1 - round(asd / 100, 8))
                       + 0.5 * (1 - case["aop_error"] / 180))
        return np.array(out)

    expected = stats.wilcoxon(per_case("strong"), per_case("weak")).pvalue
    assert sig["p_values"]["strong"]["weak"] == pytest.approx(expected, rel=1e-12)
    assert sig["significance_rank"] == {"strong": 1, "middle": 2, "weak": 3}


def test_rank_cli_prints_the_table(results, tmp_path):
    paths = []
    for team, result in results.items():
        path = tmp_path / f"{team}.json"
        path.write_text(json.dumps(result))
        paths.append(path)
    run = subprocess.run([sys.executable, "-m", "iugc", "rank", *map(str, paths), "--bootstrap", "50", "--wilcoxon"],
                         capture_output=True, text=True, cwd=ROOT)
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert "aop_error" in lines[0] and "P(first)" in lines[0] and "sig_rank" in lines[0]
    assert [line.split()[1] for line in lines[1:4]] == ["strong", "middle", "weak"]
    assert "Kendall's tau" in run.stdout
    other = tmp_path / "other.json"
    other.write_text(json.dumps(dict(results["weak"], challenge="iugc2024")))
    bad = subprocess.run([sys.executable, "-m", "iugc", "rank", str(paths[0]), str(other)], capture_output=True, text=True, cwd=ROOT)
    assert bad.returncode != 0 and "different challenges" in bad.stderr
