"""IUGC 2025's landmark challenge: points derived from real masks, radial errors and the AoP
from points against a direct numpy computation, the CSV importer, the output checks."""
import json
import math
import subprocess
import sys

import numpy as np
import pytest

from iugc.challenge.biometry import contour_biometry
from iugc.challenge.definition import ChallengeDefinition, load_challenge
from iugc.challenge.landmarks import LANDMARKS, aop_from_landmarks, landmarks_from_mask
from iugc.data_manifest.importers import ImportProblems, import_dataset
from iugc.data_manifest.io import read_mask
from iugc.data_manifest.landmarks import NoMasks, derive_landmarks
from iugc.data_manifest.manifest import load_manifest
from iugc.evaluator.evaluate import EvaluationInputError, evaluate_folder
from iugc.evaluator import ranking
from tests.conftest import ROOT, link_frames, real_mask_paths

IUGC2025 = load_challenge("iugc2025")


def iugc(*args):
    return subprocess.run([sys.executable, "-m", "iugc", *args], capture_output=True, text=True, cwd=ROOT)


@pytest.fixture(scope="module")
def pointed(psfhs_dir, tmp_path_factory):
    """60 real frames imported, with landmarks derived from their expert masks."""
    root = tmp_path_factory.mktemp("landmarks")
    ids = [p.stem for p in real_mask_paths()][::11]
    import_dataset("png", link_frames(root / "src", ids=ids), root / "ds", progress=False)
    outcome = derive_landmarks(root / "ds", progress=False)
    assert len(outcome["derived"]) >= 55 and not outcome["annotated"]
    return root / "ds"


def _numpy_angle(vertex, a, b) -> float:
    """The angle at ``vertex`` by the dot product (the platform uses the law of cosines)."""
    u, v = np.subtract(a, vertex), np.subtract(b, vertex)
    return float(np.degrees(np.arccos(np.clip(u @ v / (np.linalg.norm(u) * np.linalg.norm(v)), -1, 1))))


def test_the_aop_from_derived_landmarks_is_the_contour_aop_of_the_same_mask(psfhs_dir):
    checked = 0
    for path in real_mask_paths()[::7]:
        mask = read_mask(path)
        points, contour = landmarks_from_mask(mask), contour_biometry(mask)
        if contour.aop is None:
            assert points is None
            continue
        assert aop_from_landmarks(points) == pytest.approx(contour.aop, abs=1e-9)
        assert _numpy_angle(points["PS2"], points["PS1"], points["FH1"]) == pytest.approx(contour.aop, abs=1e-6)
        checked += 1
    assert checked >= 80


def test_radial_errors_mre_and_aop_error_match_a_direct_numpy_computation(pointed, tmp_path):
    truth = {c.case_id: c.aop_landmarks.points() for c in load_manifest(pointed).cases if c.aop_landmarks}
    rng = np.random.default_rng(0)
    predicted = {case: {k: [x + rng.normal(0, 4), y + rng.normal(0, 4)] for k, (x, y) in pts.items()}
                 for case, pts in truth.items()}
    (tmp_path / "landmarks.json").write_text(json.dumps(predicted))
    result = evaluate_folder(tmp_path, pointed, IUGC2025, progress=False)
    assert set(result["cases"]) == set(truth) and result["aggregates"]["n_errors"] == 0
    expected_mre, expected_aop = [], []
    for case, pts in truth.items():
        got = result["cases"][case]
        errors = [float(np.linalg.norm(np.subtract(predicted[case][k], pts[k]))) for k in LANDMARKS]
        assert [got["re_ps1"], got["re_ps2"], got["re_fh1"]] == pytest.approx(errors, abs=1e-9)
        assert got["mre"] == pytest.approx(np.mean(errors), abs=1e-9)
        aop_pred = _numpy_angle(predicted[case]["PS2"], predicted[case]["PS1"], predicted[case]["FH1"])
        aop_gt = _numpy_angle(pts["PS2"], pts["PS1"], pts["FH1"])
        assert got["aop_error"] == pytest.approx(abs(aop_pred - aop_gt), abs=1e-6)
        expected_mre.append(np.mean(errors))
        expected_aop.append(abs(aop_pred - aop_gt))
    agg = result["aggregates"]
    assert agg["mre"] == pytest.approx(np.mean(expected_mre)) and agg["aop_error"] == pytest.approx(np.mean(expected_aop))
    assert agg["n_landmark_cases"] == len(truth) and "dice" not in agg and "hsd_error" not in agg
    expected_score = 0.5 * (1 - min(1, agg["mre"] / 100)) + 0.5 * (1 - min(1, agg["aop_error"] / 180))
    assert result["score"] == pytest.approx(expected_score)


