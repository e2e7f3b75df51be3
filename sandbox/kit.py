"""The team starter kit: ``iugc kit new`` writes a submission project, ``iugc kit check``
says what the platform's sanity-check phase would say about it.

``kit check`` is no second implementation: it builds the kit with the engine, takes an
archive through the platform's intake (:func:`iugc.sandbox.intake.load_archive`), and runs
:func:`iugc.sandbox.evaluate_image.evaluate_image` (the hardened runner, the phase's limits,
the output checks, the scoring) under the limits of the challenge's sanity-check phase.
The only rule of its own is the verdict (:func:`verdict`): the sanity check passes when
the run succeeded and every case has a valid output, since public cases exist to prove
the contract.
"""
from __future__ import annotations

import contextlib
import json
import re
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from iugc.challenge.definition import ChallengeDefinition, DefinitionError, Phase, available_challenges, load_challenge
from iugc.common.files import is_new_folder, staged_folder
from iugc.sandbox.exceptions import KitError, RetryableError, SubmissionError
from iugc.sandbox.images import BASE_IMAGE

TEMPLATE_DIR = Path(__file__).with_name("kit_template")
TEMPLATE_FILES = ("Dockerfile", "predict.py", "requirements.txt", "README.md", ".dockerignore", "wheels/README.md")
KIT_FILE = "kit.json"
CHALLENGE_COPY = "challenge.yaml"       # a challenge given as a file travels with the kit
DEFAULT_BASE = "python:3.11-slim"       # public: for teams that can reach a registry and PyPI
OFFLINE_BASES = (BASE_IMAGE,)           # built with `--network none`, packages from wheels/ only
SAMPLE_CASES = 8                        # phantom cases when no --data is given


@dataclass(frozen=True)
class Kit:
    """What ``kit.json`` records: the challenge (a name, or a file inside the kit), the
    image tag, and the build's network ("none" offline, "default" otherwise)."""

    challenge: str
    image: str
    build_network: str


def image_tag(folder_name: str) -> str:
    """The image tag of a kit folder: ``team/<name>:latest``, the name made valid.

    >>> image_tag("My Kit_2024"), image_tag("..."), image_tag("psfhs")
    ('team/my-kit_2024:latest', 'team/submission:latest', 'team/psfhs:latest')
    """
    name = re.sub(r"[^a-z0-9_.-]+", "-", folder_name.lower())
    name = re.sub(r"^[^a-z0-9]+|[^a-z0-9]+$", "", name)
    return f"team/{name or 'submission'}:latest"


def _challenge(reference: str) -> ChallengeDefinition:
    try:
        return load_challenge(reference)
    except DefinitionError as exc:
        raise KitError(str(exc)) from None


def new_kit(dest: str | Path, challenge: str, *, base: str = DEFAULT_BASE) -> Kit:
    """Write a submission project for ``challenge`` (a name or a .yaml file) into the new
    or empty folder ``dest``, built on the image ``base``.

    Raises KitError, writing nothing, for an unknown challenge or a non-empty ``dest``.
    The files appear together (written beside ``dest``, then renamed into place).

    >>> folder = Path(tempfile.mkdtemp()) / "team"
    >>> new_kit(folder, "psfhs2023", base="iugc/base:latest")
    Kit(challenge='psfhs2023', image='team/team:latest', build_network='none')
    >>> sorted(p.name for p in folder.iterdir())
    ['.dockerignore', 'Dockerfile', 'README.md', 'kit.json', 'predict.py', 'requirements.txt', 'wheels']
    """
    dest = Path(dest)
    definition = _challenge(challenge)
    if not is_new_folder(dest):
        raise KitError(f"{dest} exists and is not empty; give `iugc kit new` a new folder")
    if not base or any(c.isspace() for c in base):
        raise KitError(f"--base must be an image reference such as {DEFAULT_BASE}, got {base!r}")
    is_file = Path(challenge).suffix in (".yaml", ".yml") and Path(challenge).is_file()
    offline = base in OFFLINE_BASES
    kit = Kit(challenge=CHALLENGE_COPY if is_file else definition.name, image=image_tag(dest.resolve().name),
              build_network="none" if offline else "default")
    values = {
        "{{CHALLENGE}}": definition.name,
        "{{CHALLENGE_ARG}}": kit.challenge,
        "{{TASKS}}": ",".join(definition.tasks),
        "{{BASE}}": base,
        "{{IMAGE}}": kit.image,
        "{{BUILD_NETWORK}}": "--network none " if offline else "",
        "{{PIP_INDEX}}": "--no-index " if offline else "",
        "{{PIP_SOURCE}}": ("from wheels/ only (the build has no network; NumPy and Pillow are in the base already)"
                           if offline else "from PyPI, or from wheels/ where a wheel is there"),
    }
    with staged_folder(dest) as staging:
        for name in TEMPLATE_FILES:
            text = (TEMPLATE_DIR / name).read_text(encoding="utf-8")
            for key, value in values.items():
                text = text.replace(key, value)
            if "{{" in text:
                raise RuntimeError(f"template {name} has an unfilled placeholder")  # a bug of the template, not of the input
            (staging / name).parent.mkdir(parents=True, exist_ok=True)
            (staging / name).write_text(text, encoding="utf-8")
        if is_file:
            shutil.copyfile(challenge, staging / CHALLENGE_COPY)
        (staging / KIT_FILE).write_text(json.dumps(kit.__dict__, indent=1) + "\n", encoding="utf-8")
        staging.chmod(0o755)
    return kit


