"""What the engine or the host cannot provide is the platform's failure, never the team's
(issue 19, item 1): a GPU on a host without one, more CPUs or memory than the host has,
an engine that refuses the container. Such a phase is refused before the image runs, with
a message naming the limit, what the host has and the option that overrides it.

The engine tests run on the real engine with an inert image (an empty root filesystem
whose command does not exist: the engine refuses or fails it before any code runs), and
skip with the reason where there is no engine (IUGC_REQUIRE_DOCKER=1 makes that a failure).
"""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
import uuid

import pytest

from iugc.challenge.definition import load_challenge
from iugc.data_manifest.importers import import_dataset
from iugc.sandbox import docker_engine
from iugc.sandbox.docker_engine import Host, Limits
from iugc.sandbox.evaluate_image import evaluate_image
from iugc.sandbox.exceptions import HostLimitError, RetryableError, SubmissionError
from tests.conftest import ROOT
from tests.docker_support import require_engine

pytestmark = pytest.mark.xdist_group("docker")
IUGC24 = load_challenge("iugc2024")


def test_host_check_names_the_limit_and_what_the_host_has():
    small = Host(cpus=2, memory_mb=8000, gpu=False)
    docker_engine.check_host(Limits(cpus=2, memory_mb=8000), small)  # exactly what it has: fine
    for limits, limit, words in [
        (Limits(cpus=4), "cpus", ["4 CPUs", "has 2"]),
        (Limits(memory_mb=16384), "memory_mb", ["16384 MB", "has 8000 MB"]),
        (Limits(gpu=True), "gpu", ["GPU", "none"]),
    ]:
        with pytest.raises(HostLimitError) as caught:
            docker_engine.check_host(limits, small, "phase final-test")
        assert caught.value.limit == limit and isinstance(caught.value, RetryableError)
        assert "phase final-test" in str(caught.value) and all(w in str(caught.value) for w in words), str(caught.value)
    docker_engine.check_host(Limits(gpu=True), Host(cpus=2, memory_mb=8000, gpu=True))


@pytest.fixture(scope="module")
def engine():
    return require_engine()


def _inert_image(engine, changes: list[str]) -> str:
    tag = f"iugc-test/inert-{uuid.uuid4().hex[:8]}:latest"
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        info = tarfile.TarInfo("marker")
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))
    repository, _, version = tag.partition(":")
    engine.api.import_image_from_data(buffer.getvalue(), repository=repository, tag=version, changes=changes)
    return tag


@pytest.fixture(scope="module")
def inert(engine):
    """A non-root image whose command does not exist (removed afterwards)."""
    tag = _inert_image(engine, ['CMD ["/no-such-program"]', "USER 1000"])
    yield tag
    docker_engine.remove_image(engine, tag)


@pytest.fixture(scope="module")
def host(engine):
    return docker_engine.host_resources(engine)


@pytest.fixture(scope="module")
def dataset(psfhs_dir, tmp_path_factory):
    dest = tmp_path_factory.mktemp("data") / "ds"
    import_dataset("psfhs", psfhs_dir / "release_sample", dest, progress=False)
    return dest


@pytest.fixture(autouse=True)
def own_work_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("IUGC_WORK_DIR", str(tmp_path / "work"))
    return tmp_path / "work"


def _runner_containers(engine) -> set[str]:
    return {c["Id"] for c in engine.api.containers(all=True, filters={"label": docker_engine.RUNNER_LABEL})}


