"""Writing files and folders so that nothing is ever half-written, and hashing them.

The platform's generic helpers, below every domain package: atomic file writes (a
temporary file and a rename), staged folders (filled beside their destination, renamed
into place when complete, removed on an error or a signal), and sha256 of bytes or files.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
from pathlib import Path


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename: never half-written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def is_new_folder(path: str | Path) -> bool:
    """True when ``path`` does not exist or is an empty folder: a place a staged folder may go."""
    path = Path(path)
    return not path.exists() or (path.is_dir() and not any(path.iterdir()))


def stage_folder(dest: str | Path) -> Path:
    """Make and return an empty hidden sibling of ``dest`` to fill; :func:`commit_folder` moves it."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{dest.name}.partial-", dir=dest.parent))


def commit_folder(staging: Path, dest: str | Path) -> None:
    """Rename the filled ``staging`` folder to ``dest`` (absent or empty): its files appear together."""
    dest = Path(dest)
    if dest.exists():
        dest.rmdir()  # OSError unless empty: a staged folder never replaces anything
    staging.rename(dest)


@contextlib.contextmanager
def staged_folder(dest: str | Path):
    """Yield an empty sibling folder of ``dest``; when the block ends it becomes ``dest``, and
    when the block raises (an error, Ctrl-C) it is removed, so ``dest`` is never half-written.

    >>> import tempfile
    >>> dest = Path(tempfile.mkdtemp()) / "report"
    >>> with staged_folder(dest) as folder:
    ...     _ = (folder / "a.txt").write_text("a")
    >>> sorted(p.name for p in dest.iterdir())
    ['a.txt']
    """
    staging = stage_folder(dest)
    try:
        yield staging
        commit_folder(staging, dest)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
