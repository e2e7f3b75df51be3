"""Overlays of a public case: the frame with the predicted and the expert masks' contours
and both AoP constructions (PS axis, FH tangent point, the angle written), drawn on the
server as PNG so a team sees why a case scored as it did. A landmark challenge's overlay
draws the predicted and the expert PS1, PS2 and FH1 with the construction they make.

Only phases whose cases are public have them. The worker keeps the validated masks of
those runs only (``iugc.submissions.worker.keep_masks``; the evaluation's result document
names them by case), and the frame and the expert mask come from the dataset the
evaluation ran on, read here on the server. The constructions are ``iugc.challenge.biometry``'s
own points (``Biometry.aop_construction``), measured by the method the challenge scores
with, so the angle drawn is the angle scored. Each overlay is drawn once per evaluation and
case and kept as ``<instance>/cache/overlays/<evaluation id>/<case id>.png``.
"""
from __future__ import annotations

import io
import json
import math
import re
import threading
from contextlib import closing
from pathlib import Path

import cv2
import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from iugc.challenge.biometry import Biometry, biometry
from iugc.challenge.labels import FH, PS
from iugc.challenge.landmarks import aop_from_landmarks, radial_errors
from iugc.common.files import atomic_write_bytes, sha256_file
from iugc.data_manifest.io import ReadError, read_image, read_mask
from iugc.data_manifest.manifest import MANIFEST_NAME, ManifestError, load_manifest
from iugc.sandbox.outputs import check_mask
from iugc.submissions import challenges, reports
from iugc.submissions.exceptions import NotFound
from iugc.submissions.models import CaseResult, Dataset, Evaluation, User

EXPERT = "#00e5ff"
"""Cyan, solid lines: the expert mask and its construction."""
PREDICTED = "#ff8c00"
"""Orange, dashed lines: the predicted mask and its construction."""
TARGET_SIDE = 768
_CASE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_DRAWING = threading.Lock()


def case_overlay(session: Session, storage, user: User, submission_id: int, case_id: str, cache: Path) -> bytes:
    """The overlay PNG of one case of a submission's latest successful evaluation: drawn at
    the first request, then read from ``cache`` (``<cache>/<evaluation id>/<case id>.png``).

    Who sees it is the per-case table's rule: the submitting team and organizers. Raises
    NotFound (one line saying why) for another team's submission, a phase whose cases are
    hidden or whose results are not published to the viewer, a submission without a
    result, a case not in it, and an evaluation that kept no masks.
    """
    submission = reports.visible_submission(session, user, submission_id)
    phase = submission.phase
    if not phase.public_cases or reports.results_hidden(phase, user):
        raise NotFound(f"phase {phase.slug} has no overlays: its cases are not public")
    evaluation = reports.latest_success(submission)
    if evaluation is None:
        raise NotFound(f"submission {submission_id} has no result yet")
    known = session.execute(select(CaseResult.id).where(CaseResult.evaluation_id == evaluation.id,
                                                         CaseResult.case_id == case_id)).first()
    if known is None or not _CASE.fullmatch(case_id):
        raise NotFound(f"submission {submission_id} has no case {case_id[:64]!r}")
    path = Path(cache) / str(evaluation.id) / f"{case_id}.png"
    if path.is_file():
        return path.read_bytes()
    method = challenges.definition_of(phase.challenge).aop_method
    if method == "landmarks":
        frame, predicted, expert = _case_points(session, storage, evaluation, case_id)
    else:
        frame, predicted, expert = _case_images(session, storage, evaluation, case_id)
    with _DRAWING:  # matplotlib's text rendering is not thread-safe; the server has request threads
        png = render_overlay(frame, predicted, expert, method)
    atomic_write_bytes(path, png)
    return png


def kept_masks(storage, evaluation: Evaluation | None) -> dict[str, str] | None:
    """Case id -> storage key of the masks an evaluation kept (its result document's
    ``output_masks``); None when it kept none (a hidden phase, or a run from before)."""
    if evaluation is None or evaluation.result_key is None:
        return None
    with closing(storage.open(evaluation.result_key)) as stream:
        return json.loads(stream.read()).get("output_masks")


def kept_landmarks(storage, evaluation: Evaluation | None) -> dict | None:
    """The landmarks.json a landmark evaluation kept (its result's ``output_landmarks``,
    already checked), or None when it kept none."""
    if evaluation is None or evaluation.result_key is None:
        return None
    with closing(storage.open(evaluation.result_key)) as stream:
        key = json.loads(stream.read()).get("output_landmarks")
    if key is None:
        return None
    with closing(storage.open(key)) as stream:
        return json.loads(stream.read())


