import json
import subprocess
import sys

import numpy as np
import pytest
from scipy import stats

from iugc.challenge.definition import load_challenge
from iugc.challenge.labels import STRUCTURES
from iugc.evaluator.ranking import bootstrap_ranks, kendall_tau, min_ranks, rank_teams, wilcoxon_significance
from iugc.evaluator.scores import CaseTable, aggregate
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


def _write(tmp_path, results):
    paths = []
    for team, result in results.items():
        path = tmp_path / f"{team}.json"
        path.write_text(json.dumps(result))
        paths.append(path)
    return paths


def test_rank_cli_prints_the_table(results, tmp_path):
    paths = _write(tmp_path, results)
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


# ---- test-then-rank (the PSFHS 2023 final ranking), checked against scipy directly ----

HIGHER = {"dice": True, "hd": False, "asd": False, "aop_error": False}


def _direct_values(result, metric):
    out = []
    for case_id in sorted(result["cases"]):
        case = result["cases"][case_id]
        if metric == "aop_error":
            out.append(180.0 if case["aop_error"] is None else case["aop_error"])
        else:
            out.append(np.mean([case[f"{metric}_{s}"] for s in ("ps", "fh", "all")]))
    return np.array(out)


def _direct_test_then_rank(results):
    """The rule as the issue states it, written out with scipy.stats.wilcoxon."""
    teams = list(results)
    sig = {t: {} for t in teams}
    for metric, higher in HIGHER.items():
        values = {t: _direct_values(results[t], metric) for t in teams}
        for b in teams:
            better = 0
            for a in teams:
                if a != b and np.any(values[a] != values[b]):
                    p = stats.wilcoxon(values[a], values[b], alternative="greater" if higher else "less").pvalue
                    better += p < 0.05
            sig[b][metric] = 1 + better
    mean_rank = {t: np.mean(list(sig[t].values())) for t in teams}
    return sig, mean_rank


@pytest.fixture(scope="module")
def close_results():
    rng = np.random.default_rng(7)
    out = {
        "strong": make_result(rng, 40, 0.93, 6),
        "twin_a": make_result(rng, 40, 0.90, 9),
        "twin_b": make_result(rng, 40, 0.90, 9),
        "weak": make_result(rng, 40, 0.85, 15),
    }
    out["twin_b"]["cases"]["c005"]["aop_error"] = None  # a missing value: worst case, 180
    return out


def test_test_then_rank_matches_a_direct_scipy_computation(close_results):
    from iugc.evaluator.ranking import test_then_rank

    ranked = test_then_rank(close_results, PSFHS)
    sig, mean_rank = _direct_test_then_rank(close_results)
    rows = {r["team"]: r for r in ranked["rows"]}
    for team in close_results:
        assert rows[team]["significance_ranks"] == sig[team], team
        assert rows[team]["mean_rank"] == pytest.approx(mean_rank[team])
    # the twins are not significantly different on any metric: they share every
    # significance rank and the mean rank, and the score breaks the tie
    assert rows["twin_a"]["significance_ranks"] == rows["twin_b"]["significance_ranks"] == {m: 2 for m in HIGHER}
    twins = sorted(["twin_a", "twin_b"], key=lambda t: -rows[t]["score"])
    assert [r["team"] for r in ranked["rows"]] == ["strong", *twins, "weak"]
    assert [r["rank"] for r in ranked["rows"]] == [1, 2, 3, 4]
    expected_p = stats.wilcoxon(_direct_values(close_results["strong"], "hd"), _direct_values(close_results["weak"], "hd"),
                                alternative="less").pvalue
    assert ranked["p_values"]["hd"]["strong"]["weak"] == pytest.approx(expected_p, rel=1e-12)


def test_test_then_rank_missing_value_is_the_worst_case(close_results):
    from iugc.evaluator.ranking import per_case_values

    ids, values = per_case_values(close_results, PSFHS, "aop_error")
    assert values[list(close_results).index("twin_b"), ids.index("c005")] == 180.0


def test_test_then_rank_ties_go_to_the_score_then_share_the_rank():
    from iugc.evaluator.ranking import test_then_rank

    rng = np.random.default_rng(3)
    base = make_result(rng, 12, 0.9, 8)
    better = json.loads(json.dumps(base))
    better["cases"]["c000"]["aop_error"] -= 1.0  # one case differs: never significant, higher score
    better["aggregates"] = aggregate(CaseTable.from_cases(better["cases"]), PSFHS)
    same = json.loads(json.dumps(base))
    rows = test_then_rank({"base": base, "better": better, "same": same}, PSFHS)["rows"]
    assert all(r["mean_rank"] == 1.0 for r in rows)
    assert [(r["team"], r["rank"]) for r in rows] == [("better", 1), ("base", 2), ("same", 2)]


