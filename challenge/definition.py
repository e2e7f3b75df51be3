"""Challenge definitions: data files (YAML) validated on load.

A challenge names its tasks, metrics, AoP method, worst-case values, the policy for
undefined biometry, its score formula, its ranking methods and its phases with their
limits. A new challenge is a new file in ``challenge/definitions/`` (or any path given to
:func:`load_challenge`), not new code. The format is documented in
``docs/challenge-definition.md``.
"""
from __future__ import annotations

from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

DEFINITIONS_DIR = Path(__file__).with_name("definitions")

METRIC_DIRECTIONS: dict[str, bool] = {
    # metric family -> higher is better
    "dice": True,
    "hd": False,
    "asd": False,
    "aop_error": False,
    "hsd_error": False,
    "accuracy": True,
    "auc": True,
    "f1": True,
    "mcc": True,
    "hd95": False,
    "nsd": True,
    "sensitivity": True,
    "precision": True,
    "mre": False,
}
"""Metric families known to the evaluator and whether a higher value is better."""

SEGMENTATION_METRICS = ("dice", "hd", "asd", "hd95", "nsd", "sensitivity", "precision")
CATALOGUE_METRICS = ("hd95", "nsd", "sensitivity", "precision")
"""Segmentation metrics computed only for challenges that list them (evaluator/metrics.py)."""
BIOMETRY_METRICS = ("aop_error", "hsd_error")
LANDMARK_METRICS = ("mre", "aop_error")
"""IUGC 2025: the mean radial error of the three landmarks and the AoP error they give."""
CLASSIFICATION_METRICS = ("accuracy", "auc", "f1", "mcc")
CASE_VALUE_METRICS = BIOMETRY_METRICS + ("mre",)
"""Per-case metrics read as one value per case (the others are means over structures)."""
PER_CASE_METRICS = SEGMENTATION_METRICS + CASE_VALUE_METRICS
"""Metrics with a value per case (paired tests need one); classification has none."""
RankingMethod = Literal["score", "mean-rank", "test-then-rank"]

MetricName = Literal[
    "dice", "hd", "asd", "hd95", "nsd", "sensitivity", "precision", "aop_error", "hsd_error", "accuracy", "auc", "f1", "mcc",
    "mre",
]


class DefinitionError(ValueError):
    """A challenge definition is missing or invalid; the message says where."""