def _evaluate_image(*args, work):
    env = {**os.environ, "IUGC_WORK_DIR": str(work)}
    return subprocess.run([sys.executable, "-m", "iugc", "evaluate-image", *map(str, args)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


def test_a_gpu_phase_on_a_host_without_one_is_refused_before_it_runs(engine, inert, host, dataset, tmp_path, own_work_dir):
    if host.gpu:
        pytest.skip("this engine's host has a GPU runtime")
    before = _runner_containers(engine)
    out = tmp_path / "r.json"
    run = _evaluate_image("--image", inert, "--data", dataset, "--challenge", "iugc2024", "--phase", "final-test",
                          "--cpus", "1", "--out", out, work=own_work_dir)
    assert run.returncode not in (0, 130), run.stdout
    message = run.stderr.strip().splitlines()[-1]
    assert "phase final-test asks for a GPU" in message and "has none" in message and "--no-gpus" in message, run.stderr
    assert "Traceback" not in run.stderr and "failed" not in run.stdout
    assert not out.exists()  # nothing recorded against the team
    assert _runner_containers(engine) == before and not any(own_work_dir.glob("*/"))


def test_more_cpus_than_the_host_has_is_refused_with_the_override(engine, inert, host, dataset, tmp_path, own_work_dir):
    before = _runner_containers(engine)
    out = tmp_path / "r.json"
    asked = host.cpus + 2
    run = _evaluate_image("--image", inert, "--data", dataset, "--challenge", "iugc2024", "--phase", "final-test",
                          "--no-gpus", "--cpus", asked, "--out", out, work=own_work_dir)
    assert run.returncode not in (0, 130), run.stdout
    message = run.stderr.strip().splitlines()[-1]
    assert f"asks for {asked} CPUs but the engine's host has {host.cpus}" in message, run.stderr
    assert f"--cpus {host.cpus}" in message and "Traceback" not in run.stderr
    assert not out.exists() and _runner_containers(engine) == before


def test_the_library_refuses_host_limits_before_provisioning(engine, inert, host, dataset, own_work_dir):
    with pytest.raises(HostLimitError) as caught:
        evaluate_image(inert, dataset, IUGC24, Limits(cpus=host.cpus + 1), engine=engine, cache_dir=None, jobs=1)
    assert caught.value.limit == "cpus"
    assert not own_work_dir.exists() or not any(own_work_dir.iterdir())


def test_a_gpu_request_the_engine_cannot_serve_is_a_platform_error(engine, inert, host, tmp_path):
    """Past the host check (a remote engine, a runtime that lies): the engine's "could not
    select device driver" at start used to be recorded as the team's `exit_code`."""
    if host.gpu:
        pytest.skip("this engine's host has a GPU runtime")
    (tmp_path / "in").mkdir()
    (tmp_path / "out").mkdir()
    before = _runner_containers(engine)
    config = docker_engine.container_config(inert, Limits(gpu=True, cpus=1), input_dir=tmp_path / "in",
                                            output_dir=tmp_path / "out", name=f"iugc-test-gpu-{uuid.uuid4().hex[:8]}")
    with pytest.raises(RetryableError) as caught:
        docker_engine.run_container(engine, config)
    assert not isinstance(caught.value, SubmissionError) and "device driver" in str(caught.value)
    assert _runner_containers(engine) == before  # the created container was removed


def test_an_entrypoint_that_cannot_start_is_still_the_teams_failure(engine, inert, dataset, tmp_path):
    limits = Limits(time_limit_seconds=60, memory_mb=256, cpus=1, pids_limit=32, output_limit_mb=10)
    result = evaluate_image(inert, dataset, IUGC24, limits, engine=engine, cache_dir=None, jobs=1)
    assert result["status"] == "failed" and result["failure"] == "exit_code"
    assert "no-such-program" in result["error"]
    n_cases = len(json.loads((dataset / "manifest.json").read_text())["cases"])
    assert result["provenance"]["n_cases"] == n_cases and result["provenance"]["image_digest"].startswith("sha256:")


def test_an_image_without_a_command_is_rejected_as_the_teams(engine, dataset):
    tag = _inert_image(engine, ["USER 1000"])
    try:
        limits = Limits(time_limit_seconds=60, memory_mb=256, cpus=1, pids_limit=32, output_limit_mb=10)
        result = evaluate_image(tag, dataset, IUGC24, limits, engine=engine, cache_dir=None, jobs=1)
    finally:
        docker_engine.remove_image(engine, tag)
    assert result["status"] == "failed" and result["failure"] == "image_rejected"
    assert "No command specified" in result["error"], json.dumps(result)[:500]


def test_a_full_work_disk_is_a_platform_error(engine, inert, dataset, tmp_path, monkeypatch):
    """The frames do not fit in the work folder (a 256 KB tmpfs): ENOSPC while preparing
    /input is the platform's, and the job folder is removed."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    small = tmp_path / "small"
    small.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(small)], capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        monkeypatch.setenv("IUGC_WORK_DIR", str(small))
        limits = Limits(time_limit_seconds=60, memory_mb=256, cpus=1, pids_limit=32, output_limit_mb=10)
        with pytest.raises(RetryableError) as caught:
            evaluate_image(inert, dataset, IUGC24, limits, engine=engine, cache_dir=None, jobs=1)
        assert "No space left on device" in str(caught.value) and not isinstance(caught.value, SubmissionError)
        assert list(small.iterdir()) == []
    finally:
        subprocess.run(["umount", "-l", str(small)], capture_output=True)
