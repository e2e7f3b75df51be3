"""Every example in a docstring of our packages runs and prints what it says."""
import doctest
import importlib

import pytest

from tests.conftest import ROOT
from tests.repository.test_layers import ALLOWED

PACKAGES = tuple(ALLOWED)  # every package of the layering
MODULES = sorted(
    ".".join(("iugc",) * (package != "iugc") + path.relative_to(ROOT).with_suffix("").parts)
    for package in PACKAGES
    for path in (ROOT / package).rglob("*.py")
    if path.name != "__main__.py" and "migrations" not in path.parts  # Alembic runs those, with its context
)


def test_every_package_module_is_checked():
    assert {"iugc.common.files", "iugc.challenge.biometry", "iugc.evaluator.metrics", "iugc.sandbox.cli", "iugc.baseline.postprocess",
            "iugc.data_manifest.split", "iugc.submissions.lifecycle", "iugc.leaderboard.api"} <= set(MODULES)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run_as_written(name):
    if name.startswith("iugc.baseline."):
        pytest.importorskip("torch", reason="PyTorch is not installed (pip install -e '.[baseline]')")
    result = doctest.testmod(importlib.import_module(name), verbose=False, report=False)
    assert result.failed == 0, f"{result.failed} of {result.attempted} docstring examples in {name} failed; run python -m doctest -v {name.removeprefix('iugc.').replace('.', '/')}.py"
