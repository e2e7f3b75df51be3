"""The ranking robustness report of ``iugc rank --report DIR`` (what challengeR gives
organizers): pure functions of the results, and :func:`write_report`, which renders them
into a new folder (the only function here that writes).

* :func:`ranking_report` -- a JSON-ready dict: the ranking by every method of the
  definition, Kendall's tau between those rankings, each team's bootstrap rank
  distribution (score and mean-rank), the pairwise one-sided Wilcoxon p-values per
  ranking metric (the significance maps) and each team's podium places per metric.
* :func:`report_figure` -- a matplotlib figure drawn from that dict (:func:`figure_names`
  lists them): a blob plot of the
  bootstrap ranks, the significance maps (one panel per ranking metric) and a podium
  plot per ranking metric.

The web leaderboard can call both on stored results and render the figures itself.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from iugc.challenge.definition import METRIC_DIRECTIONS, PER_CASE_METRICS, ChallengeDefinition
from iugc.evaluator.ranking import aligned_tables, bootstrap_ranks, kendall_tau, per_case_matrix, rank_teams, significance_ranks

BOOTSTRAP_METHODS = ("score", "mean-rank")
"""Methods resampled for the blob plot (test-then-rank resampled would cost N x teams² x
metrics tests)."""


def _podium(values: np.ndarray, higher_is_better: bool) -> np.ndarray:
    """(teams, cases) per-case places, 1 = best on that case, ties sharing the lower place."""
    v = -values if higher_is_better else values
    return 1 + (v[None, :, :] < v[:, None, :]).sum(axis=1)


def ranking_report(
    results: dict[str, dict], challenge: ChallengeDefinition, samples: int = 1000, seed: int = 0, order_by: str | None = None
) -> dict:
    """Everything the report shows, from results covering the same cases.

    The methods are the definition's ``ranking.methods`` (plus ``order_by``); teams are
    listed in the order of ``order_by`` (default: test-then-rank when the definition has
    it, else score).

    Returns ``{"challenge", "alpha", "teams" (final order), "final_method", "rankings":
    {method: {team: rank}}, "kendall_tau": {"a vs b": tau}, "bootstrap": {method: ...},
    "significance": {metric: {"p": [[p(row better than column)]], "ranks": [...]}},
    "podium": {metric: {"values": [[per-case]], "places": [[cases at place k]]}},
    "higher_is_better": {metric: bool}}``; matrices are in ``teams`` order.
    """
    if samples < 1:
        raise ValueError(f"samples must be >= 1, got {samples}")
    methods = [m for m in ("test-then-rank", "score", "mean-rank") if m in challenge.ranking.methods or m == order_by]
    rows = {m: rank_teams(results, challenge, m) for m in methods}
    rankings = {m: {r["team"]: r["rank"] for r in rows[m]} for m in methods}
    final = order_by or methods[0]
    teams = [r["team"] for r in rows[final]]
    taus = {}
    for i, a in enumerate(methods):
        for b in methods[i + 1 :]:
            tau = kendall_tau([rankings[a][t] for t in teams], [rankings[b][t] for t in teams])
            taus[f"{a} vs {b}"] = None if np.isnan(tau) else tau
    ordered = {t: results[t] for t in teams}
    bootstrap = {m: bootstrap_ranks(ordered, challenge, m, samples, seed) for m in BOOTSTRAP_METHODS if m in methods}
    significance, podium = {}, {}
    case_ids, tables = aligned_tables(ordered)
    for metric in [m for m in challenge.ranking.mean_rank_metrics if m in PER_CASE_METRICS]:
        _, values = per_case_matrix(case_ids, list(tables.values()), challenge, metric)
        if "test-then-rank" in rows:  # the tests are done already: reuse them
            by_team = {r["team"]: r for r in rows["test-then-rank"]}
            ranks = [by_team[t]["significance_ranks"][metric] for t in teams]
            p = [[by_team[a]["p_values"][metric][b] for b in teams] for a in teams]
        else:
            ranks, matrix = significance_ranks(values, METRIC_DIRECTIONS[metric], challenge.ranking.alpha)
            p = [[None if np.isnan(x) else float(x) for x in row] for row in matrix]
        significance[metric] = {"p": p, "ranks": ranks}
        places = _podium(values, METRIC_DIRECTIONS[metric])
        counts = (places[:, :, None] == np.arange(1, len(teams) + 1)[None, None, :]).sum(axis=1)
        podium[metric] = {"values": values.round(6).tolist(), "places": counts.tolist()}
    return {
        "challenge": challenge.name,
        "alpha": challenge.ranking.alpha,
        "teams": teams,
        "final_method": final,
        "rankings": rankings,
        "kendall_tau": taus,
        "bootstrap": bootstrap,
        "significance": significance,
        "podium": podium,
        "higher_is_better": {m: METRIC_DIRECTIONS[m] for m in podium},
    }


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _colours(n: int) -> list:
    plt = _pyplot()
    cmap = plt.get_cmap("tab20" if n > 10 else "tab10")
    return [cmap(i % cmap.N) for i in range(n)]


def blob_figure(report: dict):
    """Blob plot: each team's bootstrap rank distribution per method (area = frequency),
    the median rank as a black dot and the 95% rank interval as a line, the rank on all
    cases as a red cross; one panel per method, teams in the final order."""
    plt = _pyplot()
    teams = report["teams"]
    n = len(teams)
    methods = list(report["bootstrap"])
    colours = _colours(n)
    fig, axes = plt.subplots(len(methods), 1, figsize=(max(5.0, 0.42 * n + 2.0), 3.6 * len(methods) + 0.6), squeeze=False)
    for ax, method in zip(axes[:, 0], methods):
        boot = report["bootstrap"][method]
        xs, ys, sizes, cs = [], [], [], []
        for x, team in enumerate(teams):
            for rank, count in boot["teams"][team]["rank_counts"].items():
                xs.append(x)
                ys.append(int(rank))
                sizes.append(320 * count / boot["samples"])
                cs.append(colours[x])
        ax.scatter(xs, ys, s=sizes, c=cs, alpha=0.65, linewidths=0)
        stats = [boot["teams"][t] for t in teams]
        ax.vlines(range(n), [t["p2.5"] for t in stats], [t["p97.5"] for t in stats], color="black", lw=1)
        ax.plot(range(n), [t["median_rank"] for t in stats], "o", color="black", ms=2.5, label="median, 95% interval")
        full = report["rankings"][method]
        ax.plot(range(n), [full[t] for t in teams], "x", color="crimson", ms=5, label="rank on all cases")
        ax.set_xticks(range(n), teams, rotation=60, ha="right", fontsize=8)
        ax.set_xlim(-0.7, n - 0.3)
        ax.set_ylim(n + 0.7, 0.3)
        ax.set_yticks(range(1, n + 1, max(1, (n + 9) // 10)))
        ax.set_ylabel("rank")
        tau = boot["kendall_tau"]["median"]
        tau_text = "" if tau is None else f"; median Kendall's tau vs the ranking on all cases {tau:.3f}"
        ax.set_title(f"{method}: ranks over {boot['samples']} bootstrap resamples{tau_text}", fontsize=10)
        ax.grid(axis="y", alpha=0.3)
        ax.legend(loc="upper right", fontsize=8, frameon=False)
    fig.suptitle(f"{report['challenge']}: blob area = share of resamples giving the team that rank", fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.98))
    return fig


def significance_figure(report: dict):
    """Who beats whom, one panel per ranking metric: cell (row, column) dark when the row's
    team is significantly better than the column's (one-sided Wilcoxon, p < alpha); the
    diagonal cell holds the team's significance rank on that metric."""
    from matplotlib.colors import ListedColormap

    plt = _pyplot()
    teams = report["teams"]
    n = len(teams)
    metrics = list(report["significance"])
    cols = min(2, len(metrics))
    rows = -(-len(metrics) // cols)
    size = max(3.4, 0.25 * n + 1.4)
    fig, axes = plt.subplots(rows, cols, figsize=(size * cols + 1.6, size * rows + 1.4), squeeze=False, sharex=True, sharey=True)
    cmap = ListedColormap(["#e3eaf3", "#1f4e79"])
    cmap.set_bad("white")
    edges = np.arange(-0.5, n)  # cell borders as two line collections (minor ticks cost far more)
    for ax, metric in zip(axes.ravel(), metrics):
        p = np.array([[np.nan if x is None else x for x in row] for row in report["significance"][metric]["p"]], float)
        better = np.where(np.isnan(p), np.nan, (p < report["alpha"]).astype(float))
        ax.imshow(better, cmap=cmap, vmin=0, vmax=1)
        ax.hlines(edges, -0.5, n - 0.5, color="white", lw=0.8)
        ax.vlines(edges, -0.5, n - 0.5, color="white", lw=0.8)
        for i, rank in enumerate(report["significance"][metric]["ranks"]):
            ax.text(i, i, str(rank), ha="center", va="center", fontsize=6 if n > 12 else 8)
        better_word = "higher" if report["higher_is_better"][metric] else "lower"
        ax.set_title(f"{metric} ({better_word} is better)", fontsize=10)
    for ax in axes.ravel()[len(metrics):]:
        ax.axis("off")
    for ax in axes[-1]:
        ax.set_xticks(range(n), teams, rotation=60, ha="right", fontsize=7)
        ax.set_xlabel("... than this team", fontsize=8)
    for ax in axes[:, 0]:
        ax.set_yticks(range(n), teams, fontsize=7)
        ax.set_ylabel("this team is significantly better ...", fontsize=8)
    fig.suptitle(f"{report['challenge']}: dark = the row's team is significantly better than the column's (one-sided "
                 f"Wilcoxon signed-rank, p < {report['alpha']});\non the diagonal: the team's significance rank "
                 "(1 + teams significantly better)", fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 0.96))
    return fig