class _Strict(BaseModel):
    """Unknown keys refused; every number finite (NaN and infinity make no limit, weight or
    worst case)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class WorstCase(_Strict):
    """Values given to a metric that cannot be measured (empty or missing prediction)."""

    dice: float = Field(default=0.0, ge=0, le=1)
    hd: float = Field(default=100.0, ge=0)
    asd: float = Field(default=100.0, ge=0)
    aop_error: float = Field(default=180.0, ge=0, le=180)
    hsd_error: float = Field(default=100.0, ge=0)
    hd95: float = Field(default=100.0, ge=0)
    nsd: float = Field(default=0.0, ge=0, le=1)
    sensitivity: float = Field(default=0.0, ge=0, le=1)
    precision: float = Field(default=0.0, ge=0, le=1)
    mre: float = Field(default=100.0, ge=0)
    """Radial error, in pixels, of each landmark of a missing or invalid landmark prediction
    (so also its MRE)."""


class UndefinedPolicy(_Strict):
    """What an undefined AoP/HSD (a structure missing, no ellipse fit, no tangent) becomes.

    ``zero`` is the PSFHS 2023 convention: its official code starts each AoP at 0 and
    keeps it there whenever either ellipse cannot be fitted, so the value counts as 0 and
    the error is ``|0 - the other side|``. ``exclude`` / ``worst_case`` are the IUGC 2024
    policy (whose official code crashes there) and a new challenge's other choice.
    """

    ground_truth: Literal["exclude", "zero"] = "exclude"
    """Truth undefined: ``exclude`` leaves the case out of that aggregate (counted in
    ``n_excluded_*``); ``zero`` takes the truth value as 0."""
    prediction: Literal["worst_case", "zero"] = "worst_case"
    """Prediction undefined (or missing, unreadable): ``worst_case`` scores the worst-case
    error; ``zero`` takes the predicted value as 0."""


class ScoreTerm(_Strict):
    """One weighted term: ``weight * f(round(mean(metric) / scale, round))``.

    ``f`` is the identity or ``1 - x``; ``clip`` bounds the term's value to [0, 1].
    """

    metric: MetricName
    weight: float = Field(gt=0)
    transform: Literal["identity", "one_minus"] = "identity"
    scale: float = Field(default=1.0, gt=0)
    round: int | None = Field(default=None, ge=0, le=15)
    clip: bool = False


class Score(_Strict):
    description: str
    terms: tuple[ScoreTerm, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _weights_sum_to_one(self):
        total = sum(t.weight for t in self.terms)
        if abs(total - 1.0) > 1e-9:
            raise ValueError(f"score weights must sum to 1, they sum to {total:g}")
        return self


class Ranking(_Strict):
    """How teams are ranked; ``mean_rank_metrics`` are the ranking metrics of ``mean-rank``
    and ``test-then-rank``."""

    methods: tuple[RankingMethod, ...] = ("score", "mean-rank")
    mean_rank_metrics: tuple[MetricName, ...] = Field(min_length=1)
    bootstrap_samples: int = Field(default=1000, ge=10)
    significance: Literal["wilcoxon"] = "wilcoxon"
    alpha: float = Field(default=0.05, gt=0, lt=1)


class Limits(_Strict):
    submissions_per_day: int = Field(ge=1)
    """Per team, in any rolling 24 hours (the submission service's quota)."""
    submissions_total: int | None = Field(default=None, ge=1)
    """Per team over the whole phase; None: no total limit."""
    time_limit_seconds: int = Field(ge=1)
    memory_mb: int = Field(ge=64)
    cpus: float = Field(gt=0)
    gpu: bool = False
    output_limit_mb: int = Field(ge=1)
    image_size_limit_mb: int = Field(default=10_000, ge=1)
    pids_limit: int = Field(default=256, ge=8)


class Phase(_Strict):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9-]*$")
    kind: Literal["sanity-check", "validation", "final-test"]
    description: str
    public_cases: bool
    logs_visible_to_participants: bool
    limits: Limits
    ranking_method: RankingMethod = "score"
    """The method that ranks this phase's results (``iugc rank`` uses it by default)."""
    opens: datetime | None = None
    """When the phase accepts submissions (timezone-aware); None: open from the start."""
    closes: datetime | None = None
    """When it stops accepting them; None: never closes."""
    failures_count_against_quota: bool = True
    """Whether a failure caused by the submission uses up quota (platform faults never do)."""

    @model_validator(mode="after")
    def _window(self):
        for name in ("opens", "closes"):
            value = getattr(self, name)
            if value is not None and value.tzinfo is None:
                raise ValueError(f"{name} must carry a time zone, e.g. 2024-07-01T00:00:00Z, got {value.isoformat()}")
        if self.opens and self.closes and self.closes <= self.opens:
            raise ValueError(f"closes ({self.closes.isoformat()}) must come after opens ({self.opens.isoformat()})")
        return self


class DataInfo(_Strict):
    """What a team reads on the challenge's data page."""

    description: str = Field(min_length=1)
    licence: str = Field(min_length=1)
    source: str | None = None
    """Where the data come from (an address or a citation); None: the reference says it."""


