"""``iugc docker build-baseline``: the baseline's ONNX model with ONNX Runtime on
``iugc/base:latest``, built offline from ``docker/baseline/Dockerfile``.

Wheels (NumPy, OpenCV headless, ONNX Runtime for CPython 3.11 linux/amd64) are
downloaded on the host with pip into a cache, then the image is built with no network.
A label holds the hash of everything that goes in; an unchanged rebuild is skipped.
"""
from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from iugc.sandbox import docker_engine as engine_api
from iugc.sandbox.exceptions import RetryableError
from iugc.sandbox.images import BASE_IMAGE, HASH_LABEL

BASELINE_IMAGE = "iugc/baseline:latest"
ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "docker" / "baseline" / "Dockerfile"
WHEELS = ("numpy==2.2.6", "opencv-python-headless==4.12.0.88", "onnxruntime==1.23.2")
# pip does not widen --platform to older manylinux tags: name each one the wheels use.
PLATFORM_ARGS = [arg for tag in ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64")
                 for arg in ("--platform", tag)]
# Only what iugc.baseline.submission imports: no PyTorch, no pydantic.
SOURCES = ("challenge/__init__.py", "challenge/labels.py", "challenge/biometry.py", "challenge/landmarks.py", "challenge/outputs.py",
           "baseline/__init__.py", "baseline/frames.py",
           "baseline/postprocess.py", "baseline/onnx_predict.py", "baseline/submission.py")


def download_wheels(cache: Path) -> list[Path]:
    """The image's wheels, fetched once with ``pip download`` for the image's platform."""
    cache.mkdir(parents=True, exist_ok=True)
    wanted = {spec.split("==")[0].replace("-", "_").lower(): spec for spec in WHEELS}
    have = {p.name.split("-")[0].lower(): p for p in cache.glob("*.whl")}
    missing = [spec for name, spec in wanted.items() if name not in have or spec.split("==")[1] not in have[name].name]
    if missing:
        command = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
                   "--implementation", "cp", "--python-version", "3.11", *PLATFORM_ARGS,
                   "--dest", str(cache), *missing]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            raise RetryableError(f"pip download failed (is PyPI reachable?): {done.stderr.strip()[-800:]}")
        have = {p.name.split("-")[0].lower(): p for p in cache.glob("*.whl")}
    return [have[name] for name in wanted]


def build_baseline(onnx_model: Path, *, cache: Path, force: bool = False, engine=None) -> tuple[str, bool]:
    """Build ``iugc/baseline:latest`` around ``onnx_model``; returns (image id, built now)."""
    engine = engine or engine_api.client()
    base = engine_api.image_labels(engine, BASE_IMAGE)
    if base is None:
        raise RetryableError(f"{BASE_IMAGE} is missing: run `iugc docker build-base` first")
    if not DOCKERFILE.is_file():
        raise RetryableError(f"{DOCKERFILE} is missing: build from a checkout of the repository")
    wheels = download_wheels(cache / "wheels")
    digest = hashlib.sha256()
    for path in [DOCKERFILE, Path(onnx_model), *(ROOT / s for s in SOURCES)]:
        digest.update(path.read_bytes())
    digest.update(" ".join(sorted(w.name for w in wheels)).encode())
    digest.update(engine_api.inspect_image(engine, BASE_IMAGE)["Id"].encode())
    recipe = digest.hexdigest()[:16]
    labels = engine_api.image_labels(engine, BASELINE_IMAGE)
    if labels is not None and labels.get(HASH_LABEL) == recipe and not force:
        return engine_api.inspect_image(engine, BASELINE_IMAGE)["Id"], False
    with tempfile.TemporaryDirectory(prefix="iugc-baseline-") as tmp:
        context = Path(tmp)
        (context / "Dockerfile").write_text(DOCKERFILE.read_text() + f"LABEL {HASH_LABEL}={recipe}\n")
        (context / "wheels").mkdir()
        for wheel in wheels:
            shutil.copy(wheel, context / "wheels" / wheel.name)
        for source in SOURCES:  # under iugc/, a namespace package there (no iugc/__init__.py)
            target = context / "src" / "iugc" / source
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(ROOT / source, target)
        shutil.copy(onnx_model, context / "model.onnx")
        image_id = engine_api.build_image(engine, context, BASELINE_IMAGE)
    return image_id, True
