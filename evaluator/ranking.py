"""Leaderboard ranking from evaluation results: ``iugc rank``.

* ``score`` -- aggregate-then-rank: teams ordered by the challenge score.
* ``mean-rank`` -- rank-then-aggregate: teams ranked on each ranking metric's aggregate,
  equal values sharing the lower rank, then ordered by their mean rank.
* Bootstrap rank stability: cases resampled with replacement, the ranking recomputed,
  per-team rank distributions and Kendall's tau against the full-data ranking.
* ``test-then-rank`` -- the PSFHS 2023 final-ranking rule: on each ranking metric, one-sided
  Wilcoxon signed-rank tests on paired per-case values; a team's rank on the metric is
  1 + the number of teams significantly better; teams ordered by the mean of those ranks,
  ties broken by the score (see docs/challenge-definition.md).
* Pairwise two-sided Wilcoxon tests on per-case scores (``--wilcoxon``, a summary column).

Results ranked together must cover the same cases (:func:`case_set_problem`);
:func:`fill_missing_cases` gives a team's missing cases the worst-case values instead.
All ranks are 1-based; a team with an undefined score or metric ranks last.
"""
from __future__ import annotations

import numpy as np

from iugc.challenge.biometry import Biometry
from iugc.challenge.definition import CASE_VALUE_METRICS, METRIC_DIRECTIONS, PER_CASE_METRICS, ChallengeDefinition
from iugc.evaluator.scores import CaseTable, aggregate, case_score, challenge_score, worst_case_values

METHODS = ("score", "mean-rank", "test-then-rank")


def min_ranks(values: list[float | None], higher_is_better: bool) -> list[int]:
    """Competition ranks (1, 1, 3): equal values share the lower rank; None ranks last.

    >>> min_ranks([0.9, 0.8, 0.9, None], higher_is_better=True)
    [1, 3, 1, 4]
    """
    keyed = np.array([(-v if higher_is_better else v) if v is not None else np.inf for v in values], dtype=float)
    # 1 + how many are strictly better: a binary search in the sorted values, not n^2 comparisons
    return [int(r) + 1 for r in np.searchsorted(np.sort(keyed), keyed, side="left")]


def _method_values(aggregates: list[dict], challenge: ChallengeDefinition, method: str,
                   scores: list[float | None] | None = None) -> list[float]:
    """A value per team where lower is better, for the ranking method (``scores``: each
    team's challenge score, when the caller has them already)."""
    if method == "score":
        if scores is None:
            scores = [challenge_score(a, challenge)[0] for a in aggregates]
        return [-s if s is not None else np.inf for s in scores]
    if method == "mean-rank":
        per_metric = [
            min_ranks([a.get(m) for a in aggregates], METRIC_DIRECTIONS[m]) for m in challenge.ranking.mean_rank_metrics
        ]
        return [float(np.mean(col)) for col in zip(*per_metric)]
    raise ValueError(f"unknown ranking method {method!r}; expected 'score' or 'mean-rank'")


def rank_teams(results: dict[str, dict], challenge: ChallengeDefinition, method: str = "score") -> list[dict]:
    """Ranked rows ``{"team", "rank", "score", "mean_rank"?, **aggregates}``, best first.

    ``method`` is one of :data:`METHODS`; ``test-then-rank`` rows also carry
    ``significance_ranks`` ({metric: rank}).
    """
    if method == "test-then-rank":
        return test_then_rank(results, challenge)["rows"]
    teams = list(results)
    aggregates = [results[t]["aggregates"] for t in teams]
    scores = [challenge_score(a, challenge)[0] for a in aggregates]  # once per team: the rows show them too
    values = _method_values(aggregates, challenge, method, scores)
    ranks = min_ranks(values, higher_is_better=False)
    rows = []
    for team, agg, rank, value, score in zip(teams, aggregates, ranks, values, scores):
        row = {"team": team, "rank": rank, "score": score}
        if method == "mean-rank":
            row["mean_rank"] = value
        row.update(agg)
        rows.append(row)
    return sorted(rows, key=lambda r: (r["rank"], r["team"]))


