"""`iugc rank --report`: the robustness report's numbers against direct scipy computations,
and the folder the command writes."""
import json
import subprocess
import sys

import cv2
import numpy as np
import pytest
from scipy import stats

from iugc.challenge.definition import load_challenge
from iugc.evaluator.ranking import rank_teams
from iugc.evaluator.report import figure_names, ranking_report, report_figure
from tests.conftest import ROOT
from tests.evaluator.test_ranking import HIGHER, _direct_values, make_result

PSFHS = load_challenge("psfhs2023")


@pytest.fixture(scope="module")
def results():
    rng = np.random.default_rng(11)
    return {name: make_result(rng, 45, dice, aop) for name, dice, aop in
            [("a", 0.93, 6), ("b", 0.92, 6.5), ("c", 0.90, 9), ("d", 0.85, 14)]}


@pytest.fixture(scope="module")
def report(results):
    return ranking_report(results, PSFHS, samples=80, seed=1)


def test_report_rankings_and_kendall_tau(results, report):
    for method in ("test-then-rank", "score", "mean-rank"):
        assert report["rankings"][method] == {r["team"]: r["rank"] for r in rank_teams(results, PSFHS, method)}
    assert report["teams"] == [r["team"] for r in rank_teams(results, PSFHS, "test-then-rank")]
    for pair, tau in report["kendall_tau"].items():
        a, b = pair.split(" vs ")
        expected = stats.kendalltau([report["rankings"][a][t] for t in report["teams"]],
                                    [report["rankings"][b][t] for t in report["teams"]]).statistic
        assert tau == pytest.approx(expected, abs=1e-12)
    assert set(report["bootstrap"]) == {"score", "mean-rank"}
    assert all(sum(t["rank_counts"].values()) == 80 for t in report["bootstrap"]["score"]["teams"].values())


def test_report_significance_maps_are_scipy_one_sided_tests(results, report):
    teams = report["teams"]
    for metric, higher in HIGHER.items():
        p = report["significance"][metric]["p"]
        for i, a in enumerate(teams):
            for j, b in enumerate(teams):
                if i == j:
                    assert p[i][j] is None
                    continue
                expected = stats.wilcoxon(_direct_values(results[a], metric), _direct_values(results[b], metric),
                                          alternative="greater" if higher else "less").pvalue
                assert p[i][j] == pytest.approx(expected, rel=1e-12), (metric, a, b)
        ranks = [1 + sum(p[i][j] < 0.05 for i in range(len(teams)) if i != j) for j in range(len(teams))]
        assert report["significance"][metric]["ranks"] == ranks


def test_report_podium_places_are_per_case_min_ranks(results, report):
    teams = report["teams"]
    for metric, higher in HIGHER.items():
        values = np.array([_direct_values(results[t], metric) for t in teams])
        assert np.allclose(report["podium"][metric]["values"], values, atol=1e-6)
        places = np.array([stats.rankdata(-col if higher else col, method="min") for col in values.T]).T
        expected = [[int(np.sum(places[i] == k)) for k in range(1, len(teams) + 1)] for i in range(len(teams))]
        assert report["podium"][metric]["places"] == expected


def test_report_figures_show_every_metric(report):
    names = figure_names(report)
    assert names == ["blob", "significance"] + [f"podium_{m}" for m in HIGHER]
    significance = report_figure(report, "significance")
    assert [ax.get_title().split()[0] for ax in significance.axes] == list(HIGHER)
    blob = report_figure(report, "blob")
    assert [ax.get_title().split(":")[0] for ax in blob.axes] == ["score", "mean-rank"]
    with pytest.raises(ValueError, match="no figure"):
        report_figure(report, "podium_auc")


def test_rank_report_cli_writes_the_folder(results, tmp_path):
    paths = []
    for team, result in results.items():
        path = tmp_path / f"{team}.json"
        path.write_text(json.dumps(result))
        paths.append(str(path))
    out = tmp_path / "report"
    run = subprocess.run([sys.executable, "-m", "iugc", "rank", *paths, "--bootstrap", "40", "--report", str(out)],
                         capture_output=True, text=True, cwd=ROOT)
    assert run.returncode == 0, run.stderr
    doc = json.loads((out / "report.json").read_text())
    assert doc["teams"] == [r["team"] for r in rank_teams(results, PSFHS, "test-then-rank")]
    assert doc["bootstrap"]["score"]["samples"] == 40
    for stem in figure_names(doc):
        image = cv2.imread(str(out / f"{stem}.png"))
        assert image is not None and min(image.shape[:2]) > 200, stem
        assert (out / f"{stem}.svg").read_text().lstrip().startswith("<?xml")
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".report")]  # no temporary folder left
    again = subprocess.run([sys.executable, "-m", "iugc", "rank", *paths, "--report", str(out)], capture_output=True, text=True, cwd=ROOT)
    assert again.returncode != 0 and "not an empty folder" in again.stderr


def test_report_lists_teams_in_the_chosen_method_order(results):
    by_score = ranking_report(results, PSFHS, samples=20, seed=0, order_by="score")
    assert by_score["final_method"] == "score"
    assert by_score["teams"] == [r["team"] for r in rank_teams(results, PSFHS, "score")]
    # the significance maps are the same tests whatever the order
    assert set(by_score["significance"]) == {"dice", "hd", "asd", "aop_error"}
