"""Scale-out through Celery and a real Redis: two `iugc worker` processes with the no-op
evaluation run every queued evaluation exactly once (1,000 of them), a Redis restart in
the middle loses nothing, and a worker killed with SIGKILL mid-evaluation has its
evaluation completed once after a restart."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from sqlalchemy import func, select

from iugc.submissions.celery_queue import Dispatcher
from iugc.submissions.config import Settings
from iugc.submissions.models import Evaluation, State, StatusChange
from iugc.submissions.uploads import submit
from tests.conftest import ROOT
from tests.service_support import (  # noqa: F401 (fixtures)
    Service,
    challenge_file,
    database_url,
    docker_like_archive,
    postgres_cluster,
    redis_server,
)


@pytest.fixture
def service(database_url, tmp_path):
    svc = Service(database_url, tmp_path, challenge_file(tmp_path, limits={"submissions_per_day": 1000}))
    svc.url = database_url
    yield svc
    svc.engine.dispose()


def _fill(service, n, teams=25):
    users = [service.participant(f"u{i}@example.org", f"team{i}") for i in range(teams)]
    for i in range(n):
        path = docker_like_archive(service.tmp / "a.tar", f"{i}")
        with open(path, "rb") as stream:
            submit(service.sessions, service.storage, users[i % teams], service.phases[0], stream)


def _workers(service, broker, n=2, concurrency=4, extra_env=None):
    env = {**os.environ, "IUGC_DATABASE_URL": service.url, "IUGC_BROKER_URL": broker,
           "IUGC_STORAGE_URL": str(service.storage.root), "IUGC_INSTANCE": str(service.tmp), **(extra_env or {})}
    return [subprocess.Popen([sys.executable, "-m", "iugc", "worker", "--concurrency", str(concurrency), "--evaluation", "noop"],
                             env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for _ in range(n)]


def _stop(workers):
    for worker in workers:
        if worker.poll() is None:
            worker.send_signal(signal.SIGTERM)
    for worker in workers:
        try:
            worker.wait(60)
        except subprocess.TimeoutExpired:
            worker.kill()


def _states(service):
    with service.sessions() as session:
        return dict(session.execute(select(Evaluation.status, func.count()).group_by(Evaluation.status)).all())


def _wait_all_succeeded(service, n, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _states(service).get(State.succeeded, 0) == n:
            return
        time.sleep(0.5)
    raise AssertionError(f"not all {n} succeeded after {timeout} s: {_states(service)}")


def _exactly_once(service, n):
    with service.sessions() as session:
        attempts = session.execute(select(Evaluation.attempts, func.count()).group_by(Evaluation.attempts)).all()
        finishes = session.execute(select(StatusChange.evaluation_id, func.count()).where(
            StatusChange.to_state == State.succeeded).group_by(StatusChange.evaluation_id)).all()
    assert len(finishes) == n and {count for _, count in finishes} == {1}
    return dict(attempts)


def test_a_worker_that_gets_no_messages_still_runs_what_is_queued_from_the_database(service, redis_server):
    """Celery's threads-pool consumer can stop taking messages after quick Redis
    reconnections without a word; a worker that runs nothing claims from the database every
    IDLE_CLAIM_SECONDS (the row is the truth). Here no dispatcher sends a message at all."""
    from iugc.submissions.celery_queue import IDLE_CLAIM_SECONDS

    _fill(service, 6, teams=3)
    began = time.monotonic()
    workers = _workers(service, redis_server.url, n=1, concurrency=2)
    try:
        _wait_all_succeeded(service, 6, timeout=IDLE_CLAIM_SECONDS + 90)
    finally:
        _stop(workers)
    assert time.monotonic() - began >= IDLE_CLAIM_SECONDS  # none came before the first idle look
    assert _exactly_once(service, 6) == {1: 6}
    assert "claimed from the database, no broker message came for it" in workers[0].stderr.read()


@pytest.mark.slow
def test_a_thousand_noop_evaluations_through_two_celery_workers_run_exactly_once(service, redis_server):
    _fill(service, 1000)
    settings = Settings(instance=service.tmp, database_url=service.url, storage_url=str(service.storage.root), broker_url=redis_server.url)
    dispatcher = Dispatcher(settings, service.sessions, sweep_seconds=0.5).start()
    workers = _workers(service, redis_server.url)
    try:
        _wait_all_succeeded(service, 1000, timeout=600)
    finally:
        dispatcher.stop()
        _stop(workers)
    assert _exactly_once(service, 1000) == {1: 1000}  # no evaluation was claimed twice


@pytest.mark.slow
def test_a_redis_restart_during_a_run_loses_nothing(service, redis_server):
    _fill(service, 200)
    settings = Settings(instance=service.tmp, database_url=service.url, storage_url=str(service.storage.root), broker_url=redis_server.url)
    dispatcher = Dispatcher(settings, service.sessions, sweep_seconds=0.5, resend_seconds=3).start()
    workers = _workers(service, redis_server.url, extra_env={"IUGC_NOOP_SECONDS": "0.05"})
    try:
        deadline = time.monotonic() + 120
        while _states(service).get(State.succeeded, 0) < 20 and time.monotonic() < deadline:
            time.sleep(0.2)
        redis_server.stop()  # the queued messages are gone with it (no persistence)
        time.sleep(3)
        redis_server.start()
        _wait_all_succeeded(service, 200, timeout=300)
    finally:
        dispatcher.stop()
        _stop(workers)
    assert all(w.returncode in (0, -signal.SIGTERM) for w in workers), [w.stderr.read()[-2000:] for w in workers]
    _exactly_once(service, 200)


@pytest.mark.slow
def test_a_killed_celery_worker_s_evaluation_completes_once_after_a_restart(service, redis_server):
    _fill(service, 1, teams=1)
    settings = Settings(instance=service.tmp, database_url=service.url, storage_url=str(service.storage.root), broker_url=redis_server.url)
    dispatcher = Dispatcher(settings, service.sessions, sweep_seconds=0.5, resend_seconds=2).start()
    (worker,) = _workers(service, redis_server.url, n=1, extra_env={"IUGC_NOOP_SECONDS": "30"})
    try:
        deadline = time.monotonic() + 60
        while _states(service).get(State.running, 0) == 0 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _states(service) == {State.running: 1}
        worker.send_signal(signal.SIGKILL)
        worker.wait(30)
        restarted = time.monotonic()
        (worker,) = _workers(service, redis_server.url, n=1, extra_env={"IUGC_NOOP_SECONDS": "0"})
        _wait_all_succeeded(service, 1, timeout=60)
        assert time.monotonic() - restarted < 30  # picked up at start, not after the 60 s heartbeat timeout
    finally:
        dispatcher.stop()
        _stop([worker])
    assert _exactly_once(service, 1) == {2: 1}  # the first attempt was lost, the second stored
