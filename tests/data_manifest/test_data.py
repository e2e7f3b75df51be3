"""Importers, manifests, verification, splits and phantoms."""
import json
import subprocess
import sys

import cv2
import numpy as np
import pytest

from iugc.data_manifest.importers import ImportProblems, import_dataset
from iugc.common.files import sha256_file, staged_folder
from iugc.data_manifest.io import read_image, read_mask
from iugc.data_manifest.manifest import load_manifest, write_manifest
from iugc.data_manifest.phantom import phantom_frame, write_phantom_dataset, write_phantom_iugc2024
from iugc.data_manifest.split import parse_blocks, split_by_blocks, split_by_video
from iugc.data_manifest.verify import verify_dataset
from tests.conftest import ROOT


def iugc(*args):
    return subprocess.run([sys.executable, "-m", "iugc", *map(str, args)], capture_output=True, text=True, cwd=ROOT)


def test_psfhs_release_import_matches_the_png_copy(psfhs_dir, tmp_path):
    dest = tmp_path / "ds"
    run = iugc("data", "import", "--layout", "psfhs", "--source", psfhs_dir / "release_sample", "--dest", dest)
    assert run.returncode == 0, run.stderr
    manifest = load_manifest(dest)
    assert len(manifest.cases) == 40 and manifest.cases[0].case_id == "03744"
    for case in manifest.cases:
        assert case.shape == (256, 256) and set(case.structures) == {"ps", "fh"}
        assert np.array_equal(read_image(dest / case.image), read_image(psfhs_dir / "images" / f"{case.case_id}.png"))
        assert np.array_equal(read_mask(dest / case.mask), read_mask(psfhs_dir / "masks" / f"{case.case_id}.png"))
        assert case.image_sha256 == sha256_file(dest / case.image)
    assert verify_dataset(dest) == []
    assert iugc("data", "verify", dest).returncode == 0


def test_png_import_with_raw_labels_and_an_unlabelled_frame(tmp_path):
    src = tmp_path / "src"
    (src / "images").mkdir(parents=True)
    (src / "masks").mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        frame, mask = phantom_frame(rng, 64)
        cv2.imwrite(str(src / "images" / f"c{i}.png"), frame)
        if i < 2:
            cv2.imwrite(str(src / "masks" / f"c{i}.png"), np.choose(mask, [0, 7, 8]).astype(np.uint8))
    manifest = import_dataset("png", src, tmp_path / "ds", progress=False)
    by_id = manifest.by_id()
    assert by_id["c2"].mask is None and by_id["c0"].mask == "masks/c0.png"
    assert set(np.unique(read_mask(tmp_path / "ds" / "masks" / "c0.png"))) <= {0, 1, 2}


def test_bad_source_files_are_all_listed_and_nothing_is_written(tmp_path):
    src = tmp_path / "src"
    (src / "images").mkdir(parents=True)
    (src / "masks").mkdir()
    for i in range(4):
        cv2.imwrite(str(src / "images" / f"c{i}.png"), np.zeros((32, 32), np.uint8))
    cv2.imwrite(str(src / "masks" / "c0.png"), np.zeros((32, 32), np.uint8))
    cv2.imwrite(str(src / "masks" / "c1.png"), np.full((32, 32), 4, np.uint8))  # label outside schema
    cv2.imwrite(str(src / "masks" / "c2.png"), np.zeros((16, 32), np.uint8))  # wrong shape
    (src / "masks" / "c3.png").write_bytes(b"garbage")
    dest = tmp_path / "ds"
    with pytest.raises(ImportProblems) as info:
        import_dataset("png", src, dest, progress=False)
    text = "\n".join(info.value.problems)
    assert "c1.png" in text and "label 4 is outside the schema" in text
    assert "c2.png" in text and "(16, 32)" in text
    assert "c3.png" in text and "decodable" in text
    assert not dest.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".ds.partial")]
    run = iugc("data", "import", "--layout", "png", "--source", src, "--dest", dest)
    assert run.returncode != 0 and "nothing was written" in run.stderr and "c1.png" in run.stderr


def test_import_refuses_a_non_empty_destination(tmp_path):
    (tmp_path / "ds").mkdir()
    (tmp_path / "ds" / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError):
        import_dataset("png", tmp_path, tmp_path / "ds", progress=False)
    assert (tmp_path / "ds" / "keep.txt").read_text() == "mine"


