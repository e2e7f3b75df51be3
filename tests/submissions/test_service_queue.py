"""The queue in the database: claiming (one running evaluation per team), results stored
exactly once when workers race, heartbeats and the reaper, cancellation, re-evaluation,
and the embedded worker pool with a no-op evaluation, on SQLite and PostgreSQL."""
from __future__ import annotations

import datetime as dt
import subprocess
import sys
import threading
import time

import pytest

from iugc.submissions import db, queue, reports
from iugc.submissions.exceptions import InvalidRequest, NotFound
from iugc.submissions.models import CaseResult, Evaluation, LeaderboardEntry, Phase, State, Submission, User
from iugc.submissions.worker import WorkerPool
from tests.service_support import Service, challenge_file, database_url, postgres_cluster  # noqa: F401


def noop_result(job, score=0.5) -> dict:
    return {"status": "succeeded", "failure": None, "error": None, "image_digest": f"sha256:{job.archive_sha256}", "logs": "",
            "cases": {"c1": {"dice_all": score, "error": None}, "c2": {"dice_all": score, "error": None}},
            "aggregates": {"dice": score, "n_cases": 2}, "score": score}


@pytest.fixture
def service(database_url, tmp_path):
    svc = Service(database_url, tmp_path, challenge_file(tmp_path, limits={"submissions_per_day": 1000}))
    yield svc
    svc.engine.dispose()


def _evaluations(service):
    with service.sessions() as session:
        return {e.id: (e.submission_id, e.number, e.status, e.attempts) for e in session.query(Evaluation)}


def test_one_running_evaluation_per_team(service):
    alpha, beta = service.participant("a@example.org", "alpha"), service.participant("b@example.org", "beta")
    for i in range(2):
        service.upload(alpha, f"a{i}")
    service.upload(beta, "b0")
    first = queue.claim_next(service.sessions, "w1")
    second = queue.claim_next(service.sessions, "w2")
    assert queue.claim_next(service.sessions, "w3") is None  # alpha's second waits for its first
    with service.sessions() as session:
        teams = {session.get(Evaluation, j.evaluation_id).team_id for j in (first, second)}
    assert len(teams) == 2
    assert queue.finish(service.sessions, first, noop_result(first))
    third = queue.claim_next(service.sessions, "w3")
    assert third is not None


def test_a_result_is_stored_once_when_two_workers_race(service):
    alpha = service.participant("a@example.org", "alpha")
    service.upload(alpha, 1)
    slow = queue.claim_next(service.sessions, "host:1:slow")
    # the slow worker stops answering: the reaper hands its evaluation to another worker
    later = dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=queue.HEARTBEAT_TIMEOUT_SECONDS + 1)
    assert queue.reap(service.sessions, now=later) == {slow.evaluation_id: State.queued}
    fast = queue.claim_next(service.sessions, "host:2:fast")
    assert fast.evaluation_id == slow.evaluation_id
    assert queue.finish(service.sessions, fast, noop_result(fast, 0.9)) is True
    assert queue.finish(service.sessions, slow, noop_result(slow, 0.1)) is False  # no longer its row
    with service.sessions() as session:
        evaluation = session.get(Evaluation, fast.evaluation_id)
        assert evaluation.status == State.succeeded and evaluation.score == 0.9 and evaluation.attempts == 2
        assert session.query(CaseResult).count() == 2
        assert [c.to_state for c in evaluation.history] == [
            State.received, State.validating, State.queued, State.running, State.queued, State.running, State.succeeded]