BAD_ENTRIES = {
    "a coordinate that is not finite": ({"PS1": [float("nan"), 1], "PS2": [3, 4], "FH1": [5, 6]}, "finite"),
    "an infinite one": ({"PS1": [1, 2], "PS2": [float("inf"), 4], "FH1": [5, 6]}, "finite"),
    "a point far outside the frame": ({"PS1": [1, 2], "PS2": [3, 4], "FH1": [900, 6]}, "far outside"),
    "a missing key": ({"PS1": [1, 2], "PS2": [3, 4]}, "FH1 is missing"),
    "an extra key": ({"PS1": [1, 2], "PS2": [3, 4], "FH1": [5, 6], "FH2": [1, 1]}, "unknown keys"),
    "three coordinates": ({"PS1": [1, 2, 3], "PS2": [3, 4], "FH1": [5, 6]}, "two finite numbers"),
    "a string": ({"PS1": "1, 2", "PS2": [3, 4], "FH1": [5, 6]}, "two finite numbers"),
    "booleans": ({"PS1": [True, False], "PS2": [3, 4], "FH1": [5, 6]}, "two finite numbers"),
    "not an object": ([[1, 2], [3, 4], [5, 6]], "expected an object"),
}


@pytest.mark.parametrize("what", sorted(BAD_ENTRIES))
def test_each_malformed_entry_scores_its_case_worst_and_says_why(pointed, tmp_path, what):
    entry, words = BAD_ENTRIES[what]
    truth = {c.case_id: c.aop_landmarks.points() for c in load_manifest(pointed).cases if c.aop_landmarks}
    bad_case, good_case = sorted(truth)[:2]
    predicted = {good_case: {k: list(v) for k, v in truth[good_case].items()}, bad_case: entry}
    (tmp_path / "landmarks.json").write_text(json.dumps(predicted))
    result = evaluate_folder(tmp_path, pointed, IUGC2025, progress=False)
    bad, good = result["cases"][bad_case], result["cases"][good_case]
    assert words in bad["error"] and "invalid prediction" in bad["error"] and "Traceback" not in bad["error"]
    assert bad["mre"] == IUGC2025.worst_case.mre and bad["aop_error"] == IUGC2025.worst_case.aop_error
    assert good["error"] is None and good["mre"] == 0.0 and good["aop_error"] == 0.0
    missing = result["cases"][sorted(truth)[2]]
    assert missing["mre"] == IUGC2025.worst_case.mre and "missing prediction" in missing["error"]


@pytest.mark.parametrize("content", ["{not json", "[1, 2, 3]", ""])
def test_an_unreadable_landmarks_file_scores_every_case_worst_with_a_warning(pointed, tmp_path, content):
    (tmp_path / "landmarks.json").write_text(content)
    result = evaluate_folder(tmp_path, pointed, IUGC2025, progress=False)
    assert any("landmarks.json: unreadable" in w for w in result["warnings"])
    assert all(c["mre"] == IUGC2025.worst_case.mre for c in result["cases"].values())


def test_truth_without_landmarks_is_refused_with_the_command_that_adds_them(psfhs_dir, tmp_path):
    import_dataset("png", link_frames(tmp_path / "src", limit=3), tmp_path / "ds", progress=False)
    with pytest.raises(EvaluationInputError, match="iugc data landmarks"):
        evaluate_folder(tmp_path, tmp_path / "ds", IUGC2025, progress=False)


def test_landmark_results_rank_by_mean_rank_and_by_paired_tests(pointed, tmp_path):
    truth = {c.case_id: c.aop_landmarks.points() for c in load_manifest(pointed).cases if c.aop_landmarks}
    results = {}
    for team, noise in (("close", 1.0), ("far", 6.0)):
        rng = np.random.default_rng(1)
        folder = tmp_path / team
        folder.mkdir()
        (folder / "landmarks.json").write_text(json.dumps(
            {c: {k: [x + rng.normal(0, noise), y + rng.normal(0, noise)] for k, (x, y) in p.items()} for c, p in truth.items()}))
        results[team] = evaluate_folder(folder, pointed, IUGC2025, progress=False)
    rows = ranking.rank_teams(results, IUGC2025, "mean-rank")
    assert [r["team"] for r in rows] == ["close", "far"] and rows[0]["mean_rank"] == 1.0
    tested = ranking.test_then_rank(results, IUGC2025)
    assert [r["team"] for r in tested["rows"]] == ["close", "far"]
    assert tested["rows"][1]["significance_ranks"]["mre"] == 2


