import pytest

from iugc.challenge.definition import DefinitionError, available_challenges, load_challenge


def test_shipped_challenges_load_with_their_methods():
    assert {"psfhs2023", "iugc2024"} <= set(available_challenges())
    psfhs, iugc = load_challenge("psfhs2023"), load_challenge("iugc2024")
    assert psfhs.aop_method == "ellipse" and iugc.aop_method == "contour"
    assert [t.weight for t in psfhs.score.terms] == [0.25, 0.125, 0.125, 0.5]
    assert {p.kind for p in psfhs.phases} == {"sanity-check", "validation", "final-test"}
    assert "classification" in iugc.tasks and "hsd_error" in iugc.metrics
    assert psfhs.phase("final-test").limits.submissions_per_day == 1


def test_a_new_challenge_is_a_new_file(tmp_path):
    text = (load_challenge.__globals__["DEFINITIONS_DIR"] / "psfhs2023.yaml").read_text()
    path = tmp_path / "my2026.yaml"
    path.write_text(text.replace("name: psfhs2023", "name: my2026").replace("aop_method: ellipse", "aop_method: contour"))
    c = load_challenge(path)
    assert c.name == "my2026" and c.aop_method == "contour"


@pytest.mark.parametrize(
    "edit, message",
    [
        (("weight: 0.5", "weight: 0.4"), "sum to 1"),
        (("aop_method: ellipse", "aop_method: circle"), "aop_method"),
        (("metrics: [dice, hd, asd, aop_error]", "metrics: [dice, hd, asd, aop_error, auc]"), "belong to no task"),
        (("submissions_per_day: 1,", "submissions_per_day: 0,"), "submissions_per_day"),
        (("name: psfhs2023", "name: psfhs2023\nsurprise: 1"), "surprise"),
        (("ranking_method: test-then-rank", "ranking_method: coin-toss"), "ranking_method"),
        (("methods: [score, mean-rank, test-then-rank]", "methods: [score, mean-rank]"), "not in ranking.methods"),
        (("undefined_biometry: {ground_truth: zero", "undefined_biometry: {ground_truth: half"), "ground_truth"),
        (("aop_method: ellipse", "aop_method: ellipse\nnsd_tolerance_px: 0"), "nsd_tolerance_px"),
    ],
)
def test_invalid_definitions_say_where(tmp_path, edit, message):
    text = (load_challenge.__globals__["DEFINITIONS_DIR"] / "psfhs2023.yaml").read_text()
    assert edit[0] in text
    path = tmp_path / "bad.yaml"
    path.write_text(text.replace(edit[0], edit[1], 1))
    with pytest.raises(DefinitionError, match=message):
        load_challenge(path)


def test_unknown_challenge_lists_the_known_ones():
    with pytest.raises(DefinitionError, match="psfhs2023"):
        load_challenge("nope")


def test_test_then_rank_needs_per_case_ranking_metrics(tmp_path):
    text = (load_challenge.__globals__["DEFINITIONS_DIR"] / "iugc2024.yaml").read_text()
    path = tmp_path / "bad.yaml"
    path.write_text(text.replace("methods: [score, mean-rank]", "methods: [score, mean-rank, test-then-rank]"))
    with pytest.raises(DefinitionError, match=r"per-case metrics; \['auc', 'f1'\]"):
        load_challenge(path)


# ---- the schema's numbers, property-based --------------------------------------------

import copy  # noqa: E402
import math  # noqa: E402

import yaml  # noqa: E402
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from iugc.challenge.definition import DEFINITIONS_DIR, validate_definition  # noqa: E402

SHIPPED = yaml.safe_load((DEFINITIONS_DIR / "psfhs2023.yaml").read_text())
# every number a challenge sets, with the values it may take
NUMBERS = {
    ("worst_case", "dice"): (0, 1), ("worst_case", "hd"): (0, None), ("worst_case", "asd"): (0, None),
    ("worst_case", "aop_error"): (0, 180), ("worst_case", "hsd_error"): (0, None), ("worst_case", "mre"): (0, None),
    ("score", "terms", 0, "weight"): None, ("score", "terms", 0, "scale"): (1e-9, None),
    ("nsd_tolerance_px",): (1e-9, None), ("ranking", "alpha"): (1e-9, 1 - 1e-9),
    ("phases", 0, "limits", "cpus"): (1e-9, None), ("phases", 0, "limits", "memory_mb"): None,
    ("phases", 0, "limits", "time_limit_seconds"): None,
}


def with_value(path, value):
    data = copy.deepcopy(SHIPPED)
    node = data
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return data


def dotted(path) -> str:
    return ".".join(str(p) for p in path)


@settings(max_examples=150, deadline=None)
@given(path=st.sampled_from(sorted(NUMBERS, key=dotted)),
       value=st.sampled_from([math.nan, math.inf, -math.inf]) | st.floats(max_value=-1e-6, allow_nan=False, allow_infinity=False))
def test_a_non_finite_or_negative_number_is_refused_naming_its_field(path, value):
    with pytest.raises(DefinitionError) as refused:
        validate_definition(with_value(path, value), "mine.yaml")
    message = str(refused.value)
    assert message.startswith("mine.yaml: invalid challenge definition: ") and dotted(path) in message
    assert "Traceback" not in message and len(message) < 600


@settings(max_examples=60, deadline=None)
@given(path=st.sampled_from(sorted((p for p, bounds in NUMBERS.items() if bounds and p[0] == "worst_case"), key=dotted)),
       fraction=st.floats(min_value=0, max_value=1))
def test_a_worst_case_within_its_range_is_accepted(path, fraction):
    low, high = NUMBERS[path]
    value = low + fraction * ((high if high is not None else 1000.0) - low)
    definition = validate_definition(with_value(path, value), "mine.yaml")
    assert getattr(definition.worst_case, path[1]) == pytest.approx(value)


@pytest.mark.parametrize("path, value", [(("worst_case", "dice"), 1.5), (("worst_case", "aop_error"), 181.0)])
def test_a_worst_case_beyond_what_the_metric_can_be_is_refused(path, value):
    with pytest.raises(DefinitionError, match=dotted(path)):
        validate_definition(with_value(path, value), "mine.yaml")