def read_kit(folder: str | Path) -> Kit:
    """The kit of a folder made by :func:`new_kit`; KitError when it is not one."""
    path = Path(folder) / KIT_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        kit = Kit(**data)
    except FileNotFoundError:
        raise KitError(f"{folder} is not a kit folder (no {KIT_FILE}); make one with `iugc kit new`, "
                       "or give `iugc kit check` an image or a `docker save` archive") from None
    except (OSError, ValueError, TypeError) as exc:
        raise KitError(f"{path}: not a kit file ({exc}); it holds challenge, image and build_network") from None
    if kit.build_network not in ("none", "default"):
        raise KitError(f"{path}: build_network must be \"none\" or \"default\", got {kit.build_network!r}")
    return kit


def sanity_check_phase(challenge: ChallengeDefinition) -> Phase:
    """The challenge's first phase of kind ``sanity-check``: its limits apply.

    >>> sanity_check_phase(load_challenge("iugc2024")).limits.time_limit_seconds
    300
    """
    for phase in challenge.phases:
        if phase.kind == "sanity-check":
            return phase
    raise KitError(f"challenge {challenge.name} has no sanity-check phase, so there is nothing to check against")


def verdict(result: dict) -> tuple[bool, str]:
    """Whether the sanity check passes for an ``evaluate_image`` result, and why.

    >>> verdict({"status": "failed", "error": "time limit exceeded: still running after 300 s"})
    (False, 'time limit exceeded: still running after 300 s')
    >>> verdict({"status": "succeeded", "aggregates": {"n_cases": 8, "n_errors": 0}})
    (True, 'all 8 cases have valid outputs')
    >>> verdict({"status": "succeeded", "aggregates": {"n_cases": 8, "n_errors": 1},
    ...          "cases": {"a": {"error": None}, "b": {"error": "missing output b.png"}}})
    (False, '1 of 8 cases have invalid or missing outputs (first: b: missing output b.png)')
    """
    if result.get("status") != "succeeded":
        return False, result.get("error") or "the evaluation failed"
    n_errors, n_cases = result["aggregates"]["n_errors"], result["aggregates"]["n_cases"]
    if n_errors:
        first = next((k, c["error"]) for k, c in result["cases"].items() if c["error"])
        return False, f"{n_errors} of {n_cases} cases have invalid or missing outputs (first: {first[0]}: {first[1]})"
    return True, f"all {n_cases} cases have valid outputs"


