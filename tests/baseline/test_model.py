"""The network and what prediction does to its output: masks and the standard-plane logit,
post-processing (components, holes, ellipses, completion), p(standard plane), smoothing,
frame standardisation, style noise, boundary weights."""

import cv2
import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="PyTorch is not installed (pip install -e '.[baseline]')")
pytest.importorskip("segmentation_models_pytorch", reason="segmentation-models-pytorch is not installed")

from iugc.baseline.model import BaselineNet  # noqa: E402
from iugc.baseline.postprocess import postprocess  # noqa: E402


def _confident_logits(masks):
    """Confident, correct logits (N, 3, H, W) for int64 masks (N, H, W)."""
    return torch.nn.functional.one_hot(masks, 3).permute(0, 3, 1, 2).float() * 10.0


def _to_network(frame, size):
    """What prediction feeds the network, for a frame already at the network size: an
    oracle with SciPy (the default smoothing, sigma 1, mirrored edges)."""
    from scipy.ndimage import gaussian_filter

    assert frame.shape == (size, size)
    return gaussian_filter(frame.astype(np.float32) / 255, 1.0, mode="reflect", truncate=4.0)


def test_model_outputs_masks_and_a_standard_logit():
    net = BaselineNet("resnet18", encoder_depth=3, decoder_channels=(16, 8, 4))
    masks, standard = net(torch.zeros(3, 1, 32, 32))
    assert masks.shape == (3, 3, 32, 32) and standard.shape == (3,)
    with pytest.raises(ValueError, match="3 entries"):
        BaselineNet("resnet18", encoder_depth=3, decoder_channels=(16, 8))


def test_postprocess_keeps_largest_component_and_fills_holes():
    m = np.zeros((20, 20), np.uint8)
    m[2:10, 2:10] = 2
    m[5, 5] = 0  # a hole
    m[15:17, 15:17] = 2  # a stray blob
    out = postprocess(m)
    assert out[5, 5] == 2 and out[15, 15] == 0 and out[3, 3] == 2
    assert postprocess(m, largest=False, holes=False, ellipse=False).tolist() == m.tolist()


def test_ellipse_head_restores_a_notched_head_and_leaves_the_rest():
    from iugc.baseline.postprocess import ellipse_head

    rng = np.random.default_rng(0)
    for _ in range(20):
        truth = np.zeros((256, 256), np.uint8)
        centre = (int(rng.integers(100, 156)), int(rng.integers(110, 150)))
        axes = (int(rng.integers(40, 70)), int(rng.integers(40, 70)))
        cv2.ellipse(truth, centre, axes, float(rng.uniform(0, 180)), 0, 360, 2, -1)
        truth[20:40, 100:150] = 1  # a PS above the head
        damaged = truth.copy()  # a faint stretch of skull: a wedge of the head missed
        start = float(rng.uniform(0, 360))
        cv2.ellipse(damaged, centre, (axes[0] + 5, axes[1] + 5), 0.0, start, start + 50, 0, -1)
        damaged[truth == 1] = 1

        def head_dice(m, truth=truth):
            return 2 * ((m == 2) & (truth == 2)).sum() / ((m == 2).sum() + (truth == 2).sum())

        fixed = ellipse_head(damaged)
        assert head_dice(fixed) > max(0.96, head_dice(damaged) + 0.04)
        assert np.array_equal(fixed == 1, truth == 1)  # PS untouched
    no_head = np.where(truth == 1, 1, 0).astype(np.uint8)
    assert np.array_equal(ellipse_head(no_head), no_head)


def test_ellipse_symphysis_restores_a_bitten_symphysis_and_leaves_the_head():
    from iugc.baseline.postprocess import ellipse_structure

    rng = np.random.default_rng(1)
    for _ in range(20):
        truth = np.zeros((256, 256), np.uint8)
        centre, axes = (int(rng.integers(90, 166)), int(rng.integers(50, 70))), (int(rng.integers(22, 32)), int(rng.integers(9, 14)))
        angle = float(rng.uniform(0, 180))
        cv2.ellipse(truth, centre, axes, angle, 0, 360, 1, -1)  # an elongated symphysis
        truth[160:220, 60:200] = 2  # a block of head below it
        damaged = truth.copy()  # a faint stretch of outline: a bite out of one side, 0.8 of the short half-axis deep
        t, a = rng.uniform(0, 2 * np.pi), np.radians(angle)
        x, y = axes[0] * np.cos(t), axes[1] * np.sin(t)
        side = (int(round(centre[0] + x * np.cos(a) - y * np.sin(a))), int(round(centre[1] + x * np.sin(a) + y * np.cos(a))))
        cv2.circle(damaged, side, int(0.8 * min(axes)), 0, -1)
        damaged[truth == 2] = 2

        def ps_dice(m, truth=truth):
            return 2 * ((m == 1) & (truth == 1)).sum() / ((m == 1).sum() + (truth == 1).sum())

        fixed = ellipse_structure(damaged, 1)
        assert ps_dice(fixed) > max(0.92, ps_dice(damaged))
        assert np.array_equal(fixed == 2, truth == 2)  # the head untouched
    no_ps = np.where(truth == 2, 2, 0).astype(np.uint8)
    assert np.array_equal(ellipse_structure(no_ps, 1), no_ps)


