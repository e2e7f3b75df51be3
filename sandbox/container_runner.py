"""Runners: take plain values (image, limits, cases), run the submission, hand back outputs.

Both runners follow ``provision -> execute -> collect_outputs -> deprovision``:

- :class:`DockerRunner` runs an untrusted image in a hardened container
  (:mod:`iugc.sandbox.docker_engine`). ``/output`` is a host tmpfs of the phase's output
  size when the worker may mount one (root), so writing past the limit fails inside the
  container; otherwise a watcher stops the container once the folder passes the limit.
- :class:`LocalRunner` runs a *trusted* command (the baseline) as a subprocess with the
  same ``/input`` and ``/output`` contract, for machines without an engine.

Ground truth never enters the input folder: only frames, clips and the case list do.
``deprovision`` always removes the container, unmounts and deletes the folders, also when
the worker is interrupted; a worker that crashed is cleaned up by the next one
(:func:`cleanup_stale`).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from iugc.common.text import quoted
from iugc.data_manifest.io import encode_png, read_image
from iugc.data_manifest.manifest import load_manifest
from iugc.sandbox import docker_engine as engine_api
from iugc.sandbox.docker_engine import Limits
from iugc.sandbox.exceptions import CancelledError, SubmissionError
from iugc.sandbox.outputs import CollectedOutputs, collect_outputs

CASES_FILE = "cases.json"
OWNER_FILE = ".owner"
LOG_TAIL_BYTES = 8192
ROOT_USERS = {"", "root", "0"}


def work_root() -> Path:
    root = Path(os.environ.get("IUGC_WORK_DIR") or Path(tempfile.gettempdir()) / "iugc-runs")
    root.mkdir(parents=True, exist_ok=True)
    return root


@dataclass(frozen=True)
class InputCase:
    case_id: str
    image: Path                  # the frame on the host (never a mask)
    shape: tuple[int, int]
    video: str | None = None
    frame_index: int | None = None
    clip: Path | None = None     # the video file, when the dataset has it


def input_cases(dataset: Path) -> list[InputCase]:
    """The cases of a dataset from `iugc data import`, with only what a submission may see."""
    dataset = Path(dataset)
    manifest = load_manifest(dataset)
    cases = []
    for c in manifest.cases:
        clip = dataset / "videos" / f"{c.video}.avi" if c.video else None
        cases.append(InputCase(c.case_id, dataset / c.image, tuple(c.shape), c.video, c.frame_index,
                               clip if clip is not None and clip.is_file() else None))
    return cases


@dataclass
class Execution:
    exit_code: int | None
    runtime_seconds: float
    logs: str = ""
    stderr_tail: str = ""
    timed_out: bool = False
    oom_killed: bool = False
    output_exceeded: bool = False
    memory_peak_mb: float | None = None  # the highest figure sampled (see _sample_memory); None: not measured


def failure_of(execution: Execution, limits: Limits) -> SubmissionError | None:
    """The participant-safe failure of a run, or None when it exited 0 within its limits."""
    if execution.output_exceeded:
        return SubmissionError("output_limit", f"output limit exceeded: /output grew past {limits.output_limit_mb:g} MB")
    if execution.timed_out:
        return SubmissionError("time_limit", f"time limit exceeded: still running after {limits.time_limit_seconds:g} s")
    if execution.oom_killed or execution.exit_code == 137:
        return SubmissionError("memory_limit", f"memory limit exceeded: killed after using {limits.memory_mb} MB (exit code 137)")
    if execution.exit_code != 0:
        last = next((line.strip() for line in reversed(execution.stderr_tail.splitlines()) if line.strip()), "")
        detail = f"; last stderr line: {last[:300]}" if last else ""
        return SubmissionError("exit_code", f"the container exited with code {execution.exit_code}{detail}")
    return None


def engine_runtime(state: dict) -> float | None:
    """Seconds between the engine's StartedAt and FinishedAt (the submission's own time)."""
    from datetime import datetime

    def parse(stamp: str) -> datetime:
        head, _, frac = stamp.rstrip("Z").partition(".")
        return datetime.fromisoformat(f"{head}.{(frac + '000000')[:6]}")

    try:
        seconds = (parse(state["FinishedAt"]) - parse(state["StartedAt"])).total_seconds()
    except (KeyError, ValueError):
        return None
    return seconds if seconds >= 0 else None


def _directory_bytes(path: Path) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_blocks * 512
            except OSError:
                pass
    return total


class _Workspace:
    """A job folder under the work root: ``input/`` (read-only for the submission) and
    ``output/`` (a tmpfs of the output limit when mounting is allowed)."""

    def __init__(self, job_id: str):
        self.dir = work_root() / job_id
        self.dir.mkdir(mode=0o711)
        (self.dir / OWNER_FILE).write_text(engine_api.owner_tag())
        self.input = self.dir / "input"
        self.output = self.dir / "output"
        self.collected = self.dir / "collected"
        self.output_mounted = False

    def prepare_input(self, cases: list[InputCase], challenge: str, tasks: tuple[str, ...] = ()) -> None:
        (self.input / "images").mkdir(parents=True)
        listing = []
        for case in cases:
            target = self.input / "images" / f"{case.case_id}.png"
            if case.image.suffix.lower() == ".png":
                shutil.copyfile(case.image, target)
            else:
                target.write_bytes(encode_png(read_image(case.image)))
            entry = {"case_id": case.case_id, "image": f"images/{case.case_id}.png",
                     "height": case.shape[0], "width": case.shape[1],
                     "video": None, "frame_index": case.frame_index}
            if case.clip is not None:
                (self.input / "videos").mkdir(exist_ok=True)
                clip_target = self.input / "videos" / case.clip.name
                if not clip_target.exists():
                    shutil.copyfile(case.clip, clip_target)
                entry["video"] = f"videos/{case.clip.name}"
            listing.append(entry)
        (self.input / CASES_FILE).write_text(json.dumps({"challenge": challenge, "tasks": list(tasks), "cases": listing}, indent=1))
        for root, dirs, files in os.walk(self.input):
            os.chmod(root, 0o755)
            for name in files:
                os.chmod(os.path.join(root, name), 0o644)

    def prepare_output(self, limit_mb: float) -> None:
        self.output.mkdir()
        # IUGC_OUTPUT_TMPFS=0 forces the watcher (what a worker without root gets).
        if os.geteuid() == 0 and os.environ.get("IUGC_OUTPUT_TMPFS", "1") != "0":
            size = max(1, int(limit_mb * 2**20))
            done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0777,nosuid,nodev", "tmpfs", str(self.output)],
                                  capture_output=True, text=True)
            self.output_mounted = done.returncode == 0
        os.chmod(self.output, 0o777)

    def remove(self) -> None:
        _remove_job_dir(self.dir)


def _remove_job_dir(job: Path) -> None:
    """Unmount a job's output tmpfs if mounted, then delete the job folder."""
    if os.path.ismount(job / "output"):
        subprocess.run(["umount", "-l", str(job / "output")], capture_output=True)
    shutil.rmtree(job, ignore_errors=True)


