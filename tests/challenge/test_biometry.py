"""AoP/HSD: the vectorized contour method against a plain-loop transcription of the IUGC
2024 code, the ellipse method against an independent derivation and geometric checks."""
import json
import math
import subprocess
import sys

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from iugc.challenge.biometry import contour_biometry, ellipse_biometry, largest_contour
from iugc.data_manifest.io import read_mask
from iugc.evaluator.reference import loop_contour_biometry
from tests.conftest import ROOT, degrade, real_mask_paths

CHUNKS = 8


def assert_same(fast, slow, where):
    assert (fast.aop is None) == (slow.aop is None), where
    if fast.aop is not None:
        assert abs(fast.aop - slow.aop) <= 1e-3, f"{where}: {fast.aop} vs {slow.aop}"
    assert fast.hsd == slow.hsd, where
    assert fast.ps_endpoints == slow.ps_endpoints, where
    assert fast.hsd_point == slow.hsd_point, where
    assert fast.tangent_point == slow.tangent_point, where


@pytest.mark.parametrize("chunk", range(CHUNKS))
def test_contour_method_matches_loop_on_real_masks(psfhs_dir, chunk):
    for path in real_mask_paths()[chunk::CHUNKS]:
        mask = read_mask(path)
        for variant, m in (("truth", mask), ("degraded", degrade(mask, int(path.stem)))):
            assert_same(contour_biometry(m), loop_contour_biometry(m), f"{path.name} {variant}")


def test_real_truth_has_defined_aop_in_plausible_range(psfhs_dir):
    aops = [contour_biometry(read_mask(p)).aop for p in real_mask_paths()[::20]]
    assert all(a is not None and 60 < a < 180 for a in aops), aops


