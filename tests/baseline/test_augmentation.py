"""Training augmentation: seeded, image and mask aligned, scan sectors, shading, anatomy
warps, and the standard-plane label of a frame that loses a structure."""

import cv2
import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="PyTorch is not installed (pip install -e '.[baseline]')")
pytest.importorskip("segmentation_models_pytorch", reason="segmentation-models-pytorch is not installed")


def test_augmentation_is_seeded_and_keeps_image_and_mask_aligned():
    from iugc.baseline.data import augment

    image = np.zeros((128, 128), np.float32)
    mask = np.zeros((128, 128), np.uint8)
    image[30:60, 40:70], mask[30:60, 40:70] = 1.0, 1
    for seed in range(20):
        a_img, a_mask = augment(image, mask, np.random.default_rng(seed))
        b_img, b_mask = augment(image, mask, np.random.default_rng(seed))
        assert np.array_equal(a_img, b_img) and np.array_equal(a_mask, b_mask)
        assert a_img.dtype == np.float32 and 0 <= a_img.min() and a_img.max() <= 1
        assert set(np.unique(a_mask).tolist()) <= {0, 1}
        if a_mask.any():  # the labelled square moved with the image: brighter inside than outside
            assert a_img[a_mask == 1].mean() > a_img[a_mask == 0].mean() + 0.2


def test_scan_sector_blacks_out_the_image_and_its_labels_alike():
    from iugc.baseline.data import _fan

    for seed in range(10):
        fan = _fan(256, 256, np.random.default_rng(seed))
        assert fan[60:160, 120:136].all()  # the scan axis below the apex stays
        assert not fan[0, 0] and not fan[0, -1]  # the top corners are outside any sector
        assert 0.25 < fan.mean() < 0.9


def test_head_shading_dims_one_side_of_the_head_and_nothing_far_from_it():
    from iugc.baseline.data import _shade_head

    image = np.full((128, 128), 0.5, np.float32)
    mask = np.zeros((128, 128), np.uint8)
    cv2.circle(mask, (64, 70), 30, 2, -1)
    far = cv2.dilate(mask, np.ones((33, 33), np.uint8)) == 0  # more than 16 px from the head
    for seed in range(20):
        shaded = _shade_head(image, mask, np.random.default_rng(seed))
        assert np.array_equal(shaded[far], image[far])
        assert (shaded <= image).all()
        head = shaded[mask == 2]
        assert (head < 0.4).mean() > 0.2, seed  # a good part of the head is dimmed ...
        assert (head > 0.49).mean() > 0.1, seed  # ... and a part of it is not
    no_head = np.where(mask == 2, 1, 0).astype(np.uint8)  # only PS: nothing to shade
    assert np.array_equal(_shade_head(image, no_head, np.random.default_rng(0)), image)


def test_an_augmented_frame_that_loses_a_structure_is_no_longer_standard(dataset):
    from iugc.baseline.data import FrameDataset

    ds = FrameDataset(dataset, ("train",), 64, augment=True, seed=0)
    seen = 0
    for epoch in range(6):
        ds.set_epoch(epoch)
        for index, case in enumerate(ds.cases):
            _, mask, label = ds[index]
            both = bool((mask == 1).any() and (mask == 2).any())
            if case.standard_plane:
                assert float(label) == float(both), (case.case_id, epoch)
                seen += not both
            else:
                assert float(label) == 0.0
    assert seen >= 1  # the geometry does push a structure out now and then


def test_anatomy_warp_moves_the_head_whole_and_leaves_the_symphysis(psfhs_dir):
    from iugc.baseline.data import anatomy_warp

    moved = 0
    for case_id in range(3744, 4402, 47):
        mask = cv2.imread(str(psfhs_dir / "masks" / f"{case_id:05d}.png"), cv2.IMREAD_UNCHANGED)
        image = mask.astype(np.float32) / 2  # the image is the mask: alignment is visible
        ps, fh = np.argwhere(mask == 1), np.argwhere(mask == 2)
        axis = fh.mean(0) - ps.mean(0)
        axis /= np.linalg.norm(axis)
        gap = ((fh - ps.mean(0)) @ axis).min() - ((ps - ps.mean(0)) @ axis).max()
        push = min(20.0, 2 * gap)
        w_image, w_mask = anatomy_warp(image, mask, push=20.0, ps_turn=0.0)
        assert np.array_equal(w_mask == 1, mask == 1), case_id  # the PS lies before the ramp: untouched
        head = np.argwhere(w_mask == 2)
        shift = (head.mean(0) - fh.mean(0)) @ axis
        assert abs(shift - push) < 1.0, (case_id, shift, push)  # moved as far as the cap allows ...
        assert abs(len(head) - len(fh)) < 0.02 * len(fh), case_id  # ... and whole
        assert (np.abs(w_image - w_mask / 2) < 0.26).mean() > 0.99  # image and labels moved together
        moved += push > 5
    assert moved >= 8


def test_anatomy_warp_turns_the_symphysis_and_not_the_head(psfhs_dir):
    from iugc.baseline.data import anatomy_warp

    def ps_axis_degrees(mask):
        _, _, angle = cv2.fitEllipse(cv2.findContours((mask == 1).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)[0][0])
        return angle

    for case_id in range(3744, 4402, 61):
        mask = cv2.imread(str(psfhs_dir / "masks" / f"{case_id:05d}.png"), cv2.IMREAD_UNCHANGED)
        for turn in (-15.0, 12.0):
            _, w_mask = anatomy_warp(mask.astype(np.float32), mask, push=0.0, ps_turn=turn)
            assert np.array_equal(w_mask == 2, mask == 2), case_id
            change = (ps_axis_degrees(w_mask) - ps_axis_degrees(mask) + 90) % 180 - 90
            assert abs(abs(change) - abs(turn)) < 4, (case_id, turn, change)
    only_head = np.where(mask == 2, 2, 0).astype(np.uint8)
    assert np.array_equal(anatomy_warp(only_head.astype(np.float32), only_head, 20.0, 10.0)[1], only_head)
