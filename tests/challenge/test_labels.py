import numpy as np
import pytest

from iugc.challenge.labels import LabelError, canonical_labels, structure_mask


def test_raw_iugc_labels_are_remapped():
    raw = np.array([[0, 7, 8], [8, 7, 0]], dtype=np.uint8)
    assert canonical_labels(raw).tolist() == [[0, 1, 2], [2, 1, 0]]


def test_canonical_mask_is_unchanged_and_copied():
    mask = np.array([[0, 1], [2, 0]], dtype=np.uint8)
    out = canonical_labels(mask)
    assert out.tolist() == mask.tolist() and out is not mask


@pytest.mark.parametrize("value", [3, 6, 9, 255])
def test_labels_outside_schema_are_named(value):
    with pytest.raises(LabelError, match=rf"^label {value} is outside the schema"):
        canonical_labels(np.array([[0, value]], dtype=np.uint8))


def test_non_2d_mask_is_refused_with_its_shape():
    with pytest.raises(LabelError, match=r"\(2, 2, 2\)"):
        canonical_labels(np.zeros((2, 2, 2), np.uint8))


def test_union_structure():
    mask = np.array([[0, 1, 2]], dtype=np.uint8)
    assert structure_mask(mask, "all").tolist() == [[False, True, True]]
    assert structure_mask(mask, "fh").tolist() == [[False, False, True]]
