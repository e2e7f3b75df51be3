"""Label schema shared by every part of the platform.

Canonical labels: 0 background, 1 pubic symphysis (PS), 2 fetal head (FH).
The raw IUGC 2024 masks use 7 for PS and 8 for FH; :func:`canonical_labels`
accepts both encodings and returns the canonical one.
"""
from __future__ import annotations

import numpy as np

BACKGROUND = 0
PS = 1
FH = 2
STRUCTURES = {"ps": (PS,), "fh": (FH,), "all": (PS, FH)}
"""Evaluated structures: name -> canonical labels forming it ("all" is the union)."""

RAW_IUGC2024 = {7: PS, 8: FH}
ALLOWED_VALUES = frozenset({BACKGROUND, PS, FH, *RAW_IUGC2024})


class LabelError(ValueError):
    """A mask holds values outside the label schema."""


def outside_schema(values: list[int]) -> str:
    """The message for label values outside the schema: a long list summarised, the likely
    cause named when there are many (a grey frame given where a mask was expected).

    >>> outside_schema([3])
    'label 3 is outside the schema (0 background, 1 PS, 2 FH; raw IUGC 7 PS, 8 FH)'
    >>> outside_schema(list(range(3, 256)))
    '253 label values are outside the schema (0 background, 1 PS, 2 FH; raw IUGC 7 PS, 8 FH), such as 3, 4, 5; is this a grey frame rather than a mask?'
    """
    schema = "the schema (0 background, 1 PS, 2 FH; raw IUGC 7 PS, 8 FH)"
    if len(values) == 1:
        return f"label {values[0]} is outside {schema}"
    if len(values) <= 5:
        return f"labels {', '.join(map(str, values))} are outside {schema}"
    return (f"{len(values)} label values are outside {schema}, such as {', '.join(map(str, values[:3]))}; "
            "is this a grey frame rather than a mask?")


def canonical_labels(mask: np.ndarray) -> np.ndarray:
    """Return a uint8 copy of a 2-D label mask in the canonical 0/1/2 encoding.

    Parameters
    ----------
    mask : (H, W) integer array with values in {0, 1, 2} or the raw IUGC 2024
        values {0, 7, 8} (mixing both is accepted).

    Raises
    ------
    LabelError
        If the mask is not 2-D or holds any other value; the message lists them.

    Examples
    --------
    >>> canonical_labels(np.array([[0, 7], [8, 2]])).tolist()
    [[0, 1], [2, 2]]
    """
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise LabelError(f"mask must be 2-D (H, W), got shape {mask.shape}")
    if mask.dtype.kind not in "biu":
        if mask.dtype.kind == "f" and np.all(np.isfinite(mask)) and np.all(mask == np.round(mask)):
            mask = mask.astype(np.int64)
        else:
            raise LabelError(f"mask must hold integer labels, got dtype {mask.dtype}")
    if mask.dtype == np.uint8 and mask.size and int(mask.max()) <= FH:
        return mask.copy()  # already canonical: the common case, checked in one pass
    present = np.unique(mask)
    bad = sorted(int(v) for v in present if int(v) not in ALLOWED_VALUES)
    if bad:
        raise LabelError(outside_schema(bad))
    out = mask.astype(np.uint8, copy=True)
    for raw, canonical in RAW_IUGC2024.items():
        out[mask == raw] = canonical
    return out


def structure_mask(mask: np.ndarray, structure: str) -> np.ndarray:
    """Boolean (H, W) mask of one structure ("ps", "fh" or "all") of a canonical mask."""
    if structure not in STRUCTURES:
        raise ValueError(f"unknown structure {structure!r}; expected one of {sorted(STRUCTURES)}")
    labels = STRUCTURES[structure]
    if len(labels) == 1:
        return mask == labels[0]
    return mask > 0
