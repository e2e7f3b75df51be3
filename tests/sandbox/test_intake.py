"""Intake of uploaded `docker save` archives: unsafe archives are refused before the
engine sees them, and a failed intake leaves nothing loaded (issue 4)."""
from __future__ import annotations

import io
import json
import os
import random
import tarfile

import pytest

from iugc.sandbox.docker_engine import Limits
from iugc.sandbox.exceptions import SubmissionError
from iugc.sandbox.intake import check_archive, load_archive
from tests.docker_support import build_hostile_images, require_engine


def make_tar(path, members, manifest=None):
    """members: (name, kind, payload) with kind file|dir|sym|hard|chr|fifo."""
    with tarfile.open(path, "w") as tar:
        if manifest is not None:
            data = json.dumps(manifest).encode()
            info = tarfile.TarInfo("manifest.json")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for name, kind, payload in members:
            info = tarfile.TarInfo(name)
            if kind == "file":
                info.size = len(payload)
                tar.addfile(info, io.BytesIO(payload))
                continue
            info.type = {"dir": tarfile.DIRTYPE, "sym": tarfile.SYMTYPE, "hard": tarfile.LNKTYPE,
                         "chr": tarfile.CHRTYPE, "fifo": tarfile.FIFOTYPE}[kind]
            if kind in ("sym", "hard"):
                info.linkname = payload
            tar.addfile(info)
    return path


GOOD = [("config.json", "file", b"{}"), ("layer/layer.tar", "file", b"x" * 10)]
ONE = [{"Config": "config.json", "Layers": ["layer/layer.tar"], "RepoTags": ["team/model:1"]}]


def test_a_well_formed_archive_passes(tmp_path):
    info = check_archive(make_tar(tmp_path / "ok.tar", GOOD + [("layer/link", "sym", "../config.json")], ONE), max_bytes=1 << 20)
    assert info.repo_tags == ("team/model:1",)
    assert info.config == "config.json" and info.members == 4  # with manifest.json


@pytest.mark.parametrize("extra, words", [
    (("/etc/passwd", "file", b"x"), "absolute path"),
    (("layer/../../evil", "file", b"x"), "'..' component"),
    (("layer/escape", "sym", "../../etc/shadow"), "points outside"),
    (("layer/abs", "sym", "/etc/shadow"), "points outside"),
    (("layer/hard", "hard", "/etc/shadow"), "points outside"),
    (("layer/dev", "chr", ""), "device, FIFO"),
    (("layer/fifo", "fifo", ""), "device, FIFO"),
])
def test_unsafe_members_are_refused_by_name(tmp_path, extra, words):
    path = make_tar(tmp_path / "bad.tar", GOOD + [extra], ONE)
    with pytest.raises(SubmissionError, match=words) as info:
        check_archive(path, max_bytes=1 << 20)
    assert info.value.reason == "image_rejected" and extra[0] in str(info.value)


@pytest.mark.parametrize("manifest, words", [
    (None, "no manifest.json"),
    (ONE * 2, "exactly one image, it names 2"),
    ([], "exactly one image, it names 0"),
    ([{"Config": "missing.json", "Layers": []}], "not in the archive"),
])
def test_manifest_must_name_exactly_one_present_image(tmp_path, manifest, words):
    with pytest.raises(SubmissionError, match=words):
        check_archive(make_tar(tmp_path / "m.tar", GOOD, manifest), max_bytes=1 << 20)


def test_size_caps(tmp_path):
    path = make_tar(tmp_path / "big.tar", GOOD + [("layer/big", "file", b"0" * 300_000)], ONE)
    with pytest.raises(SubmissionError, match="exceeds the limit"):
        check_archive(path, max_bytes=100_000)
    with pytest.raises(SubmissionError, match="expand past"):
        check_archive(path, max_bytes=1 << 20, max_expanded_bytes=200_000)
    (tmp_path / "junk.tar").write_bytes(b"not a tar at all" * 100)
    with pytest.raises(SubmissionError, match="not a readable tar"):
        check_archive(tmp_path / "junk.tar", max_bytes=1 << 20)


@pytest.mark.parametrize("kind, words", [
    ("random bytes", "not a readable tar archive, so not a `docker save` archive"),
    ("gzip of text", "not a readable tar archive, so not a `docker save` archive"),
    ("empty", "the file is empty (0 bytes)"),
    ("cut short", "cut short or damaged after"),
    ("a tar of something else", "no manifest.json, so not a `docker save` archive"),
])
def test_a_file_that_is_not_a_docker_save_archive_gets_one_sentence_and_the_way_to_make_one(tmp_path, kind, words):
    import gzip

    path = tmp_path / "upload.tar"
    if kind == "random bytes":
        path.write_bytes(random.Random(0).randbytes(5000))
    elif kind == "gzip of text":
        path.write_bytes(gzip.compress(b"hello\n" * 100))
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "cut short":
        whole = make_tar(tmp_path / "whole.tar", GOOD + [("layer/big", "file", b"1" * 50_000)], ONE).read_bytes()
        path.write_bytes(whole[:30_000])
    else:
        make_tar(path, [("notes/readme.txt", "file", b"hi")], None)
    with pytest.raises(SubmissionError) as info:
        check_archive(path, max_bytes=1 << 20)
    message = str(info.value)
    assert words in message and message.endswith("make it with `docker save IMAGE -o image.tar` and upload that file")
    assert "Error" not in message and "method" not in message and len(message) < 250  # no library text


