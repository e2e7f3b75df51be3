import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn import metrics as skm

from iugc.evaluator.classification import accuracy, auc, f1, mcc


@st.composite
def labelled(draw):
    n = draw(st.integers(1, 60))
    y = np.array(draw(st.lists(st.integers(0, 1), min_size=n, max_size=n)))
    # coarse probabilities so that ties happen often
    p = np.array(draw(st.lists(st.sampled_from([0.0, 0.1, 0.25, 0.5, 0.5, 0.75, 0.9, 1.0]), min_size=n, max_size=n)))
    return y, p


@settings(max_examples=300, deadline=None)
@given(labelled())
def test_matches_scikit_learn(data):
    y, p = data
    pred = (p >= 0.5).astype(int)
    assert accuracy(y, p) == pytest.approx(skm.accuracy_score(y, pred), abs=1e-12)
    assert f1(y, p) == pytest.approx(skm.f1_score(y, pred, zero_division=0), abs=1e-12)
    assert mcc(y, p) == pytest.approx(skm.matthews_corrcoef(y, pred), abs=1e-12)
    if len(set(y.tolist())) == 2:
        assert auc(y, p) == pytest.approx(skm.roc_auc_score(y, p), abs=1e-12)
    else:
        assert auc(y, p) is None


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="equal length"):
        accuracy([1, 0], [0.5])
    with pytest.raises(ValueError, match=r"\[0, 2\]"):
        accuracy([0, 2], [0.5, 0.5])
    with pytest.raises(ValueError, match="finite probabilities"):
        auc([0, 1], [0.5, float("nan")])
