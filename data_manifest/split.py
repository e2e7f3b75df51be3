"""Train/validation/test splits that never put frames of one clip on both sides.

Neighbouring frames of a clip are nearly identical, so splits are made by contiguous
blocks of case ids (PSFHS: ids follow acquisition order) or by whole videos (IUGC),
never by random frames.
"""
from __future__ import annotations

import random
import re

from data_manifest.manifest import Manifest

SPLITS = ("train", "validation", "test")


def parse_blocks(text: str) -> dict[str, tuple[str, str]]:
    """Parse ``"train=03744-04300,validation=04301-04401"`` into ``{split: (first, last)}``.

    >>> parse_blocks("train=1-5,test=6-9")
    {'train': ('1', '5'), 'test': ('6', '9')}
    """
    blocks = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        match = re.fullmatch(r"(\w+)=([\w.]+)-([\w.]+)", part)
        if not match or match.group(1) not in SPLITS:
            raise ValueError(f"bad block {part!r}: expected SPLIT=FIRST-LAST with SPLIT in {list(SPLITS)}")
        blocks[match.group(1)] = (match.group(2), match.group(3))
    if not blocks:
        raise ValueError("no blocks given: expected e.g. train=03744-04300,validation=04301-04401")
    return blocks


def _key(case_id: str):
    return (0, int(case_id), "") if case_id.isdigit() else (1, 0, case_id)


def split_by_blocks(manifest: Manifest, blocks: dict[str, tuple[str, str]]) -> Manifest:
    """Assign each case to the split whose id block contains it (others: ``unassigned``).

    Ids compare as numbers when they are all digits, as strings otherwise. Overlapping
    blocks are refused.
    """
    ranges = {split: (_key(lo), _key(hi)) for split, (lo, hi) in blocks.items()}
    spans = sorted(ranges.items(), key=lambda kv: kv[1][0])
    for (a, (_, a_hi)), (b, (b_lo, _)) in zip(spans, spans[1:]):
        if b_lo <= a_hi:
            raise ValueError(f"blocks {a} and {b} overlap")
    updated = manifest.model_copy(deep=True)
    for case in updated.cases:
        key = _key(case.case_id)
        case.split = next((s for s, (lo, hi) in ranges.items() if lo <= key <= hi), "unassigned")
    return updated


def split_by_video(manifest: Manifest, fractions: dict[str, float], seed: int = 0) -> Manifest:
    """Assign whole videos to splits in the given fractions (seeded shuffle of video ids)."""
    missing = [c.case_id for c in manifest.cases if not c.video]
    if missing:
        raise ValueError(
            f"{len(missing)} cases have no video id (first: {missing[0]}); split them by id blocks instead"
        )
    if abs(sum(fractions.values()) - 1) > 1e-9 or any(f < 0 for f in fractions.values()):
        raise ValueError(f"fractions must be non-negative and sum to 1, got {fractions}")
    videos = sorted({c.video for c in manifest.cases})
    random.Random(seed).shuffle(videos)
    assignment, start = {}, 0
    names = list(fractions)
    for i, split in enumerate(names):
        count = len(videos) - start if i == len(names) - 1 else round(fractions[split] * len(videos))
        for video in videos[start : start + count]:
            assignment[video] = split
        start += count
    updated = manifest.model_copy(deep=True)
    for case in updated.cases:
        case.split = assignment[case.video]
    return updated