def test_postprocess_turns_the_symphysis_into_an_ellipse_unless_switched_off():
    m = np.zeros((64, 64), np.uint8)
    m[10:20, 10:40] = 1  # a rectangle of symphysis: its ellipse differs at the corners
    m[35:60, 20:50] = 2
    assert np.array_equal(postprocess(m, ellipse=False, ellipse_ps=False) == 1, m == 1)
    rounded = postprocess(m, ellipse=False)
    assert rounded[10, 10] == 0 and rounded[15, 25] == 1
    assert np.array_equal(rounded == 2, m == 2)


def test_frame_standardisation_makes_the_network_blind_to_gain_and_offset():
    torch.manual_seed(0)
    net = BaselineNet("resnet18", encoder_depth=3, decoder_channels=(16, 8, 4)).eval()
    raw = BaselineNet("resnet18", encoder_depth=3, decoder_channels=(16, 8, 4), input_norm="none").eval()
    raw.load_state_dict(net.state_dict())
    x = torch.rand(2, 1, 64, 64) * 0.5
    with torch.no_grad():
        normalised = (net(x)[0] - net(1.6 * x + 0.2)[0]).abs().max()
        unnormalised = (raw(x)[0] - raw(1.6 * x + 0.2)[0]).abs().max()
    assert normalised < 0.05 and unnormalised > 20 * normalised
    with pytest.raises(ValueError, match="input_norm"):
        BaselineNet("resnet18", encoder_depth=3, decoder_channels=(16, 8, 4), input_norm="batch")


def test_a_structure_the_argmax_missed_is_completed_only_where_the_head_sees_a_standard_plane():
    from iugc.baseline.postprocess import STANDARD, Steps, finish

    probs = np.zeros((3, 64, 64), np.float32)
    probs[0] = 0.7
    probs[1] = 0.1
    probs[1, 10:20, 20:40] = 0.4  # the PS is likely here, but never the argmax
    probs[1, 50:52, 5:7] = 0.35  # a smaller, separate likely patch: not taken
    probs[2, 30:60, 20:50] = 0.9  # the head wins the argmax
    probs[0, 30:60, 20:50] = 0.05
    completed, p = finish(probs, STANDARD, (128, 128), Steps(ellipse=False, ellipse_ps=False))
    ps = completed == 1
    assert ps[20:40, 40:80].all() and ps.sum() == 20 * 40  # the PS region, at the frame's size
    assert (completed == 2).sum() == 60 * 60  # the head untouched
    assert p == STANDARD  # the head's: p(standard plane)'s default source
    _, mean = finish(probs, STANDARD, (128, 128), Steps(ellipse=False, ellipse_ps=False, standard_from="mean"))
    assert mean == pytest.approx((0.4 + STANDARD) / 2)  # the segmentation's 0.4 (the PS is never the argmax) and the head's
    assert not (finish(probs, STANDARD - 0.01, (128, 128))[0] == 1).any()  # not a standard plane: left missing
    assert not (finish(probs, 0.99, (128, 128), Steps(complete=False))[0] == 1).any()  # switched off
    with pytest.raises(ValueError, match=r"\(3, H, W\).*\(2, 64, 64\)"):
        from iugc.baseline.postprocess import complete_structures

        complete_structures(np.zeros((64, 64), np.uint8), probs[:2])


def test_p_standard_comes_from_the_head_the_iugc_rule_on_the_segmentation_or_their_mean():
    from iugc.baseline.postprocess import Steps, finish, standard_probability

    probs = np.zeros((3, 32, 32), np.float32)
    probs[0] = 1.0
    probs[:, 2:6, 10:20] = np.array([0.2, 0.8, 0.0])[:, None, None]  # a symphysis, p(PS) 0.8
    probs[:, 15:30, 5:25] = np.array([0.4, 0.0, 0.6])[:, None, None]  # a head, p(FH) 0.6
    assert standard_probability(probs, 0.1, "segmentation") == pytest.approx(0.6)  # the weaker structure decides
    assert standard_probability(probs, 0.1, "head") == pytest.approx(0.1)
    assert standard_probability(probs, 0.1, "mean") == pytest.approx(0.35)
    assert standard_probability(probs, 0.1) == pytest.approx(0.1)  # the default: the head
    no_head = probs.copy()
    no_head[:, 15:30, 5:25] = np.array([0.7, 0.0, 0.3])[:, None, None]  # the head never the argmax
    assert standard_probability(no_head, 0.9, "segmentation") == pytest.approx(0.3)  # below 0.5: not standard
    # the source changes what is reported, never the mask
    reported = {source: finish(no_head, 0.9, (64, 64), Steps(standard_from=source)) for source in ("mean", "segmentation", "head")}
    assert all((mask == reported["head"][0]).all() for mask, _ in reported.values())
    assert [p for _, p in reported.values()] == [pytest.approx(0.6), pytest.approx(0.3), 0.9]
    assert finish(no_head, 0.9, (64, 64))[1] == 0.9  # prediction's default: the head
    with pytest.raises(ValueError, match="standard_from must be one of .*'both'"):
        Steps(standard_from="both")
    with pytest.raises(ValueError, match=r"\(3, H, W\) softmax: got shape \(32, 32\)"):
        standard_probability(probs[0], 0.5)