def per_case_values(results: dict[str, dict], challenge: ChallengeDefinition, metric: str) -> tuple[list[str], np.ndarray]:
    """``(case_ids, values)``: one per-case value per team (rows, in ``results`` order).

    Segmentation metrics (``dice``, ``hd``, ``asd``, ...): the mean of the challenge's
    structures (PS, FH, all), the per-case terms the PSFHS score averages; ``aop_error``,
    ``hsd_error``: the case's value. A value missing for some teams is that metric's worst
    case; a case missing for every team (its truth undefined and excluded) is left out.
    The results must cover the same cases (:func:`fill_missing_cases`).
    """
    case_ids, tables = aligned_tables(results)
    return per_case_matrix(case_ids, list(tables.values()), challenge, metric)


def per_case_matrix(case_ids: list[str], tables: list[CaseTable], challenge: ChallengeDefinition, metric: str):
    """:func:`per_case_values` from tables built once (:func:`aligned_tables`)."""
    if metric not in PER_CASE_METRICS:
        raise ValueError(f"metric {metric!r} has no per-case value; expected one of {PER_CASE_METRICS}")
    if metric in CASE_VALUE_METRICS:
        table = np.array([t.values[metric] for t in tables])
    else:  # a structure's value missing leaves the case's mean undefined (NaN)
        table = np.array([np.mean([t.values[f"{metric}_{s}"] for s in challenge.structures], axis=0) for t in tables])
    measured = ~np.all(np.isnan(table), axis=0)
    table = np.where(np.isnan(table), getattr(challenge.worst_case, metric), table)[:, measured]
    return [c for c, keep in zip(case_ids, measured) if keep], table


def significance_ranks(values: np.ndarray, higher_is_better: bool, alpha: float) -> tuple[list[int], np.ndarray]:
    """Ranks from pairwise one-sided tests on a (teams, cases) array of paired values.

    Returns ``(ranks, p)``: ``p[i, j]`` is the p-value of "team i is better than team j"
    (one-sided Wilcoxon signed-rank, ``scipy.stats.wilcoxon`` with its default zero
    handling; 1.0 where the values are identical; NaN on the diagonal), and a team's rank
    is 1 + the number of teams significantly better than it (p < alpha).

    >>> v = np.array([[0.9, 0.8, 0.95, 0.9, 0.85, 0.9], [0.5, 0.4, 0.6, 0.5, 0.45, 0.5]])
    >>> significance_ranks(v, higher_is_better=True, alpha=0.05)[0]
    [1, 2]
    """
    from scipy.stats import wilcoxon

    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 2:
        raise ValueError(f"values must be (teams, cases), got shape {values.shape}")
    n = len(values)
    alternative = "greater" if higher_is_better else "less"
    first, second = np.nonzero(~np.eye(n, dtype=bool))
    differs = np.any(values[first] != values[second], axis=1)
    p = np.full((n, n), np.nan)
    p[first[~differs], second[~differs]] = 1.0  # no difference at all: nothing to test
    first, second = first[differs], second[differs]
    if len(first) and values.shape[1] > 50:
        # scipy takes the asymptotic test beyond 50 cases whatever the data, so one call
        # over all pairs equals the calls pair by pair; below, exactness depends on each
        # pair's ties and zeros, and pairs are tested one at a time.
        p[first, second] = wilcoxon(values[first], values[second], alternative=alternative, axis=1).pvalue
    else:
        for i, j in zip(first, second):
            p[i, j] = wilcoxon(values[i], values[j], alternative=alternative).pvalue
    ranks = [1 + int(np.count_nonzero(p[:, j] < alpha)) for j in range(n)]
    return ranks, p


