"""The participant's guide and what it hands out: the client wheel and each challenge's
public sample (``/downloads``), and the refusal to hand out a sample that is also the
ground truth of a phase whose cases are not public."""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

from iugc.data_manifest.phantom import write_phantom_dataset
from iugc.submissions import challenges, db, downloads
from iugc.submissions.exceptions import InvalidRequest
from tests.conftest import ROOT
from tests.web_support import SANITY, VALIDATION, install_client, site  # noqa: F401
from tests.service_support import free_port

WHEEL = "iugc_platform-0.1.0-cp311-cp311-linux_x86_64.whl"


def text(response) -> str:
    return response.get_data(as_text=True)


def phantoms(site, name: str, cases: int, seed: int) -> Path:
    folder = site.tmp / name
    write_phantom_dataset(folder, cases, seed=seed, size=64)
    return folder


def test_the_guide_walks_a_team_through_five_steps_and_says_what_is_missing(site):
    page = text(site.client().get("/how-to-submit"))
    for heading in ("1. Get the client", "2. Start from the kit", "3. Check it on the public sample", "4. Submit", "5. Read the result"):
        assert heading in page
    assert "have not put the client on this site yet" in page and "pip install" not in page
    assert f"{SANITY} has no dataset yet" in page  # the sample's reason, not a dead link
    assert "iugc submit --server http://localhost --token YOUR_TOKEN --phase " + SANITY in page
    assert 'href="/how-to-submit/contract"' in page
    assert "cannot reach Docker Hub" in page and "--base iugc/base:latest" in page  # the way without a registry


def test_the_client_wheel_is_served_at_the_url_the_guide_gives(site):
    given = site.tmp / WHEEL
    given.write_bytes(b"PK\x03\x04 a wheel's bytes")
    downloads.publish_client(site.tmp, given)
    page = text(site.client().get("/how-to-submit"))
    assert f"pip install http://localhost/downloads/{WHEEL}" in page
    served = site.client().get(f"/downloads/{WHEEL}")
    assert served.status_code == 200 and served.data == given.read_bytes() and "attachment" in served.headers["Content-Disposition"]
    assert site.client().get("/downloads/web.sqlite3").status_code == 404  # only the wheel, nothing else of the instance
    assert site.client().get("/downloads/..%2Fweb.sqlite3").status_code == 404
    newer = site.tmp / "elsewhere" / WHEEL.replace("0.1.0", "0.2.0")
    newer.parent.mkdir()
    newer.write_bytes(b"PK\x03\x04 newer")
    downloads.publish_client(site.tmp, newer)
    assert [p.name for p in downloads.folder(site.tmp).glob("*.whl")] == [newer.name]  # the old one is gone
    assert site.client().get(f"/downloads/{WHEEL}").status_code == 404
    with pytest.raises(InvalidRequest, match="not a wheel of iugc-platform"):
        downloads.publish_client(site.tmp, site.tmp / "web.sqlite3")


def test_the_public_sample_downloads_as_one_zip_of_the_sanity_checks_dataset(site):
    with db.transaction(site.sessions) as session:
        challenges.add_dataset(session, SANITY, phantoms(site, "public", 3, seed=1))
        challenges.add_dataset(session, VALIDATION, phantoms(site, "hidden", 4, seed=2))
    page = text(site.client().get("/how-to-submit"))
    assert 'href="http://localhost/downloads/sample/svc.zip"' in page and "--data svc-sample" in page
    response = site.client().get("/downloads/sample/svc.zip")
    assert response.status_code == 200
    with zipfile.ZipFile(io.BytesIO(response.data)) as archive:
        names = archive.namelist()
        manifest = json.loads(archive.read("svc-sample/manifest.json"))
    assert len(manifest["cases"]) == 3 and all(name.startswith("svc-sample/") for name in names)
    expected = {f"svc-sample/{p.relative_to(site.tmp / 'public').as_posix()}" for p in (site.tmp / "public").rglob("*") if p.is_file()}
    assert set(names) == expected  # the public phase's files, and nothing of the hidden one
    assert site.client().get("/downloads/sample/nope.zip").status_code == 404


