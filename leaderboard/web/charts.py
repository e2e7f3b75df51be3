"""Rank stability and pairwise significance of a leaderboard, from ``iugc.evaluator.ranking``
(``bootstrap_ranks``, ``wilcoxon_significance``) on the per-case values of the ranked
evaluations, and the stability chart as an SVG drawn by matplotlib on the server.

Both are cached on disk under ``<instance>/cache/ranking`` by the ranked evaluations'
ids and the method, so a page view recomputes nothing until an evaluation changes.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from iugc.evaluator.ranking import bootstrap_ranks, test_then_rank, wilcoxon_significance
from iugc.submissions import challenges, reports
from iugc.submissions.models import Evaluation, LeaderboardEntry, Phase, Team


def _ranked(session: Session, phase: Phase) -> dict[str, int]:
    """team name -> the evaluation id the leaderboard ranks for it."""
    return dict(session.execute(select(Team.name, LeaderboardEntry.evaluation_id)
                                .join(Team, Team.id == LeaderboardEntry.team_id)
                                .where(LeaderboardEntry.phase_id == phase.id)).all())


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def analysis(session: Session, phase: Phase, method: str, cache: Path) -> dict | None:
    """``{"bootstrap": ..., "significance": ..., "n_cases": ..., "tests": ...}`` for the
    phase's ranked evaluations, or None with fewer than two teams or no shared per-case
    values. ``tests`` (test-then-rank only): the ranking's one-sided p-values per metric,
    ``p_values[metric][a][b]`` = p of "a better than b", and each team's rank per metric."""
    ranked = _ranked(session, phase)
    if len(ranked) < 2:
        return None
    # "with tests" names this layout of the kept JSON: a file kept before it had no "tests" and is not read
    key = hashlib.sha256(json.dumps(["with tests", phase.id, method, sorted(ranked.items())]).encode()).hexdigest()[:24]
    path = cache / f"{key}.json"
    if path.exists():
        return json.loads(path.read_text())
    cases = reports.case_values(session, list(ranked.values()))
    results = {team: {"cases": cases.get(evaluation_id, {})} for team, evaluation_id in ranked.items()}
    common = set.intersection(*(set(r["cases"]) for r in results.values()))
    if not common:
        return None
    definition = challenges.definition_of(phase.challenge)
    resampled = method in ("score", "mean-rank")  # test-then-rank is itself the paired tests: no resampling of it
    out = {"bootstrap": bootstrap_ranks(results, definition, method, definition.ranking.bootstrap_samples, seed=0) if resampled else None,
           "significance": wilcoxon_significance(results, definition), "n_cases": len(common), "tests": None}
    if method == "test-then-rank":  # the ranking's own one-sided tests, per metric, for the page to show as they rank
        aggregates = dict(session.execute(select(Evaluation.id, Evaluation.aggregates).where(Evaluation.id.in_(ranked.values()))).all())
        try:
            tested = test_then_rank({team: {**r, "aggregates": aggregates.get(ranked[team]) or {}} for team, r in results.items()}, definition)
            out["tests"] = {"alpha": tested["alpha"], "metrics": tested["metrics"], "p_values": tested["p_values"],
                            "ranks": {r["team"]: r["significance_ranks"] for r in tested["rows"]}}
        except ValueError:  # teams scored on different cases: the board says so already
            pass
    _write(path, json.dumps(out, allow_nan=False).encode())
    return out


def stability_svg(result: dict, order: list[str], cache: Path) -> bytes:
    """Each team's share of bootstrap resamples at each rank, as stacked bars with a legend of
    the ranks' colours (SVG; its words are text, readable and searchable)."""
    key = hashlib.sha256(json.dumps(["legend", result["bootstrap"]["teams"], order], sort_keys=True).encode()).hexdigest()[:24]
    path = cache / f"{key}.svg"
    if path.exists():
        return path.read_bytes()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from matplotlib.patches import Patch

    teams = result["bootstrap"]["teams"]
    n = len(order)
    colours = plt.get_cmap("viridis")
    fig, ax = plt.subplots(figsize=(8, 0.45 * n + 1.6), dpi=100)
    samples = result["bootstrap"]["samples"]
    for y, team in enumerate(order):
        left = 0.0
        for rank in range(1, n + 1):
            share = teams[team]["rank_counts"].get(str(rank), teams[team]["rank_counts"].get(rank, 0)) / samples
            if share:
                ax.barh(y, share, left=left, color=colours((rank - 1) / max(1, n - 1)), edgecolor="white", linewidth=0.5)
                if share > 0.08:
                    ax.text(left + share / 2, y, str(rank), ha="center", va="center", fontsize=8,
                            color="white" if rank < n * 0.7 else "black")
            left += share
    ax.set_yticks(range(n), order)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel(f"share of {samples} bootstrap resamples of the cases, by rank")
    shown = sorted({1, n, *range(1, n + 1, max(1, (n + 7) // 8))})  # at most about nine entries, the first and last always
    ax.legend(handles=[Patch(color=colours((r - 1) / max(1, n - 1)), label=f"rank {r}") for r in shown],
              loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=min(len(shown), 9), frameon=False,
              fontsize=8, title="colour: the rank a team got in a resample", title_fontsize=8)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    fig.tight_layout()
    buffer = io.BytesIO()
    with plt.rc_context({"svg.fonttype": "none"}):  # words as <text>, not outlines
        fig.savefig(buffer, format="svg", metadata={"Date": None})
    plt.close(fig)
    _write(path, buffer.getvalue())
    return buffer.getvalue()
