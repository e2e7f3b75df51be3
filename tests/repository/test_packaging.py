"""What `pip install iugc-platform` (not editable) gets: the shipped weights, the challenge definitions and the kit template."""
import hashlib
import json
import subprocess
import sys
import zipfile

import pytest

from iugc.sandbox.kit import TEMPLATE_FILES
from tests.conftest import ROOT


@pytest.mark.xdist_group("wheel")  # one wheel build at a time (the client-download test builds one too)
def test_the_wheel_carries_the_weights_and_the_challenge_definitions(tmp_path):
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                            "--wheel-dir", str(tmp_path), str(ROOT)], capture_output=True, text=True, timeout=600)
    assert build.returncode == 0, build.stderr
    assert "absent from the `packages` configuration" not in build.stderr  # setuptools would stop shipping it
    (wheel,) = tmp_path.glob("iugc_platform-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        definitions = {"iugc/" + p.relative_to(ROOT).as_posix() for p in (ROOT / "challenge" / "definitions").glob("*.yaml")}
        assert definitions and definitions <= names
        kit = {f"iugc/sandbox/kit_template/{name}" for name in TEMPLATE_FILES}
        assert kit <= names, sorted(kit - names)  # `iugc kit new` from a plain install
        migrations = {"iugc/" + p.relative_to(ROOT).as_posix() for p in (ROOT / "submissions" / "migrations").rglob("*") if p.suffix in (".py", ".mako")}
        assert "iugc/submissions/migrations/script.py.mako" in migrations and migrations <= names  # `iugc db upgrade` needs them
        pages = {"iugc/" + p.relative_to(ROOT).as_posix() for folder in ("templates", "static") for p in (ROOT / "leaderboard" / folder).rglob("*") if p.is_file()}
        assert "iugc/leaderboard/templates/base.html" in pages and "iugc/leaderboard/static/style.css" in pages and pages <= names  # the web pages
        # one top-level name: nothing to shadow (or be shadowed by) another distribution's `challenge`
        assert {name.split("/")[0] for name in names} == {"iugc", wheel.name.split("-")[0] + "-0.1.0.dist-info"}
        meta = json.loads(archive.read("iugc/baseline/weights/baseline.json"))
        weights = archive.read(f"iugc/baseline/weights/{meta['file']}")
    assert hashlib.sha256(weights).hexdigest() == meta["sha256"]
    # installed as files (not editable), from outside the checkout, the packages import by their namespace
    target = tmp_path / "site"
    done = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index", "--target", str(target), str(wheel)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    probe = ("import iugc.challenge.labels as labels, iugc.evaluator.metrics as metrics, iugc.sandbox.kit as kit; "
             "print(labels.__file__); print(metrics.BACKEND); print(kit.__file__)")
    seen = subprocess.run([sys.executable, "-I", "-c", f"import sys; sys.path.insert(0, {str(target)!r}); {probe}"],
                          capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert seen.returncode == 0, seen.stderr
    files = seen.stdout.split()
    assert files[0].startswith(str(target / "iugc" / "challenge")) and files[2].startswith(str(target / "iugc" / "sandbox"))
    assert files[1] == "c"  # the compiled kernel is in the wheel, under iugc/evaluator/
