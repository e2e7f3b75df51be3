"""`make demo` / `iugc demo-site`: the leaderboard site on this machine, ready to use.

Each step says what it does and how long it took, and a second run reuses what the first
made (the database, data, people and results are kept in the instance folder):

1. a secret key and a migrated SQLite database in the instance folder;
2. the psfhs2023, iugc2024 and iugc2025 challenges, with real frames from
   ``../shared/data/psfhs`` as every phase's data (SYNTHETIC phantoms, labelled so, when
   they are absent; iugc2025's landmarks derived from their expert masks);
3. an organizer and a demo team, with their passwords printed (and kept in
   ``<instance>/demo-credentials.txt``);
4. stand-in teams: degraded copies of the expert masks (``iugc.demo``; for iugc2025 the
   landmarks of those masks), scored by the evaluator and stored as their submissions'
   results. Each submission is a real image (a static busybox copying the team's answer
   for each case it is given), so an organizer can re-evaluate it in a container and get
   the same score; without Debian's busybox-static it is a placeholder that cannot run;
5. the baseline, as the demo team's submission: its container when a Docker engine
   answers (evaluated by the server's worker once it starts), the trusted local runner
   otherwise;
6. ``iugc serve`` at http://127.0.0.1:5000.
"""
from __future__ import annotations

import io
import json
import os
import secrets
import shutil
import subprocess
import sys
import tarfile
import time
from contextlib import contextmanager
from pathlib import Path

import click
import cv2

from iugc.demo import SHARED_PSFHS, _team_masks

ORGANIZER, PARTICIPANT, DEMO_TEAM = "organizer@iugc.local", "team@iugc.local", "demo-team"
CHALLENGES = ("psfhs2023", "iugc2024", "iugc2025")
STAND_IN_CHALLENGES = ("psfhs2023", "iugc2025")
STAND_INS = ("near-perfect", "ragged-edges", "eroded", "shifted", "forgets-ps")
SCORED_PHASES = ("sanity-check", "validation", "final-test")


@contextmanager
def step(title: str):
    click.echo(f"==> {title}")
    began = time.monotonic()
    yield
    click.echo(f"    done in {time.monotonic() - began:.1f} s")