def _case_record(session: Session, evaluation: Evaluation, case_id: str):
    """(dataset folder, manifest record, frame) of a case, from the dataset the evaluation
    ran on, which must be unchanged since."""
    dataset = session.get(Dataset, evaluation.dataset_id) if evaluation.dataset_id is not None else None
    try:
        if dataset is None or sha256_file(Path(dataset.path) / MANIFEST_NAME) != evaluation.manifest_sha256:
            raise NotFound("the data this evaluation ran on has changed since; an organizer can re-evaluate the submission")
        record = load_manifest(dataset.path).by_id()[case_id]
        return Path(dataset.path), record, read_image(Path(dataset.path) / record.image)
    except (OSError, ManifestError, ReadError, KeyError):
        raise NotFound("the data this evaluation ran on can no longer be read; an organizer can re-evaluate the submission") from None


def _case_points(session: Session, storage, evaluation: Evaluation, case_id: str):
    """(frame, predicted landmarks or None, expert landmarks) of a landmark challenge's case."""
    kept = kept_landmarks(storage, evaluation)
    if kept is None:
        raise NotFound(f"evaluation {evaluation.number} kept no landmarks; an organizer can re-evaluate the submission")
    _, record, frame = _case_record(session, evaluation, case_id)
    expert = record.aop_landmarks.points() if record.aop_landmarks else None
    return frame, kept.get(case_id), expert


def _case_images(session: Session, storage, evaluation: Evaluation, case_id: str):
    """(frame, predicted mask or None, expert mask) of a case, from the evaluation's
    stored result and the dataset it ran on (which must be unchanged since)."""
    masks = kept_masks(storage, evaluation)
    if masks is None:
        raise NotFound(f"evaluation {evaluation.number} kept no masks (it ran before overlays existed); "
                       "an organizer can re-evaluate the submission")
    folder, record, frame = _case_record(session, evaluation, case_id)
    try:  # a frame without an expert mask (a non-standard plane) shows no expert structure
        expert = read_mask(folder / record.mask) if record.mask else np.zeros(frame.shape, np.uint8)
    except (OSError, ReadError):
        raise NotFound("the data this evaluation ran on can no longer be read; an organizer can re-evaluate the submission") from None
    key = masks.get(case_id)
    if key is None:
        return frame, None, expert
    with closing(storage.open(key)) as stream:
        predicted = check_mask(stream.read(), frame.shape)
    return frame, predicted, expert