def _release(folder, rows, header="Filename,PS1,PS2,FH1", frames=("a.png", "b.png")):
    import cv2

    (folder / "frames").mkdir(parents=True)
    for name in frames:
        cv2.imwrite(str(folder / "frames" / name), np.full((100, 120), 80, np.uint8))
    (folder / "labels.csv").write_text(header + "\n" + "\n".join(rows) + "\n")
    return folder


def test_the_iugc2025_csv_reads_both_point_spellings(tmp_path):
    source = _release(tmp_path / "rel", ['a.png,"[10, 20]","[30.5, 40]","(50, 60)"', 'b.png,"(1,2)","(3,4)","[5,6]"'])
    manifest = import_dataset("iugc2025", source, tmp_path / "ds", progress=False)
    cases = manifest.by_id()
    assert cases["a"].aop_landmarks.points() == {"PS1": (10.0, 20.0), "PS2": (30.5, 40.0), "FH1": (50.0, 60.0)}
    assert cases["b"].aop_landmarks.FH1 == (5.0, 6.0) and not cases["b"].aop_landmarks.derived
    assert cases["a"].shape == (100, 120) and manifest.source_layout == "iugc2025"


@pytest.mark.parametrize("row, words", [
    ('a.png,"[10, 20]","[30, 40]","50, 60"', "not a point"),
    ('a.png,"[10, x]","[30, 40]","[50, 60]"', "two numbers"),
    ('a.png,"[10, nan]","[30, 40]","[50, 60]"', "not a finite number"),
    ('a.png,"[10, 20]","[30, 40]","[500, 60]"', "outside its 120 x 100 frame"),
    ('missing.png,"[10, 20]","[30, 40]","[50, 60]"', "not found"),
    ('b.png,"[10, 20]","[30, 40]","[50, 60]"\nb.png,"[1, 2]","[3, 4]","[5, 6]"', "again"),
    ('../x y.png,"[10, 20]","[30, 40]","[50, 60]"', "is not a frame file"),
])
def test_a_bad_csv_row_is_named_and_nothing_is_written(tmp_path, row, words):
    source = _release(tmp_path / "rel", [row])
    with pytest.raises(ImportProblems) as caught:
        import_dataset("iugc2025", source, tmp_path / "ds", progress=False)
    assert any(words in p and "labels.csv:" in p for p in caught.value.problems), caught.value.problems
    assert not (tmp_path / "ds").exists()


def test_a_csv_without_the_columns_or_two_csvs_are_refused(tmp_path):
    source = _release(tmp_path / "rel", ['a.png,1,2,3'], header="name,p1,p2,p3")
    with pytest.raises(ImportProblems, match="missing columns"):
        import_dataset("iugc2025", source, tmp_path / "ds", progress=False)
    (source / "more.csv").write_text("x\n")
    with pytest.raises(ImportProblems, match="expected one CSV"):
        import_dataset("iugc2025", source, tmp_path / "ds", progress=False)


def test_cli_import_and_derive_say_what_they_did_and_refuse_a_dataset_without_masks(psfhs_dir, tmp_path):
    source = _release(tmp_path / "rel", ['a.png,"[10, 20]","[30, 40]","[50, 60]"'], frames=("a.png",))
    run = iugc("data", "import", "--layout", "iugc2025", "--source", str(source), "--dest", str(tmp_path / "ds"))
    assert run.returncode == 0 and "1 with landmarks" in run.stdout, run.stderr
    refused = iugc("data", "landmarks", str(tmp_path / "ds"))
    assert refused.returncode == 1 and "no case has a mask" in refused.stderr and "Traceback" not in refused.stderr
    with pytest.raises(NoMasks):
        derive_landmarks(tmp_path / "ds", progress=False)
    import_dataset("png", link_frames(tmp_path / "src", limit=4), tmp_path / "real", progress=False)
    derived = iugc("data", "landmarks", str(tmp_path / "real"))
    assert derived.returncode == 0 and "derived from the masks for 4 cases" in derived.stdout


