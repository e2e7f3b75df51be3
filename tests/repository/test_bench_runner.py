"""`make bench` (benchmarks/run_all.py): the flag that shows a regression, and what it refuses."""
import importlib.util
import subprocess
import sys

from tests.conftest import ROOT

SPEC = importlib.util.spec_from_file_location("run_all", ROOT / "benchmarks" / "run_all.py")
run_all = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(run_all)


def row(value, reference, higher_is_better=False):
    return {"value": value, "reference_value": reference, "higher_is_better": higher_is_better}


def test_a_time_that_grew_against_its_reference_is_marked_worse():
    assert run_all.ratio(row(3.0, 2.0)) == 1.5
    assert run_all.verdict(row(3.0, 2.0), documented=1.0).startswith("WORSE (1.50x)")
    assert run_all.verdict(row(2.4, 2.0), documented=1.0).startswith("as documented (1.20x)")  # within the 25% noise band
    assert run_all.verdict(row(1.0, 2.0), documented=1.0).startswith("as documented")  # faster is never worse


def test_a_rate_that_fell_is_marked_worse_and_one_that_rose_is_not():
    assert run_all.verdict(row(60.0, 100.0, higher_is_better=True), documented=1.0).startswith("WORSE (0.60x)")
    assert run_all.verdict(row(300.0, 100.0, higher_is_better=True), documented=1.0).startswith("as documented (3.00x)")
    assert run_all.verdict(row(1.0, 1.0), documented=None) == "new"


def test_an_unknown_benchmark_name_is_refused_with_the_choices():
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "run_all.py"), "--only", "evaluat"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "no benchmark called evaluat; choose from evaluate, report" in done.stderr and "Traceback" not in done.stderr
