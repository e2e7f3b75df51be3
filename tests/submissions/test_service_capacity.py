"""Capacity-aware phases, on SQLite and PostgreSQL: a worker claims only what its host can
give; an upload no running worker can evaluate is refused before anything is stored,
unless the phase queues it anyway, and then it waits (never fails) until a worker that can
run it joins."""
from __future__ import annotations

import datetime as dt
import time

import pytest
from sqlalchemy import update

from iugc.sandbox.docker_engine import Host
from iugc.submissions import capacity, challenges, db, queue, reports
from iugc.submissions.exceptions import Unavailable
from iugc.submissions.models import Evaluation, Phase, State, Submission, User, Worker
from iugc.submissions.uploads import why_not
from iugc.submissions.worker import WorkerPool
from tests.service_support import Service, challenge_file, database_url, postgres_cluster  # noqa: F401
from tests.web_support import site  # noqa: F401 (a fixture)

GPU_LIMITS = {"gpu": True, "cpus": 2, "memory_mb": 4096, "submissions_per_day": 100}
CPU_ONLY = Host(cpus=8, memory_mb=32768, gpu=False)
WITH_GPU = Host(cpus=2, memory_mb=4096, gpu=True)


@pytest.fixture
def service(database_url, tmp_path):
    svc = Service(database_url, tmp_path, challenge_file(tmp_path, limits=GPU_LIMITS))
    yield svc
    svc.engine.dispose()


def _succeed(job) -> dict:
    return {"status": "succeeded", "failure": None, "error": None, "image_digest": None, "logs": "",
            "cases": {"c1": {"dice_all": 0.9, "error": None}}, "aggregates": {"dice": 0.9, "n_cases": 1}, "score": 0.9}


def test_a_worker_claims_only_what_its_host_can_give(service):
    alpha = service.participant("a@example.org", "alpha")
    sid = service.upload(alpha, "a")  # no worker registered: accepted (see below)
    with service.sessions() as session:
        evaluation_id = session.query(Evaluation).filter_by(submission_id=sid).one().id
    for host in [CPU_ONLY, Host(cpus=1, memory_mb=8192, gpu=True), Host(cpus=4, memory_mb=2048, gpu=True)]:
        assert queue.claim_next(service.sessions, "w-small", host) is None, host
        assert queue.claim(service.sessions, "w-small", evaluation_id, host) is None, host
    job = queue.claim_next(service.sessions, "w-gpu", WITH_GPU)  # exactly what the phase gives: enough
    assert job is not None and job.evaluation_id == evaluation_id and job.limits["gpu"] is True


def test_an_upload_no_running_worker_can_evaluate_is_refused_before_anything_is_stored(service):
    alpha = service.participant("a@example.org", "alpha")
    capacity.register(service.sessions, "cpu-host:1:aa", CPU_ONLY)
    before = service.counts()
    with pytest.raises(Unavailable) as refused:
        service.upload(alpha, "a")
    message = str(refused.value)
    assert refused.value.status == 503 and "a GPU" in message and service.phases[0] in message and "cpu-host" not in message
    assert service.counts() == before  # no row, nothing stored, nothing staged
    with service.sessions() as session:
        phase = challenges.phase_by_slug(session, service.phases[0])
        assert why_not(session, session.get(User, alpha), phase, dt.datetime.now(dt.timezone.utc)) == message  # before a file is chosen
        assert reports.phases(session, session.get(User, alpha))[0]["cannot_evaluate"] == message  # what `iugc submit` asks first
        assert [(p.slug, lacks) for p, lacks in capacity.unrunnable(session.query(Phase).order_by(Phase.id).all(), capacity.live(session))][0] == (service.phases[0], ["a GPU"])
    capacity.register(service.sessions, "gpu-host:1:bb", WITH_GPU)  # a worker that can run it joins: accepted
    assert service.upload(alpha, "b")


