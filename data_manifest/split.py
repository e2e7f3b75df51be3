"""Train/validation/test splits that never put frames of one clip on both sides.

Neighbouring frames of a clip are nearly identical, so splits are made by contiguous
blocks of case ids (PSFHS: ids follow acquisition order) or by whole videos (IUGC),
never by random frames.
"""
from __future__ import annotations

import random
import re

from iugc.data_manifest.manifest import Manifest

SPLITS = ("train", "validation", "test")


class SplitError(ValueError):
    """A split that would lose cases or leave a split empty; the message says which."""


def parse_blocks(text: str) -> dict[str, list[tuple[str, str]]]:
    """Parse ``"train=03744-04205+04302-04343,validation=04206-04301"`` into
    ``{split: [(first, last), ...]}``; ``+`` joins several blocks of one split.

    >>> parse_blocks("train=1-5+10-12,test=6-9")
    {'train': [('1', '5'), ('10', '12')], 'test': [('6', '9')]}
    """
    blocks: dict[str, list[tuple[str, str]]] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        split, _, spans = part.partition("=")
        if split not in SPLITS or not spans:
            raise ValueError(f"bad block {part!r}: expected SPLIT=FIRST-LAST[+FIRST-LAST...] with SPLIT in {list(SPLITS)}")
        if split in blocks:
            raise ValueError(f"split {split!r} is named twice in {text!r}: join its blocks with '+', e.g. {split}=1-5+10-12")
        for span in spans.split("+"):
            match = re.fullmatch(r"([\w.]+)-([\w.]+)", span.strip())
            if not match:
                raise ValueError(f"bad block {span!r} in {part!r}: expected FIRST-LAST, e.g. 03744-04205")
            if _key(match.group(1)) > _key(match.group(2)):
                raise ValueError(f"block {split}={span} is reversed: its first id comes after its last; write {match.group(2)}-{match.group(1)}")
            blocks.setdefault(split, []).append((match.group(1), match.group(2)))
    if not blocks:
        raise ValueError("no blocks given: expected e.g. train=03744-04300,validation=04301-04401")
    return blocks


def _key(case_id: str):
    return (0, int(case_id), "") if case_id.isdigit() else (1, 0, case_id)


def in_block(case_id: str, first: str, last: str) -> bool:
    """Whether ``case_id`` lies in the block ``first``-``last`` (numbers compare as numbers).

    >>> in_block("04310", "04302", "04401"), in_block("4400", "04302", "04401"), in_block("04402", "04302", "04401")
    (True, True, False)
    """
    return _key(first) <= _key(case_id) <= _key(last)


def check_split(manifest: Manifest, expected: list[str]) -> None:
    """Raise `SplitError` when a case is unassigned or a split in ``expected`` got no case."""
    unassigned = [c.case_id for c in manifest.cases if c.split == "unassigned"]
    counts = {s: sum(1 for c in manifest.cases if c.split == s) for s in expected}
    problems = []
    if unassigned:
        problems.append(f"{len(unassigned)} of {len(manifest.cases)} cases fall in no block (first: {', '.join(unassigned[:3])})")
    problems += [f"split {s!r} gets no case" for s, n in counts.items() if n == 0]
    if problems:
        raise SplitError("; ".join(problems) + "; fix the blocks or fractions, or pass --allow-unassigned to write it anyway")


def split_by_blocks(manifest: Manifest, blocks: dict[str, list[tuple[str, str]]], *, allow_unassigned: bool = False) -> Manifest:
    """Assign each case to the split whose id blocks contain it.

    Ids compare as numbers when they are all digits, as strings otherwise; a generated
    frame (``derived_from`` set) follows the case it was made from. Overlapping blocks
    are refused. A case in no block, or a split with no case, raises `SplitError`
    unless ``allow_unassigned`` (then such cases are ``unassigned``).
    """
    spans = sorted(((_key(lo), _key(hi), split) for split, parts in blocks.items() for lo, hi in parts))
    for (_, a_hi, a), (b_lo, _, b) in zip(spans, spans[1:]):
        if b_lo <= a_hi:
            raise ValueError(f"blocks of {a} and {b} overlap")
    updated = manifest.model_copy(deep=True)
    for case in updated.cases:
        key = _key(case.derived_from or case.case_id)
        case.split = next((s for lo, hi, s in spans if lo <= key <= hi), "unassigned")
    if not allow_unassigned:
        check_split(updated, list(blocks))
    return updated


def split_by_video(manifest: Manifest, fractions: dict[str, float], seed: int = 0, *, allow_unassigned: bool = False) -> Manifest:
    """Assign whole videos to splits in the given fractions (seeded shuffle of video ids).

    A split that gets no video raises `SplitError` unless ``allow_unassigned``.
    """
    missing = [c.case_id for c in manifest.cases if not c.video]
    if missing:
        raise ValueError(
            f"{len(missing)} cases have no video id (first: {missing[0]}); split them by id blocks instead"
        )
    unknown = sorted(set(fractions) - set(SPLITS))
    if unknown:
        raise ValueError(f"unknown split {unknown[0]!r}: expected names from {list(SPLITS)}")
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
    if not allow_unassigned:
        check_split(updated, [s for s in names if fractions[s] > 0])
    return updated
