"""What `pip install iugc-platform` (not editable) gets: the shipped weights, the challenge definitions and the kit template."""
import hashlib
import json
import subprocess
import sys
import zipfile

from sandbox.kit import TEMPLATE_FILES
from tests.conftest import ROOT


def test_the_wheel_carries_the_weights_and_the_challenge_definitions(tmp_path):
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                            "--wheel-dir", str(tmp_path), str(ROOT)], capture_output=True, text=True, timeout=600)
    assert build.returncode == 0, build.stderr
    assert "absent from the `packages` configuration" not in build.stderr  # setuptools would stop shipping it
    (wheel,) = tmp_path.glob("iugc_platform-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        definitions = {p.relative_to(ROOT).as_posix() for p in (ROOT / "challenge" / "definitions").glob("*.yaml")}
        assert definitions and definitions <= names
        kit = {f"sandbox/kit_template/{name}" for name in TEMPLATE_FILES}
        assert kit <= names, sorted(kit - names)  # `iugc kit new` from a plain install
        migrations = {p.relative_to(ROOT).as_posix() for p in (ROOT / "submissions" / "migrations").rglob("*") if p.suffix in (".py", ".mako")}
        assert "submissions/migrations/script.py.mako" in migrations and migrations <= names  # `iugc db upgrade` needs them
        pages = {p.relative_to(ROOT).as_posix() for folder in ("templates", "static") for p in (ROOT / "leaderboard" / folder).rglob("*") if p.is_file()}
        assert "leaderboard/templates/base.html" in pages and "leaderboard/static/style.css" in pages and pages <= names  # the web pages
        meta = json.loads(archive.read("baseline/weights/baseline.json"))
        weights = archive.read(f"baseline/weights/{meta['file']}")
    assert hashlib.sha256(weights).hexdigest() == meta["sha256"]