def test_iugc2024_layout_round_trip(tmp_path):
    raw = tmp_path / "raw"
    write_phantom_iugc2024(raw, n_videos=2, frames_per_video=6, seed=1, size=128)
    run = iugc("data", "import", "--layout", "iugc2024", "--source", raw, "--dest", tmp_path / "ds")
    assert run.returncode == 0, run.stderr
    manifest = load_manifest(tmp_path / "ds")
    assert len(manifest.cases) == 12
    assert {c.video for c in manifest.cases} == {"synthetic00", "synthetic01"}
    labels = {(r["video"], int(r["frame"])): r["label"] for r in _csv(raw / "classification.csv")}
    landmarks = json.loads((raw / "landmark.json").read_text())
    for case in manifest.cases:
        assert case.case_id == f"{case.video}_{case.frame_index:04d}"
        assert case.standard_plane == (labels[(case.video, case.frame_index)] == "1")
        raw_mask = cv2.imread(str(raw / "seg" / case.video / f"{case.frame_index}.png"), cv2.IMREAD_UNCHANGED)
        mask = read_mask(tmp_path / "ds" / case.mask)
        assert np.array_equal(mask == 1, raw_mask == 7) and np.array_equal(mask == 2, raw_mask == 8)
        assert case.landmarks == landmarks.get(case.case_id)
    assert verify_dataset(tmp_path / "ds") == []


def _csv(path):
    import csv

    with open(path) as fh:
        return list(csv.DictReader(fh))


def test_verify_reports_each_bad_file(tmp_path):
    ds = tmp_path / "ds"
    manifest = write_phantom_dataset(ds, 6, seed=0, size=64)
    cases = manifest.cases
    (ds / cases[0].image).write_bytes(b"tampered")
    cv2.imwrite(str(ds / cases[1].mask), np.full(cases[1].shape, 3, np.uint8))
    (ds / cases[2].mask).unlink()
    cv2.imwrite(str(ds / "images" / "stray.png"), np.zeros((4, 4), np.uint8))
    problems = verify_dataset(ds)
    text = "\n".join(problems)
    assert len(problems) == 4, text
    assert f"{cases[0].case_id}.png: sha256" in text
    assert f"{cases[1].case_id}.png: sha256" in text  # rewritten file: caught by its checksum
    assert f"{cases[2].case_id}.png: mask listed in the manifest is missing" in text
    assert "stray.png: not listed" in text
    run = iugc("data", "verify", ds)
    assert run.returncode == 1 and "4 problem(s)" in run.stderr


def test_verify_catches_labels_outside_the_schema_even_with_matching_checksum(tmp_path):
    ds = tmp_path / "ds"
    manifest = write_phantom_dataset(ds, 2, seed=0, size=64)
    case = manifest.cases[0]
    cv2.imwrite(str(ds / case.mask), np.full(case.shape, 7, np.uint8))
    case.mask_sha256 = sha256_file(ds / case.mask)
    write_manifest(ds, manifest)
    assert any("labels [7]" in p for p in verify_dataset(ds))


def test_block_split_is_contiguous_and_cli_writes_it(psfhs_dir, tmp_path):
    ds = tmp_path / "ds"
    import_dataset("psfhs", psfhs_dir / "release_sample", ds, progress=False)
    run = iugc("data", "split", ds, "--blocks", "train=03744-03769,validation=03770-03783")
    assert run.returncode == 0, run.stderr
    splits = [c.split for c in sorted(load_manifest(ds).cases, key=lambda c: c.case_id)]
    assert splits == ["train"] * 26 + ["validation"] * 14
    assert iugc("data", "verify", ds).returncode == 0


def test_block_split_refuses_overlaps_and_bad_syntax():
    with pytest.raises(ValueError, match="expected SPLIT=FIRST-LAST"):
        parse_blocks("train:1-5")
    manifest = write_phantom_dataset.__globals__["Manifest"](name="x", source_layout="png", cases=[])
    with pytest.raises(ValueError, match="overlap"):
        split_by_blocks(manifest, {"train": [("1", "5")], "validation": [("5", "9")]})


def test_block_split_joins_blocks_and_generated_frames_follow_their_source(psfhs_dir, tmp_path):
    from iugc.data_manifest.nonstandard import generate_nonstandard_dataset

    src = tmp_path / "src"
    import_dataset("psfhs", psfhs_dir / "release_sample", src, progress=False)
    generate_nonstandard_dataset(src, tmp_path / "ns", per_frame=0.5, seed=0, progress=False)
    ns = tmp_path / "ns"
    run = iugc("data", "split", ns, "--blocks", "train=03744-03759+03770-03783,validation=03760-03769")
    assert run.returncode == 0, run.stderr
    by_id = load_manifest(ns).by_id()
    expected = lambda i: "validation" if 3760 <= int(i) <= 3769 else "train"  # noqa: E731
    generated = [c for c in by_id.values() if "_ns" in c.case_id]
    assert len(generated) == 20
    for case in by_id.values():
        source = case.case_id.split("_ns")[0]
        assert case.split == expected(source), case.case_id
    assert {c.split for c in generated} == {"train", "validation"}


