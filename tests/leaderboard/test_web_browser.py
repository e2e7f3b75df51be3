"""The site in a real browser: Playwright (PyPI) driving Debian's headless chromium against
`iugc serve` as a real server process on 127.0.0.1, with an embedded worker evaluating
the baseline image in a real container on real frames.

A participant registers, creates a team, accepts the terms, follows the how-to-submit
guide (installs the client from the site's URL into a fresh virtual environment, makes a
kit, downloads the public sample and runs `iugc kit check` on it), uploads the baseline's
`docker save` archive (progress bar), watches the status reach a score without reloading,
finds the team on the leaderboard, opens the per-case page and a case's overlay; the
organizer publishes the final phase and the participant then sees it. Screenshots of each
page, at a laptop's and a phone's width, go to ``$IUGC_TEST_ARTIFACTS/web`` (default
``artifacts/web`` in the checkout); the overlay, an image, once (``11-overlay.png``).

Needs ``apt-get install chromium`` (``IUGC_REQUIRE_BROWSER=1`` turns its absence into a
failure), a Docker engine and the real frames (their own switches).
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from iugc.leaderboard.web.overlays import EXPERT, PREDICTED
from tests.conftest import ROOT
from tests.docker_support import require_engine
from tests.service_support import docker_like_archive, free_port, wait_for_port
from tests.web_support import install_client

# with the other engine tests, on one worker: they run containers, and the container tests
# count and clean up the runner's containers and the images they build
pytestmark = pytest.mark.xdist_group("docker")

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]
LAPTOP, PHONE = {"width": 1366, "height": 900}, {"width": 390, "height": 844}
PASSWORD = "a long pass phrase"
N_CASES = 5
ARTIFACTS = Path(os.environ.get("IUGC_TEST_ARTIFACTS") or ROOT / "artifacts") / "web"
STAND_INS = {  # aggregates of two stand-in teams, so the leaderboard has someone to rank against
    "ragged-edges": {"dice": 0.86, "dice_ps": 0.80, "dice_fh": 0.90, "dice_all": 0.88, "hd": 14.0, "asd": 4.1, "aop_error": 9.5, "n_cases": N_CASES},
    "eroded": {"dice": 0.78, "dice_ps": 0.70, "dice_fh": 0.84, "dice_all": 0.80, "hd": 21.0, "asd": 6.3, "aop_error": 14.2, "n_cases": N_CASES},
}


@pytest.fixture(scope="module")
def chromium():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("the playwright package is not installed (pip install -e '.[web]')")
    if not CHROMIUM.exists():
        _missing("Debian's chromium is not installed (apt-get install -y chromium)")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        yield browser
        browser.close()


def _missing(what):
    if os.environ.get("IUGC_REQUIRE_BROWSER") == "1":
        pytest.fail(f"{what}; IUGC_REQUIRE_BROWSER=1 makes this a failure")
    pytest.skip(what)


@pytest.fixture(scope="module")
def baseline_archive(tmp_path_factory):
    require_engine()
    built = subprocess.run([sys.executable, "-m", "iugc", "docker", "build-baseline"], capture_output=True, text=True,
                           timeout=1800, cwd=ROOT)  # idempotent: reuses the image when its recipe is unchanged
    assert built.returncode == 0, built.stderr
    path = tmp_path_factory.mktemp("image") / "baseline.tar"
    subprocess.run(["docker", "save", "iugc/baseline:latest", "-o", str(path)], check=True, timeout=600)
    return path


@pytest.fixture(scope="module")
def server(psfhs_dir, tmp_path_factory, baseline_archive):
    """`iugc serve` on a fresh instance: psfhs2023 with 5 real cases in every phase, an
    organizer, two scored stand-in teams."""
    from iugc.data_manifest.importers import import_dataset
    from iugc.submissions.accounts import hash_password
    from iugc.submissions import accounts, challenges, db, downloads, queue, teams
    from iugc.submissions.storage import LocalStorage
    from iugc.submissions.uploads import submit

    root = tmp_path_factory.mktemp("site")
    for block, name in enumerate(("public", "hidden")):  # the sanity check's cases are the public sample; the others differ
        source = root / f"source-{name}"
        for folder in ("images", "masks"):
            (source / folder).mkdir(parents=True)
            for path in sorted((psfhs_dir / folder).glob("*.png"))[block * N_CASES:(block + 1) * N_CASES]:
                (source / folder / path.name).symlink_to(path)
        import_dataset("png", source, root / name, progress=False)
    instance = root / "instance"
    downloads.publish_client(instance)  # the wheel the guide tells a team to `pip install` (built from this checkout)
    engine = db.make_engine(f"sqlite:///{instance / 'iugc.sqlite3'}")
    db.upgrade(engine)
    sessions = db.session_factory(engine)
    storage = LocalStorage(instance / "storage")
    with db.transaction(sessions) as session:
        challenge, _ = challenges.init_challenge(session, "psfhs2023")
        for phase in challenge.phases:
            challenges.add_dataset(session, phase.slug, root / ("public" if phase.name == "sanity-check" else "hidden"))
        accounts.create_user(session, "organizer@example.org", "organizer").password_hash = hash_password(PASSWORD)
        for name in STAND_INS:
            user = accounts.create_user(session, f"{name}@example.org", "participant")
            teams.accept_terms(session, user, teams.create_team(session, user, name).challenge_id)
    for index, (name, aggregates) in enumerate(STAND_INS.items()):
        with db.transaction(sessions) as session:
            user_id = accounts.user_by_email(session, f"{name}@example.org").id
        for slug in ("psfhs2023-sanity-check", "psfhs2023-final-test"):
            with open(docker_like_archive(root / f"{name}-{slug}.tar", f"{name}{slug}"), "rb") as stream:
                submit(sessions, storage, user_id, slug, stream)
            job = queue.claim_next(sessions, f"seed:{index}:x")
            assert queue.finish(sessions, job, {"status": "succeeded", "aggregates": aggregates, "score": None, "cases": {}})
    engine.dispose()
    port = free_port()
    # Secure cookies as in production: chromium keeps them on http://127.0.0.1 (a loopback origin counts as secure)
    env = {**os.environ, "IUGC_INSTANCE": str(instance), "IUGC_SECRET_KEY": "s" * 64, "IUGC_CACHE_DIR": str(root / "cache")}
    for key in ("IUGC_DATABASE_URL", "IUGC_STORAGE_URL", "IUGC_BROKER_URL", "IUGC_COOKIE_SECURE"):
        env.pop(key, None)
    log = open(root / "serve.log", "w")
    process = subprocess.Popen([sys.executable, "-m", "iugc", "serve", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
                               env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for_port(port, timeout=60, process=process)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=120)
        log.close()


def shoot(page, name: str) -> None:
    """Screenshots of the page at a laptop's and a phone's width."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for label, size in (("laptop", LAPTOP), ("phone", PHONE)):
        page.set_viewport_size(size)
        page.screenshot(path=str(ARTIFACTS / f"{name}-{label}.png"), full_page=True)
    page.set_viewport_size(LAPTOP)


