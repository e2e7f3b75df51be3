"""Walk the README and the guides as a new user would: every command line of their code
blocks, in order, in a temporary folder, on a few real frames, each checked to exit as
documented.

The commands are read from the pages themselves (``PAGES``, in that order; a command
already run by an earlier page is not run again). Each must match one rule of ``WALK`` (the
first that matches): a rule says what to prepare, what to substitute (placeholders such
as ``frames/`` or ``...``, training lengths cut to one epoch) and what to check, or why
the walk skips it. A documented command no rule matches fails the test, naming it: when a
page changes, add or adjust its rule here.

Placeholders are filled with real PSFHS frames: ``../shared/data/psfhs`` (relative to the
walk's folder) holds 12 frames of the train blocks and 14 of the validation blocks,
``PSFHS/`` is the release sample in the release's own layout, and ``IUGC2024/`` is a
SYNTHETIC stand-in in the IUGC 2024 layout (no real IUGC release is available here).
"""
from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pytest

from tests.conftest import ROOT, link_frames

# with the other engine tests, on one worker: they run containers, and the container tests
# count and clean up the runner's containers and the images they build
pytestmark = pytest.mark.xdist_group("docker")

# Both scanners on both sides of the README's split (train=03744-04205+04302-04343,
# validation=04206-04301+04344-04401): 12 train and 14 validation frames.
TRAIN_IDS = [f"0{n}" for n in [*range(3744, 3752), *range(4302, 4306)]]
VALIDATION_IDS = [f"0{n}" for n in [*range(4206, 4210), *range(4344, 4354)]]


# the order a new user reads them in: the data and evaluation guides prepare what the
# README's later blocks and the baseline and sandbox guides use
PAGES = ["docs/data.md", "docs/evaluation.md", "README.md", "docs/baseline.md", "docs/sandbox.md"]


def documented_commands() -> list[str]:
    """Every page's commands in ``PAGES`` order, each once."""
    commands: list[str] = []
    for page in PAGES:
        for command in readme_commands((ROOT / page).read_text(encoding="utf-8")):
            if command not in commands:
                commands.append(command)
    return commands


def readme_commands(text: str) -> list[str]:
    """Command lines (``iugc ...``, ``make ...``) of the fenced code blocks, comments removed,
    spaces collapsed.

    >>> readme_commands("x\\n```\\niugc data  verify d   # checks\\nnot a command\\n```\\n`iugc no`")
    ['iugc data verify d']
    """
    commands, inside = [], False
    for line in text.splitlines():
        if line.startswith("```"):
            inside = not inside
            continue
        if inside:
            command = " ".join(line.split("#", 1)[0].split())
            if command.startswith(("iugc ", "make ")):
                commands.append(command)
    return commands


@dataclass
class Step:
    """How the walk runs the README commands that match ``pattern``."""

    pattern: str
    skip: str | None = None                             # why the walk does not run it
    prepare: Callable[[Path], None] | None = None       # called with the walk folder first
    replace: dict[str, str] = field(default_factory=dict)
    append: str = ""                                    # extra options (later ones win in click)
    fresh: str | None = None                            # a folder removed first (alternatives write the same one)
    expect: Callable[[subprocess.CompletedProcess, Path], None] | None = None  # beyond exit status 0
    needs: str | None = None                            # "torch", "docker"
    platform_may_refuse: bool = False                   # a host without the phase's GPU/CPUs refuses it (non-zero)


def _copy_images(name: str, ids: list[str]):
    def prepare(walk: Path) -> None:
        if not (walk / name).exists():
            (walk / name).mkdir()
            for case_id in ids:
                shutil.copyfile(walk / "data/psfhs/images" / f"{case_id}.png", walk / name / f"{case_id}.png")
    return prepare


def _iugc_phantom_release(walk: Path) -> None:
    subprocess.run([sys.executable, "-m", "iugc", "data", "phantom", "--dest", "IUGC2024", "--layout", "iugc2024",
                    "--videos", "5", "--frames", "4"], cwd=walk, check=True, capture_output=True)


