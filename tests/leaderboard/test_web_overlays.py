"""Overlays of the public cases: the predicted and expert masks with their AoP
constructions, on real PSFHS frames.

- The construction ``iugc.challenge.biometry`` exposes is the one scored: the angle at its
  vertex, measured here with NumPy, equals the evaluator's ``aop_pred`` / ``aop_gt``.
- The PNG draws those points, in the two colours, at the stated scale.
- The worker keeps the scored masks for phases with public cases only.
- The route: owner team and organizers see it; another team, anonymous visitors and
  phases with hidden cases do not; each overlay is drawn once per evaluation and case.
"""
from __future__ import annotations

import json
import re
import shutil
import uuid
from pathlib import Path

import cv2
import numpy as np
import pytest

from iugc.challenge.biometry import biometry
from iugc.challenge.definition import ChallengeDefinition, load_challenge
from iugc.data_manifest.importers import import_dataset
from iugc.data_manifest.io import read_image, read_mask
from iugc.evaluator.evaluate import evaluate_folder
from iugc.evaluator.metrics import dice
from iugc.leaderboard.web import overlays
from iugc.submissions import challenges, db, queue
from iugc.submissions.models import Submission
from iugc.submissions.storage import S3Storage
from iugc.submissions.uploads import submit
from iugc.submissions.worker import keep_masks
from tests.conftest import degrade, link_frames, real_mask_paths
from tests.service_support import s3_client, s3_endpoint  # noqa: F401 (fixture)
from tests.web_support import ORGANIZER, SANITY, VALIDATION, open_site

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning:flask_limiter")
N_CASES = 4


def hex_rgb(colour: str) -> np.ndarray:
    return np.array([int(colour[i:i + 2], 16) for i in (1, 3, 5)])


def angle_at(vertex, a, b) -> float:
    """The angle a-vertex-b in degrees, from the dot product (not the platform's formula)."""
    u, v = np.subtract(a, vertex), np.subtract(b, vertex)
    return float(np.degrees(np.arccos(np.clip(u @ v / (np.linalg.norm(u) * np.linalg.norm(v)), -1, 1))))


def decode(png: bytes) -> np.ndarray:
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    image = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None
    return image[..., ::-1]  # RGB


def predictions(dataset: Path, dest: Path, drop: str | None = None) -> Path:
    """Imperfect predictions of the dataset's cases (conftest.degrade), ``drop`` left out."""
    dest.mkdir(parents=True)
    for index, path in enumerate(sorted((dataset / "masks").glob("*.png"))):
        if path.stem != drop:
            cv2.imwrite(str(dest / path.name), degrade(read_mask(path), index + 1))
    return dest


# -- the geometry: what is drawn is what is scored ---------------------------------------

@pytest.mark.parametrize("challenge", ["psfhs2023", "iugc2024"])
def test_the_construction_angle_equals_the_scored_aop_on_real_frames(psfhs_dir, tmp_path, challenge):
    definition = load_challenge(challenge)
    ids = [p.stem for p in real_mask_paths()[::22]]  # 30 cases across both scanners
    truth = link_frames(tmp_path / "truth", ids)
    preds = tmp_path / "preds"
    preds.mkdir()
    for index, case_id in enumerate(ids):
        cv2.imwrite(str(preds / f"{case_id}.png"), degrade(read_mask(psfhs_dir / "masks" / f"{case_id}.png"), index))
    scored = evaluate_folder(preds, truth / "masks", definition, jobs=1, cache_dir=None, progress=False)["cases"]
    compared = 0
    for case_id in ids:
        for key, path in (("aop_pred", preds / f"{case_id}.png"), ("aop_gt", psfhs_dir / "masks" / f"{case_id}.png")):
            construction = biometry(read_mask(path), definition.aop_method).aop_construction
            if construction is None:  # undefined: psfhs2023 scores 0, iugc2024 excludes or worst-cases it
                assert scored[case_id][key] in (0.0, None), (case_id, key)
                continue
            vertex, axis_end, tangent = construction
            assert angle_at(vertex, axis_end, tangent) == pytest.approx(scored[case_id][key], abs=1e-6), (case_id, key)
            compared += 1
    assert compared >= 55  # nearly every case has both constructions


