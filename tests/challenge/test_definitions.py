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