def _iugc2025_release(walk: Path) -> None:
    """IUGC2025/: eight real frames and the CSV of their landmarks (derived from the expert
    masks), the points written both ways the release writes them."""
    from iugc.challenge.landmarks import landmarks_from_mask
    from iugc.data_manifest.io import read_mask

    release = walk / "IUGC2025"
    if release.exists():
        return
    (release / "images").mkdir(parents=True)
    rows = ["Filename,PS1,PS2,FH1"]
    for i, path in enumerate(sorted((walk / "data/psfhs/masks").glob("*.png"))[:8]):
        points = landmarks_from_mask(read_mask(path))
        shutil.copyfile(walk / "data/psfhs/images" / path.name, release / "images" / path.name)
        spell = "[{:g}, {:g}]" if i % 2 else "({:g}, {:g})"
        rows.append(f"{path.name}," + ",".join(f'"{spell.format(*points[k])}"' for k in ("PS1", "PS2", "FH1")))
    (release / "labels.csv").write_text("\n".join(rows) + "\n")


def _perfect_predictions(walk: Path) -> None:
    if not (walk / "preds").exists():
        shutil.copytree(walk / "data/psfhs/masks", walk / "preds")


def _masks_link(walk: Path) -> None:
    if not (walk / "masks").exists():
        (walk / "masks").symlink_to(walk / "data/psfhs/masks")


def _two_results(walk: Path) -> None:
    """results/ with two teams: the truth itself and one that missed half the cases."""
    import cv2
    import numpy as np

    (walk / "results").mkdir(exist_ok=True)
    half = walk / "half-team"
    if not half.exists():
        half.mkdir()
        for i, path in enumerate(sorted((walk / "data/psfhs/masks").glob("*.png"))):
            if i % 2 == 0:
                mask = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
                cv2.imwrite(str(half / path.name), np.roll(mask, 6, axis=1))
    for team, preds in (("perfect", walk / "data/psfhs/masks"), ("half", half)):
        subprocess.run([sys.executable, "-m", "iugc", "evaluate", "--predictions", str(preds), "--ground-truth", "data/psfhs",
                        "--challenge", "psfhs2023", "--out", f"results/{team}.json", "--quiet", "--no-cache"], cwd=walk, check=True,
                       capture_output=True)


LOADED: list[str] = []  # images the walk's `docker load` adds, removed at the end


def _team_archive(walk: Path) -> None:
    """team.tar: a tiny non-root image saved with `docker save` (loaded again by the walk)."""
    from iugc.sandbox import docker_engine
    from tests.sandbox.test_platform_faults import _inert_image

    engine = docker_engine.client()
    tag = _inert_image(engine, ['CMD ["/no-such-program"]', "USER 1000"])
    LOADED.append(tag)
    with open(walk / "team.tar", "wb") as fh:
        for chunk in engine.images.get(tag).save(named=True):
            fh.write(chunk)
    docker_engine.remove_image(engine, tag)


@pytest.fixture
def remove_loaded():
    yield
    if LOADED:
        from iugc.sandbox import docker_engine

        engine = docker_engine.client()
        for tag in LOADED:
            docker_engine.remove_image(engine, tag)


def _says(*words):
    def expect(run, walk):
        for word in words:
            assert word in run.stdout, (word, run.stdout)
    return expect


def _writes(*paths):
    def expect(run, walk):
        for path in paths:
            assert (walk / path).exists(), path
    return expect


def _json_lines(n):
    def expect(run, walk):
        records = [json.loads(line) for line in run.stdout.splitlines()]
        assert len(records) == n and all(r["aop"] is not None for r in records), run.stdout
    return expect


def _resumed(run, walk):
    """--resume went on from the first run's epoch 1 to epoch 2 (log.csv has both, once)."""
    import csv

    with open(walk / "runs/r1/log.csv", newline="") as fh:
        assert [int(row["epoch"]) for row in csv.DictReader(fh)] == [1, 2], run.stdout


def _ranked(run, walk):
    assert "perfect" in run.stdout and "half" in run.stdout
    rows = [line.split() for line in run.stdout.splitlines() if line.split()[:1] in (["1"], ["2"])]
    assert rows[0][1] == "perfect", run.stdout


