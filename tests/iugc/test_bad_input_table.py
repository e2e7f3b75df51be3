"""Every command that reads files, against every kind of bad input that applies, run as a
person runs it (``python -m iugc``): a non-zero exit, a short message naming the thing that
was wrong, no Python traceback or exception repr, and nothing left behind.

The table is docs/input-boundaries.md's "Commands" rows that read files; each row lists
the bad inputs that apply to it (a mask folder has no JSON to corrupt)."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

REPR = re.compile(r"Traceback|\b[A-Z]\w*(Error|Exception)\(|<class '|File \"/")
MAX_MESSAGE = 600  # characters of what the person reads on stderr


def make_bad(kind: str, root: Path) -> Path:
    """One bad input of ``kind`` under ``root``; returns its path."""
    root.mkdir(parents=True, exist_ok=True)
    path = root / f"bad-{kind}"
    if kind == "missing":
        return path
    if kind == "empty folder":
        path.mkdir()
    elif kind == "text file":
        path.write_text("these are notes, not data\n")
    elif kind == "zero-byte file":
        path.write_bytes(b"")
    elif kind == "folder of corrupt images":
        path.mkdir()
        for name in ("case_001.png", "case_002.png"):
            (path / name).write_bytes(b"\x89PNG\r\n\x1a\n cut short")
    elif kind == "folder of odd names":
        path.mkdir()
        (path / os.fsdecode(b"case_\xff.png")).write_bytes(b"\x89PNG\r\n\x1a\n cut short")
        (path / "case with spaces;rm.png").write_bytes(b"not a png")
    elif kind == "symlink out of the folder":
        path.mkdir()
        (path / "case_001.png").symlink_to("/etc/hostname")
    elif kind == "json of the wrong shape":
        path.write_text(json.dumps({"hello": [1, 2, 3]}))
    elif kind == "non-finite json":
        path.write_text('{"challenge": "psfhs2023", "aggregates": {"score": NaN}, "cases": {}}')
    elif kind == "not utf-8":
        path.write_bytes(b"\xff\xfe\x00challenge: \xc3\x28\n")
    else:
        raise ValueError(kind)
    return path


FOLDERS = ["missing", "empty folder", "text file", "folder of corrupt images", "folder of odd names", "symlink out of the folder"]
DATASETS = ["missing", "empty folder", "text file", "folder of corrupt images"]
JSONS = ["text file", "zero-byte file", "json of the wrong shape", "non-finite json", "not utf-8"]

# (row id, argv with BAD / OUT placeholders, the bad inputs that apply)
TABLE = [
    ("biometry", ["biometry", "--method", "ellipse", "BAD"], FOLDERS),
    ("evaluate --predictions", ["evaluate", "--predictions", "BAD", "--ground-truth", "TRUTH", "--challenge", "psfhs2023",
                                "--out", "OUT", "--quiet"], ["missing", "empty folder", "text file"]),
    ("evaluate --ground-truth", ["evaluate", "--predictions", "TRUTH", "--ground-truth", "BAD", "--challenge", "psfhs2023",
                                 "--out", "OUT", "--quiet"], DATASETS),
    ("rank", ["rank", "BAD", "--json-out", "OUT"], JSONS),
    ("challenge show", ["challenge", "show", "BAD"], ["missing", "text file", "zero-byte file", "not utf-8", "empty folder"]),
    ("data verify", ["data", "verify", "BAD"], DATASETS),
    ("data import", ["data", "import", "--layout", "png", "--source", "BAD", "--dest", "OUT"], DATASETS + ["folder of odd names"]),
    ("data split", ["data", "split", "BAD", "--by-video", "train=0.8,validation=0.2"], DATASETS),
    ("data landmarks", ["data", "landmarks", "BAD"], DATASETS),
    ("data sample", ["data", "sample", "--from", "BAD", "--dest", "OUT", "--cases", "2"], DATASETS),
    ("data nonstandard", ["data", "nonstandard", "--source", "BAD", "--dest", "OUT"], DATASETS),
    ("docker load", ["docker", "load", "BAD"], ["text file", "zero-byte file", "empty folder"]),
    ("baseline predict", ["baseline", "predict", "--input", "BAD", "--output", "OUT"], FOLDERS),
    ("baseline train", ["baseline", "train", "--data", "BAD", "--out", "OUT", "--epochs", "1"], DATASETS),
    ("baseline finetune", ["baseline", "finetune", "--data", "BAD", "--from", "default", "--out", "OUT", "--epochs", "1"], DATASETS),
    ("baseline export", ["baseline", "export", "--weights", "BAD", "--out", "OUT"], ["missing", "text file", "zero-byte file", "empty folder"]),
    ("docker build-baseline", ["docker", "build-baseline", "--weights", "BAD"], ["missing", "text file", "zero-byte file"]),
    ("admin client-wheel", ["admin", "client-wheel", "--wheel", "BAD"], ["text file", "zero-byte file", "empty folder"]),
    ("admin init", ["admin", "init", "--challenge", "BAD"], ["missing", "text file", "zero-byte file", "not utf-8", "empty folder"]),
    ("admin add-dataset", ["admin", "add-dataset", "--phase", "psfhs2023-sanity-check", "--data", "BAD"], DATASETS),
]
CASES = [pytest.param(argv, kind, id=f"{row}: {kind}") for row, argv, kinds in TABLE for kind in kinds]


@pytest.fixture(scope="module")
def truth(tmp_path_factory):
    """A small dataset with train and validation splits: what bad predictions are scored
    against, bad truth replaces, and a training command with a bad option would read."""
    dest = tmp_path_factory.mktemp("truth") / "ds"
    for step in (["data", "phantom", "--dest", str(dest), "--cases", "3"],
                 ["data", "split", str(dest), "--blocks", "train=phantom0000-phantom0001,validation=phantom0002-phantom0002"]):
        done = subprocess.run([sys.executable, "-m", "iugc", *step], capture_output=True, text=True, cwd=ROOT)
        assert done.returncode == 0, done.stderr
    return dest


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    """A migrated service database with psfhs2023 loaded, for the `iugc admin` rows: their
    bad inputs must leave its rows as they were."""
    instance = tmp_path_factory.mktemp("instance")
    env = {**os.environ, "IUGC_INSTANCE": str(instance), "IUGC_DATABASE_URL": f"sqlite:///{instance / 'iugc.sqlite3'}"}
    for step in (["db", "upgrade"], ["admin", "init", "--challenge", "psfhs2023"]):
        done = subprocess.run([sys.executable, "-m", "iugc", *step], capture_output=True, text=True, cwd=ROOT, env=env)
        assert done.returncode == 0, done.stderr
    return env


def _rows(env: dict) -> dict:
    import sqlite3

    with sqlite3.connect(env["IUGC_DATABASE_URL"].removeprefix("sqlite:///")) as db:
        return {t: db.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in ("challenges", "phases", "datasets", "audit_log")}


@pytest.mark.parametrize("argv, kind", CASES)
def test_a_bad_input_gets_one_sentence_and_leaves_nothing(argv, kind, truth, service, tmp_path):
    bad = make_bad(kind, tmp_path / "in")
    out = tmp_path / "out"
    before = sorted(p.name for p in (tmp_path / "in").iterdir())
    args = [str(bad) if a == "BAD" else str(out) if a == "OUT" else str(truth) if a == "TRUTH" else a for a in argv]
    said, message = _refused(args, service, out)
    assert bad.name in said or any(word in message for word in ("empty", "no case", "nothing")), \
        f"the message does not name {bad.name}: {message}"
    assert sorted(p.name for p in (tmp_path / "in").iterdir()) == before  # the bad input itself is left as it was


def _refused(args: list[str], service: dict, out: Path) -> tuple[str, str]:
    """Run ``iugc ARGS`` and check it refused as a person should see it: a non-zero exit, a
    short message on stderr, no traceback or exception repr, ``out`` not written and no
    row of the service's database added or changed. Returns (all it said, stderr)."""
    rows = _rows(service)
    done = subprocess.run([sys.executable, "-m", "iugc", *args], capture_output=True, cwd=ROOT, timeout=120, env=service,
                          input=b"a long enough password\n")
    said = (done.stdout + done.stderr).decode(errors="replace")
    assert done.returncode != 0, f"exit 0: {said[-800:]}"
    assert not REPR.search(said), f"a traceback or exception repr reached the person: {said[-1500:]}"
    message = done.stderr.decode(errors="replace").strip()
    assert 0 < len(message) <= MAX_MESSAGE, f"{len(message)} characters on stderr: {message[:1500]}"
    assert not out.exists(), f"{out.name} was left behind"
    assert _rows(service) == rows  # no row of the service either
    return said, message


