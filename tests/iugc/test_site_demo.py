"""`make demo`'s preparation (`iugc demo-site --no-serve`): challenges with data, people,
stand-in teams scored by the evaluator and the baseline, ranked on the leaderboard; a
second run reuses all of it (nothing duplicated, the same credentials)."""
from __future__ import annotations

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select

from iugc import site_demo
from iugc.cli import main
from iugc.leaderboard.web import overlays
from iugc.sandbox.docker_engine import Limits, shortfall
from iugc.submissions import capacity, db, reports
from iugc.submissions.models import Evaluation, Phase, Role, Submission, User
from iugc.submissions.storage import LocalStorage

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning:flask_limiter")


def test_demo_site_prepares_a_ranked_site_and_a_second_run_reuses_it(tmp_path, monkeypatch):
    monkeypatch.setattr(site_demo, "_docker_baseline", lambda: False)  # the trusted local runner: no engine needed
    instance = tmp_path / "instance"
    first = CliRunner().invoke(main, ["demo-site", "--instance", str(instance), "--cases", "6", "--no-serve"])
    assert first.exit_code == 0, first.output
    assert "==> stand-in teams" in first.output and "done in" in first.output
    assert "organizer@iugc.local   password" in first.output and "team@iugc.local" in first.output
    assert (instance / "secret_key").exists() and (instance / "demo-credentials.txt").stat().st_mode & 0o077 == 0
    engine = db.make_engine(f"sqlite:///{instance / 'iugc.sqlite3'}")
    sessions = db.session_factory(engine)
    with sessions() as session:
        organizer = session.execute(select(User).where(User.role == Role.organizer)).scalar_one()
        rows = reports.leaderboard(session, organizer, "psfhs2023-sanity-check")["rows"]
        counts = (session.execute(select(func.count()).select_from(Submission)).scalar(),
                  session.execute(select(func.count()).select_from(Evaluation)).scalar())
    assert {r["team"] for r in rows} == {"demo-team", *site_demo.STAND_INS}
    assert [r["rank"] for r in rows] == sorted(r["rank"] for r in rows) and rows[0]["team"] == "near-perfect"
    assert all(r["n_cases"] == 6 for r in rows)
    baseline = next(r for r in rows if r["team"] == "demo-team")
    assert 0.5 < baseline["score"] < 1.0
    with sessions() as session:  # the baseline's masks are kept, as the worker keeps them: its cases have overlays
        case_id = session.get(Submission, baseline["submission"]).evaluations[-1].cases[0].case_id
        png = overlays.case_overlay(session, LocalStorage(instance / "storage"), organizer, baseline["submission"], case_id,
                                    tmp_path / "overlays")
    assert png.startswith(b"\x89PNG")
    with sessions() as session:  # IUGC 2025 beside them: the same stand-ins' landmarks and the baseline's, ranked by mean rank
        landmark_rows = reports.leaderboard(session, organizer, "iugc2025-sanity-check")["rows"]
        entry = next(r for r in landmark_rows if r["team"] == "demo-team")
        case_id = session.get(Submission, entry["submission"]).evaluations[-1].cases[0].case_id
        drawn = overlays.case_overlay(session, LocalStorage(instance / "storage"), organizer, entry["submission"], case_id,
                                      tmp_path / "overlays")
    assert {r["team"] for r in landmark_rows} == {"demo-team", *site_demo.STAND_INS}
    assert landmark_rows[0]["team"] == "near-perfect" and landmark_rows[0]["mean_rank"] == 1.0
    assert 0 < entry["mre"] < 30 and entry["aop_error"] < 30 and drawn.startswith(b"\x89PNG") and drawn != png
    again = CliRunner().invoke(main, ["demo-site", "--instance", str(instance), "--cases", "6", "--no-serve"])
    assert again.exit_code == 0, again.output
    assert again.output.count("already submitted") == 2 and "iugc2025: already there" in again.output
    with sessions() as session:  # each phase scores its own cases, so the sanity check's can be handed out
        from iugc.data_manifest.manifest import load_manifest
        from iugc.submissions import challenges, downloads

        for name in ("psfhs2023", "iugc2025"):
            case_sets = [frozenset(c.case_id for c in load_manifest(challenges.active_dataset(
                session, challenges.phase_by_slug(session, f"{name}-{phase}").id).path).cases) for phase in site_demo.SCORED_PHASES]
            assert all(case_sets) and sum(map(len, case_sets)) == len(frozenset().union(*case_sets))  # disjoint
            assert len(case_sets[0]) == 6  # --cases: frames per phase
            dataset, phase = downloads.sample_dataset(session, name)
            assert phase.slug == f"{name}-sanity-check"
    host = capacity.this_host()  # every phase within what this machine gives, and the demo says what it lowered
    with sessions() as session:
        for phase in session.execute(select(Phase)).scalars():
            assert shortfall(Limits(**phase.limits), host) == [], phase.slug
    if not host.gpu:
        (said,) = [line for line in first.output.splitlines() if "psfhs2023-validation:" in line]
        assert "gpu True -> False" in said
    (wheel,) = (instance / "downloads").glob("iugc_platform-*.whl")  # the client the guide names, made once
    assert wheel.name in first.output and f"already there: {wheel.name}" in again.output
    with sessions() as session:
        assert (session.execute(select(func.count()).select_from(Submission)).scalar(),
                session.execute(select(func.count()).select_from(Evaluation)).scalar()) == counts
    assert first.output.split("organizer:")[1].split("\n")[0] == again.output.split("organizer:")[1].split("\n")[0]
    engine.dispose()