def test_a_sample_that_is_also_a_hidden_phases_truth_is_refused(site):
    shared = phantoms(site, "shared", 3, seed=1)
    with db.transaction(site.sessions) as session:
        challenges.add_dataset(session, SANITY, shared)
        challenges.add_dataset(session, VALIDATION, shared)
    page = text(site.client().get("/how-to-submit"))
    assert f"also the ground truth of {VALIDATION}" in page and "/downloads/sample/" not in page
    response = site.client().get("/downloads/sample/svc.zip")
    assert response.status_code == 400 and f"also the ground truth of {VALIDATION}" in text(response)
    assert not list(downloads.folder(site.tmp).glob("sample-*"))  # nothing made


def test_the_client_is_built_from_every_folder_setup_py_installs():
    import re

    declared = re.search(r"^PACKAGES = \(([^)]*)\)", (ROOT / "setup.py").read_text(), re.M).group(1)
    assert downloads.PACKAGES == tuple(re.findall(r'"(\w+)"', declared))


@pytest.mark.slow
@pytest.mark.xdist_group("wheel")  # one wheel build at a time (the packaging test builds one too)
def test_a_team_installs_the_client_from_the_sites_url(tmp_path):
    """`iugc admin client-wheel` builds the wheel; `iugc serve` serves it; `pip install URL`
    into a fresh virtual environment gives `iugc kit` and `iugc submit` (the dependencies
    come from this environment instead of PyPI: the test has no network)."""
    started = time.time()
    env = {**os.environ, "IUGC_INSTANCE": str(tmp_path / "instance"), "IUGC_SECRET_KEY": "k" * 64}
    for var in ("IUGC_DATABASE_URL", "IUGC_STORAGE_URL", "IUGC_BROKER_URL"):
        env.pop(var, None)
    for command in (["db", "upgrade"], ["admin", "client-wheel"]):
        done = subprocess.run([sys.executable, "-m", "iugc", *command], env=env, capture_output=True, text=True, timeout=600, cwd=tmp_path)
        assert done.returncode == 0, done.stderr
    assert "the site now serves iugc_platform-" in done.stdout
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "iugc", "serve", "--port", str(port), "--workers", "0"], env=env, cwd=tmp_path,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        import urllib.request

        for _ in range(300):
            try:
                page = urllib.request.urlopen(f"http://127.0.0.1:{port}/how-to-submit", timeout=5).read().decode()
                break
            except OSError:
                if server.poll() is not None:
                    pytest.fail(server.stderr.read().decode()[-2000:])
                time.sleep(0.1)
        url = page.split("pip install ", 1)[1].split("<", 1)[0].strip()
        assert url.startswith(f"http://127.0.0.1:{port}/downloads/iugc_platform-") and url.endswith(".whl")
        fresh = tmp_path / "client"
        install_client(url, fresh)
    finally:
        server.terminate()
        server.wait(timeout=60)
    for command in (["kit", "--help"], ["submit", "--help"], ["kit", "new", str(tmp_path / "my-team"), "--challenge", "psfhs2023"]):
        done = subprocess.run([str(fresh / "bin" / "iugc"), *command], capture_output=True, text=True, timeout=120, cwd=tmp_path)
        assert done.returncode == 0, done.stderr
    python = fresh / "bin" / "python"
    site_packages = next((fresh / "lib").glob("python3*/site-packages"))
    where = subprocess.run([str(python), "-c", "import iugc.sandbox.kit as k; print(k.__file__)"], capture_output=True, text=True, cwd=tmp_path)
    assert where.stdout.startswith(str(site_packages)), where.stdout  # the installed client, not this checkout
    assert (tmp_path / "my-team" / "predict.py").is_file()
    assert not (ROOT / "build").exists() or (ROOT / "build").stat().st_mtime < started  # the checkout is left as it was
