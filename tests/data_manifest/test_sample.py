"""`iugc data sample`: the public sample cases teams run `iugc kit check` on (issue 20)."""
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from iugc.data_manifest.importers import import_dataset
from iugc.data_manifest.io import read_image, read_mask
from iugc.data_manifest.manifest import load_manifest
from iugc.data_manifest.phantom import write_phantom_dataset
from iugc.data_manifest.sample import pick_cases, write_sample
from tests.conftest import ROOT


def iugc(*args):
    return subprocess.run([sys.executable, "-m", "iugc", *map(str, args)], capture_output=True, text=True, cwd=ROOT)


@pytest.fixture(scope="module")
def release(psfhs_dir, tmp_path_factory):
    """The 40 real frames of the release sample (03744-03783), imported."""
    dest = tmp_path_factory.mktemp("release") / "ds"
    import_dataset("psfhs", psfhs_dir / "release_sample", dest, progress=False)
    return dest


def test_real_cases_are_spread_over_the_ids_and_copied_as_they_are(release, tmp_path):
    run = iugc("data", "sample", "--from", release, "--dest", tmp_path / "s", "--cases", 5)
    assert run.returncode == 0, run.stderr
    assert "5 real cases" in run.stdout
    sample = load_manifest(tmp_path / "s")
    # 40 sorted ids, 5 evenly spread: positions 0, 9.75, 19.5, 29.25, 39 rounded
    assert [c.case_id for c in sample.cases] == ["03744", "03754", "03764", "03773", "03783"]
    assert sample.synthetic is False
    for case in sample.cases:
        assert np.array_equal(read_image(tmp_path / "s" / case.image), read_image(release / "images" / f"{case.case_id}.png"))
        assert np.array_equal(read_mask(tmp_path / "s" / case.mask), read_mask(release / "masks" / f"{case.case_id}.png"))
        # the release has no plane labels; both structures are visible, so the IUGC rule says standard
        assert case.structures == ("ps", "fh") and case.standard_plane is True


def test_both_plane_labels_are_kept_in_proportion(tmp_path):
    source = write_phantom_dataset(tmp_path / "src", 20, seed=3, nonstandard_fraction=0.25)
    labels = {c.case_id: c.standard_plane for c in source.cases}
    assert sum(not v for v in labels.values()) == 5
    sample = write_sample(tmp_path / "s", 8, source=tmp_path / "src")
    picked = {c.case_id: c.standard_plane for c in sample.cases}
    assert len(picked) == 8 and all(labels[k] == v for k, v in picked.items())
    assert sum(not v for v in picked.values()) == 2  # 8 * 5/20
    assert sample.synthetic is True  # a sample of phantoms stays marked SYNTHETIC


def test_a_rare_label_is_not_rounded_away(tmp_path):
    source = write_phantom_dataset(tmp_path / "src", 30, seed=1, nonstandard_fraction=0.04)  # 1 of 30
    (rare,) = [c for c in source.cases if not c.standard_plane]
    assert rare.case_id in {c.case_id for c in pick_cases(source.cases, 5)}


def test_without_a_source_the_cases_are_phantoms_marked_synthetic(tmp_path):
    run = iugc("data", "sample", "--dest", tmp_path / "s", "--cases", 6)
    assert run.returncode == 0, run.stderr
    assert "SYNTHETIC" in run.stdout
    manifest = json.loads((tmp_path / "s" / "manifest.json").read_text())
    assert manifest["synthetic"] is True and len(manifest["cases"]) == 6


def test_bad_requests_write_nothing(release, tmp_path):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    run = iugc("data", "sample", "--from", release, "--dest", tmp_path / "full", "--cases", 3)
    assert run.returncode == 1 and "not empty" in run.stderr
    assert [p.name for p in (tmp_path / "full").iterdir()] == ["keep.txt"]
    for args, code, words in (([release, "--cases", 0], 2, "Invalid value for '--cases': 0 is not in the range 1<=x<=100000"),
                              ([tmp_path / "nowhere", "--cases", 3], 1, "no manifest")):
        run = iugc("data", "sample", "--from", *args[:1], "--dest", tmp_path / "new", *args[1:])
        assert run.returncode == code and words in run.stderr, run.stderr
        assert len([line for line in run.stderr.splitlines() if line.startswith("Error:")]) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["full"]  # no dest, no staging folder left


def test_clips_of_the_sampled_cases_come_along(tmp_path):
    from iugc.data_manifest.phantom import write_phantom_iugc2024

    write_phantom_iugc2024(tmp_path / "raw", 3, 4, seed=0, size=128)
    import_dataset("iugc2024", tmp_path / "raw", tmp_path / "ds", progress=False)
    shutil.copytree(tmp_path / "raw" / "videos", tmp_path / "ds" / "videos")  # clips beside the frames, where evaluate-image looks
    sample = write_sample(tmp_path / "s", 2, source=tmp_path / "ds")
    videos = {c.video for c in sample.cases}
    assert all(videos) and sorted(p.stem for p in (tmp_path / "s" / "videos").iterdir()) == sorted(videos)
    for video in videos:
        assert (tmp_path / "s" / "videos" / f"{video}.avi").read_bytes() == (tmp_path / "ds" / "videos" / f"{video}.avi").read_bytes()
