"""Evaluate a submission image on a dataset: run it (``container_runner``), validate its
outputs (``outputs``), score them (``evaluate``), and say what happened.

The result is the evaluator's document plus ``status`` ("succeeded" | "failed"),
``failure`` (a reason code or null), ``error`` (participant-safe message or null),
``runtime_seconds`` (the submission's own time), ``memory_peak_mb`` (the container's
memory peak, page cache included, sampled while it runs; null when not measured),
``image_digest``, ``logs`` (bounded tail, for organizers), ``timings`` (the platform's
overhead, step by step) and ``provenance`` (see :mod:`iugc.evaluator.provenance`), also when
the submission failed.

What the platform cannot provide (the engine, a GPU, CPUs or memory past the host's, disk
space) raises RetryableError: it is never recorded as the submission's failure.
"""
from __future__ import annotations

import shutil
import time
from pathlib import Path

from iugc.challenge.definition import ChallengeDefinition
from iugc.sandbox.container_runner import DockerRunner, LocalRunner, cleanup_stale, failure_of, input_cases
from iugc.sandbox.docker_engine import Limits
from iugc.challenge.outputs import LANDMARKS_FILE
from iugc.evaluator.evaluate import discover_truth, evaluate_folder, truth_provenance
from iugc.sandbox.exceptions import RetryableError, SubmissionError


def _failed(error: SubmissionError, **extra) -> dict:
    return {"status": "failed", "failure": error.reason, "error": str(error), **extra}


def evaluate_image(
    image: str,
    dataset: Path,
    challenge: ChallengeDefinition,
    limits: Limits,
    *,
    runner: str = "docker",
    cache_dir: Path | None = None,
    jobs: int | None = None,
    progress: bool = False,
    engine=None,
    split: str | None = None,
    case_ids=None,
    phase: str = "the phase",
    keep_outputs: Path | None = None,
    cancel=None,
) -> dict:
    """Run ``image`` on the cases of ``dataset`` (all, or ``split`` / ``case_ids``) under
    ``limits`` and score it.

    Never raises for what the submission does (that becomes ``status: failed`` with a
    reason); raises HostLimitError before anything runs when ``limits`` exceed the host
    (``phase`` names them in the message), RetryableError when the engine or host fails,
    and CancelledError/KeyboardInterrupt when interrupted, after removing everything.

    ``keep_outputs``: an existing folder that receives a copy of the validated masks
    (``<case_id>.png``, the ones scored; a landmark challenge's checked ``landmarks.json``)
    before the run's folders are removed; nothing is copied when the run fails.
    ``cancel`` (a ``threading.Event`` or anything with ``is_set()``): once set, the
    container is killed within a fraction of a second and CancelledError is raised.
    """
    timings: dict[str, float] = {}
    began = time.monotonic()
    truth = discover_truth(Path(dataset))
    if "landmarks" in challenge.tasks:  # refused before anything runs when there is no landmark truth
        truth = truth.with_landmarks()
    truth = truth.select(split=split, case_ids=case_ids)
    chosen = {c.case_id for c in truth.cases}
    cases = [c for c in input_cases(Path(dataset)) if c.case_id in chosen]
    shapes = {c.case_id: c.shape for c in cases}
    if runner not in ("docker", "local"):
        raise ValueError(f"runner must be 'docker' or 'local', got {runner!r}")
    if runner == "docker":
        from iugc.sandbox import docker_engine

        engine = engine or docker_engine.client()
        docker_engine.check_host(limits, docker_engine.host_resources(engine), phase)
    cleanup_stale(engine if runner == "docker" else None)
    result: dict = {"image": image, "runner": runner, "image_digest": None, "runtime_seconds": None,
                    "memory_peak_mb": None, "logs": "", "provenance": truth_provenance(truth, challenge, split)}
    try:
        job = DockerRunner(image, limits, engine=engine, cancel=cancel) if runner == "docker" else LocalRunner(image, limits, cancel=cancel)
    except SubmissionError as exc:  # --runner local refuses untrusted images
        return {**result, **_failed(exc), "timings": timings}
    with job:
        try:
            t = time.monotonic()
            try:
                job.provision(cases, challenge.name, challenge.tasks)
            except OSError as exc:  # a full or unwritable work folder is the platform's
                raise RetryableError(f"the platform could not prepare the input folder: {exc}") from None
            timings["provision"] = time.monotonic() - t
            result["image_digest"] = result["provenance"]["image_digest"] = job.image_digest
            execution = job.execute()
            result["runtime_seconds"] = round(execution.runtime_seconds, 3)
            result["logs"] = execution.logs
            result["memory_peak_mb"] = execution.memory_peak_mb
            failure = failure_of(execution, limits)
            if failure is not None:
                raise failure
            t = time.monotonic()
            try:
                clean_dir, collected = job.collect_outputs(shapes, tasks=challenge.tasks)
            except OSError as exc:
                raise RetryableError(f"the platform could not copy the outputs for scoring: {exc}") from None
            timings["collect_outputs"] = time.monotonic() - t
            if collected.valid_predictions == 0:
                first = next(iter(collected.errors.values()), "no outputs")
                what = "valid landmarks" if "landmarks" in challenge.tasks else "a valid mask"
                raise SubmissionError("invalid_outputs", f"invalid outputs: no case has {what} (first problem: {first})")
            t = time.monotonic()
            scored = evaluate_folder(clean_dir, Path(dataset), challenge, jobs=jobs, cache_dir=cache_dir, progress=progress,
                                     split=split, case_ids=case_ids)
            scored["provenance"]["image_digest"] = job.image_digest
            timings["scoring"] = time.monotonic() - t
            try:
                kept = [*clean_dir.glob("*.png"), *clean_dir.glob(LANDMARKS_FILE)] if keep_outputs is not None else ()
                for path in kept:
                    shutil.copyfile(path, Path(keep_outputs) / path.name)
            except OSError as exc:
                raise RetryableError(f"the platform could not keep the outputs: {exc}") from None
        except SubmissionError as exc:
            result.update(_failed(exc))
        finally:
            t = time.monotonic()
            job.deprovision()
            timings["deprovision"] = time.monotonic() - t
    if result.get("status") == "failed":
        total = time.monotonic() - began
        timings.update(total=total, overhead=total - (result["runtime_seconds"] or 0.0))
        return {**result, "timings": {k: round(v, 3) for k, v in timings.items()}}
    for case_id, problem in collected.errors.items():
        case = scored["cases"].get(case_id)
        if case is not None:  # the output's own problem replaces "missing prediction"
            case["error"] = f"{problem} (scored as worst case)"
    scored["aggregates"]["n_errors"] = sum(1 for c in scored["cases"].values() if c["error"])
    scored["warnings"] = collected.warnings + scored["warnings"]
    n_bad = len(collected.errors)
    error = None
    if n_bad:
        first_id = next(iter(collected.errors))
        error = f"{n_bad} of {len(cases)} cases had invalid or missing outputs, scored as worst case (first: {first_id}: {collected.errors[first_id]})"
    total = time.monotonic() - began
    timings.update(total=total, overhead=total - execution.runtime_seconds)
    return {**result, "status": "succeeded", "failure": None, "error": error, **scored,
            "timings": {k: round(v, 3) for k, v in timings.items()}}
