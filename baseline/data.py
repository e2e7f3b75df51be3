"""Training data: frames, masks and standard-plane labels from canonical datasets, resized
for the network, with seeded ultrasound augmentation (zoom and tilt about the probe,
shifts, elastic, scan sector, a dimmed side of the head, blur, depth gain, contrast, gamma, speckle)."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from baseline.frames import to_network
from challenge.labels import FH, PS
from data_manifest.io import read_image, read_mask
from data_manifest.manifest import load_manifest


def standard_label(mask: np.ndarray | None, recorded: bool | None) -> float:
    """The recorded label, else the IUGC rule on the mask (both structures visible)."""
    if recorded is not None:
        return float(recorded)
    return float(mask is not None and np.any(mask == PS) and np.any(mask == FH))


def _fan(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """A random ultrasound sector (bool (H, W)): apex near the top centre, random half-angle."""
    apex_x = w / 2 + rng.uniform(-0.08, 0.08) * w
    apex_y = -rng.uniform(0.0, 0.25) * h
    half_angle = np.deg2rad(rng.uniform(28, 50))
    gy, gx = np.mgrid[0:h, 0:w].astype(np.float32)
    angle = np.arctan2(gx - apex_x, gy - apex_y)
    radius = np.hypot(gx - apex_x, gy - apex_y)
    return (np.abs(angle) <= half_angle) & (radius <= rng.uniform(0.9, 1.3) * h - apex_y)


def _shade_head(image: np.ndarray, mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Dim one side of the fetal head and its skull echo (image only; labels unchanged).

    On the second scanner the head is dark and its outline faint over much of its
    circumference, so the network must complete the head from the part of the skull it
    sees. The dimmed side is a half-plane through the head at a random angle and offset,
    covering the head mask grown by 4 px (the skull echo lies on the outline), with a soft edge.
    """
    head = mask == FH
    if not head.any():
        return image
    h, w = image.shape
    ys, xs = np.nonzero(head)
    radius = np.sqrt(head.sum() / np.pi)
    theta = rng.uniform(0, 2 * np.pi)
    gy, gx = np.mgrid[0:h, 0:w].astype(np.float32)
    side = (gx - xs.mean()) * np.cos(theta) + (gy - ys.mean()) * np.sin(theta) > rng.uniform(-0.3, 0.5) * radius
    grown = cv2.dilate(head.astype(np.uint8), np.ones((9, 9), np.uint8)).astype(bool)
    shade = cv2.GaussianBlur((grown & side).astype(np.float32), (0, 0), 3)
    return image * (1 - shade * rng.uniform(0.4, 0.85))


def augment(image: np.ndarray, mask: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Seeded ultrasound augmentation of a float (H, W) image in [0, 1] and its uint8 mask.

    Geometry (applied to both): rotation +-20 degrees and zoom 0.65-1.15 about the probe
    (top centre), shift +-10% across and -3..+8% down, elastic (30%), a narrower scan
    sector (40%; outside it both go black/background). Appearance (image only): one side of
    the fetal head and its skull echo dimmed (40%), blur (30%),
    depth gain, contrast, brightness, gamma 0.6-1.8, multiplicative speckle. The ranges are wide on
    purpose: the validation block comes from a second scanner (smaller anatomy, narrower
    sector, other gain), and these are what change between scanners.
    """
    h, w = image.shape
    # Rotation and zoom about the probe (top centre), as a tilt of the probe or another depth
    # setting would change the frame: the anatomy under the probe stays at the top.
    probe = (w / 2 + rng.uniform(-0.05, 0.05) * w, 0.0)
    matrix = cv2.getRotationMatrix2D(probe, rng.uniform(-20, 20), rng.uniform(0.65, 1.15))
    matrix[:, 2] += (rng.uniform(-0.1, 0.1) * w, rng.uniform(-0.03, 0.08) * h)
    image = cv2.warpAffine(image, matrix, (w, h), flags=cv2.INTER_LINEAR, borderValue=0)
    mask = cv2.warpAffine(mask, matrix, (w, h), flags=cv2.INTER_NEAREST, borderValue=0)
    if rng.random() < 0.3:  # elastic: a smooth random displacement of a few pixels
        dx = cv2.GaussianBlur(rng.uniform(-1, 1, (h, w)).astype(np.float32), (0, 0), 8) * 60
        dy = cv2.GaussianBlur(rng.uniform(-1, 1, (h, w)).astype(np.float32), (0, 0), 8) * 60
        gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
        image = cv2.remap(image, gx + dx, gy + dy, cv2.INTER_LINEAR, borderValue=0)
        mask = cv2.remap(mask, gx + dx, gy + dy, cv2.INTER_NEAREST, borderValue=0)
    if rng.random() < 0.4:  # a narrower sector: what lies outside is black, and not labelled
        fan = _fan(h, w, rng)
        image = image * fan
        mask = mask * fan.astype(np.uint8)
    if rng.random() < 0.4:
        image = _shade_head(image, mask, rng)
    if rng.random() < 0.3:
        image = cv2.GaussianBlur(image, (0, 0), rng.uniform(0.5, 1.5))
    gain = np.linspace(rng.uniform(0.75, 1.25), rng.uniform(0.75, 1.25), h, dtype=np.float32)[:, None]
    image = image * gain * rng.uniform(0.7, 1.3) + rng.uniform(-0.08, 0.08)
    image = np.clip(image, 0, 1) ** rng.uniform(0.6, 1.8)
    image = image * (1 + rng.normal(0, rng.uniform(0, 0.15), image.shape).astype(np.float32))  # speckle
    return np.clip(image, 0, 1).astype(np.float32), mask


class FrameDataset(Dataset):
    """Cases of one split of a canonical dataset as network tensors.

    Item: ``(image (1, size, size) float32, mask (size, size) int64, standard (float32))``;
    frames without a mask get an all-background mask and ``has_mask`` False in ``cases``.
    ``set_epoch`` changes the augmentation draw; (seed, epoch, index) fixes it.
    """

    def __init__(self, dataset: Path, splits: tuple[str, ...], size: int, augment: bool = False, seed: int = 0):
        self.root = Path(dataset)
        manifest = load_manifest(self.root)
        self.cases = [c for c in manifest.cases if c.split in splits]
        if not self.cases:
            raise ValueError(f"{dataset}: no cases in splits {list(splits)}; assign them with `iugc data split`")
        self.size, self.augment, self.seed, self.epoch = size, augment, seed, 0
        self._cache: dict[int, tuple[np.ndarray, np.ndarray, float]] = {}

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.cases)

    def _load(self, index: int):
        if index not in self._cache:
            case = self.cases[index]
            image = to_network(read_image(self.root / case.image), self.size)
            mask = read_mask(self.root / case.mask) if case.mask else None
            label = standard_label(mask, case.standard_plane)
            if mask is None:
                mask = np.zeros((self.size, self.size), np.uint8)
            else:
                mask = cv2.resize(mask, (self.size, self.size), interpolation=cv2.INTER_NEAREST)
            self._cache[index] = (image, mask, label)
        return self._cache[index]

    def __getitem__(self, index: int):
        image, mask, label = self._load(index)
        if self.augment:
            image, mask = augment(image, mask, np.random.default_rng([self.seed, self.epoch, index]))
            if label and not (np.any(mask == PS) and np.any(mask == FH)):
                label = 0.0  # the augmentation pushed a structure out of view: no longer a standard plane
        return (
            torch.from_numpy(np.ascontiguousarray(image))[None],
            torch.from_numpy(mask.astype(np.int64)),
            torch.tensor(label, dtype=torch.float32),
        )