def cleanup_stale(engine=None) -> int:
    """Remove what crashed workers left: containers, mounted output folders, job folders."""
    removed = 0
    if engine is not None:
        for container_id in engine_api.stale_containers(engine):
            engine_api.remove_container(engine, container_id)
            removed += 1
    root = work_root()
    for job in root.iterdir():
        owner = job / OWNER_FILE
        try:
            tag = owner.read_text()
        except OSError:
            continue
        if not engine_api.owner_alive(tag):
            _remove_job_dir(job)
            removed += 1
    return removed


def check_image(info: dict, limits: Limits) -> None:
    """Reject an image (``docker inspect`` output) that breaks a rule, naming the rule."""
    config = info.get("Config") or {}
    user = (config.get("User") or "").strip()
    name = user.split(":")[0]
    if name in ROOT_USERS:
        shown = f"USER {user}" if user else "no USER"
        raise SubmissionError("image_rejected", f"image rejected: it runs as root ({shown}); add a non-root `USER 1000` to the Dockerfile")
    platform = f"{info.get('Os')}/{info.get('Architecture')}"
    if platform != "linux/amd64":
        raise SubmissionError("image_rejected", f"image rejected: platform {platform}, expected linux/amd64 (`docker build --platform linux/amd64`)")
    size_mb = (info.get("Size") or 0) / 2**20
    if size_mb > limits.image_size_limit_mb:
        raise SubmissionError("image_rejected", f"image rejected: {size_mb:.0f} MB exceeds this phase's image size limit of {limits.image_size_limit_mb:g} MB")


CANCEL_POLL_SECONDS = 0.2


def _raise_if_cancelled(cancel) -> None:
    """CancelledError when ``cancel`` (anything with ``is_set()``, or None) is set."""
    if cancel is not None and cancel.is_set():
        raise CancelledError("the evaluation was cancelled; its container was stopped")


