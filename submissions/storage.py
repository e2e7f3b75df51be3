"""Storage of uploaded archives and evaluation outputs, addressed by their sha256.

An upload is first *staged*: streamed in chunks to a temporary file in the instance's
staging folder while its sha256 is computed (never held whole in memory), so it can be
checked (size, the intake rules) before anything is kept. Only a staged file that passed
is *committed*; committing content that is already stored keeps the one copy.

Two backends behind the same methods: :class:`LocalStorage` (a folder,
``sha256/ab/cd/<hex>``; the default, under the instance folder) and :class:`S3Storage`
(any S3-compatible store through boto3; ``s3://bucket/prefix``).
"""
from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Iterator

from iugc.submissions.exceptions import ConfigurationError, NotFound, TooLarge

CHUNK = 1 << 20
_HEX = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class Staged:
    """A streamed upload waiting in the staging folder: check it, then commit or discard."""

    path: Path
    sha256: str
    size: int

    def discard(self) -> None:
        self.path.unlink(missing_ok=True)


def _check_key(sha256: str) -> str:
    if not isinstance(sha256, str) or not _HEX.fullmatch(sha256):
        raise ValueError(f"a storage key is a lowercase sha256 hex digest, got {sha256!r}")
    return sha256


def stage(stream: BinaryIO, staging: Path, max_bytes: int | None = None) -> Staged:
    """Copy ``stream`` into a new file under ``staging`` chunk by chunk, hashing it.

    Raises TooLarge (and leaves nothing behind) once more than ``max_bytes`` arrive.

    >>> import io, tempfile
    >>> s = stage(io.BytesIO(b"abc"), Path(tempfile.mkdtemp()))
    >>> s.size, s.sha256[:12]
    (3, 'ba7816bf8f01')
    >>> s.discard()
    """
    staging.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=staging, prefix="upload-", suffix=".part")
    digest, size = hashlib.sha256(), 0
    try:
        with os.fdopen(fd, "wb") as out:
            while chunk := stream.read(CHUNK):
                size += len(chunk)
                if max_bytes is not None and size > max_bytes:
                    raise TooLarge(f"the upload is larger than the limit of {max_bytes / 2**20:.0f} MB")
                digest.update(chunk)
                out.write(chunk)
    except BaseException:
        Path(name).unlink(missing_ok=True)
        raise
    return Staged(Path(name), digest.hexdigest(), size)


class LocalStorage:
    """Content-addressed folder: ``<root>/sha256/ab/cd/<hex>``, written by rename (atomic)."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.staging = self.root / "staging"

    def _path(self, sha256: str) -> Path:
        key = _check_key(sha256)
        return self.root / "sha256" / key[:2] / key[2:4] / key

    def exists(self, sha256: str) -> bool:
        return self._path(sha256).is_file()

    def commit(self, staged: Staged) -> bool:
        """Keep a staged file under its sha256; returns whether it was new (else discarded)."""
        target = self._path(staged.sha256)
        if target.is_file():
            staged.discard()
            return False
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staged.path, target)
        return True

    def put_bytes(self, data: bytes) -> str:
        """Store small content (an evaluation's result document); returns its sha256."""
        import io

        staged = stage(io.BytesIO(data), self.staging)
        self.commit(staged)
        return staged.sha256

    def open(self, sha256: str) -> BinaryIO:
        try:
            return open(self._path(sha256), "rb")
        except FileNotFoundError:
            raise NotFound(f"no stored object {sha256[:12]}") from None

    @contextmanager
    def local_copy(self, sha256: str) -> Iterator[Path]:
        """A path to the content on this machine, for the intake check and ``docker load``."""
        path = self._path(sha256)
        if not path.is_file():
            raise NotFound(f"no stored object {sha256[:12]}")
        yield path

    def delete(self, sha256: str) -> None:
        self._path(sha256).unlink(missing_ok=True)

    def keys(self) -> list[str]:
        return sorted(p.name for p in (self.root / "sha256").glob("*/*/*") if _HEX.fullmatch(p.name))


class S3Storage:
    """An S3-compatible bucket (boto3): objects ``<prefix>sha256/<hex>``."""

    def __init__(self, bucket: str, prefix: str = "", *, staging: Path, endpoint_url: str | None = None, client=None):
        import boto3

        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.staging = Path(staging)
        self.client = client or boto3.client("s3", endpoint_url=endpoint_url)

    def _key(self, sha256: str) -> str:
        return f"{self.prefix}sha256/{_check_key(sha256)}"

    def exists(self, sha256: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self.client.head_object(Bucket=self.bucket, Key=self._key(sha256))
            return True
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise

    def commit(self, staged: Staged) -> bool:
        try:
            if self.exists(staged.sha256):
                return False
            # upload_file streams the file in parts; it is never read whole into memory
            self.client.upload_file(str(staged.path), self.bucket, self._key(staged.sha256))
            return True
        finally:
            staged.discard()

    def put_bytes(self, data: bytes) -> str:
        sha256 = hashlib.sha256(data).hexdigest()
        if not self.exists(sha256):
            self.client.put_object(Bucket=self.bucket, Key=self._key(sha256), Body=data)
        return sha256

    def open(self, sha256: str) -> BinaryIO:
        from botocore.exceptions import ClientError

        try:
            return self.client.get_object(Bucket=self.bucket, Key=self._key(sha256))["Body"]
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey"):
                raise NotFound(f"no stored object {sha256[:12]}") from None
            raise

    @contextmanager
    def local_copy(self, sha256: str) -> Iterator[Path]:
        if not self.exists(sha256):
            raise NotFound(f"no stored object {sha256[:12]}")
        self.staging.mkdir(parents=True, exist_ok=True)
        folder = Path(tempfile.mkdtemp(dir=self.staging, prefix="download-"))
        try:
            path = folder / sha256
            self.client.download_file(self.bucket, self._key(sha256), str(path))
            yield path
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def delete(self, sha256: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self._key(sha256))

    def keys(self) -> list[str]:
        found = []
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=f"{self.prefix}sha256/"):
            found += [obj["Key"].rsplit("/", 1)[-1] for obj in page.get("Contents", [])]
        return sorted(found)


def open_storage(url: str, instance: Path, endpoint_url: str | None = None) -> LocalStorage | S3Storage:
    """The storage named by ``IUGC_STORAGE_URL``: a folder path, or ``s3://bucket/prefix``.

    >>> open_storage("/srv/iugc/storage", Path("/srv/iugc")).root
    PosixPath('/srv/iugc/storage')
    """
    if url.startswith("s3://"):
        bucket, _, prefix = url[len("s3://"):].partition("/")
        if not bucket:
            raise ConfigurationError(f"IUGC_STORAGE_URL {url!r} names no bucket; use s3://BUCKET/PREFIX")
        return S3Storage(bucket, prefix, staging=Path(instance) / "staging", endpoint_url=endpoint_url)
    if "://" in url:
        raise ConfigurationError(f"IUGC_STORAGE_URL {url!r}: expected a folder path or s3://BUCKET/PREFIX")
    return LocalStorage(url)