def test_a_silent_worker_does_not_count_and_with_no_live_worker_an_upload_waits(service):
    alpha = service.participant("a@example.org", "alpha")
    capacity.register(service.sessions, "cpu-host:1:aa", CPU_ONLY)
    stale = dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=capacity.LIVE_SECONDS + 5)
    with db.transaction(service.sessions) as session:
        session.execute(update(Worker).values(seen_at=stale))
    sid = service.upload(alpha, "a")  # the workers are restarting: accepted
    with service.sessions() as session:
        status = reports.submission_status(session, session.get(User, alpha), sid)
    assert status["status"] == "queued" and status["waiting_for"] == "a worker to start"


def test_a_phase_that_queues_anyway_waits_for_a_worker_with_a_gpu_and_never_fails(service):
    alpha = service.participant("a@example.org", "alpha")
    with db.transaction(service.sessions) as session:
        challenges.update_phase(session, service.phases[0], queue_without_worker=True, actor_id=service.organizer)
    cpu = WorkerPool(service.sessions, service.storage, threads=1, evaluate=_succeed, host=CPU_ONLY, poll_seconds=0.05,
                     heartbeat_seconds=0.2, cleanup=False).start()
    gpu = None
    try:
        sid = service.upload(alpha, "a")
        cpu.wake()
        time.sleep(1.0)  # many polls of the CPU worker
        with service.sessions() as session:
            user = session.get(User, alpha)
            status = reports.submission_status(session, user, sid)
            assert status["status"] == "queued" and status["evaluations"][-1]["attempts"] == 0
            assert status["waiting_for"] == "a worker with a GPU"
            rows = reports.submission_rows(session, user, session.get(Submission, sid).team_id)
            assert rows[0]["waiting_for"] == "a worker with a GPU"
        gpu = WorkerPool(service.sessions, service.storage, threads=1, evaluate=_succeed, host=WITH_GPU, poll_seconds=0.05,
                         cleanup=False).start()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with service.sessions() as session:
                evaluation = session.query(Evaluation).filter_by(submission_id=sid).one()
                if evaluation.status == State.succeeded:
                    break
            time.sleep(0.05)
        assert evaluation.status == State.succeeded and evaluation.worker_id == gpu.worker_id and evaluation.attempts == 1
        with service.sessions() as session:
            assert {w.id: w.gpu for w in capacity.live(session)} == {cpu.worker_id: False, gpu.worker_id: True}
    finally:
        cpu.stop(1)
        if gpu is not None:
            gpu.stop(1)
    with service.sessions() as session:
        assert capacity.live(session) == []  # a stopped worker leaves the list at once