def test_a_landmarks_task_needs_the_landmarks_aop_method_and_no_masks():
    data = IUGC2025.model_dump()
    with pytest.raises(ValueError, match="aop_method 'landmarks'"):
        ChallengeDefinition.model_validate({**data, "aop_method": "contour"})
    with pytest.raises(ValueError, match="cannot also have a segmentation"):
        ChallengeDefinition.model_validate({**data, "tasks": ["landmarks", "segmentation"], "metrics": ["mre", "aop_error", "dice"]})
    psfhs = load_challenge("psfhs2023").model_dump()
    with pytest.raises(ValueError, match="aop_method 'landmarks'"):
        ChallengeDefinition.model_validate({**psfhs, "aop_method": "landmarks"})
    assert IUGC2025.phases[0].ranking_method == "mean-rank" and math.isclose(IUGC2025.worst_case.mre, 725.0)


def test_a_landmark_overlay_marks_each_point_in_its_colour(psfhs_dir):
    import cv2

    from iugc.leaderboard.web.overlays import EXPERT, PREDICTED, overlay_scale, render_overlay

    frame = cv2.imread(str(psfhs_dir / "images" / "03800.png"), cv2.IMREAD_GRAYSCALE)
    expert = landmarks_from_mask(read_mask(psfhs_dir / "masks" / "03800.png"))
    predicted = {k: (x + 12, y + 9) for k, (x, y) in expert.items()}
    image = cv2.imdecode(np.frombuffer(render_overlay(frame, predicted, expert, "landmarks"), np.uint8), cv2.IMREAD_COLOR)
    scale = overlay_scale(frame.shape)

    def near(point, colour: str) -> bool:
        bgr = np.array([int(colour[5:7], 16), int(colour[3:5], 16), int(colour[1:3], 16)])
        x, y = (int(round((v + 0.5) * scale)) for v in point)
        patch = image[y - 4:y + 5, x - 4:x + 5].reshape(-1, 3).astype(int)
        return bool((np.abs(patch - bgr).sum(axis=1) < 60).any())

    for name in LANDMARKS:
        assert near(predicted[name], PREDICTED) and near(expert[name], EXPERT), name
        assert not near(predicted[name], EXPERT), name  # 15 px apart: each colour only where its points are


def test_iugc_rank_and_its_report_take_landmark_results_unchanged(pointed, tmp_path):
    truth = {c.case_id: c.aop_landmarks.points() for c in load_manifest(pointed).cases if c.aop_landmarks}
    for team, noise in (("steady", 1.0), ("shaky", 5.0)):
        rng = np.random.default_rng(2)
        (tmp_path / team).mkdir()
        (tmp_path / team / "landmarks.json").write_text(json.dumps(
            {c: {k: [x + rng.normal(0, noise), y + rng.normal(0, noise)] for k, (x, y) in p.items()} for c, p in truth.items()}))
        run = iugc("evaluate", "--predictions", str(tmp_path / team), "--ground-truth", str(pointed), "--challenge", "iugc2025",
                   "--out", str(tmp_path / f"{team}.json"), "--quiet")
        assert run.returncode == 0, run.stderr
    run = iugc("rank", str(tmp_path / "steady.json"), str(tmp_path / "shaky.json"), "--method", "mean-rank",
               "--report", str(tmp_path / "report"))
    assert run.returncode == 0, run.stderr
    header, first, second = [line.split() for line in run.stdout.splitlines()[:3]]
    assert "mre" in header and "aop_error" in header and (first[1], second[1]) == ("steady", "shaky")
    mre = {json.loads((tmp_path / f"{t}.json").read_text())["aggregates"]["mre"] for t in ("steady", "shaky")}
    assert float(first[header.index("mre")]) == pytest.approx(min(mre), abs=1e-4)
    assert (tmp_path / "report" / "podium_mre.png").stat().st_size > 1000