def test_boundary_band_is_the_pixels_near_a_label_edge():
    from iugc.baseline.train import boundary_band

    mask = np.zeros((40, 50), np.uint8)
    cv2.circle(mask, (20, 20), 9, 2, -1)
    mask[30:36, 5:45] = 1
    kernel = np.ones((5, 5), np.uint8)
    expected = np.zeros(mask.shape, bool)
    for label in (0, 1, 2):  # an independent oracle: dilation differs from erosion, per label (border not an edge)
        region = np.pad((mask == label).astype(np.uint8), 2, mode="edge")
        expected |= (cv2.dilate(region, kernel) != cv2.erode(region, kernel))[2:-2, 2:-2]
    band = boundary_band(torch.from_numpy(mask.astype(np.int64))[None], 5)[0].numpy()
    assert band.shape == mask.shape
    assert np.array_equal(band, expected)


def test_boundary_weight_makes_a_mistake_on_an_outline_cost_more_than_one_inside():
    from iugc.baseline.train import loss_fn

    masks = torch.zeros(1, 32, 32, dtype=torch.long)
    masks[0, 8:24, 8:24] = 2
    logits = _confident_logits(masks)
    on_edge, inside = logits.clone(), logits.clone()
    on_edge[0, :, 8, 16] = torch.tensor([10.0, 0.0, 0.0])  # a head pixel on its outline called background
    inside[0, :, 16, 16] = torch.tensor([10.0, 0.0, 0.0])  # the same mistake in the middle of the head
    standard, label = torch.zeros(1), torch.ones(1)

    def cost(wrong, weight):  # what the one mistake adds to the loss of the correct prediction
        return float(loss_fn(wrong, masks, standard, label, weight) - loss_fn(logits, masks, standard, label, weight))

    assert cost(on_edge, 0.0) == pytest.approx(cost(inside, 0.0), rel=1e-4)
    assert cost(on_edge, 4.0) > 2 * cost(inside, 4.0) > 0


def test_smoothing_is_a_gaussian_low_pass_that_prediction_applies_and_training_does_not():
    from iugc.baseline.frames import SMOOTH, to_network

    rng = np.random.default_rng(0)
    speckle = rng.integers(0, 256, (64, 64), dtype=np.uint8)
    plain = to_network(speckle, 64)
    assert np.array_equal(plain, speckle.astype(np.float32) / 255)  # training: the frame as it is
    smoothed = to_network(speckle, 64, SMOOTH)
    assert SMOOTH == 1.0 and np.allclose(smoothed, _to_network(speckle, 64), atol=1e-5)
    assert smoothed.std() < 0.4 * plain.std()  # pixel-scale speckle is mostly gone
    edge = np.zeros((64, 64), np.uint8)
    edge[:, 32:] = 255
    kept = to_network(edge, 64, SMOOTH)
    assert kept[:, :28].max() < 0.01 and kept[:, 36:].min() > 0.99  # a structure's edge stays where it was
    with pytest.raises(ValueError, match="smooth must be a sigma >= 0.*got -1"):
        to_network(speckle, 64, smooth=-1)


def test_style_noise_moves_each_channels_statistics_and_keeps_its_pattern():
    from iugc.baseline.model import StyleNoise

    torch.manual_seed(0)
    layer = torch.nn.Identity().train()
    x = torch.randn(8, 4, 16, 16) * torch.rand(8, 4, 1, 1) * 3 + torch.randn(8, 4, 1, 1) * 2
    out = StyleNoise(1.0)(layer, (x,), x)

    def pattern(t):  # each frame's channels standardised over H, W (numpy, independently)
        a = t.numpy().astype(np.float64)
        return (a - a.mean((2, 3), keepdims=True)) / a.std((2, 3), keepdims=True)

    np.testing.assert_allclose(pattern(out), pattern(x), atol=1e-3)
    moved = (out.mean((2, 3)) - x.mean((2, 3))).abs()
    assert float(moved.mean()) > 0.1  # the means moved by about their spread across the batch (~2)
    same = torch.randn(1, 4, 16, 16).repeat(8, 1, 1, 1)  # no spread across the batch: nothing to draw from
    assert torch.allclose(StyleNoise(1.0)(layer, (same,), same), same, atol=3e-2)  # vs moves of ~2
    assert StyleNoise(1.0)(layer.eval(), (x,), x) is None  # eval mode: untouched
    assert StyleNoise(0.0)(layer.train(), (x,), x) is None
    assert StyleNoise(1.0)(layer, (x[:1],), x[:1]) is None  # a batch of one has no spread
    with pytest.raises(ValueError, match="must be in \\[0, 1\\], got 1.5"):
        StyleNoise(1.5)