def test_the_overlay_draws_both_constructions_in_their_colours_at_the_stated_scale(psfhs_dir):
    case_id = "03800"
    frame = read_image(psfhs_dir / "images" / f"{case_id}.png")
    expert = read_mask(psfhs_dir / "masks" / f"{case_id}.png")
    predicted = degrade(np.roll(expert, (8, -8), axis=(0, 1)), 4)  # its points well apart from the expert's
    image = decode(overlays.render_overlay(frame, predicted, expert, "ellipse"))
    assert image.shape == (768, 768, 3) and overlays.overlay_scale(frame.shape) == 3  # 256 x 256 at 3x
    drawn = {colour: biometry(mask, "ellipse").aop_construction for colour, mask in
             ((overlays.EXPERT, expert), (overlays.PREDICTED, predicted))}
    checked = 0
    for colour, points in drawn.items():
        assert points is not None
        others = [p for c, ps in drawn.items() if c != colour for p in ps]
        for x, y in (points[0], points[2]):  # the vertex and the tangent point are marked
            if min(np.hypot(x - ox, y - oy) for ox, oy in others) < 4:
                continue  # the other construction's marker may lie on top
            pixel = image[int((y + 0.5) * 3), int((x + 0.5) * 3)]
            assert np.abs(pixel.astype(int) - hex_rgb(colour)).max() < 40, (colour, (x, y), pixel)
            checked += 1
    assert checked == 4
    assert np.abs(hex_rgb(overlays.EXPERT) - hex_rgb(overlays.PREDICTED)).max() > 150  # told apart at a glance


def test_a_case_without_a_valid_prediction_shows_the_expert_alone(psfhs_dir):
    frame = read_image(psfhs_dir / "images" / "03744.png")
    expert = read_mask(psfhs_dir / "masks" / "03744.png")
    image = decode(overlays.render_overlay(frame, None, expert, "contour")).astype(int)
    near = lambda colour: (np.abs(image - hex_rgb(colour)).max(axis=-1) < 30).sum()  # noqa: E731
    assert near(overlays.EXPERT) > 500
    legend_free = image[120:]  # below the legend, which says "no valid mask" in orange
    assert (np.abs(legend_free - hex_rgb(overlays.PREDICTED)).max(axis=-1) < 30).sum() == 0


def test_render_overlay_says_what_is_wrong_with_its_input():
    frame = np.zeros((32, 32), np.uint8)
    with pytest.raises(ValueError, match=r"the expert mask has shape \(16, 16\), the frame \(32, 32\)"):
        overlays.render_overlay(frame, None, np.zeros((16, 16), np.uint8), "contour")
    with pytest.raises(ValueError, match="frame must be a 2-D grey image"):
        overlays.render_overlay(np.zeros((32, 32, 3), np.uint8), None, np.zeros((32, 32), np.uint8), "contour")


# -- the worker keeps the scored masks, for public phases only ------------------------------