def test_the_site_and_the_api_refuse_before_a_file_is_chosen_and_organizers_see_workers_and_decide(site):
    """psfhs2023's validation phase gives a GPU; the sanity check does not. A CPU worker runs."""
    import html
    import re

    from click.testing import CliRunner
    from iugc.cli import main
    from iugc.submissions import accounts
    from iugc.submissions.models import AuditEntry
    from tests.web_support import ORGANIZER, SANITY, VALIDATION

    def text(response) -> str:
        return html.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", response.get_data(as_text=True))))

    site.person("a@example.org", "alpha")
    capacity.register(site.sessions, "cpu-host:1:aa", CPU_ONLY)
    team = site.client("a@example.org")
    refused = team.get(f"/phases/{VALIDATION}/upload")
    assert f"phase {VALIDATION} needs a worker with a GPU to evaluate a submission" in text(refused)
    assert 'type="file"' not in refused.get_data(as_text=True)
    assert 'type="file"' in team.get(f"/phases/{SANITY}/upload").get_data(as_text=True)  # 2 CPUs, 8 GB, no GPU: runnable
    with db.transaction(site.sessions) as session:
        token = accounts.issue_token(session, "a@example.org")
    api = site.app.test_client().post(f"/api/v1/phases/{VALIDATION}/submissions", headers={"Authorization": f"Bearer {token}"},
                                      data={"image": (open(site.archive(), "rb"), "image.tar")}, content_type="multipart/form-data")
    assert api.status_code == 503 and "needs a worker with a GPU" in api.json["error"]
    with site.sessions() as session:
        assert session.query(Evaluation).count() == 0
    _iugc_submit_refuses_before_saving_the_image(site, token, VALIDATION)

    organizer = site.client(ORGANIZER)
    console = text(organizer.get("/admin"))
    assert "cpu-host 8 32768 no" in console  # the worker's CPUs, memory, GPU
    assert f"No running worker can evaluate {VALIDATION} : it needs a worker with a GPU; uploads to it are refused" in console
    assert f"evaluate {SANITY}" not in console
    form = {"opens": "", "closes": "", "per_day": "2", "total": "", "failures_count": "y", "queue_without_worker": "y"}
    assert organizer.form(f"/admin/phases/{VALIDATION}/settings", form, page=f"/admin/phases/{VALIDATION}").status_code == 302
    assert f"{VALIDATION} : it needs a worker with a GPU; uploads wait in the queue for one" in text(organizer.get("/admin"))
    assert 'type="file"' in team.get(f"/phases/{VALIDATION}/upload").get_data(as_text=True)
    with site.sessions() as session:
        change = session.query(AuditEntry).filter_by(action="phase.update").one()
        assert change.detail["queue_without_worker"] == {"from": False, "to": True}

    env = {"IUGC_DATABASE_URL": f"sqlite:///{site.tmp / 'web.sqlite3'}", "IUGC_INSTANCE": str(site.tmp)}
    back = CliRunner().invoke(main, ["admin", "phase", "--phase", VALIDATION, "--refuse-without-worker"], env=env)
    assert back.exit_code == 0 and "uploads no worker can evaluate refused" in back.output, back.output
    with site.sessions() as session:
        assert session.query(Phase).filter_by(slug=VALIDATION).one().queue_without_worker is False
    assert 'type="file"' not in team.get(f"/phases/{VALIDATION}/upload").get_data(as_text=True)


def _iugc_submit_refuses_before_saving_the_image(site, token, slug):
    """`iugc submit` against the site on a loopback port: the refusal comes before the
    image is looked for (an image that does not exist is never reached)."""
    import threading

    from click.testing import CliRunner
    from werkzeug.serving import make_server

    from iugc.cli import main

    server = make_server("127.0.0.1", 0, site.app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        env = {"IUGC_SERVER": f"http://127.0.0.1:{server.server_port}", "IUGC_TOKEN": token}
        run = CliRunner().invoke(main, ["submit", "--phase", slug, "--image", "no/such-image:tag"], env=env)
    finally:
        server.shutdown()
        thread.join(5)
    assert run.exit_code == 2, run.output
    assert f"phase {slug} needs a worker with a GPU" in run.output and "such-image" not in run.output and "Traceback" not in run.output


def test_a_phases_limits_change_only_to_valid_ones_and_the_change_is_audited(service):
    from iugc.submissions.exceptions import InvalidRequest
    from iugc.submissions.models import AuditEntry

    slug = service.phases[0]
    with service.sessions() as session:
        before = session.query(Phase).filter_by(slug=slug).one().limits
    for bad, words in [({**before, "gpus": 1}, "no limit gpus"), ({**before, "cpus": 0}, "limit cpus must be > 0")]:
        with pytest.raises(InvalidRequest, match=words):
            with db.transaction(service.sessions) as session:
                challenges.set_limits(session, slug, bad)
    with db.transaction(service.sessions) as session:
        challenges.set_limits(session, slug, capacity.within(before, CPU_ONLY), actor_id=service.organizer)
    with service.sessions() as session:
        after = session.query(Phase).filter_by(slug=slug).one().limits
        (entry,) = session.query(AuditEntry).filter_by(action="phase.limits").all()
    assert after == {**before, "gpu": False} and entry.detail == {"gpu": {"from": True, "to": False}}