def test_the_sandbox_keeps_only_checked_landmarks_and_names_each_bad_case(tmp_path):
    from iugc.sandbox.outputs import collect_outputs

    shapes = {"a": (100, 120), "b": (100, 120), "c": (100, 120), "d": (100, 120)}
    out = tmp_path / "out"
    out.mkdir()
    (out / "landmarks.json").write_text(json.dumps({
        "a": {"PS1": [1, 2], "PS2": [3, 4], "FH1": [5, 6]},
        "b": {"PS1": [1, 2], "PS2": [3, 4], "FH1": [500, 6]},
        "c": {"PS1": [1, 2], "PS2": [3, 4]},
        "zz": {"PS1": [1, 2], "PS2": [3, 4], "FH1": [5, 6]},
    }))
    (out / "a.png").write_bytes(b"stray")
    collected = collect_outputs(out, shapes, tmp_path / "clean", tasks=("landmarks",))
    assert json.loads((tmp_path / "clean" / "landmarks.json").read_text()) == {"a": {"PS1": [1.0, 2.0], "PS2": [3.0, 4.0], "FH1": [5.0, 6.0]}}
    assert collected.valid_predictions == 1 and set(collected.errors) == {"b", "c", "d"}
    assert "far outside" in collected.errors["b"] and "FH1 is missing" in collected.errors["c"] and "no entry" in collected.errors["d"]
    assert any("unknown case ids" in w and "zz" in w for w in collected.warnings)
    assert any("unexpected files" in w and "a.png" in w for w in collected.warnings)
    (out / "landmarks.json").unlink()
    (out / "landmarks.json").symlink_to(tmp_path / "clean" / "landmarks.json")  # a link is never followed
    linked = collect_outputs(out, shapes, tmp_path / "clean2", tasks=("landmarks",))
    assert linked.valid_predictions == 0 and all("a link" in e for e in linked.errors.values())


def test_the_site_shows_the_landmark_challenge_and_ranks_it_in_pixels_and_degrees(tmp_path):
    import html
    import re

    from iugc.submissions import accounts, challenges, db, queue, teams
    from iugc.submissions.uploads import submit
    from tests.web_support import ORGANIZER, open_site

    site_iter = open_site(tmp_path)
    site = next(site_iter)
    try:
        with db.transaction(site.sessions) as session:
            challenges.init_challenge(session, "iugc2025")
        page = html.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", site.client().get("/").get_data(as_text=True))))
        assert "IUGC 2025: landmarks and the angle of progression" in page
        assert "PS1, PS2 (the ends of the pubic symphysis' long axis)" in page
        assert "every landmark 725.0 px from its truth" in page
        for team, mre, aop in (("close", 4.0, 3.0), ("far", 12.0, 9.0)):
            with db.transaction(site.sessions) as session:
                user = accounts.create_user(session, f"{team}@example.org", "participant")
                teams.accept_terms(session, user, teams.create_team(session, user, team, "iugc2025").challenge_id)
                user_id = user.id
            with open(site.archive(), "rb") as stream:
                submit(site.sessions, site.storage, user_id, "iugc2025-sanity-check", stream)
            job = queue.claim_next(site.sessions, f"test:{team}")
            aggregates = {"re_ps1": mre, "re_ps2": mre, "re_fh1": mre, "mre": mre, "aop_error": aop, "n_cases": 3, "n_errors": 0}
            assert queue.finish(site.sessions, job, {"status": "succeeded", "aggregates": aggregates, "score": None, "cases": {}})
        board = site.client(ORGANIZER).get("/leaderboard/iugc2025-sanity-check").get_data(as_text=True)
        headers = [html.unescape(re.sub(r"<[^>]+>", "", h)).strip() for h in re.findall(r"<th[^>]*>(.*?)</th>", board, re.S)]
        assert {"MRE (px) ↓", "RE PS1 (px) ↓", "ΔAoP (°) ↓"} <= set(headers), headers
        assert not any(h.startswith("Dice") for h in headers)
        rows = re.findall(r"<tr[^>]*>(.*?)</tr>", board.split("<tbody>", 1)[1], re.S)
        assert ["close" in rows[0], "far" in rows[1]] == [True, True]  # mean rank: better on both metrics
    finally:
        next(site_iter, None)


def test_a_landmark_phase_refuses_a_dataset_without_landmark_truth(psfhs_dir, tmp_path):
    from iugc.submissions import challenges, db
    from iugc.submissions.exceptions import InvalidRequest
    from tests.web_support import open_site

    import_dataset("png", link_frames(tmp_path / "src", limit=3), tmp_path / "masks-only", progress=False)
    (tmp_path / "site").mkdir()
    site_iter = open_site(tmp_path / "site")
    site = next(site_iter)
    try:
        with db.transaction(site.sessions) as session:
            challenges.init_challenge(session, "iugc2025")
        with pytest.raises(InvalidRequest, match="no landmark truth .*`iugc data landmarks "):
            with db.transaction(site.sessions) as session:
                challenges.add_dataset(session, "iugc2025-validation", tmp_path / "masks-only")
        derive_landmarks(tmp_path / "masks-only", progress=False)
        with db.transaction(site.sessions) as session:
            assert challenges.add_dataset(session, "iugc2025-validation", tmp_path / "masks-only").n_cases == 3
    finally:
        next(site_iter, None)