def test_then_rank(results: dict[str, dict], challenge: ChallengeDefinition) -> dict:
    """The PSFHS 2023 final ranking ("test, then rank") over the definition's ranking metrics.

    Returns ``{"alpha", "metrics", "rows": [...best first], "p_values": {metric: {a: {b: p}}}}``;
    ``p_values[m][a][b]`` is the one-sided p of "a better than b" on metric m. Each row has
    ``team``, ``rank``, ``mean_rank``, ``score``, ``significance_ranks`` ({metric: rank}),
    ``p_values`` ({metric: {other team: p of this team better}}) and the aggregates. Order: mean rank, lower first; ties by score, higher first; equal
    on both share the lower rank.
    """
    teams = list(results)
    alpha = challenge.ranking.alpha
    metrics = challenge.ranking.mean_rank_metrics
    no_cases = [m for m in metrics if m not in PER_CASE_METRICS]
    if no_cases:
        raise ValueError(f"{challenge.name}'s ranking metrics {no_cases} have no per-case value to test, so test-then-rank "
                         f"cannot rank it; its methods: {', '.join(challenge.ranking.methods)}")
    case_ids, tables = aligned_tables(results)
    per_metric, p_values = {}, {}
    for metric in metrics:
        _, values = per_case_matrix(case_ids, list(tables.values()), challenge, metric)
        ranks, p = significance_ranks(values, METRIC_DIRECTIONS[metric], alpha)
        per_metric[metric] = ranks
        p_values[metric] = {a: {b: None if i == j else float(p[i, j]) for j, b in enumerate(teams)} for i, a in enumerate(teams)}
    rows = []
    for i, team in enumerate(teams):
        agg = results[team]["aggregates"]
        sig = {m: per_metric[m][i] for m in metrics}
        p_row = {m: p_values[m][team] for m in metrics}
        rows.append({"team": team, "score": challenge_score(agg, challenge)[0], "mean_rank": float(np.mean(list(sig.values()))),
                     "significance_ranks": sig, "p_values": p_row, **agg})
    keys = [(r["mean_rank"], -r["score"] if r["score"] is not None else np.inf) for r in rows]
    for row, key in zip(rows, keys):
        row["rank"] = 1 + sum(1 for other in keys if other < key)
    rows.sort(key=lambda r: (r["rank"], r["team"]))
    return {"alpha": alpha, "metrics": list(metrics), "rows": rows, "p_values": p_values}


def _common_cases(results: dict[str, dict]) -> list[str]:
    sets = [set(r["cases"]) for r in results.values()]
    if any(s != sets[0] for s in sets):
        raise ValueError("the results cover different cases; check them with case_set_problem and fill_missing_cases first")
    if not sets or not sets[0]:
        raise ValueError("the results have no case")
    return sorted(sets[0])


def case_set_problem(case_sets: dict[str, set[str]], truth_hashes: dict[str, str | None] | None = None) -> str | None:
    """Why these results cannot be ranked together, or None when they cover the same cases.

    ``case_sets`` maps a label (a file name) to its case ids; ``truth_hashes`` optionally
    to the result's ``provenance.truth_manifest_sha256`` (None where absent): equal case
    ids scored against different truth are refused too.

    >>> case_set_problem({"a.json": {"1", "2", "3"}, "b.json": {"1", "2"}})
    'a.json and b.json cover different cases: b.json lacks 1 of the 3 (3)'
    """
    labels = list(case_sets)
    union = set().union(*case_sets.values())
    if any(case_sets[label] != union for label in labels):
        parts = []
        for label in labels:
            lacks = sorted(union - case_sets[label])
            if lacks:
                shown = ", ".join(lacks[:3]) + (" ..." if len(lacks) > 3 else "")
                parts.append(f"{label} lacks {len(lacks)} of the {len(union)} ({shown})")
        return f"{', '.join(labels[:-1])} and {labels[-1]} cover different cases: " + "; ".join(parts)
    hashes = {label: h for label, h in (truth_hashes or {}).items() if h is not None}
    if len(set(hashes.values())) > 1:
        groups = {}
        for label, h in hashes.items():
            groups.setdefault(h, []).append(label)
        described = "; ".join(f"{', '.join(names)}: truth {h[:12]}" for h, names in groups.items())
        return f"the results name the same cases but were scored against different truth (truth_manifest_sha256 differs: {described})"
    return None


