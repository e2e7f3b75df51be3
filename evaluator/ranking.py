"""Leaderboard ranking from evaluation results: ``iugc rank``.

* ``score`` -- aggregate-then-rank: teams ordered by the challenge score.
* ``mean-rank`` -- rank-then-aggregate: teams ranked on each ranking metric's aggregate,
  equal values sharing the lower rank, then ordered by their mean rank.
* Bootstrap rank stability: cases resampled with replacement, the ranking recomputed,
  per-team rank distributions and Kendall's tau against the full-data ranking.
* Pairwise Wilcoxon signed-rank tests on per-case scores (the PSFHS final-ranking rule):
  a team's significance rank is one plus the number of teams significantly better.

All ranks are 1-based; a team with an undefined score or metric ranks last.
"""
from __future__ import annotations

import numpy as np

from challenge.definition import METRIC_DIRECTIONS, ChallengeDefinition
from evaluator.scores import CaseTable, aggregate, case_score, challenge_score


def min_ranks(values: list[float | None], higher_is_better: bool) -> list[int]:
    """Competition ranks (1, 1, 3): equal values share the lower rank; None ranks last.

    >>> min_ranks([0.9, 0.8, 0.9, None], higher_is_better=True)
    [1, 3, 1, 4]
    """
    keyed = [(-v if higher_is_better else v) if v is not None else np.inf for v in values]
    return [1 + sum(1 for other in keyed if other < mine) for mine in keyed]


def _method_values(aggregates: list[dict], challenge: ChallengeDefinition, method: str) -> list[float]:
    """A value per team where lower is better, for the ranking method."""
    if method == "score":
        scores = [challenge_score(a, challenge)[0] for a in aggregates]
        return [-s if s is not None else np.inf for s in scores]
    if method == "mean-rank":
        per_metric = [
            min_ranks([a.get(m) for a in aggregates], METRIC_DIRECTIONS[m]) for m in challenge.ranking.mean_rank_metrics
        ]
        return [float(np.mean(col)) for col in zip(*per_metric)]
    raise ValueError(f"unknown ranking method {method!r}; expected 'score' or 'mean-rank'")


def rank_teams(results: dict[str, dict], challenge: ChallengeDefinition, method: str = "score") -> list[dict]:
    """Ranked rows ``{"team", "rank", "score", "mean_rank"?, **aggregates}``, best first."""
    teams = list(results)
    aggregates = [results[t]["aggregates"] for t in teams]
    values = _method_values(aggregates, challenge, method)
    ranks = min_ranks(values, higher_is_better=False)
    rows = []
    for team, agg, rank, value in zip(teams, aggregates, ranks, values):
        row = {"team": team, "rank": rank, "score": challenge_score(agg, challenge)[0]}
        if method == "mean-rank":
            row["mean_rank"] = value
        row.update(agg)
        rows.append(row)
    return sorted(rows, key=lambda r: (r["rank"], r["team"]))


def _aligned_tables(results: dict[str, dict]) -> tuple[list[str], dict[str, CaseTable]]:
    ids = None
    for result in results.values():
        keys = set(result["cases"])
        ids = keys if ids is None else ids & keys
    common = sorted(ids or ())
    if not common:
        raise ValueError("the results share no case: were they evaluated on the same ground truth?")
    tables = {t: CaseTable.from_cases({c: r["cases"][c] for c in common}) for t, r in results.items()}
    return common, tables


