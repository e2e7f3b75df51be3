"""Training data: frames, masks and standard-plane labels from canonical datasets, resized
for the network, with seeded ultrasound augmentation (head and symphysis moved against
each other, mirror image, zoom and tilt about the probe, shifts, elastic, scan sector, a
dimmed side of the head, blur, depth gain, contrast, gamma, speckle)."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from iugc.baseline.frames import to_network
from iugc.challenge.labels import FH, PS
from iugc.data_manifest.io import read_image, read_mask
from iugc.data_manifest.manifest import load_manifest


def standard_label(mask: np.ndarray | None, recorded: bool | None) -> float:
    """The recorded label, else the IUGC rule on the mask (both structures visible)."""
    if recorded is not None:
        return float(recorded)
    return float(mask is not None and np.any(mask == PS) and np.any(mask == FH))


def _fan(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """A random ultrasound sector (bool (H, W)): apex near the top centre, random half-angle."""
    apex_x = w / 2 + rng.uniform(-0.08, 0.08) * w
    # narrower sectors start further above the frame (the second scanner's: about 24
    # degrees either side, apex 0.26 H above the top); the widest start at the top
    degrees = rng.uniform(20, 50)
    apex_y = -rng.uniform(0.0, 0.35) * h * (50 - degrees) / 30
    half_angle = np.deg2rad(degrees)
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


def _smoothstep(t: np.ndarray) -> np.ndarray:
    t = np.clip(t, 0.0, 1.0)
    return t * t * (3 - 2 * t)


def _distance_weight(outside: np.ndarray, sx: np.ndarray, sy: np.ndarray, reach: float) -> np.ndarray:
    """0 on a structure, rising to 1 at ``reach`` px from it (``outside`` is False on the
    structure), looked up at the source coordinates (sx, sy)."""
    distance = cv2.distanceTransform(outside.astype(np.uint8), cv2.DIST_L2, 3)
    at = cv2.remap(distance, sx.astype(np.float32), sy.astype(np.float32), cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return _smoothstep(at / reach)


def anatomy_warp(image: np.ndarray, mask: np.ndarray, push: float, ps_turn: float) -> tuple[np.ndarray, np.ndarray]:
    """Change how the fetal head lies against the pubic symphysis, by smooth warps of
    image and mask alike, so that the angle of progression itself varies in training.

    A rotation or zoom of the whole frame leaves the AoP as it was; labour stage, the
    probe's pressure and another scanner do not (the second scanner's frames have a median
    AoP of 87 degrees against 120 on the first, and a wider head-symphysis gap). Two warps,
    each the identity on the other structure:

    - ``push`` (pixels, >= 0): the head, and everything beyond the symphysis along the line
      from the PS centre to the FH centre, moves that far along it; the tissue between them
      is stretched over a ramp from the PS edge to the head's near edge. The push is capped
      at twice the gap along that line, so the ramp ends before the head (which moves whole,
      its shape kept) and the map stays one-to-one.
    - ``ps_turn`` (degrees): the symphysis turns about its centre, fading out between 1.2
      and 2.5 of its radii and within 16 px of the head.

    ``image`` is float (H, W), ``mask`` uint8 (H, W) with PS=1/FH=2; a frame missing
    either structure comes back unchanged. One map from each output pixel back to its
    source is applied once, linear for the image and nearest for the mask, so labels stay
    on the anatomy they belong to.

    >>> m = np.zeros((128, 128), np.uint8); m[10:20, 54:74] = 1; _ = cv2.circle(m, (64, 70), 25, 2, -1)
    >>> _, w = anatomy_warp(m.astype(np.float32), m, push=15, ps_turn=0)
    >>> int(np.nonzero(w == 2)[0].min() - np.nonzero(m == 2)[0].min())  # the head's top moved down
    15
    """
    ps, fh = np.argwhere(mask == PS).astype(np.float32), np.argwhere(mask == FH).astype(np.float32)
    if len(ps) == 0 or len(fh) == 0:
        return image, mask
    h, w = mask.shape
    gy, gx = np.mgrid[0:h, 0:w].astype(np.float32)
    ps_c, fh_c = ps.mean(0), fh.mean(0)
    axis = fh_c - ps_c
    axis /= max(float(np.linalg.norm(axis)), 1e-6)
    sy, sx = gy, gx  # the source of each output pixel
    near, gap_end = float(((ps - ps_c) @ axis).max()), float(((fh - ps_c) @ axis).min())
    push = min(max(push, 0.0), 2 * max(gap_end - near, 0.0))
    if push > 0:
        # a point at output position t along the axis comes from t - push * ramp(t); the
        # ramp rises over (gap + push) >= 1.5 push, so t - push * ramp(t) keeps increasing
        along = (gy - ps_c[0]) * axis[0] + (gx - ps_c[1]) * axis[1]
        shift = push * _smoothstep((along - near) / (gap_end - near + push))
        sy, sx = sy - shift * axis[0], sx - shift * axis[1]
    if ps_turn:
        radius = float(np.sqrt(len(ps) / np.pi))
        dy, dx = sy - ps_c[0], sx - ps_c[1]
        fade = 1 - _smoothstep((np.hypot(dy, dx) - 1.2 * radius) / (1.3 * radius))
        angle = np.deg2rad(ps_turn) * fade * _distance_weight(mask != FH, sx, sy, 16.0)
        cos, sin = np.cos(angle), np.sin(angle)
        sy, sx = ps_c[0] + cos * dy - sin * dx, ps_c[1] + sin * dy + cos * dx
    sx, sy = sx.astype(np.float32), sy.astype(np.float32)
    image = cv2.remap(image, sx, sy, cv2.INTER_LINEAR, borderValue=0)
    mask = cv2.remap(mask, sx, sy, cv2.INTER_NEAREST, borderValue=0)
    return image, mask


def augment(image: np.ndarray, mask: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Seeded ultrasound augmentation of a float (H, W) image in [0, 1] and its uint8 mask.

    Geometry (applied to both): the anatomy warp (50%: the head pushed up to 12% of the
    frame away from the symphysis, the symphysis turned +-20 degrees), a mirror image (50%),
    rotation +-20 degrees and zoom 0.65-1.15 about the probe (top centre), shift +-20%
    across and -3..+8% down, elastic (30%), a narrower scan sector (40%; outside it both go
    black/background). Appearance (image only): one side of the fetal head and its skull
    echo dimmed (40%), blur (30%), depth gain, contrast, brightness, gamma 0.6-1.8,
    multiplicative speckle. The ranges are wide on purpose: the validation block comes
    from a second scanner (smaller anatomy, narrower sector, the symphysis under the middle
    of the probe rather than to its left, other gain), and these are what change between
    scanners. The mirror image and the wide shift matter most there: without them the
    network learnt where the symphysis usually is on the first scanner: its best
    validation epoch (16) missed the symphysis on 26 of the 101 frames, PSFHS score 0.70;
    with them, epoch 16 scored 0.82 and the best epoch missed 3 (see the model card).
    """
    h, w = image.shape
    if rng.random() < 0.5:  # the head pushed away from the symphysis, the symphysis turned
        image, mask = anatomy_warp(image, mask, push=rng.uniform(0, 0.12) * h, ps_turn=rng.uniform(-20, 20))
    if rng.random() < 0.5:  # mirrored: the symphysis is found where it is, not where it usually is
        image, mask = image[:, ::-1], mask[:, ::-1]
    # Rotation and zoom about the probe (top centre), as a tilt of the probe or another depth
    # setting would change the frame: the anatomy under the probe stays at the top.
    probe = (w / 2 + rng.uniform(-0.05, 0.05) * w, 0.0)
    matrix = cv2.getRotationMatrix2D(probe, rng.uniform(-20, 20), rng.uniform(0.65, 1.15))
    matrix[:, 2] += (rng.uniform(-0.2, 0.2) * w, rng.uniform(-0.03, 0.08) * h)
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
    ``set_epoch`` changes the augmentation draw; (seed, epoch, index) fixes it. ``smooth``:
    the Gaussian sigma of :func:`iugc.baseline.frames.to_network` (validation frames are
    smoothed as prediction smooths them; training frames are not). ``repeat``: ``[(first,
    last, times), ...]``, the frames of those id blocks (a generated frame by the frame it
    was made from) come ``times`` times per epoch, each time augmented differently.
    """

    def __init__(self, dataset: Path, splits: tuple[str, ...], size: int, augment: bool = False, seed: int = 0,
                 smooth: float = 0.0, repeat=()):
        from iugc.data_manifest.split import in_block

        self.root = Path(dataset)
        manifest = load_manifest(self.root)
        self.cases = [c for c in manifest.cases if c.split in splits]
        if not self.cases:
            raise ValueError(f"{dataset}: no cases in splits {list(splits)}; assign them with `iugc data split`")
        self.size, self.augment, self.seed, self.epoch, self.smooth = size, augment, seed, 0, smooth
        self.order = []  # item -> case index: a repeated case stands here several times
        for index, case in enumerate(self.cases):
            source = case.derived_from or case.case_id
            times = max([t for first, last, t in repeat if in_block(source, first, last)], default=1)
            self.order += [index] * times
        self._cache: dict[int, tuple[np.ndarray, np.ndarray, float]] = {}

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.order)

    def preload(self) -> None:
        """Decode every frame now (before DataLoader workers fork, so they share the cache)."""
        for index in range(len(self.cases)):
            self._load(index)

    def _load(self, index: int):
        if index not in self._cache:
            case = self.cases[index]
            image = to_network(read_image(self.root / case.image), self.size, self.smooth)
            mask = read_mask(self.root / case.mask) if case.mask else None
            label = standard_label(mask, case.standard_plane)
            if mask is None:
                mask = np.zeros((self.size, self.size), np.uint8)
            else:
                mask = cv2.resize(mask, (self.size, self.size), interpolation=cv2.INTER_NEAREST)
            self._cache[index] = (image, mask, label)
        return self._cache[index]

    def __getitem__(self, index: int):
        image, mask, label = self._load(self.order[index])
        if self.augment:
            image, mask = augment(image, mask, np.random.default_rng([self.seed, self.epoch, index]))
            if label and not (np.any(mask == PS) and np.any(mask == FH)):
                label = 0.0  # the augmentation pushed a structure out of view: no longer a standard plane
        return (
            torch.from_numpy(np.ascontiguousarray(image))[None],
            torch.from_numpy(mask.astype(np.int64)),
            torch.tensor(label, dtype=torch.float32),
        )