def _stand_in_archive(path: Path, team: str) -> Path:
    """A placeholder ``docker save``-shaped archive naming a stand-in team (never run: its
    result is computed by the evaluator from the stand-in's masks)."""
    config = json.dumps({"stand_in": team}).encode()
    members = {"config.json": config, "layer/layer.tar": b"", "manifest.json": json.dumps(
        [{"Config": "config.json", "Layers": ["layer/layer.tar"], "RepoTags": [f"stand-in/{team}:demo"]}]).encode()}
    with tarfile.open(path, "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def _credentials(instance: Path) -> dict:
    path = instance / "demo-credentials.txt"
    if path.exists():
        return dict(line.split(" ", 1) for line in path.read_text().splitlines() if line.strip())
    values = {ORGANIZER: secrets.token_urlsafe(9), PARTICIPANT: secrets.token_urlsafe(9)}
    path.write_text("".join(f"{k} {v}\n" for k, v in values.items()))
    path.chmod(0o600)
    return values


def _data(instance: Path, cases: int) -> tuple[Path, bool]:
    from iugc.data_manifest.importers import import_dataset
    from iugc.data_manifest.manifest import load_manifest
    from iugc.data_manifest.phantom import write_phantom_dataset

    dest = instance / "data" / "frames"
    if (dest / "manifest.json").exists():
        return dest, load_manifest(dest).synthetic
    if SHARED_PSFHS.is_dir():
        source = instance / "data" / "source"
        shutil.rmtree(source, ignore_errors=True)
        for sub in ("images", "masks"):
            (source / sub).mkdir(parents=True)
            for path in sorted((SHARED_PSFHS / sub).glob("*.png"))[:cases]:
                (source / sub / path.name).symlink_to(path.resolve())
        import_dataset("png", source, dest, name="demo-psfhs", progress=False)
        return dest, False
    write_phantom_dataset(dest, cases, seed=0, nonstandard_fraction=0.0)
    return dest, True


def _phase_data(instance: Path, data: Path) -> dict[str, Path]:
    """The demo frames cut into one block per scored phase, in id order (made once): no
    phase scores on another's cases, so the sanity check's can be the public sample."""
    from iugc.data_manifest.manifest import load_manifest
    from iugc.data_manifest.sample import write_subset

    cases = load_manifest(data).cases
    size = max(1, len(cases) // len(SCORED_PHASES))
    folders = {}
    for index, phase in enumerate(SCORED_PHASES):
        folders[phase] = dest = instance / "data" / "phases" / phase
        chosen = cases[index * size:] if index == len(SCORED_PHASES) - 1 else cases[index * size:(index + 1) * size]
        if not (dest / "manifest.json").exists():
            write_subset(dest, data, chosen, name=f"demo-{phase}", description=f"the demo's {phase} cases ({len(chosen)})")
    return folders


def _landmark_data(frames: Path) -> Path:
    """``frames`` with IUGC 2025 landmarks derived from their masks, beside it (made once)."""
    from iugc.data_manifest.landmarks import derive_landmarks

    dest = frames.with_name(f"{frames.name}-landmarks")
    if not (dest / "manifest.json").exists():
        staging = dest.with_name(f"{dest.name}.tmp")
        shutil.rmtree(staging, ignore_errors=True)
        shutil.copytree(frames, staging)
        derive_landmarks(staging, progress=False)
        staging.rename(dest)
    return dest


def _stand_in_landmarks(masks: Path, dest: Path) -> Path:
    """A stand-in's landmarks.json: the points of its degraded masks (``dest``, made once)."""
    from iugc.challenge.landmarks import landmarks_from_mask
    from iugc.data_manifest.io import read_mask

    if not (dest / "landmarks.json").exists():
        points = {path.stem: landmarks_from_mask(read_mask(path)) for path in sorted(masks.glob("*.png"))}
        dest.mkdir(parents=True, exist_ok=True)
        (dest / "landmarks.json").write_text(json.dumps({k: v for k, v in points.items() if v is not None}))
    return dest


STAND_IN_SCRIPT = """# the demo's stand-in team: copy the answer it prepared for each case it is given
for frame in /input/images/*.png; do
  id=${frame##*/}; id=${id%.png}
  if [ -f "/answers/$id.png" ]; then /bin/busybox cp "/answers/$id.png" /output/; fi
done
if [ -d /answers/landmarks ]; then
  sep=""
  {
    printf "{"
    for frame in /input/images/*.png; do
      id=${frame##*/}; id=${id%.png}
      if [ -f "/answers/landmarks/$id.json" ]; then
        printf '%s"%s": ' "$sep" "$id"; /bin/busybox cat "/answers/landmarks/$id.json"; sep=", "
      fi
    done
    printf "}"
  } > /output/landmarks.json
fi
"""


def static_busybox() -> Path | None:
    """A statically linked busybox on this machine (Debian's busybox-static), which runs in
    an image with nothing else in it; None when there is none."""
    import struct

    for path in (Path("/bin/busybox"), Path("/usr/bin/busybox")):
        try:
            with open(path, "rb") as binary:
                head = binary.read(64)
                if head[:5] != b"\x7fELF\x02":  # 64-bit ELF
                    continue
                offset, size, count = struct.unpack_from("<Q", head, 0x20)[0], *struct.unpack_from("<HH", head, 0x36)
                binary.seek(offset)
                table = binary.read(size * count)
        except OSError:
            continue
        if all(struct.unpack_from("<I", table, i * size)[0] != 3 for i in range(count)):  # no PT_INTERP: static
            return path
    return None


def _stand_in_image(path: Path, tag: str, busybox: Path, answers: Path) -> Path:
    """The stand-in's submission: an image holding busybox, STAND_IN_SCRIPT and its
    ``answers`` (a folder of masks, or of a landmarks.json, split into one file per case),
    that writes them for the cases it is given."""
    from iugc.sandbox.images import write_image_archive

    files = {"bin/busybox": (busybox.read_bytes(), 0o755), "stand-in.sh": (STAND_IN_SCRIPT.encode(), 0o644)}
    if (answers / "landmarks.json").is_file():
        points = json.loads((answers / "landmarks.json").read_text())
        files |= {f"answers/landmarks/{case}.json": (json.dumps(point).encode(), 0o644) for case, point in points.items()}
    else:
        files |= {f"answers/{mask.name}": (mask.read_bytes(), 0o644) for mask in sorted(answers.glob("*.png"))}
    return write_image_archive(path, files, tag=tag, entrypoint=["/bin/busybox", "sh", "/stand-in.sh"])


def _docker_baseline() -> bool:
    """Whether a Docker engine answers and holds iugc/baseline:latest."""
    from docker.errors import ImageNotFound

    from iugc.sandbox import docker_engine
    from iugc.sandbox.exceptions import RetryableError

    try:
        docker_engine.client().images.get("iugc/baseline:latest")
        return True
    except (RetryableError, ImageNotFound):  # no engine, or no image: the trusted local runner stands in
        return False


def prepare(instance: Path, cases: int) -> dict:
    """Steps 1-5 (idempotent); returns the credentials."""
    from sqlalchemy import select

    from iugc.challenge.definition import load_challenge
    from iugc.data_manifest.io import read_mask
    from iugc.data_manifest.manifest import load_manifest
    from iugc.evaluator.evaluate import evaluate_folder
    from iugc.leaderboard.web.security import write_secret_key
    from iugc.submissions.accounts import hash_password
    from iugc.submissions import accounts, challenges, db, queue, teams
    from iugc.submissions.models import Team, User
    from iugc.submissions.storage import LocalStorage
    from iugc.submissions.uploads import submit

    instance.mkdir(parents=True, exist_ok=True)
    with step(f"database and secret key in {instance}"):
        write_secret_key(instance)
        engine = db.make_engine(f"sqlite:///{instance / 'iugc.sqlite3'}")
        before, after = db.upgrade(engine)
        click.echo(f"    schema {'already at ' + after if before == after else 'migrated to ' + after}")
        sessions = db.session_factory(engine)
        storage = LocalStorage(instance / "storage")
    with step(f"challenges {', '.join(CHALLENGES)} and their data"):
        data, synthetic = _data(instance, len(SCORED_PHASES) * cases)
        click.echo(f"    {len(load_manifest(data).cases)} {'SYNTHETIC phantom' if synthetic else 'real PSFHS'} frames in {data}")
        blocks = _phase_data(instance, data)  # each phase its own cases: the sanity check's are the public sample
        click.echo("    cases per phase: " + ", ".join(f"{phase} {len(load_manifest(folder).cases)}" for phase, folder in blocks.items()))
        truths = {name: blocks for name in CHALLENGES} | {"iugc2025": {phase: _landmark_data(folder) for phase, folder in blocks.items()}}
        with db.transaction(sessions) as session:
            for name in CHALLENGES:
                challenge, created = challenges.init_challenge(session, name)
                click.echo(f"    {name}: {'created' if created else 'already there'}")
                for phase in challenge.phases:
                    if challenges.active_dataset(session, phase.id) is None:
                        challenges.add_dataset(session, phase.slug, truths[name][phase.name])
    with step("phase limits this machine can give"):
        _fit_limits(sessions)
    credentials = _credentials(instance)
    with step("organizer and demo team"):
        with db.transaction(sessions) as session:
            for email, role in ((ORGANIZER, "organizer"), (PARTICIPANT, "participant")):
                if session.execute(select(User.id).where(User.email == email)).first() is None:
                    accounts.create_user(session, email, role).password_hash = hash_password(credentials[email])
            user = accounts.user_by_email(session, PARTICIPANT)
            for name in STAND_IN_CHALLENGES:
                if teams.team_of(session, user, challenges.phase_by_slug(session, f"{name}-sanity-check").challenge_id) is None:
                    teams.accept_terms(session, user, teams.create_team(session, user, DEMO_TEAM, name).challenge_id)
    with step(f"stand-in teams ({', '.join(STAND_INS)}) scored by the evaluator"):
        busybox = static_busybox()
        if busybox is None:
            click.echo("    no static busybox here (Debian's busybox-static): the stand-ins' submissions are placeholders "
                       "that a re-evaluation cannot run")
        manifest = load_manifest(data)
        predictions = instance / "stand-ins"
        if not predictions.exists():
            import numpy as np

            rng = np.random.default_rng(0)
            for index, case in enumerate(manifest.cases):
                for team, mask in _team_masks(read_mask(data / case.mask), index, rng).items():
                    if team in STAND_INS and mask is not None:
                        (predictions / team).mkdir(parents=True, exist_ok=True)
                        cv2.imwrite(str(predictions / team / f"{case.case_id}.png"), mask)
        for name in STAND_IN_CHALLENGES:
            definition = load_challenge(name)
            for team in STAND_INS:
                with db.transaction(sessions) as session:
                    challenge_id = challenges.phase_by_slug(session, f"{name}-sanity-check").challenge_id
                    if session.execute(select(Team.id).where(Team.name == team, Team.challenge_id == challenge_id)).first():
                        continue
                    email = f"{team}@iugc.local"
                    if session.execute(select(User.id).where(User.email == email)).first() is None:
                        accounts.create_user(session, email, "participant")
                    user = accounts.user_by_email(session, email)
                    teams.create_team(session, user, team, name)
                    teams.accept_terms(session, user, challenge_id)
                    user_id = user.id
                answers = predictions / team
                if "landmarks" in definition.tasks:
                    answers = _stand_in_landmarks(answers, predictions / f"{team}-landmarks")
                scores = []
                for phase in SCORED_PHASES:
                    result = evaluate_folder(answers, truths[name][phase], definition, progress=False, cache_dir=instance / "cache")
                    scores.append(f"{result['score']:.4f}")
                    archive = instance / f"stand-in-{team}-{phase}.tar"
                    if busybox is None:
                        _stand_in_archive(archive, f"{team}-{phase}")
                    else:
                        _stand_in_image(archive, f"stand-in/{team}:{phase}", busybox, answers)
                    with open(archive, "rb") as stream:
                        submit(sessions, storage, user_id, f"{name}-{phase}", stream)
                    archive.unlink()
                    job = queue.claim_next(sessions, f"demo:{os.getpid()}:{team}")
                    queue.finish(sessions, job, {**result, "status": "succeeded", "logs": "stand-in: scored from its masks"})
                click.echo(f"    {name} {team}: score {' / '.join(scores)} ({' / '.join(SCORED_PHASES)})")
    for name in STAND_IN_CHALLENGES:
        with step(f"the baseline as the demo team's submission to {name}"):
            _submit_baseline(instance, sessions, storage, name, truths[name]["sanity-check"])
    _publish_client(instance)
    engine.dispose()
    return credentials


def _fit_limits(sessions) -> None:
    """Lower each phase's limits to what this machine's engine gives one evaluation (a GPU,
    CPUs, memory), so the demo's server can evaluate every phase; says what it changed."""
    from sqlalchemy import select

    from iugc.submissions import capacity, challenges, db
    from iugc.submissions.models import Phase

    host = capacity.this_host()
    click.echo(f"    this machine gives one evaluation {host.cpus} CPUs, {host.memory_mb} MB of memory, {'a' if host.gpu else 'no'} GPU")
    with db.transaction(sessions) as session:
        for phase in session.execute(select(Phase).order_by(Phase.id)).scalars():
            fitted = capacity.within(phase.limits, host)
            if fitted != phase.limits:
                asked = ", ".join(f"{k} {phase.limits.get(k)} -> {v}" for k, v in fitted.items() if phase.limits.get(k) != v)
                challenges.set_limits(session, phase.slug, fitted)
                click.echo(f"    {phase.slug}: {asked} (the challenge asks for more; the demo runs on what this machine has)")


def _publish_client(instance: Path) -> None:
    """The client wheel the how-to-submit page tells teams to `pip install` (made once)."""
    from iugc.submissions import downloads
    from iugc.submissions.exceptions import ServiceError

    with step("the client teams install from the site (iugc admin client-wheel)"):
        wheel = downloads.client_wheel(instance)
        if wheel is not None:
            click.echo(f"    already there: {wheel.name}")
            return
        try:
            click.echo(f"    {downloads.publish_client(instance).name}")
        except ServiceError as exc:  # the demo goes on; the guide says the client is missing
            click.echo(f"    not made: {exc}")


def _submit_baseline(instance: Path, sessions, storage, name: str, data: Path) -> None:
    """The demo team's baseline submission to ``name``'s sanity check: its container when
    a Docker engine holds the image (the server's worker runs it), else evaluated now by
    the trusted local runner, keeping its outputs as the worker does (for the overlays)."""
    from sqlalchemy import select

    from iugc.challenge.definition import load_challenge
    from iugc.sandbox.docker_engine import Limits
    from iugc.sandbox.evaluate_image import evaluate_image
    from iugc.submissions import accounts, queue
    from iugc.submissions.models import Challenge, Submission, Team
    from iugc.submissions.uploads import submit
    from iugc.submissions.worker import keep_masks

    with sessions() as session:
        user = accounts.user_by_email(session, PARTICIPANT)
        done = session.execute(select(Submission.id).join(Team).join(Challenge)
                               .where(Team.name == DEMO_TEAM, Challenge.name == name)).first()
    if done:
        click.echo("    already submitted")
    elif _docker_baseline():
        archive = instance / "baseline.tar"
        subprocess.run(["docker", "save", "iugc/baseline:latest", "-o", str(archive)], check=True)
        with open(archive, "rb") as stream:
            sid = submit(sessions, storage, user.id, f"{name}-sanity-check", stream)
        archive.unlink()
        click.echo(f"    submission {sid} queued: the server's worker runs iugc/baseline:latest in a container")
    else:
        click.echo("    no Docker engine with iugc/baseline:latest: the trusted local runner evaluates it")
        archive = _stand_in_archive(instance / "baseline-local.tar", "baseline-local")
        with open(archive, "rb") as stream:
            sid = submit(sessions, storage, user.id, f"{name}-sanity-check", stream)
        archive.unlink()
        job = queue.claim_next(sessions, f"demo:{os.getpid()}:baseline")
        definition = load_challenge(name)
        phase = next(p for p in definition.phases if p.name == "sanity-check")
        result = keep_masks(storage, phase.public_cases, lambda keep: evaluate_image(
            "iugc/baseline:latest", data, definition, Limits.from_phase(phase), runner="local", cache_dir=instance / "cache",
            keep_outputs=keep))
        queue.finish(sessions, job, result, storage)
        click.echo(f"    submission {sid}: {result['status']}, score {result.get('score')}")


def run_site_demo(instance: Path, cases: int, port: int, serve: bool) -> None:
    began = time.monotonic()
    credentials = prepare(instance.absolute(), cases)
    click.echo(f"\nready in {time.monotonic() - began:.1f} s. Open http://127.0.0.1:{port} and log in as")
    click.echo(f"    organizer:   {ORGANIZER}   password {credentials[ORGANIZER]}")
    click.echo(f"    participant: {PARTICIPANT}   password {credentials[PARTICIPANT]}   (team {DEMO_TEAM})")
    click.echo(f"    (kept in {instance.absolute() / 'demo-credentials.txt'}; or register a new team)")
    if not serve:
        return
    env = {**os.environ, "IUGC_INSTANCE": str(instance.absolute()), "IUGC_CACHE_DIR": str(instance.absolute() / "cache")}
    for key in ("IUGC_DATABASE_URL", "IUGC_STORAGE_URL", "IUGC_BROKER_URL", "IUGC_SECRET_KEY"):
        env.pop(key, None)
    click.echo(f"==> serving http://127.0.0.1:{port} (Ctrl-C stops)")
    os.execve(sys.executable, [sys.executable, "-m", "iugc", "serve", "--host", "127.0.0.1", "--port", str(port)], env)