def kendall_tau(a: list[float], b: list[float]) -> float:
    """Kendall's tau-b of two rankings (ties handled as in scipy.stats.kendalltau)."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    da = np.sign(a[:, None] - a[None, :])
    db = np.sign(b[:, None] - b[None, :])
    iu = np.triu_indices(len(a), k=1)
    da, db = da[iu], db[iu]
    concordant_minus_discordant = float((da * db).sum())
    denominator = np.sqrt(np.count_nonzero(da) * np.count_nonzero(db))
    return concordant_minus_discordant / denominator if denominator else float("nan")


def bootstrap_ranks(
    results: dict[str, dict],
    challenge: ChallengeDefinition,
    method: str = "score",
    samples: int = 1000,
    seed: int = 0,
    progress: bool = False,
) -> dict:
    """Rank stability over ``samples`` bootstrap resamples of the cases.

    Returns ``{"samples", "kendall_tau": {"mean", "median", "p2.5", "p97.5"},
    "teams": {team: {"rank_counts": {rank: n}, "median_rank", "p2.5", "p97.5", "p_first"}}}``.
    """
    from tqdm import tqdm

    teams = list(results)
    _, tables = _aligned_tables(results)
    n = len(next(iter(tables.values())))
    full = min_ranks(
        _method_values([aggregate(tables[t], challenge) for t in teams], challenge, method), higher_is_better=False
    )
    rng = np.random.default_rng(seed)
    all_ranks = np.empty((samples, len(teams)), dtype=np.int64)
    taus = np.empty(samples)
    for s in tqdm(range(samples), desc="bootstrap", unit="resample", disable=not progress):
        index = rng.integers(0, n, size=n)
        values = _method_values([aggregate(tables[t], challenge, index) for t in teams], challenge, method)
        ranks = min_ranks(values, higher_is_better=False)
        all_ranks[s] = ranks
        taus[s] = kendall_tau(full, ranks) if len(teams) > 1 else 1.0
    out_teams = {}
    for j, team in enumerate(teams):
        column = all_ranks[:, j]
        counts = {int(r): int(c) for r, c in zip(*np.unique(column, return_counts=True))}
        out_teams[team] = {
            "rank_counts": counts,
            "median_rank": float(np.median(column)),
            "p2.5": float(np.percentile(column, 2.5)),
            "p97.5": float(np.percentile(column, 97.5)),
            "p_first": counts.get(1, 0) / samples,
        }
    finite = taus[np.isfinite(taus)]
    tau = {
        "mean": float(finite.mean()) if finite.size else None,
        "median": float(np.median(finite)) if finite.size else None,
        "p2.5": float(np.percentile(finite, 2.5)) if finite.size else None,
        "p97.5": float(np.percentile(finite, 97.5)) if finite.size else None,
    }
    return {"samples": samples, "method": method, "kendall_tau": tau, "teams": out_teams}


def wilcoxon_significance(results: dict[str, dict], challenge: ChallengeDefinition) -> dict:
    """Pairwise two-sided Wilcoxon signed-rank tests on per-case scores.

    Returns ``{"alpha", "p_values": {a: {b: p}}, "significance_rank": {team: rank}}``: a team's
    significance rank is 1 + the number of teams whose per-case scores are significantly
    higher (p < alpha and a positive median difference).
    """
    from scipy.stats import wilcoxon

    teams = list(results)
    common, _ = _aligned_tables(results)
    per_case = {}
    for team in teams:
        scores = [case_score(results[team]["cases"][c], challenge) for c in common]
        per_case[team] = np.array([np.nan if s is None else s for s in scores])
    alpha = challenge.ranking.alpha
    p_values: dict[str, dict[str, float | None]] = {t: {} for t in teams}
    better_than: dict[str, int] = {t: 0 for t in teams}
    for i, a in enumerate(teams):
        for b in teams[i + 1 :]:
            keep = ~(np.isnan(per_case[a]) | np.isnan(per_case[b]))
            diff = per_case[a][keep] - per_case[b][keep]
            if not np.any(diff != 0):
                p = 1.0
            else:
                p = float(wilcoxon(per_case[a][keep], per_case[b][keep]).pvalue)
            p_values[a][b] = p_values[b][a] = p
            if p < alpha:
                a_better = np.median(diff) > 0 or (np.median(diff) == 0 and diff.mean() > 0)
                better_than[b if a_better else a] += 1
    return {
        "alpha": alpha,
        "p_values": p_values,
        "significance_rank": {t: 1 + better_than[t] for t in teams},
    }
