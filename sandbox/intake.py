"""Intake of an uploaded ``docker save`` archive: checked before the engine sees it.

Rules (each rejection names the rule and the member): the archive is at most
``max_bytes`` (and expands to at most ``max_expanded_bytes``); it is a tar; no member has
an absolute path or a ``..`` component; no link points outside the archive; no device,
FIFO or other special file; ``manifest.json`` lists exactly one image whose config and
layers are in the archive. Only then is it loaded, and if loading or the image checks
fail, the image it loaded is removed again (that one only: other workers load theirs
meanwhile).
"""
from __future__ import annotations

import contextlib
import json
import posixpath
import re
import tarfile
from dataclasses import dataclass
from pathlib import Path

from iugc.sandbox.exceptions import SubmissionError

MANIFEST = "manifest.json"


@dataclass(frozen=True)
class ArchiveInfo:
    config: str            # the image config's path inside the archive
    repo_tags: tuple[str, ...]
    members: int


def _reject(message: str) -> SubmissionError:
    return SubmissionError("image_rejected", f"image archive rejected: {message}")


def _inside(base: str, target: str) -> bool:
    """Whether ``target`` (relative to the archive root) stays inside the archive."""
    normal = posixpath.normpath(posixpath.join(base, target))
    return not (normal.startswith("/") or normal == ".." or normal.startswith("../"))


def check_member(member: tarfile.TarInfo) -> None:
    name = member.name
    shown = ascii(name)[:120]
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        raise _reject(f"member {shown} has an absolute path")
    if ".." in name.replace("\\", "/").split("/"):
        raise _reject(f"member {shown} has a '..' component")
    if member.issym():
        if member.linkname.startswith("/") or not _inside(posixpath.dirname(name), member.linkname):
            raise _reject(f"symbolic link {shown} -> {ascii(member.linkname)[:120]} points outside the archive")
    elif member.islnk():
        if member.linkname.startswith("/") or not _inside("", member.linkname):
            raise _reject(f"hard link {shown} -> {ascii(member.linkname)[:120]} points outside the archive")
    elif not (member.isfile() or member.isdir()):
        raise _reject(f"member {shown} is a device, FIFO or other special file")


HOW_TO_SAVE = "make it with `docker save IMAGE -o image.tar` and upload that file"


def check_archive(path: str | Path, max_bytes: int, max_expanded_bytes: int | None = None) -> ArchiveInfo:
    """Check a ``docker save`` archive without loading it; raise SubmissionError if unsafe.

    >>> # check_archive("team.tar", max_bytes=10 * 2**30)
    """
    path = Path(path)
    if not path.is_file():
        raise _reject(f"{path.name} is not a file")
    size = path.stat().st_size
    if size > max_bytes:
        raise _reject(f"{size / 2**20:.0f} MB exceeds the limit of {max_bytes / 2**20:.0f} MB")
    if size == 0:
        raise _reject(f"the file is empty (0 bytes): {HOW_TO_SAVE}")
    max_expanded = max_expanded_bytes if max_expanded_bytes is not None else 2 * max_bytes
    names, manifest_member, expanded, count = set(), None, 0, 0
    try:
        tar = tarfile.open(path, "r:*")
    except (tarfile.TarError, OSError):  # the library's text lists four decoders' failures: not for a participant
        raise _reject(f"not a readable tar archive, so not a `docker save` archive: {HOW_TO_SAVE}") from None
    try:
        with tar:
            for member in tar:
                check_member(member)
                count += 1
                expanded += max(0, member.size)
                if expanded > max_expanded:
                    raise _reject(f"contents expand past {max_expanded / 2**20:.0f} MB")
                normal = posixpath.normpath(member.name)
                names.add(normal)
                if normal == MANIFEST and member.isfile():
                    manifest_member = member
            if manifest_member is None:
                raise _reject(f"no {MANIFEST}, so not a `docker save` archive: {HOW_TO_SAVE}")
            raw = tar.extractfile(manifest_member).read(1 << 20)
    except (tarfile.TarError, EOFError, OSError):
        raise _reject(f"the tar archive is cut short or damaged after {count} entries (was the upload or `docker save` "
                      f"interrupted?): {HOW_TO_SAVE}") from None
    try:
        manifest = json.loads(raw)
    except ValueError as exc:
        raise _reject(f"{MANIFEST} is not JSON ({exc})") from None
    if not isinstance(manifest, list) or len(manifest) != 1 or not isinstance(manifest[0], dict):
        n = len(manifest) if isinstance(manifest, list) else "no list of"
        raise _reject(f"{MANIFEST} must name exactly one image, it names {n}; save one image per archive")
    entry = manifest[0]
    config, layers, tags = entry.get("Config"), entry.get("Layers"), entry.get("RepoTags") or []
    if not isinstance(config, str) or not isinstance(layers, list) or not isinstance(tags, list):
        raise _reject(f"{MANIFEST} entry lacks Config/Layers")
    for ref in [config, *layers]:
        if not isinstance(ref, str) or posixpath.normpath(ref) not in names:
            raise _reject(f"{MANIFEST} refers to {ascii(ref)[:120]}, which is not in the archive")
    return ArchiveInfo(config=config, repo_tags=tuple(str(t) for t in tags), members=count)


def load_archive(engine, path: str | Path, limits) -> tuple[str, bool]:
    """Check, ``docker load`` and check the image of an uploaded archive.

    Returns (image id, whether the load added it: False when the engine had it already).
    Whatever the load added is removed again when a later check fails.
    """
    from iugc.sandbox import docker_engine as engine_api
    from iugc.sandbox.container_runner import check_image

    info = check_archive(path, max_bytes=int(limits.image_size_limit_mb * 2**20))
    before = engine_api.image_ids(engine)
    loaded: set[str] = set()
    try:
        loaded = set(engine_api.load_image(engine, Path(path)))
        if len(loaded) != 1:
            raise _reject(f"the archive loaded {len(loaded)} images; save exactly one")
        (image_id,) = loaded
        check_image(engine_api.inspect_image(engine, image_id), limits)
        return image_id, image_id not in before
    except BaseException:
        # Only what this archive added: other workers load their images meanwhile,
        # so "every image that appeared since" would remove theirs too. When the
        # load itself was interrupted, its image is known by the config's digest.
        added = (loaded or {config_image_id(info.config)}) - before - {None}
        for image_id in added:
            engine_api.remove_image(engine, image_id)
        raise


@contextlib.contextmanager
def archive_loaded(engine, path: str | Path, limits):
    """Load an archive through :func:`load_archive` for the ``with`` block and yield its image
    id; afterwards remove the image again if this load added it (one an engine already had
    stays). SubmissionError, before the block runs, when the archive is refused."""
    from iugc.sandbox import docker_engine as engine_api

    image_id, added = load_archive(engine, path, limits)
    try:
        yield image_id
    finally:
        if added:
            engine_api.remove_image(engine, image_id)


def config_image_id(config: str) -> str | None:
    """The id the engine gives an archive's image: the sha256 its config is named by.

    >>> config_image_id("8f8bd6929a6dfd8ee348d3cf6956a2c8089463fe39931299efe5dc1b3d8c1492.json")[:15]
    'sha256:8f8bd692'
    >>> config_image_id("blobs/sha256/" + "ab" * 32)[:15]
    'sha256:abababab'
    >>> config_image_id("config.json") is None
    True
    """
    digest = posixpath.basename(config).removesuffix(".json")
    return f"sha256:{digest}" if re.fullmatch("[0-9a-f]{64}", digest) else None
