"""The submission service's own cost: queue dispatch and bookkeeping, query latency, and
upload-to-score for the baseline image.

    python benchmarks/bench_service.py [--n 1000] [--repeats 3] [--skip-celery] [--skip-baseline]

1. Dispatch and bookkeeping per evaluation with the no-op evaluation (claim, heartbeat,
   result and history rows, stored result document): embedded (2 worker threads in this
   process) and Celery (2 `iugc worker --concurrency 2` processes, a real redis-server).
   Evaluations/s, median of ``--repeats``. Target: at least 50/s on 2 cores.
2. With 10,000 succeeded evaluations in the database (100 teams x 100 submissions): the
   status query of one submission and the phase's leaderboard, 95th percentile. Target:
   under 20 ms.
3. Upload to score: `iugc serve` + `iugc submit` of `iugc/baseline:latest` on 20 real
   cases (needs a Docker engine, the image and ../shared/data/psfhs). Target: under 60 s.

SQLite in a temporary folder unless ``--database URL`` names a PostgreSQL server (any
database on it; each measurement creates its own new database there). Each figure is
printed with the machine's load average before and after it.
"""
from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from headline import emit, yardstick  # noqa: E402

from iugc.submissions import accounts, challenges, db, queue, reports  # noqa: E402
from iugc.submissions.models import Evaluation, Membership, State, StatusChange, Submission, Team, User, utcnow  # noqa: E402
from iugc.submissions.storage import LocalStorage  # noqa: E402

PSFHS = ROOT.parent / "shared" / "data" / "psfhs"
AGGREGATES = {"dice": 0.9, "dice_ps": 0.85, "dice_fh": 0.93, "dice_all": 0.92, "hd": 10.0, "hd_ps": 11.0, "hd_fh": 9.0,
              "hd_all": 10.0, "asd": 3.0, "asd_ps": 3.2, "asd_fh": 2.8, "asd_all": 3.0, "aop_error": 6.0, "n_cases": 20}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(port)


def database_url(folder: Path, server: str | None) -> str:
    """A new, empty database: SQLite in ``folder``, or a new database on the PostgreSQL
    server of ``server`` (a URL naming any database there, e.g. ``.../postgres``)."""
    if server is None:
        return f"sqlite:///{folder / 'iugc.sqlite3'}"
    import uuid

    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    name = f"bench_{uuid.uuid4().hex[:12]}"
    admin_engine = create_engine(server, isolation_level="AUTOCOMMIT")
    with admin_engine.connect() as connection:
        connection.execute(text(f"CREATE DATABASE {name}"))
    admin_engine.dispose()
    return make_url(server).set(database=name).render_as_string(hide_password=False)


def fresh(folder: Path, url: str | None):
    engine = db.make_engine(database_url(folder, url))
    db.upgrade(engine)
    sessions = db.session_factory(engine)
    with db.transaction(sessions) as session:
        challenge, _ = challenges.init_challenge(session, "psfhs2023")
        phase_id = challenge.phases[1].id
    return engine, sessions, phase_id


def seed(sessions, phase_id: int, n: int, teams: int, state: State, first: int = 0) -> list[int]:
    """``n`` submissions with one evaluation each in ``state`` (bulk rows, no archives)."""
    now = utcnow()
    with db.transaction(sessions) as session:
        team_ids = []
        for t in range(teams):
            name = f"team{first}-{t}"
            user = User(email=f"{name}@example.org", role="participant")
            team = Team(challenge_id=1, name=name)
            session.add_all([user, team])
            session.flush()
            session.add(Membership(team_id=team.id, user_id=user.id, challenge_id=1))
            team_ids.append((team.id, user.id))
        subs = [Submission(team_id=team_ids[i % teams][0], phase_id=phase_id, uploader_id=team_ids[i % teams][1],
                           archive_sha256=f"{first + i:064x}", archive_size=1, status=state, created_at=now) for i in range(n)]
        session.add_all(subs)
        session.flush()
        done = state == State.succeeded
        evals = [Evaluation(submission_id=s.id, team_id=s.team_id, number=1, status=state, attempts=int(done), limits={},
                            queued_at=now, aggregates=dict(AGGREGATES, dice=random.random()) if done else None,
                            score=random.random() if done else None) for s in subs]
        session.add_all(evals)
        session.flush()
        if done:  # what queue.finish sets with a successful result
            for submission, evaluation in zip(subs, evals):
                submission.result_evaluation_id, submission.score = evaluation.id, evaluation.score
            session.flush()
            for team_id, _ in team_ids:
                queue.refresh_entry(session, phase_id, team_id)
        session.add_all(StatusChange(evaluation_id=e.id, from_state=None, to_state=state, at=now) for e in evals)
        return [s.id for s in subs]