def test_psfhs_final_phase_ranks_by_test_then_rank():
    assert PSFHS.phase("final-test").ranking_method == "test-then-rank"
    assert PSFHS.phase("validation").ranking_method == "score"


def _rank(*args):
    return subprocess.run([sys.executable, "-m", "iugc", "rank", *map(str, args)], capture_output=True, text=True, cwd=ROOT)


def test_rank_cli_test_then_rank_writes_the_rows(close_results, tmp_path):
    paths = _write(tmp_path, close_results)
    out = tmp_path / "ranking.json"
    run = _rank(*paths, "--method", "test-then-rank", "--json-out", out)
    assert run.returncode == 0, run.stderr
    assert "r_aop_error" in run.stdout.splitlines()[0] and "one-sided Wilcoxon" in run.stdout
    doc = json.loads(out.read_text())
    sig, mean_rank = _direct_test_then_rank(close_results)
    for row in doc["rows"]:
        assert {"team", "rank", "mean_rank", "score", "significance_ranks"} <= set(row)
        assert row["significance_ranks"] == sig[row["team"]]
    # results of the final-test phase rank by the phase's method without --method
    for path in paths:
        path.write_text(json.dumps(dict(json.loads(path.read_text()), phase="final-test")))
    assert "r_aop_error" in _rank(*paths).stdout


# ---- results that cannot be ranked together (issue 19, item 2) ----

def test_rank_refuses_results_of_different_case_sets(close_results, tmp_path):
    short = dict(close_results["weak"], cases={k: v for k, v in close_results["weak"]["cases"].items() if k < "c020"})
    paths = _write(tmp_path, {"strong": close_results["strong"], "short": short})
    run = _rank(*paths, "--bootstrap", "20")
    assert run.returncode != 0
    assert "short.json lacks 20 of the 40" in run.stderr and "strong.json" in run.stderr and "--allow-missing" in run.stderr
    allowed = _rank(*paths, "--allow-missing", "--json-out", tmp_path / "r.json")
    assert allowed.returncode == 0, allowed.stderr
    assert "short lacks 20 cases, scored as the worst case" in allowed.stdout
    rows = {r["team"]: r for r in json.loads((tmp_path / "r.json").read_text())["rows"]}
    # the 20 missing cases count as Dice 0 over all three structures: the mean halves
    kept = [c[f"dice_{s}"] for c in short["cases"].values() for s in STRUCTURES]
    assert rows["short"]["dice"] == pytest.approx(sum(kept) / (2 * len(kept)), rel=1e-12)
    assert rows["short"]["n_cases"] == 40 and rows["strong"]["rank"] == 1


def test_rank_refuses_same_cases_scored_against_different_truth(close_results, tmp_path):
    a = dict(close_results["strong"], provenance={"truth_manifest_sha256": "a" * 64})
    b = dict(close_results["weak"], provenance={"truth_manifest_sha256": "b" * 64})
    run = _rank(*_write(tmp_path, {"a": a, "b": b}), "--allow-missing")
    assert run.returncode != 0 and "different truth" in run.stderr and "a.json" in run.stderr


def test_a_failed_image_result_ranks_last_with_its_reason(close_results, tmp_path):
    failed = {"image": "team.tar", "status": "failed", "failure": "time_limit", "error": "ran past the 300 s limit", "logs": ""}
    paths = _write(tmp_path, {"strong": close_results["strong"], "weak": close_results["weak"], "slow": failed})
    run = _rank(*paths, "--json-out", tmp_path / "r.json")
    assert run.returncode == 0, run.stderr
    last = run.stdout.splitlines()[3].split()
    assert last[:2] == ["3", "slow"] and "failed: time_limit: ran past the 300 s limit" in run.stdout.splitlines()[3]
    rows = json.loads((tmp_path / "r.json").read_text())["rows"]
    assert rows[-1] == {"team": "slow", "rank": 3, "status": "failed", "reason": "time_limit: ran past the 300 s limit", "score": None}