@pytest.fixture(scope="module")
def dataset(psfhs_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("overlay-data")
    import_dataset("png", link_frames(root / "source", limit=N_CASES), root / "data", progress=False)
    return root / "data"


def test_the_worker_keeps_the_scored_masks_of_a_public_phase_and_nothing_of_a_hidden_one(dataset, tmp_path, monkeypatch):
    pytest.importorskip("torch", reason="PyTorch is not installed (pip install -e '.[baseline]')")
    from iugc.sandbox.docker_engine import Limits
    from iugc.sandbox.evaluate_image import evaluate_image
    from iugc.submissions.storage import LocalStorage

    monkeypatch.setenv("IUGC_WORK_DIR", str(tmp_path / "work"))
    storage = LocalStorage(tmp_path / "storage")
    challenge = load_challenge("psfhs2023")
    limits = Limits(time_limit_seconds=300, memory_mb=2048, cpus=2, output_limit_mb=50)
    given = []

    def run(keep):  # the trusted baseline with the platform's own intake, checks and scoring
        given.append(keep)
        return evaluate_image("iugc/baseline:latest", dataset, challenge, limits, runner="local", cache_dir=None, jobs=1,
                              keep_outputs=keep)

    hidden = keep_masks(storage, False, run)
    assert given == [None] and "output_masks" not in hidden and storage.keys() == []
    public = keep_masks(storage, True, run)
    assert public["status"] == "succeeded" and isinstance(given[1], Path) and not given[1].exists()  # the folder is gone
    assert sorted(public["output_masks"]) == sorted(public["cases"]) and len(public["cases"]) == N_CASES
    for case_id, key in public["output_masks"].items():
        with storage.open(key) as stream:
            kept = cv2.imdecode(np.frombuffer(stream.read(), np.uint8), cv2.IMREAD_UNCHANGED)
        truth = read_mask(dataset / "masks" / f"{case_id}.png")
        assert dice(kept > 0, truth > 0) == public["cases"][case_id]["dice_all"]  # the very mask scored
    assert list((tmp_path / "work").iterdir()) == []


# -- the route ------------------------------------------------------------------------------

class OverlaySite:
    """The web tests' site with the real frames as every phase's dataset, and submissions
    scored by the evaluator on imperfect real masks, kept as the worker keeps them."""

    def __init__(self, site, dataset: Path, storage):
        self.site, self.dataset, self.storage = site, dataset, storage
        site.app.extensions["iugc"].storage = storage  # results, kept masks (and uploads) where the app reads them
        with db.transaction(site.sessions) as session:
            for slug in (SANITY, VALIDATION):
                challenges.add_dataset(session, slug, dataset)
        site.person("a@example.org", "alpha")
        site.person("b@example.org", "beta")

    def evaluated(self, email: str, slug: str, drop: str | None = None) -> int:
        with open(self.site.archive(), "rb") as stream:
            sid = submit(self.site.sessions, self.site.storage, self.site.user_id(email), slug, stream)
        job = queue.claim_next(self.site.sessions, f"test:{sid}:x")
        definition = ChallengeDefinition.model_validate(job.challenge)
        preds = predictions(Path(job.dataset_path), self.site.tmp / f"preds-{sid}", drop)

        def run(keep):  # what evaluate_image does with these outputs: score them, copy them into ``keep``
            for path in preds.glob("*.png") if keep is not None else ():
                shutil.copyfile(path, keep / path.name)
            return {"status": "succeeded", "image_digest": None, "logs": "",
                    **evaluate_folder(preds, Path(job.dataset_path), definition, jobs=1, cache_dir=None, progress=False)}

        result = keep_masks(self.storage, definition.phase(job.phase_name).public_cases, run)
        assert queue.finish(self.site.sessions, job, result, self.storage)
        return sid


@pytest.fixture
def web(request, tmp_path, dataset):
    """The site on local storage, or (``indirect`` param "s3") a real S3-protocol server."""
    for site in open_site(tmp_path):
        storage = site.storage
        if getattr(request, "param", "local") == "s3":
            client = s3_client(request.getfixturevalue("s3_endpoint"))
            bucket = f"iugc-{uuid.uuid4().hex[:10]}"
            client.create_bucket(Bucket=bucket)
            storage = S3Storage(bucket, "iugc", staging=tmp_path / "staging", client=client)
        yield OverlaySite(site, dataset, storage)


def url(sid: int, case_id: str = "03745") -> str:
    return f"/submissions/{sid}/cases/{case_id}/overlay.png"


@pytest.mark.parametrize("web", ["local", "s3"], indirect=True)
def test_the_owner_and_organizers_see_a_public_cases_overlay_and_no_one_else(web):
    sid = web.evaluated("a@example.org", SANITY)
    mine = web.site.client("a@example.org").get(url(sid))
    assert mine.status_code == 200 and mine.mimetype == "image/png"
    assert decode(mine.data).shape == (768, 768, 3)
    organizer = web.site.client(ORGANIZER).get(url(sid))
    assert organizer.status_code == 200 and organizer.data == mine.data
    other = web.site.client("b@example.org").get(url(sid))
    assert other.status_code == 404 and b"no submission" in other.data
    anonymous = web.site.client().get(url(sid))
    assert anonymous.status_code == 302 and "/login" in anonymous.headers["Location"]
    assert web.site.client("a@example.org").get(url(sid, "04400")).status_code == 404  # not a case of it
    assert web.site.client("a@example.org").get(url(sid, "..")).status_code == 404


def test_a_phase_with_hidden_cases_keeps_and_shows_no_overlay(web):
    sid = web.evaluated("a@example.org", VALIDATION)
    with web.site.sessions() as session:
        evaluation = session.get(Submission, sid).evaluations[-1]
        with web.storage.open(evaluation.result_key) as stream:
            assert "output_masks" not in json.loads(stream.read())
    for email in ("a@example.org", ORGANIZER):
        response = web.site.client(email).get(url(sid))
        assert response.status_code == 404 and b"its cases are not public" in response.data, email
    page = web.site.client(ORGANIZER).get(f"/submissions/{sid}").get_data(as_text=True)
    assert 'id="cases"' in page and "overlay.png" not in page  # organizers see the values, not overlays


def test_the_per_case_table_links_each_public_case_to_its_overlay(web):
    sid = web.evaluated("a@example.org", SANITY)
    page = web.site.client("a@example.org").get(f"/submissions/{sid}").get_data(as_text=True)
    assert sorted(set(re.findall(rf'href="(/submissions/{sid}/cases/[^"]+/overlay.png)"', page))) == \
        [url(sid, p.stem) for p in sorted((web.dataset / "masks").glob("*.png"))]


def test_an_overlay_is_drawn_once_per_evaluation_and_case(web, monkeypatch):
    sid = web.evaluated("a@example.org", SANITY)
    drawn = []
    real = overlays.render_overlay
    monkeypatch.setattr(overlays, "render_overlay", lambda *a: drawn.append(1) or real(*a))
    client = web.site.client("a@example.org")
    first = client.get(url(sid))
    second = client.get(url(sid))
    assert first.status_code == second.status_code == 200 and first.data == second.data
    assert len(drawn) == 1
    assert [p.name for p in (web.site.tmp / "cache" / "overlays").glob("*/*")] == ["03745.png"]
    client.get(url(sid, "03746"))
    assert len(drawn) == 2


def test_a_case_the_submission_wrote_no_valid_mask_for_shows_the_expert_alone(web):
    sid = web.evaluated("a@example.org", SANITY, drop="03746")
    image = decode(web.site.client("a@example.org").get(url(sid, "03746")).data).astype(int)
    assert (np.abs(image[120:] - hex_rgb(overlays.PREDICTED)).max(axis=-1) < 30).sum() == 0
    assert (np.abs(image - hex_rgb(overlays.EXPERT)).max(axis=-1) < 30).sum() > 500


def test_an_evaluation_that_kept_no_masks_says_so(web):
    sid = web.site.submission("a@example.org", SANITY, {"dice": 0.9, "hd": 10.0, "asd": 3.0, "aop_error": 6.0, "n_cases": 1},
                              {"03745": {"dice_all": 0.9, "error": None}})
    client = web.site.client("a@example.org")
    response = client.get(url(sid))
    assert response.status_code == 404 and b"kept no masks" in response.data
    page = client.get(f"/submissions/{sid}").get_data(as_text=True)
    assert 'id="cases"' in page and "overlay.png" not in page  # its cases are listed without links


def test_an_overlay_is_refused_once_the_data_it_ran_on_has_changed(tmp_path, dataset):
    copy = shutil.copytree(dataset, tmp_path / "data-copy")
    for site in open_site(tmp_path):
        web = OverlaySite(site, copy, site.storage)
        sid = web.evaluated("a@example.org", SANITY)
        (copy / "manifest.json").write_text((copy / "manifest.json").read_text() + "\n")
        response = site.client("a@example.org").get(url(sid))
        assert response.status_code == 404 and b"has changed since" in response.data