def count(sessions, state: State) -> int:
    from sqlalchemy import func, select

    with sessions() as session:
        return session.execute(select(func.count()).select_from(Evaluation).where(Evaluation.status == state)).scalar()


def wait_done(sessions, n: int, timeout: float = 900) -> None:
    deadline = time.monotonic() + timeout
    while count(sessions, State.succeeded) < n:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{count(sessions, State.succeeded)} of {n} done after {timeout} s")
        time.sleep(0.02)


def embedded(n: int, url: str | None) -> float:
    from iugc.submissions.worker import WorkerPool, noop_job

    with tempfile.TemporaryDirectory() as tmp:
        engine, sessions, phase = fresh(Path(tmp), url)
        seed(sessions, phase, n, teams=50, state=State.queued)
        pool = WorkerPool(sessions, LocalStorage(Path(tmp) / "storage"), threads=2, evaluate=noop_job, poll_seconds=0.01, cleanup=False)
        began = time.perf_counter()
        pool.start()
        wait_done(sessions, n)
        elapsed = time.perf_counter() - began
        pool.stop(10)
        engine.dispose()
    return n / elapsed


def celery(n: int, url: str | None) -> float:
    from iugc.submissions.celery_queue import Dispatcher
    from iugc.submissions.config import Settings

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        port = free_port()
        redis = subprocess.Popen([shutil.which("redis-server"), "--bind", "127.0.0.1", "--port", str(port), "--save", "",
                                  "--appendonly", "no", "--dir", str(tmp)], stdout=subprocess.DEVNULL)
        wait_port(port)
        broker = f"redis://127.0.0.1:{port}/0"
        engine, sessions, phase = fresh(tmp, url)
        database = engine.url.render_as_string(hide_password=False)
        settings = Settings(instance=tmp, database_url=database, storage_url=str(tmp / "storage"), broker_url=broker)
        env = {**os.environ, "IUGC_DATABASE_URL": database, "IUGC_BROKER_URL": broker, "IUGC_INSTANCE": str(tmp),
               "IUGC_STORAGE_URL": str(tmp / "storage"), "PYTHONPATH": str(ROOT)}
        workers = [subprocess.Popen([sys.executable, "-m", "iugc", "worker", "--concurrency", "2", "--evaluation", "noop"],
                                    env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for _ in range(2)]
        dispatcher = Dispatcher(settings, sessions, sweep_seconds=0.05).start()
        try:
            seed(sessions, phase, 20, teams=20, state=State.queued, first=10**6)  # warm-up: workers up and connected
            wait_done(sessions, 20, timeout=120)
            seed(sessions, phase, n, teams=50, state=State.queued)
            began = time.perf_counter()
            dispatcher.wake()
            wait_done(sessions, n + 20)
            elapsed = time.perf_counter() - began
        finally:
            dispatcher.stop()
            for w in workers:
                w.send_signal(signal.SIGTERM)
            for w in workers:
                w.wait(60)
            redis.terminate()
            redis.wait(30)
            engine.dispose()
    return n / elapsed


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def queries(url: str | None) -> dict[str, list[float]]:
    with tempfile.TemporaryDirectory() as tmp:
        engine, sessions, phase = fresh(Path(tmp), url)
        ids = []
        for block in range(10):
            ids += seed(sessions, phase, 1000, teams=10, state=State.succeeded, first=block * 1000)
        with db.transaction(sessions) as session:
            organizer = accounts.create_user(session, "org@example.org", "organizer")
        slug = "psfhs2023-validation"
        times: dict[str, list[float]] = {"status": [], "leaderboard": []}
        for _ in range(200):
            with sessions() as session:
                t = time.perf_counter()
                reports.submission_status(session, organizer, random.choice(ids))
                times["status"].append(time.perf_counter() - t)
        for _ in range(100):
            with sessions() as session:
                t = time.perf_counter()
                board = reports.leaderboard(session, organizer, slug)
                times["leaderboard"].append(time.perf_counter() - t)
        assert len(board["rows"]) == 100, len(board["rows"])
        engine.dispose()
    return times


def upload_to_score() -> tuple[float, float] | None:
    """Seconds from `iugc submit` to its score, and the score; None when not measurable here."""
    if not PSFHS.is_dir() or shutil.which("docker") is None:
        print("upload-to-score: skipped (no ../shared/data/psfhs or no docker)")
        return None
    from iugc.data_manifest.importers import import_dataset

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for folder in ("images", "masks"):
            (tmp / "src" / folder).mkdir(parents=True)
            for path in sorted((PSFHS / folder).glob("*.png"))[:20]:
                (tmp / "src" / folder / path.name).symlink_to(path)
        import_dataset("png", tmp / "src", tmp / "data", progress=False)
        env = {**os.environ, "IUGC_INSTANCE": str(tmp / "instance"), "PYTHONPATH": str(ROOT)}
        for var in ("IUGC_DATABASE_URL", "IUGC_BROKER_URL", "IUGC_STORAGE_URL"):
            env.pop(var, None)
        env["IUGC_SECRET_KEY"] = "k" * 40  # `iugc serve` refuses to start without one (the web sessions)

        def iugc(*args, stdin=None):
            run = subprocess.run([sys.executable, "-m", "iugc", *args], env=env, input=stdin, capture_output=True, text=True)
            if run.returncode:
                raise RuntimeError(f"iugc {' '.join(args)}: {run.stderr[-2000:]}")
            return run.stdout

        iugc("db", "upgrade")
        iugc("admin", "init", "--challenge", "psfhs2023")
        iugc("admin", "add-dataset", "--phase", "psfhs2023-sanity-check", "--data", str(tmp / "data"))
        iugc("admin", "create-user", "a@example.org", "--role", "participant", stdin="a long password\n")
        token = iugc("admin", "token", "a@example.org").split()[-1]
        port = free_port()
        server = subprocess.Popen([sys.executable, "-m", "iugc", "serve", "--port", str(port)], env=env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_port(port)
            import requests

            requests.post(f"http://127.0.0.1:{port}/api/v1/teams", json={"name": "alpha"},
                          headers={"Authorization": f"Bearer {token}"}, timeout=30).raise_for_status()
            began = time.perf_counter()
            out = iugc("submit", "--phase", "psfhs2023-sanity-check", "--image", "iugc/baseline:latest",
                       "--server", f"http://127.0.0.1:{port}", "--token", token)
            elapsed = time.perf_counter() - began
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(120)
    score = float(out.split("score ")[1].split()[0])
    return elapsed, score


def load(samples: list[tuple[float, float, float]]) -> str:
    """The 1-minute load averages before and after a measurement (the machine is shared)."""
    return "load average " + " -> ".join(f"{sample[0]:.1f}" for sample in samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--database", default=None, help="a PostgreSQL server's URL, e.g. postgresql+psycopg://postgres@127.0.0.1:5432/postgres "
                        "(each run makes a new database there; default: SQLite in a temporary folder)")
    parser.add_argument("--skip-celery", action="store_true")
    parser.add_argument("--skip-baseline", action="store_true")
    args = parser.parse_args()
    kind = (args.database or "sqlite").split(":")[0]
    rates, loads = {}, {}
    for mode, run in (("embedded", embedded), ("celery", celery)):
        if mode == "celery" and args.skip_celery:
            continue
        loads[mode] = [os.getloadavg()]
        rates[mode] = [run(args.n, args.database) for _ in range(args.repeats)]
        loads[mode].append(os.getloadavg())
    stick = yardstick()
    for mode, values in rates.items():
        median = statistics.median(values)
        emit(f"service-dispatch-{mode}", f"service dispatch, {mode}, {kind}", median, "evaluations/s", "yardstick runs/s", 1 / stick,
             higher_is_better=True)
        print(f"{mode:<9} {kind}: {median:7.1f} evaluations/s (median of {len(values)}: {', '.join(f'{v:.1f}' for v in values)}; "
              f"target >= 50, ratio {median / 50:.2f}; {load(loads[mode])})")
    began = os.getloadavg()
    times = queries(args.database)
    for name, values in times.items():
        p95 = percentile(values, 0.95) * 1000
        emit(f"service-{name.strip()}-p95", f"service {name.strip()} with 10,000 evaluations, {kind}, p95", p95, "ms", "yardstick", stick * 1000)
        print(f"{name:<11} with 10,000 evaluations, {kind}: p50 {statistics.median(values) * 1000:.1f} ms, "
              f"p95 {p95:.1f} ms (target < 20 ms, ratio {p95 / 20:.2f}; {load([began, os.getloadavg()])})")
    if not args.skip_baseline:
        measured = upload_to_score()
        if measured:
            emit("service-upload-to-score", "baseline image from upload to score, 20 cases", measured[0], "s", "yardstick", stick)
            print(f"upload to score, iugc/baseline:latest, 20 cases: {measured[0]:.1f} s (score {measured[1]:.4f}; target < 60 s)")


if __name__ == "__main__":
    main()
