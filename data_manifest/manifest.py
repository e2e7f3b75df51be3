"""The canonical dataset layout and its manifest.

A dataset is a folder::

    manifest.json          # this module's Manifest
    images/<case_id>.png   # grey uint8 frame
    masks/<case_id>.png    # uint8 0/1/2 label mask (absent for unlabelled frames)

The manifest lists every case with its source, video and frame index where there is
one, split, the sha256 and shape of its files, the structures present and the
standard-plane label: the source's, or derived from the mask by the IUGC rule (and
marked ``standard_plane_derived``) where the release has none.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, FiniteFloat, ValidationError

from iugc.common.files import atomic_write_text

MANIFEST_NAME = "manifest.json"
FORMAT = "iugc-dataset/1"
CASE_ID = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"


class ManifestError(ValueError):
    """A manifest is missing or invalid; the message names the file and the problem."""


Point = tuple[FiniteFloat, FiniteFloat]


class AopLandmarks(BaseModel):
    """IUGC 2025's three landmarks of a frame, ``[x, y]`` in its pixel space
    (:mod:`iugc.challenge.landmarks`)."""

    model_config = ConfigDict(extra="forbid")

    PS1: Point
    PS2: Point
    FH1: Point
    derived: bool = False
    """True when computed from the case's mask (`iugc data landmarks`), not annotated."""

    def points(self) -> dict[str, Point]:
        return {"PS1": self.PS1, "PS2": self.PS2, "FH1": self.FH1}


class CaseRecord(BaseModel):
    model_config = ConfigDict(extra="forbid")

    case_id: str = Field(pattern=CASE_ID)
    source: str
    derived_from: str | None = None  # the case a generated frame was made from: it follows that case's split
    video: str | None = None
    frame_index: int | None = Field(default=None, ge=0)
    split: Literal["train", "validation", "test", "unassigned"] = "unassigned"
    image: str
    image_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    mask: str | None = None
    mask_sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")
    shape: tuple[int, int]
    structures: tuple[Literal["ps", "fh"], ...] = ()
    standard_plane: bool | None = None
    # True when the release gives no label and standard_plane was derived from the mask
    # by the IUGC rule (standard exactly when both PS and FH are visible).
    standard_plane_derived: bool = False
    landmarks: dict | None = None  # IUGC 2024's landmark.json entry, as the release gives it
    aop_landmarks: AopLandmarks | None = None  # IUGC 2025's PS1, PS2, FH1


class Manifest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    format: Literal["iugc-dataset/1"] = FORMAT
    name: str
    source_layout: Literal["psfhs", "png", "iugc2024", "iugc2025", "phantom"]
    synthetic: bool = False
    description: str = ""
    cases: list[CaseRecord]

    def by_id(self) -> dict[str, CaseRecord]:
        return {c.case_id: c for c in self.cases}


def load_manifest(dataset: str | Path) -> Manifest:
    """Read and validate ``<dataset>/manifest.json``."""
    path = Path(dataset) / MANIFEST_NAME
    if not path.is_file():
        raise ManifestError(f"{path}: no manifest; create the dataset with `iugc data import` or `iugc data phantom`")
    try:
        return Manifest.model_validate_json(path.read_text(encoding="utf-8"))
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ManifestError(f"{path}: invalid manifest at {where}: {first['msg']} ({exc.error_count()} problems)") from None


def write_manifest(dataset: str | Path, manifest: Manifest) -> None:
    """Write the manifest atomically (a reader never sees a half-written file)."""
    text = json.dumps(manifest.model_dump(mode="json"), indent=1) + "\n"
    atomic_write_text(Path(dataset) / MANIFEST_NAME, text)