class ChallengeDefinition(_Strict):
    """A validated challenge definition (see ``docs/challenge-definition.md``)."""

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]*$")
    title: str
    reference: str
    tasks: tuple[Literal["classification", "segmentation", "biometry", "landmarks"], ...] = Field(min_length=1)
    structures: tuple[Literal["ps", "fh", "all"], ...] = ("ps", "fh", "all")
    metrics: tuple[MetricName, ...] = Field(min_length=1)
    aop_method: Literal["ellipse", "contour", "landmarks"]
    """How the AoP is measured: from masks (``ellipse``: PSFHS 2023; ``contour``: IUGC 2024) or
    from the three predicted points (``landmarks``: IUGC 2025; :mod:`iugc.challenge.landmarks`)."""
    nsd_tolerance_px: float = Field(default=2.0, gt=0)
    """Tolerance of the ``nsd`` metric, in pixels (a surface pixel within it counts as matched)."""
    worst_case: WorstCase = WorstCase()
    undefined_biometry: UndefinedPolicy = UndefinedPolicy()
    score: Score
    ranking: Ranking
    phases: tuple[Phase, ...] = Field(min_length=1)
    data: DataInfo | None = None
    """What the data are and their licence (the data page); None: not described yet."""
    terms: str | None = Field(default=None, min_length=1)
    """The terms a team accepts once before its first submission; None: nothing to accept."""

    @model_validator(mode="after")
    def _consistent(self):
        needs = {
            "classification": CLASSIFICATION_METRICS,
            "segmentation": SEGMENTATION_METRICS,
            "biometry": BIOMETRY_METRICS,
            "landmarks": LANDMARK_METRICS,
        }
        allowed = {m for task in self.tasks for m in needs[task]}
        stray = [m for m in self.metrics if m not in allowed]
        if stray:
            raise ValueError(f"metrics {stray} belong to no task of this challenge (tasks: {list(self.tasks)})")
        if ("landmarks" in self.tasks) != (self.aop_method == "landmarks"):
            raise ValueError("a landmarks task measures the AoP from its points: give it aop_method 'landmarks', "
                             "and that method only to a challenge with the landmarks task")
        if "landmarks" in self.tasks and {"segmentation", "biometry"} & set(self.tasks):
            raise ValueError("a landmarks challenge scores points, not masks: it cannot also have a segmentation or biometry task")
        for term in self.score.terms:
            if term.metric not in self.metrics:
                raise ValueError(f"score term uses metric {term.metric!r}, which is not in metrics")
        for metric in self.ranking.mean_rank_metrics:
            if metric not in self.metrics:
                raise ValueError(f"mean-rank metric {metric!r} is not in metrics")
        if "test-then-rank" in self.ranking.methods:
            no_cases = [m for m in self.ranking.mean_rank_metrics if m not in PER_CASE_METRICS]
            if no_cases:
                raise ValueError(f"test-then-rank needs per-case metrics; {no_cases} have no per-case value")
        for phase in self.phases:
            if phase.ranking_method not in self.ranking.methods:
                raise ValueError(f"phase {phase.name!r} ranks by {phase.ranking_method!r}, which is not in ranking.methods")
        names = [p.name for p in self.phases]
        if len(set(names)) != len(names):
            raise ValueError(f"phase names must be unique, got {names}")
        return self

    def phase(self, name: str) -> Phase:
        for phase in self.phases:
            if phase.name == name:
                return phase
        raise DefinitionError(f"challenge {self.name!r} has no phase {name!r}; phases: {[p.name for p in self.phases]}")


def available_challenges() -> list[str]:
    """Names of the challenge definitions shipped in ``challenge/definitions/``."""
    return sorted(p.stem for p in DEFINITIONS_DIR.glob("*.yaml"))


def load_challenge(name_or_path: str | Path) -> ChallengeDefinition:
    """Load and validate a challenge by shipped name (``psfhs2023``) or YAML file path.

    >>> load_challenge("psfhs2023").aop_method
    'ellipse'
    """
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or len(path.parts) > 1:
        if not path.is_file():
            what = "is a folder, not a definition file" if path.is_dir() else "file not found"
            raise DefinitionError(f"challenge definition {str(name_or_path)!r}: {what}; give an existing .yaml file "
                                  f"or one of {available_challenges()}")
    else:
        path = DEFINITIONS_DIR / f"{name_or_path}.yaml"
        if not path.is_file():
            raise DefinitionError(
                f"unknown challenge {str(name_or_path)!r}: expected one of {available_challenges()} "
                "or the path of a .yaml definition"
            )
    return _load_file(str(path.resolve()))


@lru_cache(maxsize=None)
def _load_file(path: str) -> ChallengeDefinition:
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise DefinitionError(f"{path}: not valid YAML ({exc})") from None
    except UnicodeDecodeError as exc:
        raise DefinitionError(f"{path}: not UTF-8 text (byte {exc.start}); a challenge definition is a YAML text file") from None
    return validate_definition(data, path)


def validate_definition(data, where: str) -> ChallengeDefinition:
    """A definition's mapping (parsed YAML) validated; DefinitionError naming ``where`` and
    each field at fault otherwise.

    >>> validate_definition({"name": "x"}, "mine.yaml")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    iugc.challenge.definition.DefinitionError: mine.yaml: invalid challenge definition: title: Field required; ...
    """
    if not isinstance(data, dict):
        raise DefinitionError(f"{where}: a challenge definition must be a mapping at the top level")
    try:
        return ChallengeDefinition.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '<top>'}: {err['msg']}" for err in exc.errors()
        )
        raise DefinitionError(f"{where}: invalid challenge definition: {problems}") from None