@pytest.mark.parametrize("args, message", [
    (["--blocks", "train=03744-03769"], "14 of 40 cases fall in no block"),
    (["--blocks", "train=03769-03744,validation=03770-03783"], "reversed"),
    (["--blocks", "train=03744-03783,validation=09000-09001"], "split 'validation' gets no case"),
    (["--blocks", "train=03744-03760,train=03761-03783"], "named twice"),
])
def test_a_split_that_loses_cases_is_refused_and_writes_nothing(psfhs_dir, tmp_path, args, message):
    ds = tmp_path / "ds"
    import_dataset("psfhs", psfhs_dir / "release_sample", ds, progress=False)
    before = (ds / "manifest.json").read_bytes()
    run = iugc("data", "split", ds, *args)
    assert run.returncode != 0 and message in run.stderr, run.stderr
    assert "Traceback" not in run.stderr
    assert (ds / "manifest.json").read_bytes() == before


def test_allow_unassigned_writes_a_partial_split(psfhs_dir, tmp_path):
    ds = tmp_path / "ds"
    import_dataset("psfhs", psfhs_dir / "release_sample", ds, progress=False)
    run = iugc("data", "split", ds, "--blocks", "train=03744-03769", "--allow-unassigned")
    assert run.returncode == 0, run.stderr
    splits = [c.split for c in sorted(load_manifest(ds).cases, key=lambda c: c.case_id)]
    assert splits == ["train"] * 26 + ["unassigned"] * 14


def test_a_video_split_with_an_empty_side_is_refused(tmp_path):
    raw = tmp_path / "raw"
    write_phantom_iugc2024(raw, n_videos=2, frames_per_video=2, seed=2, size=64)
    ds = tmp_path / "ds"
    import_dataset("iugc2024", raw, ds, progress=False)
    before = (ds / "manifest.json").read_bytes()
    run = iugc("data", "split", ds, "--by-video", "train=0.8,validation=0.2")
    assert run.returncode != 0 and "split 'validation' gets no case" in run.stderr, run.stderr
    assert (ds / "manifest.json").read_bytes() == before
    bad = iugc("data", "split", ds, "--by-video", "train=0.5,valid=0.5")
    assert bad.returncode != 0 and "unknown split 'valid'" in bad.stderr, bad.stderr


def test_video_split_never_straddles_a_video(tmp_path):
    raw = tmp_path / "raw"
    write_phantom_iugc2024(raw, n_videos=5, frames_per_video=3, seed=2, size=64)
    manifest = import_dataset("iugc2024", raw, tmp_path / "ds", progress=False)
    split = split_by_video(manifest, {"train": 0.6, "validation": 0.4}, seed=1)
    per_video = {}
    for case in split.cases:
        per_video.setdefault(case.video, set()).add(case.split)
    assert all(len(s) == 1 for s in per_video.values())
    assert sorted(len([v for v, s in per_video.items() if k in s]) for k in ("train", "validation")) == [2, 3]
    with pytest.raises(ValueError, match="no video id"):
        split_by_video(write_phantom_dataset(tmp_path / "p", 2, size=64), {"train": 1.0})


def test_phantoms_are_reproducible_labelled_and_synthetic(tmp_path):
    a = write_phantom_dataset(tmp_path / "a", 12, seed=5, size=96, nonstandard_fraction=0.5)
    b = write_phantom_dataset(tmp_path / "b", 12, seed=5, size=96, nonstandard_fraction=0.5)
    assert [c.image_sha256 for c in a.cases] == [c.image_sha256 for c in b.cases]
    assert a.synthetic and "SYNTHETIC" in a.description
    assert all("SYNTHETIC" in c.source for c in a.cases)
    for case in a.cases:
        both = set(case.structures) == {"ps", "fh"}
        assert case.standard_plane == both, case
    assert sum(c.standard_plane for c in a.cases) == 6
    run = iugc("data", "phantom", "--dest", tmp_path / "c", "--cases", "3", "--size", "64")
    assert run.returncode == 0 and "SYNTHETIC" in run.stdout


def test_staged_folder_appears_whole_or_not_at_all(tmp_path):
    dest = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        with staged_folder(dest) as folder:
            (folder / "half.txt").write_text("half")
            raise KeyboardInterrupt
    assert not dest.exists() and list(tmp_path.iterdir()) == []  # no staging folder left either
    dest.mkdir()  # an empty folder may be filled ...
    with staged_folder(dest) as folder:
        (folder / "whole.txt").write_text("whole")
    assert [p.name for p in dest.iterdir()] == ["whole.txt"] and len(list(tmp_path.iterdir())) == 1
    with pytest.raises(OSError):  # ... a filled one is never replaced
        with staged_folder(dest) as folder:
            (folder / "other.txt").write_text("other")
    assert [p.name for p in dest.iterdir()] == ["whole.txt"] and len(list(tmp_path.iterdir())) == 1