def _wait_process(process: subprocess.Popen, timeout: float, cancel) -> int:
    """``process.wait(timeout)`` that raises CancelledError once ``cancel`` is set (the
    caller kills the process group)."""
    if cancel is None:
        return process.wait(timeout=timeout)
    deadline = time.monotonic() + timeout
    while True:
        _raise_if_cancelled(cancel)
        left = deadline - time.monotonic()
        if left <= 0:
            raise subprocess.TimeoutExpired(process.args, timeout)
        try:
            return process.wait(timeout=min(CANCEL_POLL_SECONDS, left))
        except subprocess.TimeoutExpired:
            continue


class _Runner:
    """What both runners share: the workspace's outputs and use as a context manager
    (``deprovision`` on exit)."""

    workspace: _Workspace | None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.deprovision()

    def collect_outputs(self, shapes: dict[str, tuple[int, int]], *, tasks: tuple[str, ...]) -> tuple[Path, CollectedOutputs]:
        collected = collect_outputs(self.workspace.output, shapes, self.workspace.collected, tasks=tasks)
        return self.workspace.collected, collected

    def deprovision(self) -> None:
        raise NotImplementedError


class DockerRunner(_Runner):
    """Run one untrusted image on one set of cases. Use as a context manager, or call
    ``deprovision`` in a ``finally``."""

    def __init__(self, image: str, limits: Limits, *, engine=None, job_id: str | None = None, cancel=None):
        self.image = image
        self.limits = limits
        self.cancel = cancel
        self.engine = engine or engine_api.client()
        self.job_id = job_id or f"job-{uuid.uuid4().hex[:12]}"
        self.workspace: _Workspace | None = None
        self.container = None
        self.image_digest: str | None = None

    def provision(self, cases: list[InputCase], challenge: str, tasks: tuple[str, ...] = ()) -> None:
        info = engine_api.inspect_image(self.engine, self.image)
        check_image(info, self.limits)
        self.image_digest = info["Id"]
        self.workspace = _Workspace(self.job_id)
        self.workspace.prepare_input(cases, challenge, tasks)
        self.workspace.prepare_output(self.limits.output_limit_mb)

    def execute(self) -> Execution:
        ws = self.workspace
        config = engine_api.container_config(self.image_digest, self.limits, input_dir=ws.input, output_dir=ws.output,
                                             name=f"iugc-{self.job_id}", labels={"org.iugc.job": self.job_id})
        _raise_if_cancelled(self.cancel)
        began = time.monotonic()
        self.container = engine_api.run_container(self.engine, config)
        exceeded = threading.Event()
        stop = threading.Event()
        peak = [0]
        threading.Thread(target=self._sample_memory, args=(peak, stop), daemon=True).start()
        if self.cancel is not None:
            threading.Thread(target=self._watch_cancel, args=(stop,), daemon=True).start()
        watcher = None
        if not ws.output_mounted:  # no tmpfs: a watcher enforces the output limit
            watcher = threading.Thread(target=self._watch_output, args=(exceeded, stop), daemon=True)
            watcher.start()
        exit_code = engine_api.wait_container(self.container, self.limits.time_limit_seconds)
        runtime = time.monotonic() - began
        timed_out = exit_code is None and not exceeded.is_set()
        if exit_code is None:
            engine_api.kill_container(self.container)
            exit_code = engine_api.wait_container(self.container, 30)
        stop.set()
        if watcher is not None:
            watcher.join()
        _raise_if_cancelled(self.cancel)
        state = engine_api.container_state(self.container)
        if ws.output_mounted and _directory_bytes(ws.output) >= 0.98 * self.limits.output_limit_mb * 2**20:
            exceeded.set()  # the tmpfs is full: the submission hit the limit (ENOSPC)
        return Execution(
            exit_code=exit_code, runtime_seconds=engine_runtime(state) or runtime,
            logs=engine_api.container_logs(self.container, max_bytes=LOG_TAIL_BYTES),
            stderr_tail=engine_api.container_logs(self.container, stdout=False, max_bytes=2048),
            timed_out=timed_out, oom_killed=bool(state.get("OOMKilled")), output_exceeded=exceeded.is_set(),
            memory_peak_mb=round(peak[0] / 2**20, 1) if peak[0] else None,
        )

    def _sample_memory(self, peak: list[int], stop: threading.Event) -> None:
        """Keep the highest memory figure until ``stop``: every 50 ms from the cgroup's
        peak where this host sees it, else from the engine's statistics (not joined: a
        statistics call takes up to a second, and the run's end must not wait for it)."""
        container_id = self.container.id
        peak_file = engine_api.memory_peak_file(container_id)
        while True:
            used = engine_api.memory_usage_bytes(self.engine, container_id, peak_file)
            if used is not None:
                peak[0] = max(peak[0], used)
            if stop.wait(0.05 if peak_file is not None else 0.25):
                return

    def _watch_cancel(self, stop: threading.Event) -> None:
        """Kill the container once ``cancel`` is set (polled every CANCEL_POLL_SECONDS)."""
        while not stop.wait(CANCEL_POLL_SECONDS):
            if self.cancel.is_set():
                engine_api.kill_container(self.container)
                return

    def _watch_output(self, exceeded: threading.Event, stop: threading.Event) -> None:
        limit = self.limits.output_limit_mb * 2**20
        while not stop.wait(0.2):
            if _directory_bytes(self.workspace.output) > limit:
                exceeded.set()
                engine_api.kill_container(self.container)
                return

    def deprovision(self) -> None:
        if self.workspace is not None:
            # By name, not only by handle: an interruption can land after the engine
            # started the container but before run_container returned it.
            engine_api.remove_container(self.engine, self.container.id if self.container is not None else f"iugc-{self.job_id}")
            self.container = None
            self.workspace.remove()
            self.workspace = None