def fill_missing_cases(results: dict[str, dict], challenge: ChallengeDefinition) -> tuple[dict[str, dict], dict[str, int]]:
    """Results over the union of their cases, a team's missing cases at their worst case.

    Returns ``(results, missing)``: a team that lacked cases gets new ``cases`` (the
    missing ones scored as a missing prediction is, with the truth's AoP/HSD and label
    taken from the teams that have the case), recomputed ``aggregates`` and ``score``, and
    ``missing_cases``; ``missing`` is {team: number of cases filled}. Other teams are
    returned as they were.
    """
    union: dict[str, dict] = {}
    for result in results.values():
        for case_id, case in result["cases"].items():
            union.setdefault(case_id, case)
    out, missing = {}, {}
    for team, result in results.items():
        lacking = [c for c in union if c not in result["cases"]]
        if not lacking:
            out[team] = result
            continue
        cases = dict(result["cases"])
        for case_id in lacking:
            known = union[case_id]
            filled = {key: None for key in known}
            filled.update(worst_case_values(challenge, Biometry(aop=known.get("aop_gt"), hsd=known.get("hsd_gt"))))
            if known.get("standard_plane") is not None:
                filled["standard_plane"] = known["standard_plane"]
                filled["p_standard_plane"] = float(1 - known["standard_plane"])
            filled["error"] = "missing from this team's result (scored as worst case by iugc rank --allow-missing)"
            cases[case_id] = filled
        aggregates = aggregate(CaseTable.from_cases(cases), challenge)
        aggregates["n_errors"] = sum(1 for c in cases.values() if c.get("error"))
        out[team] = {**result, "cases": cases, "aggregates": aggregates,
                     "score": challenge_score(aggregates, challenge)[0], "missing_cases": len(lacking)}
        missing[team] = len(lacking)
    return out, missing


def with_failed_teams(rows: list[dict], failed: dict[str, str]) -> list[dict]:
    """Ranked rows followed by teams whose evaluation failed, sharing the last rank.

    ``failed`` maps a team to its failure reason; its row is ``{"team", "rank",
    "status": "failed", "reason", "score": None}``.

    >>> with_failed_teams([{"team": "a", "rank": 1}], {"b": "time_limit"})[1]
    {'team': 'b', 'rank': 2, 'status': 'failed', 'reason': 'time_limit', 'score': None}
    """
    last = len(rows) + 1
    return rows + [{"team": t, "rank": last, "status": "failed", "reason": r, "score": None} for t, r in failed.items()]


def aligned_tables(results: dict[str, dict]) -> tuple[list[str], dict[str, CaseTable]]:
    """``(case_ids, {team: CaseTable})`` of results covering the same cases (sorted ids)."""
    common = _common_cases(results)
    tables = {t: CaseTable.from_cases({c: r["cases"][c] for c in common}) for t, r in results.items()}
    return common, tables


def kendall_tau(a: list[float], b: list[float]) -> float:
    """Kendall's tau-b of two rankings (ties handled as in scipy.stats.kendalltau)."""
    return float(_kendall_tau_rows(np.asarray(a, float), np.asarray(b, float)[None, :])[0])


def _kendall_tau_rows(full: np.ndarray, ranks: np.ndarray) -> np.ndarray:
    """Kendall's tau-b of ``full`` (teams,) against each row of ``ranks`` (samples, teams)."""
    iu = np.triu_indices(len(full), k=1)
    da = np.sign(full[:, None] - full[None, :])[iu]
    db = np.sign(ranks[:, :, None] - ranks[:, None, :])[:, iu[0], iu[1]]
    numerator = (db * da).sum(axis=1)
    denominator = np.sqrt(np.count_nonzero(da) * np.count_nonzero(db, axis=1).astype(float))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator > 0, numerator / np.where(denominator > 0, denominator, 1), np.nan)


