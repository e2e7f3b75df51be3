"""Fixtures of the service tests: a throwaway PostgreSQL cluster, a fresh database per test
on SQLite and on PostgreSQL, and helpers to start real servers on 127.0.0.1.

Import the fixtures into a test module (``from tests.service_support import database_url``).
PostgreSQL needs Debian's postgresql (``/usr/lib/postgresql/*/bin``); without it those
tests skip with the reason, and ``IUGC_REQUIRE_POSTGRES=1`` (CI) turns the skip into a
failure.
"""
from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import pytest

PG_BIN_DIRS = sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, timeout: float = 30.0, process: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"the server exited with {process.returncode} before listening on {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")


def _missing(what: str, env: str):
    if os.environ.get(env) == "1":
        pytest.fail(f"{what}; {env}=1 makes this a failure")
    pytest.skip(what)


class PostgresCluster:
    """``initdb`` + ``pg_ctl`` in a temporary folder, listening on 127.0.0.1 only (trust auth).

    As root the server runs as the ``postgres`` user (PostgreSQL refuses root).
    """

    def __init__(self, bin_dir: Path):
        self.bin_dir = bin_dir
        self.root = Path(tempfile.mkdtemp(prefix="iugc-pg-"))
        self.data = self.root / "data"
        self.port = free_port()
        self.as_user: list[str] = []
        if os.geteuid() == 0:
            user = pwd.getpwnam("postgres")
            os.chown(self.root, user.pw_uid, user.pw_gid)
            self.as_user = ["runuser", "-u", "postgres", "--"]

    def _run(self, *args: str) -> None:
        subprocess.run([*self.as_user, *args], check=True, capture_output=True, text=True, cwd=self.root)

    def init(self) -> None:
        self._run(str(self.bin_dir / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8")

    def start(self) -> None:
        options = f"-h 127.0.0.1 -p {self.port} -k {self.root} -c fsync=off -c max_connections=200"
        self._run(str(self.bin_dir / "pg_ctl"), "-D", str(self.data), "-o", options, "-l", str(self.root / "log"), "-w", "start")

    def stop(self, mode: str = "fast") -> None:
        self._run(str(self.bin_dir / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop")

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def admin(self, sql: str) -> None:
        import psycopg

        with psycopg.connect(f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres", autocommit=True) as conn:
            conn.execute(sql)

    def remove(self) -> None:
        try:
            self.stop("immediate")
        except subprocess.CalledProcessError:
            pass
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_cluster():
    if not PG_BIN_DIRS or not (PG_BIN_DIRS[0] / "initdb").exists():
        _missing("PostgreSQL binaries not found under /usr/lib/postgresql/*/bin (apt-get install postgresql)", "IUGC_REQUIRE_POSTGRES")
    cluster = PostgresCluster(PG_BIN_DIRS[0])
    try:
        cluster.init()
        cluster.start()
    except subprocess.CalledProcessError as exc:
        cluster.remove()
        pytest.fail(f"could not start a PostgreSQL cluster: {exc.stderr or exc.stdout}")
    yield cluster
    cluster.remove()


def _fresh_database(kind: str, tmp_path: Path, request) -> str:
    if kind == "sqlite":
        return f"sqlite:///{tmp_path / 'iugc.sqlite3'}"
    cluster = request.getfixturevalue("postgres_cluster")
    name = f"t_{uuid.uuid4().hex[:12]}"
    cluster.admin(f"CREATE DATABASE {name}")
    request.addfinalizer(lambda: cluster.admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
    return cluster.url(name)


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, tmp_path) -> str:
    """An empty database (no schema), on SQLite and on PostgreSQL."""
    return _fresh_database(request.param, tmp_path, request)


@pytest.fixture(scope="session")
def s3_endpoint():
    """A real S3-protocol server (``moto_server`` from PyPI's moto[server]) on 127.0.0.1."""
    import importlib.util
    import sys

    if importlib.util.find_spec("moto") is None:
        _missing("moto[server] is not installed (pip install -e '.[dev]')", "IUGC_REQUIRE_SERVICES")
    port = free_port()
    log = tempfile.TemporaryFile()
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)], stdout=log, stderr=log)
    try:
        wait_for_port(port, process=server)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()


def s3_client(endpoint: str):
    import boto3

    return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                        aws_access_key_id="test", aws_secret_access_key="test")


def docker_like_archive(path: Path, salt: str = "", *, extra: list[tuple[str, bytes]] = (), manifest: bool = True) -> Path:
    """A tar shaped like ``docker save`` output (manifest, config, one layer) that passes the
    intake rules; ``salt`` makes its bytes (and sha256) unique; ``extra`` adds members."""
    import io
    import json
    import tarfile

    config = hashlib_hex(f"config{salt}") + ".json"
    members = [(config, json.dumps({"salt": salt}).encode()), ("layer/layer.tar", f"layer{salt}".encode() * 100)]
    if manifest:
        members.append(("manifest.json", json.dumps([{"Config": config, "Layers": ["layer/layer.tar"], "RepoTags": [f"team/x:{salt or 'v'}"]}]).encode()))
    with tarfile.open(path, "w") as tar:
        for name, data in [*members, *extra]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def hashlib_hex(text: str) -> str:
    import hashlib

    return hashlib.sha256(text.encode()).hexdigest()


def challenge_file(tmp_path: Path, **phase_changes) -> Path:
    """The psfhs2023 definition as a file named ``svc``, its phases' fields changed.

    ``limits`` entries are merged into each phase's limits."""
    import yaml

    from iugc.challenge.definition import DEFINITIONS_DIR

    data = yaml.safe_load((DEFINITIONS_DIR / "psfhs2023.yaml").read_text())
    data["name"] = "svc"
    for phase in data["phases"]:
        limits = phase_changes.get("limits", {})
        phase.update({k: v for k, v in phase_changes.items() if k != "limits"})
        phase["limits"].update(limits)
    path = tmp_path / "svc.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def accept(session, user, team) -> None:
    """The team's member accepts its challenge's terms (as a team does before its first upload)."""
    from iugc.submissions import teams

    if teams.terms_of(team.challenge) is not None:
        teams.accept_terms(session, user, team.challenge_id)


class Service:
    """A migrated database, its storage, one challenge and helpers to add people."""

    def __init__(self, url: str, tmp_path: Path, definition: Path):
        from iugc.submissions import accounts, challenges, db
        from iugc.submissions.storage import LocalStorage

        self.engine = db.make_engine(url)
        db.upgrade(self.engine)
        self.sessions = db.session_factory(self.engine)
        self.storage = LocalStorage(tmp_path / "storage")
        self.tmp = tmp_path
        with db.transaction(self.sessions) as session:
            challenge, _ = challenges.init_challenge(session, definition)
            self.challenge = challenge.name
            self.phases = [p.slug for p in challenge.phases]
            self.organizer = accounts.create_user(session, "org@example.org", "organizer").id

    def participant(self, email: str, team: str | None = None) -> int:
        from iugc.submissions import accounts, db, teams

        with db.transaction(self.sessions) as session:
            user = accounts.create_user(session, email, "participant")
            if team:
                accept(session, user, teams.create_team(session, user, team))
            return user.id

    def upload(self, user_id: int, salt: str, slug: str | None = None) -> int:
        """A submission of a fresh archive (``salt`` makes it unique) to ``slug`` (default: the first phase)."""
        from iugc.submissions.uploads import submit

        path = docker_like_archive(self.tmp / f"upload-{salt}.tar", str(salt))
        with open(path, "rb") as stream:
            return submit(self.sessions, self.storage, user_id, slug or self.phases[0], stream)

    def counts(self) -> dict:
        from sqlalchemy import func, select

        from iugc.submissions.models import AuditEntry, CaseResult, Evaluation, StatusChange, Submission

        with self.sessions() as session:
            tables = {m.__tablename__: session.execute(select(func.count()).select_from(m)).scalar()
                      for m in (Submission, Evaluation, StatusChange, CaseResult, AuditEntry)}
        staging = sorted(p.name for p in self.storage.staging.glob("*")) if self.storage.staging.exists() else []
        return {**tables, "stored": self.storage.keys(), "staging": staging}


class RedisServer:
    """Debian's ``redis-server`` on 127.0.0.1 and a free port, without persistence."""

    def __init__(self, binary: str):
        self.binary, self.port = binary, free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="iugc-redis-"))
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen([self.binary, "--bind", "127.0.0.1", "--port", str(self.port), "--save", "",
                                         "--appendonly", "no", "--dir", str(self.dir), "--protected-mode", "yes"],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for_port(self.port, process=self.process)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(30)

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def redis_server():
    binary = shutil.which("redis-server")
    if binary is None:
        _missing("redis-server not found (apt-get install redis-server)", "IUGC_REQUIRE_SERVICES")
    server = RedisServer(binary)
    server.start()
    yield server
    server.remove()


def evaluation_pid(process, embedded: bool) -> int:
    """The pid that labels the containers ``process`` starts: `iugc serve` runs its embedded
    evaluation workers in a child (`python -m iugc.leaderboard.server`), `iugc worker` itself."""
    deadline = time.monotonic() + 30
    while embedded and time.monotonic() < deadline:
        children = Path(f"/proc/{process.pid}/task/{process.pid}/children")
        for pid in children.read_text().split() if children.exists() else []:
            if b"iugc.leaderboard.server" in Path(f"/proc/{pid}/cmdline").read_bytes():
                return int(pid)
        time.sleep(0.1)
    assert not embedded, "`iugc serve` started no evaluation process"
    return process.pid