@st.composite
def shapes(draw):
    size = draw(st.integers(24, 72))
    m = np.zeros((size, size), np.uint8)
    for label in (1, 2):
        for _ in range(draw(st.integers(1, 2))):
            cx, cy = draw(st.integers(0, size - 1)), draw(st.integers(0, size - 1))
            ax = (draw(st.integers(0, size // 3)), draw(st.integers(0, size // 3)))
            cv2.ellipse(m, (cx, cy), ax, draw(st.integers(0, 179)), 0, 360, label, -1)
    if draw(st.booleans()):
        m[draw(st.integers(0, size - 1)), :] = 0  # cut a line: several components
    return m


@settings(max_examples=300, deadline=None)
@given(shapes())
def test_contour_method_matches_loop_on_generated_shapes(mask):
    assert_same(contour_biometry(mask), loop_contour_biometry(mask), "generated")


def test_contour_geometry_on_a_known_configuration():
    # PS: a bar whose inferior endpoint P is its right end; FH: a disc of radius 20 up and
    # to the right. The IUGC tangent is the lower of the two tangents from P (the head lies
    # above it), so AoP = direction(P->S) - (direction(P->centre) - asin(r / d)).
    m = np.zeros((128, 128), np.uint8)
    m[80:83, 20:61] = 1
    cv2.circle(m, (85, 50), 20, 2, -1)
    b = contour_biometry(m)
    p, s = np.array(b.ps_endpoints[1]), np.array(b.ps_endpoints[0])
    assert p[0] == 60 and s[0] == 20
    centre = np.array([85.0, 50.0])
    d = np.linalg.norm(centre - p)

    def direction(v):  # degrees, y pointing up
        return math.degrees(math.atan2(-v[1], v[0]))

    expected = direction(s - p) - (direction(centre - p) - math.degrees(math.asin(20 / d)))
    assert abs(b.aop - expected) < 2.0
    assert abs(b.hsd - (d - 20)) < 1.5


def test_missing_structure_gives_null_not_exception():
    m = np.zeros((32, 32), np.uint8)
    m[5:10, 5:20] = 2
    for fn in (contour_biometry, ellipse_biometry):
        b = fn(m)
        assert b.aop is None and b.hsd is None


def independent_ellipse_aop(mask):
    """PSFHS 2023 AoP re-derived with rotation matrices (independent of iugc.challenge.biometry)."""
    fits = []
    for label in (1, 2):
        contours, _ = cv2.findContours((mask == label).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        c = max(contours, key=len)
        approx = cv2.approxPolyDP(c, 1, True)
        if len(approx) <= 5:
            return 0.0
        (cx, cy), (w, h), theta = cv2.fitEllipse(approx)
        fits.append((np.array([cx, cy]), h, w, theta - 90))  # the (h, w, theta - 90) form
    (c_ps, long_ps, _, phi), (c_fh, a2, b2, psi) = fits
    direction = np.array([np.cos(phi * 0.01745), np.sin(phi * 0.01745)])
    e1, e2 = c_ps - long_ps / 2 * direction, c_ps + long_ps / 2 * direction
    ang = np.deg2rad(psi)
    rot = np.array([[np.cos(ang), -np.sin(ang)], [np.sin(ang), np.cos(ang)]])
    x0, y0 = rot.T @ (e2 - c_fh)
    a, b = a2 / 2, b2 / 2
    if x0**2 - a**2 == 0:
        x0 += 1
    disc = b**2 * x0**2 + a**2 * y0**2 - a**2 * b**2
    k = (x0 * y0 - np.sqrt(disc)) / (x0**2 - a**2) if disc >= 0 else 0.0
    m = y0 - k * x0
    tx = -k * m / b**2 / (1 / a**2 + k**2 / b**2)
    t = rot @ np.array([tx, k * tx + m]) + c_fh
    u, v = e1 - e2, t - e2
    return float(np.degrees(np.arccos(np.clip(u @ v / np.linalg.norm(u) / np.linalg.norm(v), -1, 1)))), (a, b, ang, c_fh, e2, t)


def test_ellipse_method_matches_independent_derivation_and_is_tangent(psfhs_dir):
    for path in real_mask_paths()[::7]:
        mask = read_mask(path)
        ours = ellipse_biometry(mask)
        expected, (a, b, ang, c_fh, e2, t) = independent_ellipse_aop(mask)
        assert abs(ours.aop - expected) <= 1e-6, path.name
        # The tangent point lies on the FH ellipse and the line E2-T touches it there
        # (unless the official code fell back to k = 0, when E2 is inside the ellipse).
        rot = np.array([[np.cos(ang), -np.sin(ang)], [np.sin(ang), np.cos(ang)]])
        x, y = rot.T @ (np.array(ours.tangent_point) - c_fh)
        x0, y0 = rot.T @ (e2 - c_fh)
        if (x0 / a) ** 2 + (y0 / b) ** 2 > 1:
            assert abs((x / a) ** 2 + (y / b) ** 2 - 1) < 1e-6, path.name
            normal = np.array([x / a**2, y / b**2])
            along = np.array([x - x0, y - y0])
            assert abs(normal @ along) / (np.linalg.norm(normal) * np.linalg.norm(along)) < 1e-6, path.name


def test_official_constant_0_01745_changes_results(psfhs_dir):
    # 0.01745 instead of pi/180 tilts the PS axis by up to ~0.05 degrees: measurable.
    import iugc.challenge.biometry as bio

    masks = [read_mask(p) for p in real_mask_paths()[:40]]
    official = [ellipse_biometry(m).aop for m in masks]
    original = bio.PSFHS_DEG_TO_RAD
    try:
        bio.PSFHS_DEG_TO_RAD = math.pi / 180
        exact = [ellipse_biometry(m).aop for m in masks]
    finally:
        bio.PSFHS_DEG_TO_RAD = original
    assert max(abs(a - b) for a, b in zip(official, exact)) > 1e-3


def test_ellipse_aop_is_undefined_with_five_points_or_fewer():
    m = np.zeros((64, 64), np.uint8)
    m[40:43, 10:13] = 1  # a 3x3 square: its simplified contour has 4 points
    cv2.ellipse(m, (40, 20), (15, 10), 0, 0, 360, 2, -1)
    assert len(cv2.approxPolyDP(largest_contour(m == 1)[:, ::-1].astype(np.int32).reshape(-1, 1, 2), 1, True)) <= 5
    assert ellipse_biometry(m).aop is None  # no ellipse fitted; the challenge's policy scores it


def test_biometry_cli_prints_one_json_line_per_mask(psfhs_dir, tmp_path):
    paths = real_mask_paths(3)
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not a png")
    run = subprocess.run(
        [sys.executable, "-m", "iugc", "biometry", "--method", "contour", *map(str, paths), str(bad)],
        capture_output=True, text=True, cwd=ROOT,
    )
    assert run.returncode == 1
    lines = [json.loads(line) for line in run.stdout.splitlines()]
    assert [r["case"] for r in lines] == [p.stem for p in paths] + ["broken"]
    for record, path in zip(lines, paths):
        expected = contour_biometry(read_mask(path))
        assert record["aop"] == pytest.approx(expected.aop, abs=1e-9)
        assert record["hsd"] == pytest.approx(expected.hsd, abs=1e-9)
        assert record["tangent_point"] == list(expected.tangent_point)
    assert "not a decodable image" in lines[-1]["error"] and "broken.png" in lines[-1]["error"]
    assert run.stderr.strip() == "error: 1 of 4 masks could not be measured; their lines above say why"  # the reason once, not twice


def test_a_grey_frame_given_as_a_mask_is_named_in_one_short_sentence(psfhs_dir):
    frame = psfhs_dir / "images" / "03818.png"
    run = subprocess.run([sys.executable, "-m", "iugc", "biometry", "--method", "ellipse", str(frame)],
                         capture_output=True, text=True, cwd=ROOT)
    assert run.returncode == 1
    (line,) = run.stdout.splitlines()
    error = json.loads(line)["error"]
    assert error.startswith(str(frame)) and error.endswith("such as 3, 4, 5; is this a grey frame rather than a mask?")
    assert len(error) < 300 and run.stdout.count("label values") == 1 and "label values" not in run.stderr