def _min_ranks_rows(values: np.ndarray) -> np.ndarray:
    """Competition ranks along the last axis of ``values`` (lower is better, NaN last)."""
    v = np.where(np.isnan(values), np.inf, values)
    return 1 + (v[..., None, :] < v[..., :, None]).sum(axis=-1)


def _bootstrap_means(tables: list[CaseTable], metrics: list[str], weights: np.ndarray) -> dict[str, np.ndarray]:
    """{metric: (teams, samples) means} of per-case metrics under case multiplicities
    ``weights`` (samples, cases), with :func:`aggregate`'s semantics (NaN values left out;
    NaN when none is left): the sums and counts of every metric and team in one product."""
    from iugc.challenge.definition import SEGMENTATION_METRICS
    from iugc.challenge.labels import STRUCTURES

    rows = []
    for metric in metrics:
        for table in tables:
            if metric in SEGMENTATION_METRICS:
                columns = np.stack([table.values[f"{metric}_{s}"] for s in STRUCTURES])
            else:
                columns = table.values[metric][None, :]
            known = ~np.isnan(columns)
            rows += [np.where(known, columns, 0.0).sum(axis=0), known.sum(axis=0)]
    product = (np.array(rows, dtype=np.float64) @ weights.T).reshape(len(metrics), len(tables), 2, -1)
    total, n = product[:, :, 0], product[:, :, 1]
    with np.errstate(invalid="ignore", divide="ignore"):
        means = np.where(n > 0, total / np.where(n > 0, n, 1), np.nan)
    return dict(zip(metrics, means))


def _bootstrap_values(tables, challenge, method, index, weights) -> np.ndarray:
    """(samples, teams) values, lower better, of ``method`` on every resample at once.

    Per-case metrics are reduced with one matrix product; classification metrics (AUC
    ...) have no per-case value and are recomputed on each resample. Rounding uses
    ``np.round``, which may differ from Python's ``round`` in the last digit."""
    needed = {t.metric for t in challenge.score.terms} if method == "score" else set(challenge.ranking.mean_rank_metrics)
    means = _bootstrap_means(tables, sorted(needed & set(PER_CASE_METRICS)), weights)
    for metric in sorted(needed - set(PER_CASE_METRICS)):
        means[metric] = np.array([[aggregate(t, challenge, rows)[metric] for rows in index] for t in tables], dtype=float)
    if method == "score":
        total = 0.0
        for term in challenge.score.terms:
            x = means[term.metric] / term.scale
            if term.round is not None:
                x = np.round(x, term.round)
            value = 1 - x if term.transform == "one_minus" else x
            total = total + term.weight * (np.clip(value, 0.0, 1.0) if term.clip else value)
        return -total.T  # NaN (undefined) ranks last
    if method == "mean-rank":
        ranks = [_min_ranks_rows((-means[m] if METRIC_DIRECTIONS[m] else means[m]).T) for m in challenge.ranking.mean_rank_metrics]
        return np.mean(ranks, axis=0)
    raise ValueError(f"bootstrap ranks by 'score' or 'mean-rank', not {method!r}")