def podium_figure(report: dict, metric: str):
    """Podium plot of one metric: every case's value per team (top; median as a bar), and
    how often each team took each place among all teams on a case (bottom)."""
    plt = _pyplot()
    teams = report["teams"]
    n = len(teams)
    values = np.array(report["podium"][metric]["values"], float)
    n_cases = values.shape[1]
    colours = _colours(n)
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(max(6.0, 0.42 * n + 2.5), 3.4 + 0.3 * n),
                                      gridspec_kw={"height_ratios": [3.0, max(1.5, 0.28 * n)]})
    jitter = np.random.default_rng(0).uniform(-0.3, 0.3, values.shape)
    xs = np.arange(n)[:, None] + jitter
    dot = float(np.clip(2400 / (n_cases * max(1, n / 4)), 3, 16))  # fewer dots drawn larger
    top.scatter(xs.ravel(), values.ravel(), s=dot, c=np.repeat(np.array(colours), n_cases, axis=0), alpha=0.45,
                linewidths=0, rasterized=True)
    top.hlines(np.median(values, axis=1), np.arange(n) - 0.38, np.arange(n) + 0.38, color="black", lw=1.5, label="median")
    top.set_xticks(range(n), teams, rotation=60, ha="right", fontsize=8)
    top.set_xlim(-0.7, n - 0.3)
    better = "higher" if report["higher_is_better"][metric] else "lower"
    top.set_ylabel(f"{metric} ({better} is better)")
    top.set_title(f"{metric} on each of the {n_cases} cases, teams in the final order", fontsize=10)
    top.legend(loc="best", fontsize=8, frameon=False)
    counts = np.array(report["podium"][metric]["places"], float)
    share = counts / max(1, n_cases)
    image = bottom.imshow(share, aspect="auto", cmap="Blues", vmin=0, vmax=max(0.05, share.max()))
    fig.colorbar(image, ax=bottom, fraction=0.03, pad=0.01, label="share of the cases")
    bottom.set_yticks(range(n), teams, fontsize=7)
    bottom.set_xticks(range(n), [str(k) for k in range(1, n + 1)], fontsize=7)
    bottom.set_xlabel("place among all teams on a case (1 = best on that case)", fontsize=8)
    bottom.set_title("podium: how often each team took each place", fontsize=10)
    fig.tight_layout()
    return fig