def test_concurrent_claims_never_hand_one_evaluation_to_two_workers(service):
    teams = [service.participant(f"u{i}@example.org", f"team{i}") for i in range(6)]
    for i, user in enumerate(teams):
        service.upload(user, i)
    claimed, barrier = [], threading.Barrier(8)

    def claim(n):
        barrier.wait()
        while (job := queue.claim_next(service.sessions, f"h:{n}:x")) is not None:
            claimed.append(job.evaluation_id)

    threads = [threading.Thread(target=claim, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(claimed) == sorted(_evaluations(service))


def test_heartbeats_keep_an_evaluation_and_tell_a_worker_what_it_lost(service):
    alpha = service.participant("a@example.org", "alpha")
    sid = service.upload(alpha, 1)
    job = queue.claim_next(service.sessions, "h:1:a")
    assert queue.heartbeat(service.sessions, "h:1:a", [job.evaluation_id]) == {job.evaluation_id}
    assert queue.heartbeat(service.sessions, "h:2:b", [job.evaluation_id]) == set()
    assert queue.reap(service.sessions) == {}  # fresh heartbeat, worker on another host: kept
    queue.cancel(service.sessions, alpha, sid)
    assert queue.heartbeat(service.sessions, "h:1:a", [job.evaluation_id]) == set()
    assert queue.finish(service.sessions, job, noop_result(job)) is False
    with service.sessions() as session:
        assert session.get(Submission, sid).status == State.cancelled


def test_the_reaper_requeues_at_once_when_the_owner_process_is_gone(service):
    import socket

    alpha = service.participant("a@example.org", "alpha")
    service.upload(alpha, 1)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    worker = f"{socket.gethostname()}:{dead.stdout.strip()}:old"
    job = queue.claim_next(service.sessions, worker)
    assert queue.reap(service.sessions) == {job.evaluation_id: State.queued}  # no heartbeat timeout waited


def test_after_max_attempts_the_reaper_fails_it_as_worker_lost_without_using_quota(service):
    alpha = service.participant("a@example.org", "alpha")
    sid = service.upload(alpha, 1)
    later = dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=1)
    for attempt in range(1, queue.MAX_ATTEMPTS + 1):
        job = queue.claim_next(service.sessions, f"h:{attempt}:x")
        expected = State.queued if attempt < queue.MAX_ATTEMPTS else State.failed
        assert queue.reap(service.sessions, now=later) == {job.evaluation_id: expected}
    with service.sessions() as session:
        submission = session.get(Submission, sid)
        evaluation = submission.evaluations[0]
        assert (submission.status, evaluation.failure, evaluation.platform_fault) == (State.failed, "worker_lost", True)
        assert submission.counts_against_quota is False


def test_cancellation_rules(service):
    alpha, beta = service.participant("a@example.org", "alpha"), service.participant("b@example.org", "beta")
    sid = service.upload(alpha, 1)
    with pytest.raises(NotFound, match=f"no submission {sid}"):  # another team's: hidden
        queue.cancel(service.sessions, beta, sid)
    with pytest.raises(NotFound):
        queue.cancel(service.sessions, alpha, 9999)
    assert queue.cancel(service.sessions, alpha, sid) == State.cancelled
    with pytest.raises(InvalidRequest, match="already cancelled"):
        queue.cancel(service.sessions, alpha, sid)
    sid2 = service.upload(alpha, 2)
    queue.cancel(service.sessions, service.organizer, sid2)
    with service.sessions() as session:
        assert session.get(Submission, sid).counts_against_quota is True  # the team's own choice
        assert session.get(Submission, sid2).counts_against_quota is False  # an organizer's


def test_reevaluation_keeps_the_old_evaluations(service):
    alpha = service.participant("a@example.org", "alpha")
    sid = service.upload(alpha, 1)
    assert queue.reevaluate(service.sessions, service.organizer, service.phases[0]) == []  # still pending
    job = queue.claim_next(service.sessions, "h:1:x")
    queue.finish(service.sessions, job, noop_result(job, 0.4))
    (new,) = queue.reevaluate(service.sessions, service.organizer, service.phases[0], sid)
    with pytest.raises(NotFound):
        queue.reevaluate(service.sessions, service.organizer, service.phases[0], 9999)
    with service.sessions() as session:
        submission = session.get(Submission, sid)
        assert [(e.number, e.status) for e in submission.evaluations] == [(1, State.succeeded), (2, State.queued)]
        # a scored submission keeps standing while its re-evaluation waits
        assert submission.status == State.succeeded and submission.evaluations[1].id == new


def _standing(service, sid):
    """(status, score, result evaluation, counts against quota, the entry's evaluation) of a submission."""
    with service.sessions() as session:
        submission = session.get(Submission, sid)
        entry = session.query(LeaderboardEntry).filter_by(submission_id=sid).one_or_none()
        return (submission.status, submission.score, submission.result_evaluation_id, submission.counts_against_quota,
                entry and entry.evaluation_id)


@pytest.mark.parametrize("how", ["the image fails", "the platform fails", "an organizer cancels"])
def test_a_reevaluation_that_does_not_succeed_leaves_the_result_standing(service, how):
    alpha = service.participant("a@example.org", "alpha")
    sid = service.upload(alpha, 1)
    first = queue.claim_next(service.sessions, "h:1:x")
    queue.finish(service.sessions, first, noop_result(first, 0.4), evaluator_version="1.0")
    before = _standing(service, sid)
    assert before == (State.succeeded, 0.4, first.evaluation_id, True, first.evaluation_id)
    (again,) = queue.reevaluate(service.sessions, service.organizer, service.phases[0], sid)
    if how == "an organizer cancels":
        assert queue.cancel(service.sessions, service.organizer, sid) == State.cancelled
    else:
        job = queue.claim_next(service.sessions, "h:1:x")
        assert job.evaluation_id == again
        if how == "the image fails":  # the phase does not count the team's failures: a first evaluation failing would stop counting
            with db.transaction(service.sessions) as session:
                session.query(Phase).update({Phase.failures_count: False})
            assert queue.finish(service.sessions, job, {"status": "failed", "failure": "exit_code", "error": "exited with 1", "logs": ""})
        else:
            assert queue.release(service.sessions, job, "platform_error", "no usable GPU", max_attempts=0) == State.failed
    assert _standing(service, sid) == before
    organizer = reports.submission_status(_session := service.sessions(), _user(_session, service.organizer), sid)
    _session.close()
    assert organizer["status"] == "succeeded" and organizer["score"] == 0.4 and organizer["error"] is None
    assert organizer["reevaluation"]["number"] == 2 and organizer["reevaluation"]["status"] in ("failed", "cancelled")
    assert [e["status"] for e in organizer["evaluations"]] == ["succeeded", organizer["reevaluation"]["status"]]
    if how != "an organizer cancels":  # the history keeps the reason
        assert organizer["evaluations"][1]["error"]
    with service.sessions() as session:
        (row,) = reports.leaderboard(session, _user(session, service.organizer), service.phases[0])["rows"]
    assert row["submission"] == sid and row["evaluation"] == first.evaluation_id and row["dice"] == 0.4
    assert row["evaluated"] and row["evaluator"] == "1.0"


def test_a_reevaluation_that_succeeds_replaces_the_result_and_says_so_on_the_board(service):
    alpha = service.participant("a@example.org", "alpha")
    sid = service.upload(alpha, 1)
    first = queue.claim_next(service.sessions, "h:1:x")
    queue.finish(service.sessions, first, noop_result(first, 0.4), evaluator_version="1.0")
    queue.reevaluate(service.sessions, service.organizer, service.phases[0], sid)
    second = queue.claim_next(service.sessions, "h:1:x")
    queue.finish(service.sessions, second, noop_result(second, 0.3), evaluator_version="2.0")
    assert _standing(service, sid) == (State.succeeded, 0.3, second.evaluation_id, True, second.evaluation_id)
    with service.sessions() as session:
        (row,) = reports.leaderboard(session, _user(session, service.organizer), service.phases[0])["rows"]
        finished = session.get(Evaluation, second.evaluation_id).finished_at
        status = reports.submission_status(session, _user(session, service.organizer), sid)
    assert (row["evaluation"], row["evaluator"], row["evaluated"]) == (second.evaluation_id, "2.0", finished.strftime("%Y-%m-%dT%H:%MZ"))
    assert status["reevaluation"] is None


def test_a_first_evaluation_still_mirrors_every_state(service):
    """The standing rule is for scored submissions only: an unscored one shows its failure."""
    alpha = service.participant("a@example.org", "alpha")
    sid = service.upload(alpha, 1)
    with db.transaction(service.sessions) as session:
        session.query(Phase).update({Phase.failures_count: False})
    job = queue.claim_next(service.sessions, "h:1:x")
    queue.finish(service.sessions, job, {"status": "failed", "failure": "exit_code", "error": "exited with 1", "logs": ""})
    assert _standing(service, sid) == (State.failed, None, None, False, None)
    with service.sessions() as session:
        status = reports.submission_status(session, _user(session, service.organizer), sid)
    assert (status["failure"], status["error"], status["reevaluation"]) == ("exit_code", "exited with 1", None)


def _user(session, user_id):
    return session.get(User, user_id)


def test_the_embedded_pool_completes_every_evaluation_exactly_once(service):
    users = [service.participant(f"u{i}@example.org", f"team{i}") for i in range(4)]
    ids = [service.upload(users[i % 4], i) for i in range(40)]
    seen, lock = [], threading.Lock()

    def evaluate(job):
        with lock:
            seen.append(job.evaluation_id)
        time.sleep(0.002)
        return noop_result(job)

    pool = WorkerPool(service.sessions, service.storage, threads=3, evaluate=evaluate, poll_seconds=0.05,
                      heartbeat_seconds=0.2, cleanup=False).start()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and any(s != State.succeeded for _, _, s, _ in _evaluations(service).values()):
        time.sleep(0.1)
    pool.stop(10)
    evaluations = _evaluations(service)
    assert sorted(seen) == sorted(evaluations) and len(set(seen)) == 40
    assert all(state == State.succeeded and attempts == 1 for _, _, state, attempts in evaluations.values())
    with service.sessions() as session:
        assert session.query(CaseResult).count() == 80
        assert sorted(s.id for s in session.query(Submission).filter_by(status=State.succeeded)) == sorted(ids)


def test_a_platform_fault_in_the_pool_is_retried_and_a_stopped_pool_gives_work_back(service):
    from iugc.sandbox.exceptions import RetryableError

    alpha = service.participant("a@example.org", "alpha")
    service.upload(alpha, 1)
    calls, started, release = [], threading.Event(), threading.Event()

    def flaky(job):
        calls.append(job.evaluation_id)
        if len(calls) == 1:
            raise RetryableError("engine restarting")
        started.set()
        release.wait(30)
        return noop_result(job)

    pool = WorkerPool(service.sessions, service.storage, threads=1, evaluate=flaky, poll_seconds=0.05, cleanup=False,
                      stop_seconds=0.5).start()
    assert started.wait(30)
    pool.stop(timeout=0.2)  # the evaluation in hand is still running, and ignores its cancel
    (state,) = [s for _, _, s, _ in _evaluations(service).values()]
    assert state == State.queued and len(calls) == 2  # given back to the queue for the next start
    release.set()
    pool.join(30)  # the late result is not stored: the row is no longer this worker's
    assert [s for _, _, s, _ in _evaluations(service).values()] == [State.queued]


def test_a_postgresql_restart_during_a_run_loses_nothing(postgres_cluster, tmp_path):
    name = "t_restart"
    postgres_cluster.admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    postgres_cluster.admin(f"CREATE DATABASE {name}")
    svc = Service(postgres_cluster.url(name), tmp_path, challenge_file(tmp_path, limits={"submissions_per_day": 1000}))
    users = [svc.participant(f"u{i}@example.org", f"team{i}") for i in range(10)]
    for i in range(100):
        svc.upload(users[i % 10], i)

    def slow(job):
        time.sleep(0.05)
        return noop_result(job)

    pool = WorkerPool(svc.sessions, svc.storage, threads=3, evaluate=slow, poll_seconds=0.05, heartbeat_seconds=0.2,
                      cleanup=False).start()
    try:
        deadline = time.monotonic() + 60
        while sum(s == State.succeeded for _, _, s, _ in _evaluations(svc).values()) < 10 and time.monotonic() < deadline:
            time.sleep(0.1)
        done_before = sum(s == State.succeeded for _, _, s, _ in _evaluations(svc).values())
        postgres_cluster.stop("fast")  # connections drop mid-transaction
        time.sleep(3)

        postgres_cluster.start()
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and any(s != State.succeeded for _, _, s, _ in _evaluations(svc).values()):
            time.sleep(0.2)
    finally:
        pool.stop(10)
        pool.join(10)
    evaluations = _evaluations(svc)
    assert done_before < 90  # the restart came in the middle of the run
    assert len(evaluations) == 100 and all(s == State.succeeded for _, _, s, _ in evaluations.values())
    with svc.sessions() as session:
        assert session.query(CaseResult).count() == 200  # each result stored once
    svc.engine.dispose()
    postgres_cluster.admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


MAX_STATEMENTS_PER_EVALUATION = 9  # claim: SELECT + the transition's 3; result: the transition's 3 + the entry upsert + its board_version (was 19)


def test_a_no_op_evaluation_takes_at_most_9_sql_statements(service):
    """Dispatch and bookkeeping cost (benchmarks/bench_service.py): counted, not timed.
    BEGIN is left out (SQLite's BEGIN IMMEDIATE is a statement, PostgreSQL's is not)."""
    from sqlalchemy import event

    from iugc.submissions.models import LeaderboardEntry
    from iugc.submissions.worker import noop_job

    users = [service.participant(f"u{i}@example.org", f"team{i}") for i in range(3)]
    ids = [service.upload(users[i % 3], i) for i in range(6)]
    pool = WorkerPool(service.sessions, service.storage, threads=0, evaluate=noop_job, cleanup=False)
    statements = []

    def count(conn, cursor, statement, parameters, context, executemany):
        if not statement.lstrip().upper().startswith("BEGIN"):
            statements.append(statement)

    event.listen(service.engine, "before_cursor_execute", count)
    try:
        for _ in ids:
            pool.run(queue.claim_next(service.sessions, pool.worker_id))
    finally:
        event.remove(service.engine, "before_cursor_execute", count)
    assert len(statements) <= MAX_STATEMENTS_PER_EVALUATION * len(ids), "\n".join(statements)
    with service.sessions() as session:
        assert {s.status for s in session.query(Submission)} == {State.succeeded}
        assert all(e.attempts == 1 and e.definition_sha256 for e in session.query(Evaluation))
        assert sorted(e.submission_id for e in session.query(LeaderboardEntry)) == sorted(ids[-3:])  # ties: the later


def test_a_team_chooses_which_scored_submission_counts_and_describes_it(service):
    from iugc.submissions import counting
    from iugc.submissions.exceptions import Forbidden

    alpha = service.participant("a@example.org", "alpha")
    service.participant("b@example.org", "beta")
    best, worse, pending = (service.upload(alpha, i) for i in range(3))
    for sid, score in ((best, 0.8), (worse, 0.6)):
        job = queue.claim_next(service.sessions, "h:1:x")
        assert job.evaluation_id == sid  # one evaluation per submission here
        queue.finish(service.sessions, job, noop_result(job, score))

    def entry():
        with service.sessions() as session:
            return session.query(LeaderboardEntry).filter_by(team_id=session.get(Submission, best).team_id).one().submission_id

    def act(email, operation, *args):
        with db.transaction(service.sessions) as session:
            operation(session, session.query(User).filter_by(email=email).one(), *args)

    assert entry() == best  # the default: the team's best
    act("a@example.org", counting.choose, worse)
    assert entry() == worse
    job = queue.claim_next(service.sessions, "h:1:x")  # a later, even better one does not undo the team's choice
    queue.finish(service.sessions, job, noop_result(job, 0.9))
    assert entry() == worse
    with pytest.raises(InvalidRequest, match="has no score yet"):
        act("a@example.org", counting.choose, service.upload(alpha, 9))
    with pytest.raises(NotFound):  # another team's: not even its existence
        act("b@example.org", counting.choose, best)
    with pytest.raises(Forbidden):
        act("org@example.org", counting.choose, best)
    act("a@example.org", counting.unchoose, worse)
    assert entry() == pending  # back to the best: 0.9
    act("a@example.org", counting.describe, pending, "  U-Net,\n  trained from scratch ", "https://example.org/method")
    with service.sessions() as session:
        (row,) = reports.leaderboard(session, session.get(User, service.organizer), service.phases[0])["rows"]
    assert (row["description"], row["link"], row["chosen"]) == ("U-Net, trained from scratch", "https://example.org/method", False)
    for text, url, field in (("x" * 201, "", "description"), ("ok", "javascript:alert(1)", "url"), ("ok", "https://a b", "url"),
                             ("", "https://example.org", "description")):
        with pytest.raises(InvalidRequest) as refused:
            act("a@example.org", counting.describe, pending, text, url)
        assert refused.value.field == field
    with service.sessions() as session:  # refusals changed nothing
        assert session.get(Submission, pending).description == "U-Net, trained from scratch"


def test_a_phase_can_count_each_teams_latest_scored_submission_instead_of_its_best(service):
    from iugc.submissions import counting

    alpha = service.participant("a@example.org", "alpha")
    slug = service.phases[0]
    scored = []
    for salt, score in (("first", 0.9), ("second", 0.5)):
        sid = service.upload(alpha, salt)
        job = queue.claim_next(service.sessions, "w")
        assert queue.finish(service.sessions, job, noop_result(job, score))
        scored.append(sid)
    failed = service.upload(alpha, "third")
    job = queue.claim_next(service.sessions, "w")
    queue.finish(service.sessions, job, {"status": "failed", "failure": "invalid_outputs", "error": "no masks"})

    def counted():
        with service.sessions() as session:
            return session.query(LeaderboardEntry).one().submission_id

    assert counted() == scored[0]  # the default: the best
    with db.transaction(service.sessions) as session:
        counting.set_default(session, slug, "last", actor_id=service.organizer)
    assert counted() == scored[1] != failed  # the latest *scored* one
    with db.transaction(service.sessions) as session:
        counting.choose(session, session.get(User, alpha), scored[0])
    assert counted() == scored[0]  # a team's choice wins over the rule
    with db.transaction(service.sessions) as session:
        counting.unchoose(session, session.get(User, alpha), scored[0])
    assert counted() == scored[1]
    with pytest.raises(InvalidRequest, match="best or last"):
        with db.transaction(service.sessions) as session:
            counting.set_default(session, slug, "worst")
    with db.transaction(service.sessions) as session:
        counting.set_default(session, slug, "best")
    assert counted() == scored[0]
    with service.sessions() as session:
        from iugc.submissions.models import AuditEntry

        changes = [e.detail["counts"] for e in session.query(AuditEntry).filter_by(action="phase.counts").order_by(AuditEntry.id)]
    assert changes == [{"from": "best", "to": "last"}, {"from": "last", "to": "best"}]