def bootstrap_ranks(
    results: dict[str, dict],
    challenge: ChallengeDefinition,
    method: str = "score",
    samples: int = 1000,
    seed: int = 0,
    progress: bool = False,
) -> dict:
    """Rank stability over ``samples`` bootstrap resamples of the cases.

    ``method`` is ``score`` or ``mean-rank``. Returns ``{"samples", "method",
    "kendall_tau": {"mean", "median", "p2.5", "p97.5"}, "teams": {team: {"rank_counts":
    {rank: n}, "median_rank", "p2.5", "p97.5", "p_first"}}}``. All resamples are computed
    at once (``progress`` is accepted for the callers' sake; it takes well under a second).
    """
    teams = list(results)
    _, by_team = aligned_tables(results)
    tables = [by_team[t] for t in teams]
    n = len(tables[0])
    full = np.array(min_ranks(_method_values([aggregate(t, challenge) for t in tables], challenge, method), higher_is_better=False), float)
    index = np.random.default_rng(seed).integers(0, n, size=(samples, n))
    weights = np.bincount((index + n * np.arange(samples)[:, None]).ravel(), minlength=samples * n).reshape(samples, n).astype(float)
    all_ranks = _min_ranks_rows(_bootstrap_values(tables, challenge, method, index, weights))
    taus = _kendall_tau_rows(full, all_ranks.astype(float)) if len(teams) > 1 else np.ones(samples)
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
    common, _ = aligned_tables(results)
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


def cell(value, width: int = 9) -> str:
    """A value as a right-aligned text cell: floats with 4 decimals, "-" for none.

    >>> cell(0.91234), cell(None, 3), cell(7, 2)
    ('   0.9123', '  -', ' 7')
    """
    if value is None:
        return "-".rjust(width)
    if isinstance(value, float):
        return f"{value:.4f}".rjust(width)
    return str(value).rjust(width)


def format_table(rows, challenge, method, stability=None, significance=None) -> str:
    """The ranked table as text: every metric of the challenge, plus stability columns."""
    metric_cols = [m for m in ("dice", "hd", "asd", "mre", "aop_error", "hsd_error", "accuracy", "auc", "f1", "mcc") if m in challenge.metrics]
    sig_cols = list(challenge.ranking.mean_rank_metrics) if method == "test-then-rank" else []
    header = ["rank", "team".ljust(16), "score".rjust(9)]
    if method in ("mean-rank", "test-then-rank"):
        header.append("mean_rank".rjust(9))
    header += [f"r_{m}".rjust(9) for m in sig_cols]
    header += [m.rjust(9) for m in metric_cols]
    if stability:
        header += ["med_rank".rjust(9), "rank_95%".rjust(9), "P(first)".rjust(9)]
    if significance:
        header.append("sig_rank".rjust(9))
    lines = [" ".join(header)]
    for row in rows:
        cells = [str(row["rank"]).rjust(4), row["team"][:16].ljust(16), cell(row["score"])]
        if row.get("status") == "failed":
            lines.append(" ".join(cells + [f"failed: {row['reason']}"]))
            continue
        if method in ("mean-rank", "test-then-rank"):
            cells.append(cell(row["mean_rank"]))
        cells += [cell(row["significance_ranks"][m]) for m in sig_cols]
        cells += [cell(row.get(m)) for m in metric_cols]
        if stability:
            t = stability["teams"][row["team"]]
            cells += [cell(t["median_rank"]), f"{t['p2.5']:.0f}-{t['p97.5']:.0f}".rjust(9), cell(t["p_first"])]
        if significance:
            cells.append(cell(significance["significance_rank"][row["team"]]))
        lines.append(" ".join(cells))
    if sig_cols:
        lines.append(f"r_<metric>: 1 + teams significantly better on it (one-sided Wilcoxon signed-rank on per-case values, "
                     f"alpha {challenge.ranking.alpha}); order: mean of those ranks, ties by score")
    if stability:
        tau = stability["kendall_tau"]
        lines.append(
            f"bootstrap ({stability['method']}): {stability['samples']} resamples of the cases; Kendall's tau vs the full ranking: "
            f"median {cell(tau['median'], 0)}, 95% interval {cell(tau['p2.5'], 0)} to {cell(tau['p97.5'], 0)}"
        )
    if significance:
        lines.append(f"sig_rank: 1 + teams significantly better (pairwise Wilcoxon signed-rank, alpha {significance['alpha']})")
    return "\n".join(lines)


