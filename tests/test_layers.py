"""The dependency arrows point down the package list; this fails when one points up."""
import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# Each package may import only the packages listed for it (its lower layers).
ALLOWED = {
    "challenge": set(),
    "data_manifest": {"challenge"},
    "evaluator": {"challenge", "data_manifest"},
    # The baseline validates through the evaluator (issue 3), which comes before it in the
    # package list; it must not import submissions or leaderboard.
    "baseline": {"challenge", "data_manifest", "evaluator"},
    "submissions": {"challenge", "data_manifest", "evaluator"},
    "leaderboard": {"challenge", "data_manifest", "evaluator", "submissions"},
    "iugc": {"challenge", "data_manifest", "evaluator", "baseline", "submissions", "leaderboard"},
}


def imported_packages(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found & set(ALLOWED)


@pytest.mark.parametrize("package", sorted(p for p in ALLOWED if (ROOT / p).is_dir()))
def test_package_imports_only_lower_layers(package):
    bad = []
    for path in sorted((ROOT / package).rglob("*.py")):
        for other in imported_packages(path) - ALLOWED[package] - {package}:
            bad.append(f"{path.relative_to(ROOT)} imports {other}")
    assert not bad, "imports pointing up the layering: " + "; ".join(bad)


def test_checker_sees_an_upward_import(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("from evaluator.metrics import dice\nimport data_manifest.io\n")
    assert imported_packages(module) == {"evaluator", "data_manifest"}