def _rgb(png: bytes):
    import cv2

    assert png.startswith(b"\x89PNG"), png[:200]
    return cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)[..., ::-1].astype(int)


def _hex(colour: str):
    return np.array([int(colour[i:i + 2], 16) for i in (1, 3, 5)])


def login(page, base, email):
    page.goto(f"{base}/login")
    page.fill("input[name=email]", email)
    page.fill("input[name=password]", PASSWORD)
    page.click("form button[type=submit].primary")
    page.wait_for_load_state()
    assert "/login" not in page.url, page.content()[:2000]


@pytest.mark.slow
def test_a_team_and_an_organizer_use_the_site_end_to_end(chromium, server, baseline_archive, tmp_path):
    base = server
    context = chromium.new_context(viewport=LAPTOP)
    page = context.new_page()
    errors = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))

    page.goto(base + "/")
    assert "PSFHS 2023" in page.inner_text("main")
    shoot(page, "01-overview")

    page.goto(base + "/leaderboard/psfhs2023-sanity-check")
    assert page.locator("#leaderboard tbody tr").count() == len(STAND_INS)  # a visitor sees the ranked stand-ins
    page.goto(base + "/leaderboard/psfhs2023-final-test")
    assert "not published yet" in page.inner_text("main")  # but not the final test's
    page.goto(base + "/register")
    page.fill("input[name=email]", "alice@example.org")
    page.fill("input[name=password]", PASSWORD)
    page.fill("input[name=confirm]", PASSWORD)
    shoot(page, "02-register")
    page.click("form button[type=submit].primary")
    page.wait_for_url(base + "/teams")

    page.fill("input[name=name]", "alice-lab")
    page.click("text=Create the team")
    page.wait_for_url(base + "/teams")
    assert "alice-lab" in page.inner_text("main") and "/teams/join/" in page.inner_text("pre.invite")
    shoot(page, "03-team")

    page.goto(base + "/phases/psfhs2023-sanity-check/upload")
    assert page.locator("input[type=file]").count() == 0 and "First, the terms of psfhs2023" in page.inner_text("main")
    shoot(page, "04-terms")
    page.click("text=Accept the terms for team alice-lab")
    page.wait_for_url(base + "/phases/psfhs2023-sanity-check/upload")

    # the guide, step by step, as a team on its own machine: the client from the site's URL
    # in a fresh virtual environment, a kit, the public sample, `iugc kit check` on it
    page.goto(base + "/how-to-submit")
    shoot(page, "05-how-to-submit")
    guide = page.inner_text("main")
    url = guide.split("pip install ", 1)[1].split()[0]
    assert url.startswith(base + "/downloads/iugc_platform-") and url.endswith(".whl")
    iugc = install_client(url, tmp_path / "iugc-client")
    with page.expect_download() as download:
        page.click("a.sample")
    zipfile.ZipFile(download.value.path()).extractall(tmp_path)
    # as the guide says, but on iugc/base:latest: the test has no registry to pull python:3.11-slim from
    for command in (["kit", "new", "my-team", "--challenge", "psfhs2023", "--base", "iugc/base:latest"],
                    ["kit", "check", "my-team", "--challenge", "psfhs2023", "--data", "psfhs2023-sample"]):
        assert f"iugc {command[0]} {command[1]} my-team --challenge psfhs2023" in guide
        done = subprocess.run([str(iugc), *command], capture_output=True, text=True, timeout=600, cwd=tmp_path)
        assert done.returncode == 0, done.stdout + done.stderr
    assert f"on {N_CASES} " in done.stdout and "ACCEPTED: the sanity check would pass" in done.stdout

    page.goto(base + "/phases/psfhs2023-sanity-check/upload")
    page.set_input_files("input[type=file]", str(baseline_archive))
    shoot(page, "06-upload")
    page.click("#upload-form button[type=submit]")
    assert page.locator(".progress").is_visible() or "/submissions" in page.url
    page.wait_for_url(re.compile(r".*/submissions\?highlight=\d+"), timeout=300_000)
    sid = int(page.url.rsplit("=", 1)[1])
    page.evaluate("window.__notReloaded = true")
    row = page.locator(f'tr[data-id="{sid}"]')
    assert row.locator('[data-field="status"]').inner_text() in ("queued", "running")
    shoot(page, "07-submissions-pending")
    row.locator(".st-succeeded").wait_for(timeout=600_000)  # the poll updates the row in place
    assert page.evaluate("window.__notReloaded") is True
    score = float(row.locator('[data-field="score"]').inner_text())
    assert 0.5 < score <= 1.0
    shoot(page, "08-submissions-scored")

    page.goto(base + "/leaderboard/psfhs2023-sanity-check")
    rows = page.locator("#leaderboard tbody tr")
    teams = [rows.nth(i).locator("td.team").inner_text().split()[0] for i in range(rows.count())]
    assert set(teams) == {"alice-lab", *STAND_INS}
    mine = rows.nth(teams.index("alice-lab"))
    assert mine.locator("td").nth(2).inner_text() == f"{score:.4f}"
    page.click("#leaderboard th:has-text('HD')")  # sort by HD, lowest first
    hd = [float(rows.nth(i).locator("td").nth(6).inner_text()) for i in range(rows.count())]
    assert hd == sorted(hd)
    shoot(page, "09-leaderboard")

    page.goto(f"{base}/submissions/{sid}")
    cases = page.locator("#cases tbody tr")
    assert cases.count() == N_CASES
    shoot(page, "10-submission-detail")

    link = cases.first.locator("td a")  # a sanity-check case: its overlay, drawn from the masks the worker kept
    case_id = link.inner_text()
    link.click()
    page.wait_for_url(f"{base}/submissions/{sid}/cases/{case_id}/overlay.png")
    assert page.evaluate("[document.images[0].naturalWidth, document.images[0].naturalHeight]") == [768, 768]
    overlay = _rgb(page.request.get(page.url).body())
    for colour in (EXPERT, PREDICTED):  # both masks and constructions are drawn
        assert (np.abs(overlay - _hex(colour)).max(axis=-1) < 30).sum() > 200, colour
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "11-overlay.png"))

    page.goto(base + "/leaderboard/psfhs2023-final-test")
    assert "not published yet" in page.inner_text("main")

    organizer = chromium.new_context(viewport=LAPTOP).new_page()
    login(organizer, base, "organizer@example.org")
    organizer.goto(base + "/leaderboard/psfhs2023-final-test")
    assert "Not published" in organizer.inner_text("main")
    organizer.goto(base + "/admin")
    shoot(organizer, "12-admin")
    asked = []
    organizer.once("dialog", lambda dialog: (asked.append(dialog.message), dialog.dismiss()))
    organizer.click("button[data-publish='psfhs2023-final-test']")  # asks first; dismissed, nothing is published
    assert asked == ["Publish the results of psfhs2023-final-test? Every participant will see its leaderboard."]
    organizer.goto(base + "/leaderboard/psfhs2023-final-test")
    assert "Not published" in organizer.inner_text("main")
    organizer.goto(base + "/admin")
    organizer.once("dialog", lambda dialog: dialog.accept())
    organizer.click("button[data-publish='psfhs2023-final-test']")
    organizer.wait_for_url(base + "/admin")
    assert "are published" in organizer.inner_text("main")
    organizer.goto(base + "/admin/audit")
    assert "phase.publish" in organizer.inner_text("main")
    shoot(organizer, "13-audit")

    page.goto(base + "/leaderboard/psfhs2023-final-test")
    assert page.locator("#leaderboard tbody tr").count() == len(STAND_INS)
    shoot(page, "14-final-published")
    assert errors == []