@pytest.fixture(scope="module")
def engine_and_images():
    engine = require_engine()
    return engine, build_hostile_images(engine)


@pytest.mark.xdist_group("docker")
def test_real_archives_load_once_and_failures_leave_nothing(engine_and_images, tmp_path):
    engine, images = engine_and_images
    from iugc.sandbox import docker_engine

    good = tmp_path / "good.tar"
    subprocess_save([images["good"]], good)
    engine.images.remove(images["good"], force=True)
    loaded, added = load_archive(engine, good, Limits())
    assert added and loaded == docker_engine.inspect_image(engine, images["good"])["Id"]
    assert load_archive(engine, good, Limits()) == (loaded, False)  # already there: not "added"

    before = docker_engine.image_ids(engine)
    root = tmp_path / "root.tar"
    subprocess_save([images["root"]], root)
    engine.images.remove(images["root"], force=True)
    with pytest.raises(SubmissionError, match="runs as root"):
        load_archive(engine, root, Limits())
    assert docker_engine.image_ids(engine) <= before  # the rejected image did not stay
    build_hostile_images(engine)  # restore the removed test image for other tests

    two = tmp_path / "two.tar"
    subprocess_save([images["good"], images["sleep"]], two)
    before = docker_engine.image_ids(engine)
    with pytest.raises(SubmissionError, match="exactly one image"):
        load_archive(engine, two, Limits())
    assert docker_engine.image_ids(engine) == before  # both were present already: none removed


class _AnotherWorkerLoadsMeanwhile:
    """The real engine, where another worker's archive lands while this one loads
    (the interleaving of two workers, made deterministic)."""

    def __init__(self, engine, other_archive):
        self.api, self._engine, self._other = engine.api, engine, other_archive
        self.images = self

    def load(self, fh):
        with open(self._other, "rb") as other:
            self._engine.images.load(other)
        return self._engine.images.load(fh)


@pytest.mark.xdist_group("docker")
def test_a_rejected_archive_removes_its_image_only(engine_and_images, tmp_path):
    """Clean-up after a rejection used to remove every image that appeared during
    the load, including the one another worker had just loaded for its run."""
    engine, images = engine_and_images
    from iugc.sandbox import docker_engine

    theirs, ours = tmp_path / "theirs.tar", tmp_path / "ours.tar"
    subprocess_save([images["good"]], theirs)
    subprocess_save([images["root"]], ours)
    their_id = docker_engine.inspect_image(engine, images["good"])["Id"]
    our_id = docker_engine.inspect_image(engine, images["root"])["Id"]
    try:
        engine.images.remove(images["good"], force=True)
        engine.images.remove(images["root"], force=True)
        with pytest.raises(SubmissionError, match="runs as root"):
            load_archive(_AnotherWorkerLoadsMeanwhile(engine, theirs), ours, Limits())
        ids = docker_engine.image_ids(engine)
        assert their_id in ids and our_id not in ids
    finally:
        build_hostile_images(engine)  # restore the removed test images for other tests


class _InterruptedOnceLoaded:
    """The real engine; the worker is interrupted after the engine loaded the
    archive but before the load's answer reached it."""

    def __init__(self, engine):
        self.api, self._engine = engine.api, engine
        self.images = self

    def load(self, fh):
        self._engine.images.load(fh)
        raise KeyboardInterrupt


@pytest.mark.xdist_group("docker")
def test_an_interrupted_load_removes_the_archives_image(engine_and_images, tmp_path):
    engine, images = engine_and_images
    from iugc.sandbox import docker_engine

    ours = tmp_path / "ours.tar"
    subprocess_save([images["good"]], ours)
    our_id = docker_engine.inspect_image(engine, images["good"])["Id"]
    try:
        engine.images.remove(images["good"], force=True)
        with pytest.raises(KeyboardInterrupt):
            load_archive(_InterruptedOnceLoaded(engine), ours, Limits())
        assert our_id not in docker_engine.image_ids(engine)  # found by its config's digest
    finally:
        build_hostile_images(engine)


@pytest.mark.xdist_group("docker")
def test_evaluate_image_takes_an_archive_and_unloads_it(engine_and_images, psfhs_dir, tmp_path):
    import subprocess
    import sys

    from iugc.data_manifest.importers import import_dataset
    from iugc.sandbox import docker_engine
    from tests.conftest import ROOT

    engine, images = engine_and_images
    archive = tmp_path / "team.tar"
    subprocess_save([images["good"]], archive)
    engine.images.remove(images["good"], force=True)
    import_dataset("psfhs", psfhs_dir / "release_sample", tmp_path / "ds", progress=False)
    out = tmp_path / "r.json"
    done = subprocess.run([sys.executable, "-m", "iugc", "evaluate-image", "--image", str(archive), "--data", str(tmp_path / "ds"),
                           "--challenge", "psfhs2023", "--out", str(out), "--quiet"], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "IUGC_WORK_DIR": str(tmp_path / "work")})
    assert done.returncode == 0, done.stderr
    result = json.loads(out.read_text())
    assert result["status"] == "succeeded" and result["aggregates"]["n_cases"] == 40
    assert result["image_digest"] not in docker_engine.image_ids(engine)  # loaded for this run only
    build_hostile_images(engine)


def subprocess_save(refs, path):
    import subprocess

    subprocess.run(["docker", "save", "-o", str(path), *refs], check=True)
