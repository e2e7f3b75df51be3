"""Storage of uploads and outputs: a content-addressed folder and an S3-compatible store
(a real ``moto_server`` process), behind the same methods."""
from __future__ import annotations

import hashlib
import io
import tracemalloc
import uuid

import pytest

from iugc.submissions.exceptions import ConfigurationError, NotFound, TooLarge
from iugc.submissions.storage import LocalStorage, S3Storage, open_storage, stage
from tests.service_support import s3_client, s3_endpoint  # noqa: F401 (fixture)


@pytest.fixture(params=["local", "s3"])
def storage(request, tmp_path):
    if request.param == "local":
        return LocalStorage(tmp_path / "storage")
    endpoint = request.getfixturevalue("s3_endpoint")
    client = s3_client(endpoint)
    bucket = f"iugc-{uuid.uuid4().hex[:10]}"
    client.create_bucket(Bucket=bucket)
    return S3Storage(bucket, "archives", staging=tmp_path / "staging", client=client)


class Chunks(io.RawIOBase):
    """A stream of ``total`` pseudo-random bytes made on the fly (never all in memory)."""

    def __init__(self, total: int, seed: int = 0):
        self.left, self.block = total, hashlib.sha256(str(seed).encode()).digest() * 4096  # 128 KiB

    def readable(self):
        return True

    def readinto(self, buffer):
        n = min(len(buffer), self.left, len(self.block))
        buffer[:n] = self.block[:n]
        self.left -= n
        return n


def _expected_sha256(total: int, seed: int = 0) -> str:
    digest, stream = hashlib.sha256(), Chunks(total, seed)
    while chunk := stream.read(1 << 20):
        digest.update(chunk)
    return digest.hexdigest()


def test_staging_streams_and_hashes_without_holding_the_upload(tmp_path):
    total = 64 * 2**20
    tracemalloc.start()
    staged = stage(Chunks(total), tmp_path)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert staged.size == total and staged.path.stat().st_size == total
    assert staged.sha256 == _expected_sha256(total)
    assert peak < 8 * 2**20, f"staging held {peak / 2**20:.0f} MB of a 64 MB upload"


def test_an_upload_over_the_limit_leaves_nothing(tmp_path):
    with pytest.raises(TooLarge, match="larger than the limit of 1 MB"):
        stage(Chunks(3 * 2**20), tmp_path, max_bytes=2**20)
    assert list(tmp_path.iterdir()) == []


def test_round_trip_and_one_copy_per_content(storage, tmp_path):
    data = b"docker save archive bytes" * 1000
    first = stage(io.BytesIO(data), tmp_path / "in")
    assert storage.commit(first) is True
    assert not first.path.exists()
    again = stage(io.BytesIO(data), tmp_path / "in")
    assert storage.commit(again) is False and not again.path.exists()
    key = hashlib.sha256(data).hexdigest()
    assert storage.keys() == [key]
    assert storage.exists(key)
    with storage.open(key) as stream:
        assert stream.read() == data
    with storage.local_copy(key) as path:
        assert path.read_bytes() == data


def test_put_bytes_is_content_addressed(storage):
    key = storage.put_bytes(b'{"score": 0.9}')
    assert key == hashlib.sha256(b'{"score": 0.9}').hexdigest()
    assert storage.put_bytes(b'{"score": 0.9}') == key and storage.keys() == [key]


def test_unknown_and_malformed_keys(storage):
    missing = "0" * 64
    assert not storage.exists(missing)
    with pytest.raises(NotFound):
        storage.open(missing)
    with pytest.raises(NotFound):
        with storage.local_copy(missing):
            pass
    with pytest.raises(ValueError, match="sha256 hex digest"):
        storage.exists("../../etc/passwd")


def test_local_objects_are_spread_by_prefix(tmp_path):
    storage = LocalStorage(tmp_path)
    key = storage.put_bytes(b"x")
    assert (tmp_path / "sha256" / key[:2] / key[2:4] / key).read_bytes() == b"x"


def test_open_storage_reads_the_url(tmp_path):
    assert isinstance(open_storage(str(tmp_path / "s"), tmp_path), LocalStorage)
    s3 = open_storage("s3://bucket/some/prefix", tmp_path, endpoint_url="http://127.0.0.1:1")
    assert (s3.bucket, s3.prefix) == ("bucket", "some/prefix/")
    for bad in ("s3://", "ftp://host/x"):
        with pytest.raises(ConfigurationError, match="IUGC_STORAGE_URL"):
            open_storage(bad, tmp_path)