# What usually causes a refusal, by a piece of the platform's message or log.
HINTS = (
    ("runs as root", None),  # the message says what to do already
    ("Read-only file system", "only /output and /tmp are writable in the container; write nothing elsewhere"),
    ("name resolution", "there is no network when the image runs: copy weights and packages in at build time"),
    ("Network is unreachable", "there is no network when the image runs: copy weights and packages in at build time"),
    ("time limit exceeded", "all cases together must finish within the phase's limit; time predict() on a few frames"),
    ("memory limit exceeded", "load the model once and predict frame by frame; /tmp counts against the memory limit too"),
    ("output limit exceeded", "write only the masks and predictions.json to /output; scratch files go to /tmp"),
    ("missing output", "write /output/<case_id>.png for every case listed in /input/cases.json"),
    ("outside the schema", "masks hold 0 background, 1 pubic symphysis, 2 fetal head (not the raw IUGC 7/8)"),
    ("differs from the input frame", "write each mask at its frame's height and width (resize back before saving)"),
    ("p_standard_plane", "write predictions.json with a probability in [0, 1] for every case"),
)


def hint(result: dict) -> str | None:
    """A line on what to change, from the platform's message and the log tail, or None.

    >>> hint({"error": "the container exited with code 1; last stderr line: OSError: [Errno 30] Read-only file system: '/opt/x'"})
    'only /output and /tmp are writable in the container; write nothing elsewhere'
    """
    problems = [result.get("error") or "", result.get("logs") or ""]
    problems += [c["error"] for c in (result.get("cases") or {}).values() if c.get("error")]
    text = "\n".join(problems)
    return next((advice for words, advice in HINTS if words in text), None)


@dataclass
class CheckReport:
    """What ``kit check`` found: the image checked, on what, under which limits, the
    platform's result (``evaluate_image``'s document) and the verdict."""

    image: str
    challenge: ChallengeDefinition
    phase: Phase
    data: str                 # what the cases were, in words
    result: dict
    accepted: bool
    reason: str
    build_seconds: float | None = None


def build_kit(engine, folder: Path, kit: Kit) -> float:
    """Build a kit folder into its image tag; returns the seconds it took. KitError when
    the build fails (the message ends with the build log's tail)."""
    from iugc.sandbox import docker_engine

    began = time.monotonic()
    try:
        docker_engine.build_image(engine, folder, kit.image, network=kit.build_network)
    except RetryableError as exc:
        offline = " (it builds with no network: every package not in the base must be a wheel in wheels/)" if kit.build_network == "none" else ""
        raise KitError(f"the kit does not build{offline}: {exc}") from None
    return time.monotonic() - began


def _cases(data: Path | None, scratch: Path, *, landmarks: bool) -> tuple[Path, str]:
    """The dataset to run on (``data``, else phantoms written under ``scratch``, with
    landmarks derived from their masks for a landmark challenge) and its description in words."""
    from iugc.data_manifest.landmarks import derive_landmarks
    from iugc.data_manifest.manifest import ManifestError, load_manifest
    from iugc.data_manifest.sample import write_sample

    where = f" from {data}" if data is not None else " (no --data given)"
    if data is None:
        data = scratch / "sample"
        write_sample(data, SAMPLE_CASES, source=None)
        if landmarks:
            derive_landmarks(data, progress=False)
    try:
        manifest = load_manifest(data)
    except ManifestError as exc:
        raise KitError(f"--data: {exc}") from None
    scored = [c for c in manifest.cases if c.aop_landmarks] if landmarks else manifest.cases
    if not scored:
        raise KitError(f"--data: no case of {data} has landmark truth (PS1, PS2, FH1); use the challenge's public sample, "
                       f"or derive the points from its masks with `iugc data landmarks {data}`")
    return data, f"{len(scored)} {'SYNTHETIC phantom' if manifest.synthetic else 'real'} cases{where}"


