"""Accepting submissions: the lifecycle's one transition function, the phase window, the
intake rules, duplicates and quotas (also under 20 concurrent uploads from one team), and
bad input that changes nothing, on SQLite and PostgreSQL."""
from __future__ import annotations

import datetime as dt
import threading

import pytest

from iugc.submissions import db, queue
from iugc.submissions.exceptions import Conflict, Forbidden, IllegalTransition, InvalidRequest, NotFound, QuotaExceeded, TooLarge
from iugc.submissions.lifecycle import transition
from iugc.submissions.models import Evaluation, Phase, State, StatusChange, Submission
from iugc.submissions.uploads import quota, submit
from tests.service_support import Service, challenge_file, database_url, docker_like_archive, postgres_cluster  # noqa: F401


@pytest.fixture
def service(database_url, tmp_path):
    svc = Service(database_url, tmp_path, challenge_file(tmp_path, limits={"submissions_per_day": 3, "submissions_total": 4}))
    yield svc
    svc.engine.dispose()


def _upload(service, user_id, salt, slug=None, **kw):
    path = docker_like_archive(service.tmp / f"a{salt}.tar", str(salt), **kw)
    with open(path, "rb") as stream:
        return submit(service.sessions, service.storage, user_id, slug or service.phases[0], stream)


def _upload_at(service, user_id, salt, now, slug=None):
    path = docker_like_archive(service.tmp / f"a{salt}.tar", str(salt))
    with open(path, "rb") as stream:
        return submit(service.sessions, service.storage, user_id, slug or service.phases[0], stream, now=now)


def test_an_accepted_upload_is_recorded_stored_and_queued(service):
    user = service.participant("a@example.org", "alpha")
    sid = _upload(service, user, 1)
    with service.sessions() as session:
        submission = session.get(Submission, sid)
        (evaluation,) = submission.evaluations
        history = [(c.from_state, c.to_state) for c in evaluation.history]
        times = [c.at for c in evaluation.history]
        assert submission.status == evaluation.status == State.queued
        assert history == [(None, State.received), (State.received, State.validating), (State.validating, State.queued)]
        assert times == sorted(times) and evaluation.queued_at == times[-1]
        assert service.storage.keys() == [submission.archive_sha256]
        assert submission.archive_size == (service.tmp / "a1.tar").stat().st_size
    assert service.counts()["staging"] == []


def test_illegal_transitions_are_refused_and_change_nothing(service):
    user = service.participant("a@example.org", "alpha")
    sid = _upload(service, user, 1)
    with service.sessions() as session:
        eid = session.get(Submission, sid).evaluations[0].id
    with pytest.raises(IllegalTransition, match="from queued to succeeded"):
        with db.transaction(service.sessions) as session:
            transition(session, eid, State.queued, State.succeeded)
    with pytest.raises(IllegalTransition, match="is queued, not running"):  # the row is not in the state claimed
        with db.transaction(service.sessions) as session:
            transition(session, eid, State.running, State.failed)
    with db.transaction(service.sessions) as session:
        transition(session, eid, State.queued, State.cancelled)
    for target in State:
        with pytest.raises(IllegalTransition):
            with db.transaction(service.sessions) as session:
                transition(session, eid, State.cancelled, target)
    with service.sessions() as session:
        assert session.get(Submission, sid).status == State.cancelled
        assert session.query(StatusChange).filter_by(evaluation_id=eid).count() == 4


BAD_ARCHIVES = {
    "traversal": ({"extra": [("../../etc/cron.d/x", b"boom")]}, "has a '..' component"),
    "absolute": ({"extra": [("/etc/passwd", b"x")]}, "has an absolute path"),
    "no manifest": ({"manifest": False}, "no manifest.json"),
}


@pytest.mark.parametrize("kind", sorted(BAD_ARCHIVES))
def test_a_bad_archive_is_refused_and_changes_nothing(service, kind):
    user = service.participant("a@example.org", "alpha")
    before = service.counts()
    kwargs, message = BAD_ARCHIVES[kind]
    with pytest.raises(InvalidRequest, match=message):
        _upload(service, user, 1, **kwargs)
    assert service.counts() == before


def test_other_bad_input_is_refused_and_changes_nothing(service, tmp_path):
    alpha = service.participant("a@example.org", "alpha")
    loner = service.participant("l@example.org")
    _upload(service, alpha, 1)
    before = service.counts()
    not_tar = tmp_path / "x.tar"
    not_tar.write_bytes(b"this is not a tar archive" * 100)
    with open(not_tar, "rb") as stream, pytest.raises(InvalidRequest, match="not a readable tar archive"):
        submit(service.sessions, service.storage, alpha, service.phases[0], stream)
    with pytest.raises(NotFound, match="no phase 'nope'; phases: svc-"):
        _upload(service, alpha, 2, slug="nope")
    with pytest.raises(Forbidden, match="in no team of svc"):
        _upload(service, loner, 3)
    with pytest.raises(Conflict, match="already submitted to .* as submission"):
        _upload(service, alpha, 1)
    assert service.counts() == before