def overlay_scale(shape: tuple[int, int]) -> int:
    """The whole-number factor an overlay enlarges a (H, W) frame by: its longer side
    becomes about 768 pixels, never smaller than the frame.

    >>> overlay_scale((256, 256)), overlay_scale((512, 640)), overlay_scale((1000, 800))
    (3, 1, 1)
    """
    return max(1, TARGET_SIDE // max(shape))


def render_overlay(frame: np.ndarray, predicted, expert, method: str) -> bytes:
    """The overlay as PNG bytes, RGB, of shape (H * s, W * s) with s = ``overlay_scale``.

    Parameters
    ----------
    frame : (H, W) uint8 grey frame.
    predicted : (H, W) label mask (0/1/2) the submission wrote, or None when it wrote no
        valid mask for the case (then only the expert's is drawn, and the legend says so);
        for ``method="landmarks"``, its ``{"PS1", "PS2", "FH1"}`` points or None.
    expert : (H, W) label mask (0/1/2) of the expert; its points for ``"landmarks"``.
    method : the challenge's AoP method, ``"ellipse"``, ``"contour"`` or ``"landmarks"``.

    Expert contours and construction are cyan and solid, predicted ones orange and
    dashed; each construction is its PS axis, the line from the vertex to the FH tangent
    point, both points marked and the angle's arc; the legend writes both angles.

    >>> m = np.zeros((64, 64), np.uint8); m[40:44, 10:30] = 1; m[10:30, 30:50] = 2
    >>> png = render_overlay(np.full((64, 64), 90, np.uint8), m, m, "contour")
    >>> cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR).shape
    (768, 768, 3)
    """
    frame = np.asarray(frame)
    if frame.ndim != 2:
        raise ValueError(f"frame must be a 2-D grey image, got shape {frame.shape}")
    for name, mask in (("predicted", predicted), ("expert", expert)):
        if method != "landmarks" and mask is not None and np.shape(mask) != frame.shape:
            raise ValueError(f"the {name} mask has shape {np.shape(mask)}, the frame {frame.shape}")
    from matplotlib.figure import Figure  # no pyplot: safe in the server's threads

    height, width = frame.shape
    scale, dpi = overlay_scale(frame.shape), 100
    fig = Figure(figsize=(width * scale / dpi, height * scale / dpi), dpi=dpi)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.imshow(frame, cmap="gray", vmin=0, vmax=255, interpolation="nearest", extent=(-0.5, width - 0.5, height - 0.5, -0.5))
    ax.set_xlim(-0.5, width - 0.5)
    ax.set_ylim(height - 0.5, -0.5)
    ax.set_axis_off()
    legend, angles = [], {}
    for label, mask, colour, style in (("expert", expert, EXPERT, "-"), ("predicted", predicted, PREDICTED, "--")):
        if mask is None:
            what = "landmarks" if method == "landmarks" else "valid mask"
            legend.append((f"{label} ({'solid' if style == '-' else 'dashed'}): no {what} for this case", colour))
            continue
        if method == "landmarks":
            value = Biometry(aop=aop_from_landmarks(mask), hsd=None, ps_endpoints=(tuple(mask["PS1"]), tuple(mask["PS2"])),
                             tangent_point=tuple(mask["FH1"]))
            for name, (x, y) in mask.items():
                ax.annotate(name, (x, y), xytext=(4, 4 if style == "-" else -10), textcoords="offset points", color=colour,
                            fontsize=2.6 * scale, zorder=6)
        else:
            _contours(ax, mask, colour, style)
            value = biometry(mask, method)
        _construction(ax, value, colour, style)
        angles[label] = value.aop
        shown = f"AoP {value.aop:.1f}°" if value.aop is not None else "AoP undefined"
        legend.append((f"{label} ({'solid' if style == '-' else 'dashed'}): {shown}", colour))
    if angles.get("expert") is not None and angles.get("predicted") is not None:
        legend.append((f"difference: {abs(angles['predicted'] - angles['expert']):.1f}°", "white"))
    if method == "landmarks" and predicted is not None and expert is not None:
        legend.append((f"mean radial error: {np.mean(list(radial_errors(predicted, expert).values())):.1f} px", "white"))
    for row, (text, colour) in enumerate(legend):
        ax.text(0.015, 0.985 - row * 0.04, text, transform=ax.transAxes, ha="left", va="top", color=colour,
                fontsize=3.4 * scale, zorder=7, bbox={"facecolor": "black", "alpha": 0.6, "edgecolor": "none", "pad": 1.5})
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, metadata={"Software": None})
    return buffer.getvalue()


def _contours(ax, mask: np.ndarray, colour: str, style: str) -> None:
    for structure in (PS, FH):
        found, _ = cv2.findContours((np.asarray(mask) == structure).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        for contour in found:
            xy = contour.reshape(-1, 2)
            xy = np.vstack([xy, xy[:1]])
            ax.plot(xy[:, 0], xy[:, 1], style, color=colour, linewidth=1.4, zorder=3)


def _construction(ax, value: Biometry, colour: str, style: str) -> None:
    """The PS axis, the line from the vertex to the tangent point, both points, the angle's arc."""
    from matplotlib.patches import Arc

    points = value.aop_construction
    if points is None:
        if value.ps_endpoints is not None:  # the axis alone, where no tangent was found
            (x0, y0), (x1, y1) = value.ps_endpoints
            ax.plot([x0, x1], [y0, y1], style, color=colour, linewidth=1.4, zorder=4)
        return
    vertex, axis_end, tangent = points
    ax.plot([axis_end[0], vertex[0], tangent[0]], [axis_end[1], vertex[1], tangent[1]], style, color=colour, linewidth=1.6, zorder=4)
    ax.plot([axis_end[0], vertex[0], tangent[0]], [axis_end[1], vertex[1], tangent[1]], "o", color=colour, markersize=7,
            markeredgecolor="black", markeredgewidth=0.6, zorder=5)
    to_axis = math.degrees(math.atan2(axis_end[1] - vertex[1], axis_end[0] - vertex[0]))
    to_tangent = math.degrees(math.atan2(tangent[1] - vertex[1], tangent[0] - vertex[0]))
    start, end = (to_axis, to_tangent) if (to_tangent - to_axis) % 360 <= 180 else (to_tangent, to_axis)
    radius = min(12.0, 0.4 * min(math.dist(vertex, axis_end), math.dist(vertex, tangent)))
    ax.add_patch(Arc(vertex, 2 * radius, 2 * radius, theta1=start, theta2=end, color=colour, linewidth=1.4, zorder=4))