def _succeeded(name):
    def expect(run, walk):
        assert json.loads((walk / name).read_text())["status"] == "succeeded", run.stdout
    return expect


def _failed_as_the_teams(run, walk):
    """The inert team image ran (a host with the phase's GPU and CPUs) and failed as the team's."""
    assert json.loads((walk / "r.json").read_text())["status"] == "failed", run.stdout


WALK: list[Step] = [
    Step(r"^make (demo|test)$", skip="creates .venv and runs the demo or the whole suite (tests/iugc/test_cli.py runs the demo)"),
    Step(r"^iugc (db|admin|serve|submit|worker)( |$)", skip="the service section needs a running server, its database and "
         "users; tests/test_service_*.py run these commands end to end"),
    Step(r"^iugc data import --layout psfhs ", fresh="data/psfhs", expect=_says("imported 40 cases")),
    Step(r"^iugc data import --layout png ", fresh="data/psfhs", expect=_says("imported 26 cases", "derived")),
    Step(r"^iugc data import --layout iugc2024 ", prepare=_iugc_phantom_release, fresh="data/iugc",
         expect=_says("imported 20 cases", "SYNTHETIC")),
    Step(r"^iugc data import --layout iugc2025 ", prepare=_iugc2025_release, fresh="data/iugc25",
         expect=_says("imported 8 cases", "8 with landmarks")),
    Step(r"^iugc data landmarks ", expect=_says("landmarks derived from the masks")),
    Step(r"^iugc data verify ", expect=_says("OK")),
    Step(r"^iugc data split \S+ --blocks ", expect=_says("train: 12", "validation: 14")),
    Step(r"^iugc data split \S+ --by-video ", expect=_says("train:", "validation:")),
    Step(r"^iugc data nonstandard ", fresh="data/psfhs-ns", expect=_says("standard")),
    Step(r"^iugc data phantom --dest (\S+) --cases", fresh="data/phantom", expect=_says("SYNTHETIC")),
    Step(r"^iugc data phantom --dest (\S+) --layout iugc2024", fresh="raw/iugc", expect=_says("SYNTHETIC")),
    Step(r"^iugc evaluate --predictions ", prepare=_perfect_predictions, expect=_writes("result.json")),
    Step(r"^iugc biometry ", prepare=_masks_link, expect=_json_lines(2)),
    Step(r"^iugc rank ", prepare=_two_results, expect=_ranked),
    Step(r"^iugc baseline finetune ", needs="torch", replace={"my-data": "data/psfhs"}, append="--epochs 1 --batch-size 4",
         expect=_writes("runs/ft/best.pt")),
    # training cut to one epoch (and one more after --resume) at 64 px: the walk checks the
    # commands work as documented, not what they learn
    Step(r"^iugc baseline train .*--resume", needs="torch", append="--epochs 2 --batch-size 4 --size 64", expect=_resumed),
    Step(r"^iugc baseline train .*--refit", needs="torch", append="--epochs 1 --batch-size 4 --size 64",
         expect=_writes("runs/refit/best.pt")),
    Step(r"^iugc baseline train ", needs="torch", append="--epochs 1 --batch-size 4 --size 64", expect=_writes("runs/r1/best.pt")),
    Step(r"^iugc baseline predict ", needs="torch", prepare=_copy_images("frames", TRAIN_IDS), expect=_says("predicted 12 frames")),
    Step(r"^iugc baseline export --format onnx ", needs="torch", expect=_writes("runs/r1/model.onnx")),
    Step(r"^iugc baseline export --format int8 ", needs="torch", expect=_writes("runs/refit/baseline-int8.pt")),
    Step(r"^iugc docker build-base$", needs="docker", expect=_says("iugc/base:latest")),
    Step(r"^iugc docker build-baseline$", needs="docker", expect=_says("iugc/baseline:latest")),
    Step(r"^iugc docker load team.tar$", needs="docker", prepare=_team_archive, expect=_says("sha256:")),
    Step(r"^iugc evaluate-image .*--phase final-test", needs="docker", replace={"hidden/": "data/psfhs"},
         platform_may_refuse=True, expect=_failed_as_the_teams),
    Step(r"^iugc evaluate-image .*--runner local \.\.\.$", needs="torch",
         replace={"...": "--data data/psfhs --challenge iugc2024 --out local.json"}, expect=_succeeded("local.json")),
    Step(r"^iugc evaluate-image ", needs="docker", expect=_succeeded("result.json")),
    # the kit's default base (python:3.11-slim) comes from a registry; the walk takes the README's offline option
    Step(r"^iugc kit new ", fresh="my-team", replace={"[--base iugc/base:latest]": "--base iugc/base:latest"},
         expect=_writes("my-team/Dockerfile")),
    Step(r"^iugc kit check ", needs="docker", expect=_says("ACCEPTED")),
    Step(r"^iugc data sample ", fresh="public-sample", expect=_writes("public-sample/manifest.json")),
    Step(r"^iugc docker export-base ", needs="docker", expect=_writes("iugc-base.tar")),
]