def test_the_stand_ins_are_images_that_re_evaluate_to_their_seeded_scores(tmp_path, monkeypatch):
    """Each stand-in submission is an image (a static busybox and the team's answers): an
    organizer's re-evaluation runs it in the sandbox and finds the score the demo stored."""
    import os

    from tests.docker_support import require_engine

    from iugc.submissions import queue
    from iugc.submissions.models import Team
    from iugc.submissions.worker import WorkerPool

    engine = require_engine()
    if site_demo.static_busybox() is None:
        if os.environ.get("IUGC_REQUIRE_BUSYBOX") == "1":
            pytest.fail("no static busybox; IUGC_REQUIRE_BUSYBOX=1 makes this a failure")
        pytest.skip("no static busybox (Debian's busybox-static): the demo's stand-ins are placeholders")
    monkeypatch.setattr(site_demo, "_docker_baseline", lambda: False)
    instance = tmp_path / "instance"
    done = CliRunner().invoke(main, ["demo-site", "--instance", str(instance), "--cases", "3", "--no-serve"])
    assert done.exit_code == 0, done.output
    sessions = db.session_factory(db.make_engine(f"sqlite:///{instance / 'iugc.sqlite3'}"))
    with sessions() as session:
        seeded = {(name, team): (sid, score) for name, team, sid, score in session.execute(
            select(Phase.slug, Team.name, Submission.id, Evaluation.score).join(Submission, Submission.phase_id == Phase.id)
            .join(Team, Team.id == Submission.team_id).join(Evaluation, Evaluation.submission_id == Submission.id)
            .where(Phase.slug.in_(["psfhs2023-sanity-check", "iugc2025-sanity-check"]), Team.name.in_(site_demo.STAND_INS)))}
    assert len(seeded) == 2 * len(site_demo.STAND_INS)
    pool = WorkerPool(sessions, LocalStorage(instance / "storage"), threads=0, slots=1)
    try:
        for (slug, team), (sid, score) in seeded.items():
            (evaluation_id,) = queue.reevaluate(sessions, None, slug, sid)
            assert pool.run_one(evaluation_id)
            with sessions() as session:
                again = session.get(Evaluation, evaluation_id)
                assert again.status.value == "succeeded", (slug, team, again.error)
                assert again.score == pytest.approx(score, abs=1e-9), (slug, team)
    finally:
        for image in engine.images.list(name="stand-in/*"):
            engine.images.remove(image.id, force=True)