@pytest.mark.parametrize("method", ["score", "mean-rank"])
def test_vectorised_bootstrap_equals_a_loop_over_resamples(close_results, method):
    """Every resample at once (one matrix product) against the plain loop: aggregate each
    resampled table, rank, count."""
    from iugc.evaluator.scores import challenge_score

    samples, seed = 60, 5
    boot = bootstrap_ranks(close_results, PSFHS, method, samples=samples, seed=seed)
    teams = list(close_results)
    ids = sorted(close_results[teams[0]]["cases"])
    tables = [CaseTable.from_cases({c: close_results[t]["cases"][c] for c in ids}) for t in teams]
    index = np.random.default_rng(seed).integers(0, len(ids), size=(samples, len(ids)))
    counts = {t: {} for t in teams}
    for rows in index:
        aggs = [aggregate(table, PSFHS, rows) for table in tables]
        if method == "score":
            ranks = min_ranks([challenge_score(a, PSFHS)[0] for a in aggs], higher_is_better=True)
        else:
            per_metric = [min_ranks([a[m] for a in aggs], higher_is_better=(m == "dice")) for m in ("dice", "hd", "asd", "aop_error")]
            ranks = min_ranks([float(np.mean(col)) for col in zip(*per_metric)], higher_is_better=False)
        for team, rank in zip(teams, ranks):
            counts[team][rank] = counts[team].get(rank, 0) + 1
    assert {t: boot["teams"][t]["rank_counts"] for t in teams} == counts
    assert len({frozenset(c.items()) for c in counts.values()}) > 1 and any(len(c) > 1 for c in counts.values())


def test_significance_over_many_cases_equals_scipy_pair_by_pair():
    # beyond 50 cases all pairs go to scipy in one call; zeros and ties must not change a p
    from iugc.evaluator.ranking import significance_ranks

    rng = np.random.default_rng(4)
    values = np.round(rng.normal(0, 1, (5, 80)) + np.arange(5)[:, None] * 0.25, 1)  # rounding: ties
    values[1, :30] = values[0, :30]  # zero differences between teams 0 and 1
    values[3] = values[2]  # identical teams
    ranks, p = significance_ranks(values, higher_is_better=False, alpha=0.05)
    for i in range(5):
        for j in range(5):
            if i == j:
                assert np.isnan(p[i, j])
            elif np.array_equal(values[i], values[j]):
                assert p[i, j] == 1.0
            else:
                assert p[i, j] == pytest.approx(stats.wilcoxon(values[i], values[j], alternative="less").pvalue, rel=1e-12)
    assert ranks == [1 + sum(p[i, j] < 0.05 for i in range(5) if i != j) for j in range(5)]
    assert ranks[2] == ranks[3] and len(set(ranks)) > 2


def test_test_then_rank_refuses_a_challenge_without_per_case_metrics(tmp_path):
    rng = np.random.default_rng(0)
    result = dict(make_result(rng, 10, 0.9, 5), challenge="iugc2024")
    run = _rank(*_write(tmp_path, {"a": result, "b": result}), "--method", "test-then-rank")
    assert run.returncode != 0 and "iugc2024's ranking metrics ['auc', 'f1']" in run.stderr and "Traceback" not in run.stderr


def test_fill_missing_cases_scores_a_missing_case_as_a_missing_prediction():
    from iugc.evaluator.ranking import fill_missing_cases

    iugc = load_challenge("iugc2024")
    full = {f"c{i}": {**{f"{m}_{s}": 0.9 if m == "dice" else 5.0 for m in ("dice", "hd", "asd") for s in STRUCTURES},
                      "aop_gt": 100.0 + i, "aop_error": 3.0, "hsd_gt": None if i == 0 else 40.0, "hsd_error": None if i == 0 else 2.0,
                      "standard_plane": i % 2, "p_standard_plane": 0.6, "error": None} for i in range(4)}
    short = {k: v for k, v in full.items() if k not in ("c0", "c1")}
    agg = lambda cases: aggregate(CaseTable.from_cases(cases), iugc)  # noqa: E731
    filled, missing = fill_missing_cases({"full": {"cases": full, "aggregates": agg(full)},
                                          "short": {"cases": short, "aggregates": agg(short)}}, iugc)
    assert missing == {"short": 2}
    c0, c1 = filled["short"]["cases"]["c0"], filled["short"]["cases"]["c1"]
    assert (c0["dice_fh"], c0["hd_all"], c0["aop_error"], c1["hsd_error"]) == (0.0, 100.0, 180.0, 100.0)
    assert c0["hsd_error"] is None  # the truth's HSD is undefined there: excluded, as for every team
    assert (c0["p_standard_plane"], c1["p_standard_plane"]) == (1.0, 0.0)  # 1 - label: the worst case
    assert filled["short"]["aggregates"]["n_cases"] == 4 and filled["short"]["aggregates"]["n_errors"] == 2
    assert filled["full"]["cases"] is full  # a team lacking nothing is returned as it was


@pytest.mark.parametrize("higher_is_better", [True, False])
def test_min_ranks_equal_scipys_min_rank_with_ties_and_missing_last(higher_is_better):
    rng = np.random.default_rng(3)
    values = [None if rng.random() < 0.1 else float(rng.choice([0.5, 0.7]) if rng.random() < 0.3 else rng.random())
              for _ in range(300)]
    keyed = [np.inf if v is None else (-v if higher_is_better else v) for v in values]
    assert min_ranks(values, higher_is_better) == [int(r) for r in stats.rankdata(keyed, method="min")]