# The commands' options that take no file, each with a value that makes no sense, given
# first so that Click reads it before the other options: (row id, argv); the message must
# name the option or the value (the row id's last word or the first value after it). OUT
# must stay unwritten and the service's rows unchanged, as above.
OPTION_TABLE = [
    ("serve --port", ["serve", "--port", "99999"]),
    ("serve --grace", ["serve", "--grace", "-3"]),
    ("serve --threads", ["serve", "--threads", "0"]),
    ("worker --grace", ["worker", "--grace", "nan"]),
    ("worker --concurrency", ["worker", "--concurrency", "0"]),
    ("demo --cases", ["demo", "--cases", "0", "--workdir", "OUT"]),
    ("demo-site --cases", ["demo-site", "--cases", "0", "--instance", "OUT", "--no-serve"]),
    ("demo-site --port", ["demo-site", "--port", "0", "--instance", "OUT", "--no-serve"]),
    ("data phantom --frames", ["data", "phantom", "--frames", "0", "--dest", "OUT", "--layout", "iugc2024"]),
    ("data phantom --nonstandard-fraction", ["data", "phantom", "--nonstandard-fraction", "2", "--dest", "OUT"]),
    ("data phantom --seed", ["data", "phantom", "--seed", "-1", "--dest", "OUT"]),
    ("data sample --cases", ["data", "sample", "--cases", "0", "--dest", "OUT"]),
    ("data nonstandard --per-frame", ["data", "nonstandard", "--per-frame", "inf", "--source", "TRUTH", "--dest", "OUT"]),
    ("evaluate --jobs", ["evaluate", "--jobs", "0", "--predictions", "TRUTH", "--ground-truth", "TRUTH",
                         "--challenge", "psfhs2023", "--out", "OUT"]),
    ("evaluate-image --image", ["evaluate-image", "--image", "team/model:1", "--runner", "local", "--data", "TRUTH",
                                "--challenge", "psfhs2023", "--out", "OUT"]),
    ("evaluate-image --timeout", ["evaluate-image", "--timeout", "nan", "--image", "baseline", "--runner", "local",
                                  "--data", "TRUTH", "--challenge", "psfhs2023", "--out", "OUT"]),
    ("evaluate-image --cpus", ["evaluate-image", "--cpus", "0", "--image", "baseline", "--runner", "local",
                               "--data", "TRUTH", "--challenge", "psfhs2023", "--out", "OUT"]),
    ("baseline train --lr", ["baseline", "train", "--lr", "nan", "--data", "TRUTH", "--out", "OUT"]),
    ("baseline train --size", ["baseline", "train", "--size", "100", "--data", "TRUTH", "--out", "OUT", "--refit"]),
    ("baseline train --ema-decay", ["baseline", "train", "--ema-decay", "1", "--data", "TRUTH", "--out", "OUT"]),
    ("baseline predict --smooth", ["baseline", "predict", "--smooth", "-inf", "--input", "TRUTH", "--output", "OUT"]),
    ("admin reevaluate --submission", ["admin", "reevaluate", "--submission", "99999999999999999999999",
                                       "--phase", "psfhs2023-sanity-check"]),
    ("admin phase --per-day", ["admin", "phase", "--per-day", "99999999999999999999999", "--phase", "psfhs2023-sanity-check"]),
    ("admin phase --opens", ["admin", "phase", "--opens", "yesterday", "--phase", "psfhs2023-sanity-check"]),
    ("admin publish --phase", ["admin", "publish", "--phase", "no-such-phase"]),
    ("admin unpublish --phase", ["admin", "unpublish", "--phase", "no-such-phase"]),
    ("kit new --challenge", ["kit", "new", "--challenge", "no-such-challenge", "OUT"]),
    ("kit check --challenge", ["kit", "check", "--challenge", "no-such-challenge", "team/model:1"]),
    ("admin token EMAIL", ["admin", "token", "nobody@example.org"]),
    ("admin create-user EMAIL", ["admin", "create-user", "not-an-address", "--role", "participant"]),
    ("submit --server", ["submit", "--server", "not-a-url", "--phase", "p", "--image", "i", "--token", "t"]),
    ("submit --timeout", ["submit", "--timeout", "-1", "--phase", "p", "--image", "i", "--token", "t"]),
]


@pytest.mark.parametrize("row, argv", [pytest.param(row, argv, id=row) for row, argv in OPTION_TABLE])
def test_a_bad_option_value_gets_one_sentence_and_leaves_nothing(row, argv, truth, service, tmp_path):
    out = tmp_path / "out"
    args = [str(out) if a == "OUT" else str(truth) if a == "TRUTH" else a for a in argv]
    _, message = _refused(args, service, out)
    option = row.split()[-1]
    value = argv[argv.index(option) + 1] if option in argv else next(a for a in argv[1:] if a not in row.split())
    assert option in message or value in message, f"the message names neither {option} nor {value}: {message}"