def figure_names(report: dict) -> list[str]:
    """The report's figures by file stem: ``blob``, ``significance``, ``podium_<metric>``."""
    return (["blob"] if report["bootstrap"] else []) + (["significance"] if report["significance"] else []) + [
        f"podium_{metric}" for metric in report["podium"]
    ]


def report_figure(report: dict, name: str):
    """One figure of the report by its name (:func:`figure_names`)."""
    if name == "blob":
        return blob_figure(report)
    if name == "significance":
        return significance_figure(report)
    if name.startswith("podium_") and name[len("podium_") :] in report["podium"]:
        return podium_figure(report, name[len("podium_") :])
    raise ValueError(f"no figure {name!r} in this report; expected one of {figure_names(report)}")


class ReportError(ValueError):
    """The report cannot be written (a folder in the way, no matplotlib); the message says what to do."""


def _render_figure(item) -> None:
    """Draw one report figure and save it as PNG and SVG (a pool worker's task)."""
    import matplotlib
    import matplotlib.pyplot as plt

    report, stem, folder = item
    figure = report_figure(report, stem)
    with matplotlib.rc_context({"svg.fonttype": "none"}):  # SVG text stays text: smaller, faster
        figure.savefig(folder / f"{stem}.png", dpi=100)
        figure.savefig(folder / f"{stem}.svg")
    plt.close(figure)


