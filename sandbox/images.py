"""``iugc docker build-base``: the base image teams build on, from Debian packages.

No registry is reachable, so ``iugc/base:latest`` is made with ``debootstrap`` (Debian
bookworm, minbase, plus python3, NumPy, Pillow and pip) and ``docker import``. The image
carries the hash of its recipe in a label; a second call with the same recipe finds it
and returns in seconds.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from iugc.sandbox import docker_engine as engine_api
from iugc.sandbox.exceptions import RetryableError

BASE_IMAGE = "iugc/base:latest"
HASH_LABEL = "org.iugc.recipe-hash"
SUITE = "bookworm"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
PACKAGES = ("python3", "python3-numpy", "python3-pil", "python3-pip", "ca-certificates")
CHANGES = (
    "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "ENV LANG=C.UTF-8",
    "ENV PYTHONDONTWRITEBYTECODE=1",
    'CMD ["python3"]',
)
RECIPE_VERSION = 1


def recipe_hash(mirror: str = DEFAULT_MIRROR) -> str:
    recipe = {"suite": SUITE, "mirror": mirror, "packages": PACKAGES, "changes": CHANGES, "version": RECIPE_VERSION}
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:16]


def _run_debootstrap(rootfs: Path, mirror: str, progress: bool) -> None:
    command = ["debootstrap", "--variant=minbase", f"--include={','.join(PACKAGES)}", SUITE, str(rootfs), mirror]
    from tqdm import tqdm

    bar = tqdm(desc="debootstrap", unit=" step", disable=not progress)
    lines: list[str] = []
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as proc:
        for line in proc.stdout:
            lines.append(line.rstrip())
            bar.set_postfix_str(line.strip()[:50])
            bar.update()
        code = proc.wait()
    bar.close()
    if code != 0:
        tail = "\n".join(lines[-15:])
        raise RetryableError(f"debootstrap failed (exit {code}); is {mirror} reachable?\n{tail}")


def build_base(*, mirror: str = DEFAULT_MIRROR, force: bool = False, progress: bool = True, engine=None) -> tuple[str, bool]:
    """Build ``iugc/base:latest`` unless an image of the same recipe exists.

    Returns (image id, whether it was built now). Needs root and ``debootstrap``.
    """
    engine = engine or engine_api.client()
    digest = recipe_hash(mirror)
    labels = engine_api.image_labels(engine, BASE_IMAGE)
    if labels is not None and labels.get(HASH_LABEL) == digest and not force:
        return engine_api.inspect_image(engine, BASE_IMAGE)["Id"], False
    if shutil.which("debootstrap") is None:
        raise RetryableError("debootstrap is not installed: `apt-get install debootstrap` (Debian/Ubuntu), then retry")
    if os.geteuid() != 0:
        raise RetryableError("debootstrap needs root: run `iugc docker build-base` as root (or with sudo)")
    with tempfile.TemporaryDirectory(prefix="iugc-base-") as tmp:
        rootfs = Path(tmp) / "rootfs"
        _run_debootstrap(rootfs, mirror, progress)
        for junk in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for path in (rootfs / junk).glob("*"):
                if path.is_file():
                    path.unlink()
        tarball = Path(tmp) / "rootfs.tar"
        subprocess.run(["tar", "--numeric-owner", "-C", str(rootfs), "-cf", str(tarball), "."], check=True)
        image_id = engine_api.import_rootfs(engine, tarball, "iugc/base", "latest", [*CHANGES, f"LABEL {HASH_LABEL}={digest}"])
    return image_id, True


def export_base(out: Path, *, engine=None) -> str:
    """``docker save`` ``iugc/base:latest`` to ``out`` and write ``out.sha256`` beside it
    (``sha256sum -c`` format), for teams without registry access to ``docker load``.

    Returns the archive's sha256. RetryableError when the image is not built.
    """
    from iugc.common.files import atomic_write_text, sha256_file

    engine = engine or engine_api.client()
    out = Path(out)
    if engine_api.image_labels(engine, BASE_IMAGE) is None:
        raise RetryableError(f"{BASE_IMAGE} is not on this engine; build it first with `iugc docker build-base`")
    out.parent.mkdir(parents=True, exist_ok=True)
    engine_api.save_image(engine, BASE_IMAGE, out)
    digest = sha256_file(out)
    atomic_write_text(out.with_name(out.name + ".sha256"), f"{digest}  {out.name}\n")
    return digest


ARCHITECTURES = {"x86_64": "amd64", "aarch64": "arm64"}  # platform.machine() -> the image config's name


def write_image_archive(path: Path, files: dict[str, tuple[bytes, int]], *, tag: str, entrypoint: list[str],
                        user: str = "1000") -> Path:
    """A ``docker save`` archive of a one-layer image made of ``files`` (path in the image ->
    (bytes, mode)), run as ``user`` with ``entrypoint``; written without an engine, loadable
    with ``docker load`` and accepted by the intake. For small images with no base: a static
    binary and its data (the demo's stand-in teams)."""
    import io
    import platform
    import tarfile

    def add(tar: tarfile.TarFile, name: str, data: bytes, mode: int = 0o644) -> None:
        info = tarfile.TarInfo(name)
        info.size, info.mode, info.mtime = len(data), mode, 0
        tar.addfile(info, io.BytesIO(data))

    layer = io.BytesIO()
    with tarfile.open(fileobj=layer, mode="w") as tar:
        for folder in sorted({str(parent) for name in files for parent in Path(name).parents} - {"."}):
            info = tarfile.TarInfo(folder)
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, 0
            tar.addfile(info)
        for name, (data, mode) in sorted(files.items()):
            add(tar, name, data, mode)
    layer_bytes = layer.getvalue()
    layer_id = hashlib.sha256(layer_bytes).hexdigest()
    config = json.dumps({
        "architecture": ARCHITECTURES.get(platform.machine(), platform.machine()), "os": "linux",
        "config": {"User": user, "Entrypoint": entrypoint, "Env": ["PATH=/bin"], "WorkingDir": "/"},
        "rootfs": {"type": "layers", "diff_ids": [f"sha256:{layer_id}"]},
    }, sort_keys=True).encode()
    config_name = hashlib.sha256(config).hexdigest() + ".json"
    manifest = json.dumps([{"Config": config_name, "RepoTags": [tag], "Layers": [f"{layer_id}/layer.tar"]}]).encode()
    with tarfile.open(path, "w") as tar:
        add(tar, config_name, config)
        add(tar, f"{layer_id}/layer.tar", layer_bytes)
        add(tar, "manifest.json", manifest)
    return path
