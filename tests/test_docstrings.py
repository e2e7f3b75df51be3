"""Every example in a docstring of our packages runs and prints what it says."""
import doctest
import importlib

import pytest

from tests.conftest import ROOT

PACKAGES = ("challenge", "data_manifest", "evaluator", "baseline", "submissions", "leaderboard", "iugc")
MODULES = sorted(
    ".".join(path.relative_to(ROOT).with_suffix("").parts)
    for package in PACKAGES
    for path in (ROOT / package).rglob("*.py")
    if path.name != "__main__.py" and "migrations" not in path.parts  # Alembic runs those, with its context
)


def test_every_package_module_is_checked():
    assert {"challenge.biometry", "evaluator.metrics", "baseline.postprocess", "data_manifest.split",
            "submissions.lifecycle", "leaderboard.api"} <= set(MODULES)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run_as_written(name):
    if name.startswith("baseline."):
        pytest.importorskip("torch", reason="PyTorch is not installed (pip install -e '.[baseline]')")
    result = doctest.testmod(importlib.import_module(name), verbose=False, report=False)
    assert result.failed == 0, f"{result.failed} of {result.attempted} docstring examples in {name} failed; run python -m doctest -v {name.replace('.', '/')}.py"