def check(target: str, *, challenge: str | None = None, data: Path | None = None, engine=None,
          cache_dir: Path | None = None, jobs: int | None = None) -> CheckReport:
    """Build (a kit folder) or load (a ``docker save`` archive) ``target``, or take it as an
    image reference, and evaluate it as the challenge's sanity-check phase would.

    ``challenge`` defaults to the kit's; an image or archive needs it. ``data`` is a
    canonical dataset (``iugc data sample``); without it, SYNTHETIC phantom cases.
    Raises KitError for bad input, RetryableError when the engine is missing.
    """
    from iugc.sandbox import docker_engine
    from iugc.sandbox.docker_engine import Limits
    from iugc.sandbox.evaluate_image import evaluate_image
    from iugc.sandbox.intake import archive_loaded

    path = Path(target)
    kit = read_kit(path) if path.is_dir() else None
    if kit is not None and challenge is None:
        challenge = str(path / kit.challenge) if kit.challenge == CHALLENGE_COPY else kit.challenge
    if challenge is None:
        raise KitError(f"{target} is an image or archive: say which challenge with --challenge ({', '.join(available_challenges())} or a .yaml file)")
    definition = _challenge(challenge)
    phase = sanity_check_phase(definition)
    limits = Limits.from_phase(phase)
    engine = engine or docker_engine.client()
    with tempfile.TemporaryDirectory(prefix="iugc-kit-") as scratch:
        dataset, described = _cases(data, Path(scratch), landmarks="landmarks" in definition.tasks)
        build_seconds = build_kit(engine, path, kit) if kit is not None else None
        image = kit.image if kit is not None else target
        with contextlib.ExitStack() as stack:
            if kit is None and path.is_file():
                try:
                    image = stack.enter_context(archive_loaded(engine, path, limits))
                except SubmissionError as exc:
                    result = {"image": target, "status": "failed", "failure": exc.reason, "error": str(exc), "logs": ""}
                    return CheckReport(target, definition, phase, described, result, *verdict(result))
            result = evaluate_image(image, dataset, definition, limits, engine=engine, cache_dir=cache_dir, jobs=jobs)
    result["phase"] = phase.name
    return CheckReport(kit.image if kit else target, definition, phase, described, result, *verdict(result), build_seconds)


def _fmt(value) -> str:
    return "-" if value is None else f"{value:.4f}" if isinstance(value, float) else str(value)


def format_report(report: CheckReport, *, max_cases: int = 10, log_lines: int = 15) -> list[str]:
    """The lines ``kit check`` prints: verdict, problems, time and memory against the
    phase's limits, scores, and the log tail when refused (sanity-check logs are the
    team's to see)."""
    result, limits = report.result, report.phase.limits
    lines = []
    if report.build_seconds is not None:
        lines.append(f"built {report.image} in {report.build_seconds:.1f} s")
    lines.append(f"checked {report.image} on {report.data} ({report.challenge.name}, phase {report.phase.name})")
    if result.get("runtime_seconds") is not None:
        lines.append(f"  time      {result['runtime_seconds']:.2f} s of the phase's {limits.time_limit_seconds:g} s limit")
    memory = result.get("memory_peak_mb")
    if result.get("runtime_seconds") is not None:
        shown = f"{memory:.0f} MB peak" if memory is not None else "not measured"
        lines.append(f"  memory    {shown} of the phase's {limits.memory_mb} MB limit")
    for warning in result.get("warnings", []):
        lines.append(f"  warning   {warning}")
    bad = [(k, c["error"]) for k, c in (result.get("cases") or {}).items() if c["error"]]
    for case_id, error in bad[:max_cases]:
        lines.append(f"  case {case_id}: {error}")
    if len(bad) > max_cases:
        lines.append(f"  ... and {len(bad) - max_cases} more cases with problems")
    if result.get("status") == "succeeded":
        agg = result["aggregates"]
        shown = [f"{k} {_fmt(agg[k])}" for k in ("dice", "hd", "asd", "mre", "aop_error", "hsd_error", "accuracy", "auc") if k in agg]
        lines.append("  scores    " + ", ".join(shown))
        lines.append(f"  score     {_fmt(result['score'])}" + (f" ({result['score_note']})" if result.get("score_note") else ""))
    if report.accepted:
        lines.append(f"ACCEPTED: the sanity check would pass ({report.reason})")
    else:
        if result.get("logs"):
            tail = result["logs"].rstrip("\n").splitlines()[-log_lines:]
            lines.append("  log tail (what the container printed):")
            lines += [f"    | {line}" for line in tail]
        lines.append(f"REFUSED: {report.reason}")
        advice = hint(result)
        if advice:
            lines.append(f"  what to do: {advice}")
    return lines