def test_an_archive_over_the_size_limit_is_refused(database_url, tmp_path):
    svc = Service(database_url, tmp_path, challenge_file(tmp_path, limits={"image_size_limit_mb": 1}))
    user = svc.participant("a@example.org", "alpha")
    before = svc.counts()
    big = docker_like_archive(tmp_path / "big.tar", "x", extra=[("blob", bytes(2 * 2**20))])
    with open(big, "rb") as stream, pytest.raises(TooLarge, match="larger than the limit of 1 MB"):
        submit(svc.sessions, svc.storage, user, svc.phases[0], stream)
    assert svc.counts() == before
    svc.engine.dispose()


def test_a_closed_or_not_yet_open_phase_refuses(database_url, tmp_path):
    now = dt.datetime.now(dt.timezone.utc)
    svc = Service(database_url, tmp_path, challenge_file(tmp_path, opens=now - dt.timedelta(days=2), closes=now - dt.timedelta(days=1)))
    user = svc.participant("a@example.org", "alpha")
    with pytest.raises(Forbidden, match="closed at"):
        _upload(svc, user, 1)
    with pytest.raises(Forbidden, match="opens at"):
        _upload_at(svc, user, 2, now - dt.timedelta(days=3))
    _upload_at(svc, user, 3, now - dt.timedelta(days=1, hours=12))  # inside the window
    assert svc.counts()["submissions"] == 1
    svc.engine.dispose()


def test_the_daily_quota_rolls_and_the_total_quota_holds(service):
    user = service.participant("a@example.org", "alpha")
    start = dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=3)
    for i in range(3):
        _upload_at(service, user, i, start + dt.timedelta(hours=i))
    with pytest.raises(QuotaExceeded, match="its 3 submissions of the last 24 hours") as refused:
        _upload_at(service, user, 9, start + dt.timedelta(hours=5))
    assert refused.value.retry_after == start + dt.timedelta(hours=24)  # the oldest one leaves the window
    _upload_at(service, user, 4, start + dt.timedelta(hours=24, seconds=1))
    with pytest.raises(QuotaExceeded, match="used all 4 submissions"):
        _upload_at(service, user, 5, start + dt.timedelta(days=2))
    assert service.counts()["submissions"] == 4


def test_platform_failures_never_count_and_submission_failures_count_as_the_phase_says(database_url, tmp_path):
    for counts in (True, False):
        folder = tmp_path / str(counts)
        folder.mkdir()
        svc = Service(database_url if counts else f"sqlite:///{folder / 'x.sqlite3'}", folder,
                      challenge_file(folder, failures_count_against_quota=counts, limits={"submissions_per_day": 2}))
        user = svc.participant("a@example.org", "alpha")
        worker = queue.new_worker_id()
        _upload(svc, user, 1)
        job = queue.claim_next(svc.sessions, worker)
        for _ in range(queue.MAX_ATTEMPTS - 1):  # requeued, claimed again ...
            assert queue.release(svc.sessions, job, "platform_error", "engine down") == State.queued
            job = queue.claim_next(svc.sessions, worker)
        assert queue.release(svc.sessions, job, "platform_error", "engine down") == State.failed
        _upload(svc, user, 2)
        job = queue.claim_next(svc.sessions, worker)
        assert queue.finish(svc.sessions, job, {"status": "failed", "failure": "exit_code", "error": "the container exited with code 1"})
        with svc.sessions() as session:
            first, second = session.query(Submission).order_by(Submission.id).all()
            assert first.evaluations[0].failure == "platform_error" and first.evaluations[0].platform_fault
            assert "does not count against your quota" in first.evaluations[0].error
            assert first.counts_against_quota is False
            assert second.counts_against_quota is counts
            phase = session.get(Phase, first.phase_id)
            assert quota(session, first.team_id, phase).used_today == (1 if counts else 0)
        _upload(svc, user, 3)
        if counts:  # 2 per day: the failed one and this one
            with pytest.raises(QuotaExceeded):
                _upload(svc, user, 4)
        else:
            _upload(svc, user, 4)
        svc.engine.dispose()


def test_quotas_hold_under_20_concurrent_uploads_from_one_team(service):
    users = [service.participant("a@example.org", "alpha")]
    paths = [docker_like_archive(service.tmp / f"c{i}.tar", f"c{i}") for i in range(20)]
    outcomes, barrier = [], threading.Barrier(20)

    def upload(path):
        barrier.wait()
        try:
            with open(path, "rb") as stream:
                outcomes.append(submit(service.sessions, service.storage, users[0], service.phases[0], stream))
        except QuotaExceeded as exc:
            outcomes.append(exc)

    threads = [threading.Thread(target=upload, args=(p,)) for p in paths]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    accepted = [o for o in outcomes if isinstance(o, int)]
    assert len(outcomes) == 20 and len(accepted) == 3
    counts = service.counts()
    assert counts["submissions"] == 3 and counts["evaluations"] == 3 and len(counts["stored"]) == 3
    assert counts["staging"] == []
    with service.sessions() as session:
        assert sorted(e.submission_id for e in session.query(Evaluation)) == sorted(accepted)