def write_report(report_dir: Path, results, failed, notes, challenge, samples, seed, method=None, progress=True) -> list[str]:
    """Render :func:`ranking_report` (with the failed teams and notes) as ``report.json``
    and every figure as PNG and SVG into the new folder ``report_dir``: drawn in a
    temporary sibling folder, one process per core, then renamed into place. Returns the
    file names; ReportError when ``report_dir`` is not new or matplotlib is missing."""
    import multiprocessing
    import os

    from iugc.common.files import is_new_folder, staged_folder
    from iugc.common.signals import pool_worker_signals

    if not is_new_folder(report_dir):
        raise ReportError(f"--report {report_dir}: exists and is not an empty folder; name a new folder")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # imported once here, inherited by the forked workers
    except ImportError:
        raise ReportError("--report needs matplotlib (pip install -e .)") from None
    # Fonts and renderers load on first use; loaded here, every forked worker inherits them
    # instead of loading its own (2-3 s of a 20-team report on 2 cores).
    import io

    warm, axis = plt.subplots(figsize=(1, 1))
    axis.set_title("warm-up")
    for fmt in ("png", "svg"):
        warm.savefig(io.BytesIO(), format=fmt)
    plt.close(warm)
    report = ranking_report(results, challenge, samples, seed, order_by=method)
    report.update(failed=failed, notes=notes)
    with staged_folder(report_dir) as tmp:
        from tqdm import tqdm

        items = [(report, stem, tmp) for stem in figure_names(report)]
        jobs = max(1, min(len(os.sched_getaffinity(0)), len(items)))
        bar = tqdm(total=len(items), desc="report figures", unit="figure", file=sys.stderr, disable=not progress)
        if jobs == 1:
            for item in items:
                _render_figure(item)
                bar.update()
        else:  # figures are independent: drawn in parallel, one process per core
            context = multiprocessing.get_context("fork" if sys.platform == "linux" else "spawn")
            with context.Pool(jobs, initializer=pool_worker_signals) as pool:
                for _ in pool.imap_unordered(_render_figure, items, chunksize=1):
                    bar.update()
        bar.close()
        (tmp / "report.json").write_text(json.dumps(report, indent=1, allow_nan=False) + "\n", encoding="utf-8")
    return sorted(p.name for p in report_dir.iterdir())


