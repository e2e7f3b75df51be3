"""The dependency arrows point down the package list; this fails when one points up."""
import ast
from pathlib import Path

import pytest

from tests.conftest import ROOT

# Each package may import only the packages listed for it (its lower layers).
ALLOWED = {
    "common": set(),  # generic helpers: files written whole, hashes, signal handling
    "challenge": {"common"},
    "data_manifest": {"common", "challenge"},
    "evaluator": {"common", "challenge", "data_manifest"},  # scoring and ranking only
    "sandbox": {"common", "challenge", "data_manifest", "evaluator"},  # runs untrusted images, scores through the evaluator
    # the baseline validates through the evaluator and builds its image with the sandbox
    "baseline": {"common", "challenge", "data_manifest", "evaluator", "sandbox"},
    "submissions": {"common", "challenge", "data_manifest", "evaluator", "sandbox"},
    "leaderboard": {"common", "challenge", "data_manifest", "evaluator", "sandbox", "submissions"},
    "iugc": {"common", "challenge", "data_manifest", "evaluator", "sandbox", "baseline", "submissions", "leaderboard"},
}


def imported_names(path: Path) -> set[str]:
    """Every dotted module name ``path`` imports (absolute imports), ours or not."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
    return found


def layer_of(name: str) -> str:
    """The layer a module name belongs to: ``iugc.evaluator.metrics`` -> ``evaluator``,
    ``iugc.cli`` -> ``iugc`` (the command line), ``numpy.linalg`` -> ``numpy``."""
    parts = name.split(".")
    if parts[0] == "iugc" and len(parts) > 1 and parts[1] in ALLOWED:
        return parts[1]
    return parts[0]


def imported_modules(path: Path) -> set[str]:
    """Every layer or outside top-level name ``path`` imports."""
    return {layer_of(name) for name in imported_names(path)}


def imported_packages(path: Path) -> set[str]:
    return imported_modules(path) & set(ALLOWED)


@pytest.mark.parametrize("package", sorted(p for p in ALLOWED if (ROOT / p).is_dir()))
def test_package_imports_only_lower_layers(package):
    bad = []
    for path in sorted((ROOT / package).rglob("*.py")):
        for other in imported_packages(path) - ALLOWED[package] - {package}:
            bad.append(f"{path.relative_to(ROOT)} imports {other}")
    assert not bad, "imports pointing up the layering: " + "; ".join(bad)


def test_checker_sees_an_upward_import(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("from iugc.evaluator.metrics import dice\nimport iugc.data_manifest.io\nfrom iugc.cli import main\n")
    assert imported_packages(module) == {"evaluator", "data_manifest", "iugc"}


def test_platform_modules_are_imported_through_the_namespace():
    """``import challenge`` would load a second copy of the module (or another distribution's
    ``challenge``): every import of ours goes through ``iugc.``."""
    bare = set(ALLOWED) - {"iugc"}
    bad = [f"{path.relative_to(ROOT)}: {name}"
           for top in ("common", "challenge", "data_manifest", "evaluator", "sandbox", "baseline", "submissions",
                       "leaderboard", "iugc", "tests", "benchmarks")
           for path in sorted((ROOT / top).rglob("*.py"))
           for name in sorted(imported_names(path)) if name.split(".")[0] in bare]
    assert not bad, "imports by the bare package name: " + "; ".join(bad)


def test_scoring_runs_no_container():
    """The evaluator scores and ranks; only the sandbox talks to a container engine."""
    bad = [str(path.relative_to(ROOT)) for path in sorted((ROOT / "evaluator").rglob("*.py"))
           if imported_modules(path) & {"docker", "sandbox"}]
    assert not bad, f"modules of evaluator/ that import docker or the sandbox: {bad}"


def test_every_package_is_in_the_layering():
    """A new top-level package must take its place in ALLOWED (and so in the layers)."""
    packages = {p.parent.name for p in ROOT.glob("*/__init__.py")} - {"tests", "benchmarks"}
    assert packages <= set(ALLOWED), f"packages missing from ALLOWED: {sorted(packages - set(ALLOWED))}"


def test_each_page_blueprint_is_named_as_its_module_and_template_folder():
    import importlib

    from flask import Blueprint

    modules = sorted(p.stem for p in (ROOT / "leaderboard/web").glob("*.py"))
    blueprints = {}
    for name in modules:
        module = importlib.import_module(f"iugc.leaderboard.web.{name}")
        if isinstance(getattr(module, "bp", None), Blueprint):
            blueprints[name] = module.bp.name
    assert set(blueprints) == {"admin", "auth", "challenge", "leaderboard", "submissions", "teams"}
    assert {module: bp for module, bp in blueprints.items() if module != bp} == {}
    assert all((ROOT / "leaderboard/templates" / name).is_dir() for name in blueprints)


def test_tests_live_in_the_folder_of_the_package_they_test():
    """tests/<package>/ for each package; tests/repository/ for checks of the whole tree."""
    folders = {p.parent.relative_to(ROOT / "tests").parts[0] if p.parent != ROOT / "tests" else "" for p in (ROOT / "tests").rglob("test_*.py")}
    assert "" not in folders, "a test file at the top of tests/: move it into the folder of the package it tests"
    assert folders <= set(ALLOWED) | {"repository"}, sorted(folders - set(ALLOWED) - {"repository"})
