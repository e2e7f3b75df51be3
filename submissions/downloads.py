"""What the site hands a team to install and to test with, kept in ``<instance>/downloads``:

- the client, a wheel of this platform (``iugc kit``, ``iugc submit``; installable with
  ``pip install URL`` on a machine that reaches PyPI, without the baseline's or the
  service's extras), put there by ``iugc admin client-wheel``;
- each challenge's public sample, the active dataset of its phase with public cases (the
  sanity check) as one zip, for ``iugc kit check --data``; made on first request and kept
  under the dataset's manifest sha256, so a new dataset makes a new zip.

A sample is refused when the same dataset is also the ground truth of a phase whose cases
are not public: handing it out would hand out that phase's answers.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from iugc.submissions import challenges
from iugc.submissions.exceptions import InvalidRequest, NotFound
from iugc.submissions.models import Dataset, Phase

PACKAGES = ("common", "challenge", "data_manifest", "evaluator", "sandbox", "baseline", "submissions", "leaderboard")
"""The folders setup.py installs under ``iugc.`` (beside ``iugc/`` itself)."""
WHEEL = re.compile(r"iugc_platform-[\w.+!-]+\.whl")
"""The file name of a client wheel (what ``/downloads/<name>`` serves, nothing else)."""


def folder(instance: Path) -> Path:
    return Path(instance) / "downloads"


def client_wheel(instance: Path) -> Path | None:
    """The newest client wheel put in the instance, or None."""
    wheels = sorted(folder(instance).glob("iugc_platform-*.whl"), key=lambda p: p.stat().st_mtime)
    return wheels[-1] if wheels else None


def source_tree() -> Path | None:
    """The checkout this platform runs from (an editable install), or None (installed from a wheel)."""
    root = Path(__file__).resolve().parents[1]
    return root if (root / "setup.py").is_file() and (root / "pyproject.toml").is_file() else None


def publish_client(instance: Path, wheel: Path | None = None) -> Path:
    """Put a client wheel in the instance: ``wheel`` copied, or one built from the checkout
    this platform runs from (``pip wheel --no-deps``, about a minute: it compiles the
    metrics kernel). Returns its path; the wheels there before are removed once it is in."""
    dest = folder(instance)
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest, prefix=".build-") as tmp:
        if wheel is not None:
            if not WHEEL.fullmatch(wheel.name):
                raise InvalidRequest(f"{wheel}: not a wheel of iugc-platform (iugc_platform-VERSION-....whl); "
                                     "build one with `pip wheel --no-deps .` in the platform's checkout")
            built = Path(tmp) / wheel.name
            shutil.copyfile(wheel, built)
        else:
            source = source_tree()
            if source is None:
                raise InvalidRequest("this platform is installed from a wheel, not run from its checkout: "
                                     "give that wheel with --wheel")
            copy = _build_copy(source, Path(tmp) / "source")  # the checkout is left as it was (no build/ folder)
            done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                                   "--wheel-dir", tmp, str(copy)], capture_output=True, text=True)
            found = list(Path(tmp).glob("iugc_platform-*.whl"))
            if done.returncode != 0 or len(found) != 1:
                last = (done.stderr.strip().splitlines() or ["no wheel was written"])[-1]
                raise InvalidRequest(f"building the client wheel from {source} failed: {last[:300]}")
            built = found[0]
        old = [p for p in dest.glob("iugc_platform-*.whl") if p.name != built.name]
        final = dest / built.name
        os.replace(built, final)
    for path in old:
        path.unlink(missing_ok=True)
    return final


def _build_copy(source: Path, dest: Path) -> Path:
    """What building the wheel reads, copied from the checkout: its metadata files and the
    folders setup.py maps (no virtual environment, build output or caches)."""
    dest.mkdir(parents=True)
    for name in ("setup.py", "pyproject.toml", "README.md", "MANIFEST.in", "LICENSE"):
        if (source / name).is_file():
            shutil.copy2(source / name, dest / name)
    skip = shutil.ignore_patterns("__pycache__", "*.so", "*.pyc", "*.egg-info", "build")
    for package in (*PACKAGES, "iugc"):
        shutil.copytree(source / package, dest / package, ignore=skip, symlinks=True)
    return dest


def sample_dataset(session: Session, challenge_name: str) -> tuple[Dataset, Phase]:
    """The active dataset of ``challenge_name``'s first phase with public cases, and that
    phase. NotFound when there is none; InvalidRequest when a phase without public cases
    scores on the same data."""
    challenge = challenges.challenge_by_name(session, challenge_name)
    for phase in challenge.phases:
        if not phase.public_cases:
            continue
        dataset = challenges.active_dataset(session, phase.id)
        if dataset is None:
            raise NotFound(f"{phase.slug} has no dataset yet: the organizers add one before the sample can be downloaded")
        hidden = session.execute(select(Phase.slug).join(Dataset, Dataset.phase_id == Phase.id).where(
            Dataset.active.is_(True), Phase.public_cases.is_(False),
            (Dataset.manifest_sha256 == dataset.manifest_sha256) | (Dataset.path == dataset.path))).scalars().first()
        if hidden is not None:
            raise InvalidRequest(f"the public sample of {challenge_name} is also the ground truth of {hidden}; "
                                 "the organizers must give that phase other cases before the sample can be downloaded")
        return dataset, phase
    raise NotFound(f"{challenge_name} has no phase with public cases, so no public sample")


def sample_zip(instance: Path, challenge_name: str, dataset: Dataset) -> Path:
    """The dataset's folder as ``sample-<challenge>-<sha12>.zip`` in the instance (made once,
    atomically; files only, none reached through a link leaving the folder)."""
    dest = folder(instance) / f"sample-{challenge_name}-{dataset.manifest_sha256[:12]}.zip"
    if dest.exists():
        return dest
    source = Path(dataset.path).resolve()
    if not (source / "manifest.json").is_file():
        raise NotFound(f"the dataset of the sample is no longer at {source}; the organizers must add it again")
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=".sample-", suffix=".zip")
    os.close(fd)
    try:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            for path in sorted(source.rglob("*")):
                if path.is_file() and path.resolve().is_relative_to(source) and not path.name.startswith("."):
                    archive.write(path, Path(f"{challenge_name}-sample") / path.relative_to(source))
        os.replace(tmp, dest)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return dest
