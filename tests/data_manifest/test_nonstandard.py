"""Non-standard planes generated from real frames, labelled from what stays visible."""
import subprocess
import sys

import numpy as np
import pytest

from iugc.challenge.labels import FH, PS
from iugc.data_manifest.importers import import_dataset
from iugc.data_manifest.io import read_image, read_mask
from iugc.data_manifest.manifest import load_manifest
from iugc.data_manifest.nonstandard import KINDS, MIX, VISIBLE_THRESHOLD, kinds_for, make_nonstandard
from iugc.data_manifest.verify import verify_dataset
from tests.conftest import ROOT, real_mask_paths


@pytest.fixture(scope="module")
def real_frames(psfhs_dir):
    paths = real_mask_paths()[::60]
    return [(read_image(psfhs_dir / "images" / p.name), read_mask(p)) for p in paths]


def test_mix_sums_to_one_and_kinds_follow_it():
    assert sum(MIX.values()) == pytest.approx(1.0)
    kinds = kinds_for(200, np.random.default_rng(0))
    assert len(kinds) == 200
    for kind, fraction in MIX.items():
        assert abs(kinds.count(kind) - fraction * 200) <= 1


@pytest.mark.parametrize("kind", KINDS)
def test_each_kind_misses_the_plane_on_real_frames(real_frames, kind):
    rng = np.random.default_rng(1)
    frames = [make_nonstandard(image, mask, rng, kind) for image, mask in real_frames]
    missed = sum(not f.standard_plane for f in frames)
    assert missed >= 0.9 * len(frames), f"{kind}: only {missed}/{len(frames)} non-standard"
    for frame, (image, _) in zip(frames, real_frames):
        assert frame.image.shape == image.shape and frame.image.dtype == np.uint8
        # the label is the IUGC rule applied to what is visible, and the mask agrees
        assert frame.standard_plane == all(v >= VISIBLE_THRESHOLD for v in frame.visible.values())
        for name, label in (("ps", PS), ("fh", FH)):
            assert np.any(frame.mask == label) == (frame.visible[name] >= VISIBLE_THRESHOLD)


def test_intended_structures_are_the_missing_ones(real_frames):
    rng = np.random.default_rng(2)
    for image, mask in real_frames:
        drop_ps = make_nonstandard(image, mask, rng, "drop_ps")
        assert drop_ps.visible["ps"] < VISIBLE_THRESHOLD <= drop_ps.visible["fh"]
        shadow = make_nonstandard(image, mask, rng, "shadow_fh")
        assert shadow.visible["fh"] < VISIBLE_THRESHOLD
        hidden = (mask == FH) & (shadow.mask != FH)
        assert shadow.image[hidden].mean() < 0.5 * image[hidden].mean()


def test_lift_off_is_dark_and_empty(real_frames):
    image, mask = real_frames[0]
    frame = make_nonstandard(image, mask, np.random.default_rng(3), "lift_off")
    assert not frame.mask.any() and frame.image.mean() < 0.3 * image.mean()


def test_reproducible_with_a_seed(real_frames):
    image, mask = real_frames[1]
    a = make_nonstandard(image, mask, np.random.default_rng(7), "drop_both")
    b = make_nonstandard(image, mask, np.random.default_rng(7), "drop_both")
    assert np.array_equal(a.image, b.image) and np.array_equal(a.mask, b.mask)


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="both structures"):
        make_nonstandard(np.zeros((8, 8), np.uint8), np.zeros((8, 8), np.uint8), np.random.default_rng(0), "drop_ps")
    with pytest.raises(ValueError, match="unknown kind"):
        make_nonstandard(np.zeros((8, 8), np.uint8), np.zeros((8, 8), np.uint8), np.random.default_rng(0), "nope")


def test_cli_adds_labelled_frames_keeping_splits(psfhs_dir, tmp_path):
    src = tmp_path / "src"
    import_dataset("psfhs", psfhs_dir / "release_sample", src, progress=False)
    split = subprocess.run([sys.executable, "-m", "iugc", "data", "split", str(src), "--blocks", "train=03744-03769,validation=03770-03783"],
                           capture_output=True, text=True, cwd=ROOT)
    assert split.returncode == 0, split.stderr
    run = subprocess.run([sys.executable, "-m", "iugc", "data", "nonstandard", "--source", str(src), "--dest", str(tmp_path / "ns"),
                          "--per-frame", "0.5"], capture_output=True, text=True, cwd=ROOT)
    assert run.returncode == 0, run.stderr
    manifest = load_manifest(tmp_path / "ns")
    by_id = manifest.by_id()
    generated = [c for c in manifest.cases if "_ns" in c.case_id]
    assert len(manifest.cases) == 60 and len(generated) == 20
    assert all(by_id[c.case_id].standard_plane for c in manifest.cases if "_ns" not in c.case_id)
    assert sum(not c.standard_plane for c in generated) >= 18
    for case in generated:
        assert case.split == by_id[case.case_id.split("_ns")[0]].split
    assert verify_dataset(tmp_path / "ns") == []
    # Sources are spread over the dataset, so the validation block gets its share too
    # (the first 20 ids are all training frames: taking sources in id order would starve it).
    per_split = {s: sum(c.split == s for c in generated) for s in ("train", "validation")}
    assert per_split["validation"] >= 3 and per_split["train"] >= 10, per_split