def _step(command: str) -> Step:
    for step in WALK:
        if re.search(step.pattern, command):
            return step
    raise AssertionError(f"documented command not covered by the walk: {command!r}; add a Step for it to WALK in {__file__}")


def _available(need: str | None) -> str | None:
    """Why a step cannot run here, or None."""
    if need == "torch":
        try:
            import onnxruntime  # noqa: F401
            import torch  # noqa: F401
        except ImportError:
            return "the baseline extras (torch, onnxruntime) are not installed"
    if need == "docker":
        from iugc.sandbox import docker_engine
        from iugc.sandbox.exceptions import RetryableError

        try:
            docker_engine.client()
        except RetryableError as exc:
            if os.environ.get("IUGC_REQUIRE_DOCKER") == "1":
                pytest.fail(f"{exc}; IUGC_REQUIRE_DOCKER=1 makes this a failure")
            return f"no Docker engine: {exc}"
    return None


def test_every_readme_command_has_a_step():
    commands = documented_commands()
    assert len(commands) > 20
    for command in commands:
        _step(command)


@pytest.mark.slow
def test_walk_the_readme(psfhs_dir, tmp_path, remove_loaded):
    walk = tmp_path / "walk"
    walk.mkdir()
    link_frames(tmp_path / "shared/data/psfhs", TRAIN_IDS + VALIDATION_IDS)  # ../shared/data/psfhs
    (walk / "PSFHS").symlink_to(psfhs_dir / "release_sample")
    env = {**os.environ, "IUGC_CACHE_DIR": str(tmp_path / "cache"), "IUGC_WORK_DIR": str(tmp_path / "work"),
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    skipped, timings = [], []
    for command in documented_commands():
        step = _step(command)
        reason = step.skip or _available(step.needs)
        if reason:
            skipped.append(f"{command}: {reason}")
            continue
        line = command
        for old, new in step.replace.items():
            line = line.replace(old, new)
        line = re.sub(r"\s*\[[^\]]*\]", "", line)  # [optional options] left out, unless replaced above
        line = f"{line} {step.append}".strip()
        if step.fresh and (walk / step.fresh).exists():
            shutil.rmtree(walk / step.fresh)
        if step.prepare:
            step.prepare(walk)
        argv = shlex.split(line)
        shell = f"{shlex.quote(sys.executable)} -m iugc {' '.join(argv[1:])}"  # through a shell: results/*.json expands
        began = time.monotonic()
        run = subprocess.run(shell, shell=True, cwd=walk, env=env, capture_output=True, text=True, timeout=900)
        timings.append(f"{time.monotonic() - began:6.1f} s  {line}")
        if step.platform_may_refuse and run.returncode != 0:
            assert "platform cannot run this" in run.stderr and run.returncode != 130, (command, run.stderr[-2000:])
            continue
        assert run.returncode == 0, (command, run.stdout[-2000:], run.stderr[-3000:])
        assert "Traceback" not in run.stderr, (command, run.stderr[-3000:])
        if step.expect:
            step.expect(run, walk)
    print("\n".join(timings) + "\nskipped:\n" + "\n".join(skipped))