# Submissions the platform itself ships and may run without a container: image
# reference -> the command, run with this interpreter (`python -m ...`).
TRUSTED_LOCAL = {"iugc/baseline:latest": ["-m", "iugc.baseline.submission"], "baseline": ["-m", "iugc.baseline.submission"]}


def refuse_untrusted(image: str) -> None:
    """SubmissionError unless ``image`` is one of the platform's own (``TRUSTED_LOCAL``):
    only those may run outside a container."""
    if image not in TRUSTED_LOCAL:
        raise SubmissionError(
            "image_rejected",
            f"--runner local runs only the platform's trusted submissions ({', '.join(sorted(TRUSTED_LOCAL))}), "
            f"not {quoted(image)}: team images are untrusted and run only in a container; start a Docker engine",
        )


class LocalRunner(_Runner):
    """Run a trusted submission as a subprocess with the container's input/output contract."""

    def __init__(self, image: str, limits: Limits, *, job_id: str | None = None, cancel=None):
        refuse_untrusted(image)
        self.image = image
        self.limits = limits
        self.cancel = cancel
        self.job_id = job_id or f"local-{uuid.uuid4().hex[:12]}"
        self.workspace: _Workspace | None = None
        self.image_digest = f"local:{image}"

    def provision(self, cases: list[InputCase], challenge: str, tasks: tuple[str, ...] = ()) -> None:
        self.workspace = _Workspace(self.job_id)
        self.workspace.prepare_input(cases, challenge, tasks)
        self.workspace.output.mkdir()

    def execute(self) -> Execution:
        ws = self.workspace
        command = [sys.executable, *TRUSTED_LOCAL[self.image], "--input", str(ws.input), "--output", str(ws.output)]
        _raise_if_cancelled(self.cancel)
        began = time.monotonic()
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            process = subprocess.Popen(command, stdout=out, stderr=err, start_new_session=True)
            timed_out = False
            try:
                exit_code = _wait_process(process, self.limits.time_limit_seconds, self.cancel)
            except subprocess.TimeoutExpired:
                timed_out = True
                os.killpg(process.pid, 9)
                exit_code = process.wait()
            except BaseException:
                os.killpg(process.pid, 9)
                process.wait()
                raise
            runtime = time.monotonic() - began
            out.seek(0)
            err.seek(0)
            stdout, stderr = out.read()[-LOG_TAIL_BYTES:], err.read()[-LOG_TAIL_BYTES:]
        logs = (stdout + stderr)[-LOG_TAIL_BYTES:].decode("utf-8", errors="replace")
        exceeded = _directory_bytes(ws.output) > self.limits.output_limit_mb * 2**20
        return Execution(exit_code=exit_code, runtime_seconds=runtime, logs=logs,
                         stderr_tail=stderr.decode("utf-8", errors="replace"), timed_out=timed_out,
                         output_exceeded=exceeded)

    def deprovision(self) -> None:
        if self.workspace is not None:
            self.workspace.remove()
            self.workspace = None
