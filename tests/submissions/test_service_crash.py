"""`kill -9` in the middle of a real containerised evaluation, of `iugc serve` (embedded
worker) and of a Celery `iugc worker`: the restarted process requeues it at once (its
owner process is gone), removes the dead run's container, runs it again, and stores it
once; nothing is lost, duplicated or left on the engine. Real frames, the baseline image
(slowed down at start), a real redis-server for Celery."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from iugc.submissions import db
from iugc.submissions.models import CaseResult, Evaluation, State, StatusChange, Submission
from iugc.submissions.uploads import submit
from tests.conftest import ROOT
from tests.service_support import Service, docker_like_archive, evaluation_pid, free_port, redis_server, wait_for_port  # noqa: F401
from tests.submissions.test_service_e2e import baseline_image, dataset  # noqa: F401 (fixtures)

# with the other engine tests, on one worker: they run containers, and the container tests
# count and clean up the runner's containers and the images they build
pytestmark = pytest.mark.xdist_group("docker")

SLOW = "iugc-test/slow-baseline:latest"


@pytest.fixture(scope="module")
def slow_image(baseline_image, tmp_path_factory):
    from iugc.sandbox.docker_engine import build_image

    engine, image = baseline_image
    context = tmp_path_factory.mktemp("slow")
    (context / "Dockerfile").write_text(
        f"FROM {image}\nENTRYPOINT [\"sh\", \"-c\", \"sleep 15 && exec python3 -m iugc.baseline.submission\"]\n")
    image_id = build_image(engine, context, SLOW)
    yield engine, image_id
    engine.images.remove(SLOW, force=True)


def _start(mode, env, port):
    command = ["serve", "--port", str(port)] if mode == "embedded" else ["worker", "--concurrency", "1"]
    process = subprocess.Popen([sys.executable, "-m", "iugc", *command], env=env, cwd=ROOT,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if mode == "embedded":
        wait_for_port(port, process=process)
    return process


def _owned(engine, pid):
    return engine.containers.list(all=True, sparse=True, filters={"label": f"org.iugc.owner={socket.gethostname()}:{pid}"})



@pytest.mark.slow
@pytest.mark.parametrize("mode", ["embedded", "celery"])
def test_kill_9_mid_evaluation_completes_it_once_after_a_restart(mode, slow_image, dataset, tmp_path, request):
    engine, image_id = slow_image
    url = f"sqlite:///{tmp_path / 'iugc.sqlite3'}"
    from tests.service_support import challenge_file

    svc = Service(url, tmp_path, challenge_file(tmp_path, limits={"time_limit_seconds": 120, "memory_mb": 2048}))
    user = svc.participant("a@example.org", "alpha")
    from iugc.submissions import challenges

    with db.transaction(svc.sessions) as session:
        challenges.add_dataset(session, svc.phases[0], dataset)
    with open(docker_like_archive(tmp_path / "a.tar", "x"), "rb") as stream:
        sid = submit(svc.sessions, svc.storage, user, svc.phases[0], stream)
    with db.transaction(svc.sessions) as session:  # the image is on the engine already: not loaded again
        session.get(Submission, sid).image_digest = image_id
    env = {**os.environ, "IUGC_INSTANCE": str(tmp_path), "IUGC_DATABASE_URL": url, "IUGC_STORAGE_URL": str(svc.storage.root),
           "IUGC_CACHE_DIR": str(tmp_path / "cache")}
    env.pop("IUGC_BROKER_URL", None)
    env["IUGC_SECRET_KEY"] = "k" * 40  # `iugc serve` refuses to start without one (the web sessions)
    dispatcher = None
    if mode == "celery":
        from iugc.submissions.celery_queue import Dispatcher
        from iugc.submissions.config import Settings

        env["IUGC_BROKER_URL"] = request.getfixturevalue("redis_server").url
        settings = Settings(instance=tmp_path, database_url=url, storage_url=str(svc.storage.root), broker_url=env["IUGC_BROKER_URL"])
        dispatcher = Dispatcher(settings, svc.sessions, sweep_seconds=0.5).start()
    port = free_port()
    first = _start(mode, env, port)
    first_owner = evaluation_pid(first, mode == "embedded")
    second = None
    try:
        deadline = time.monotonic() + 120
        while not [c for c in _owned(engine, first_owner) if c.status == "running"] and time.monotonic() < deadline:
            time.sleep(0.5)
        assert _owned(engine, first_owner), "the evaluation's container never started"
        first.send_signal(signal.SIGKILL)
        first.wait(30)
        assert _owned(engine, first_owner)  # the dead run's container is still there ...
        restarted = time.monotonic()
        second = _start(mode, env, port)
        second_owner = evaluation_pid(second, mode == "embedded")
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            with svc.sessions() as session:
                if session.get(Submission, sid).status in (State.succeeded, State.failed):
                    break
            time.sleep(1)
        assert _owned(engine, first_owner) == []  # ... and the restart removed it
    finally:
        if dispatcher is not None:
            dispatcher.stop()
        for process in (first, second):
            if process is not None and process.poll() is None:
                process.send_signal(signal.SIGTERM)
                process.wait(120)
    with svc.sessions() as session:
        submission = session.get(Submission, sid)
        (evaluation,) = session.query(Evaluation).all()
        history = [c.to_state for c in session.query(StatusChange).order_by(StatusChange.id)]
        assert submission.status == State.succeeded, (evaluation.failure, evaluation.error)
        assert evaluation.attempts == 2 and evaluation.image_digest == image_id
        assert history == [State.received, State.validating, State.queued, State.running, State.queued, State.running, State.succeeded]
        assert session.query(CaseResult).count() == evaluation.aggregates["n_cases"] > 0
        requeued = next(c for c in session.query(StatusChange).order_by(StatusChange.id) if c.to_state == State.queued and c.from_state == State.running)
        # requeued within seconds of the restart, not after the 60 s heartbeat timeout
        assert (requeued.at.timestamp() - (time.time() - (time.monotonic() - restarted))) < 30
    assert _owned(engine, second_owner) == []
    svc.engine.dispose()
