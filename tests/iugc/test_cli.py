import subprocess
import sys

from tests.conftest import ROOT

COMMANDS = ["admin", "baseline", "biometry", "challenge", "data", "db", "demo", "demo-site", "docker", "evaluate", "evaluate-image", "kit", "rank",
            "serve", "submit", "worker"]


def iugc(*args):
    return subprocess.run([sys.executable, "-m", "iugc", *args], capture_output=True, text=True, cwd=ROOT)


def test_help_lists_every_command():
    out = iugc("--help").stdout
    listed = [line.split()[0] for line in out.split("Commands:")[1].splitlines() if line.strip()]
    assert listed == COMMANDS


def test_every_command_explains_itself():
    for command in COMMANDS + ["data import", "data verify", "data split", "data phantom", "data nonstandard", "data sample", "kit new", "kit check", "docker export-base", "baseline train", "baseline finetune", "baseline predict", "challenge list",
                               "db upgrade", "admin init", "admin add-dataset", "admin create-user", "admin token", "admin reevaluate", "admin publish"]:
        run = iugc(*command.split(), "--help")
        assert run.returncode == 0 and "Usage:" in run.stdout and len(run.stdout.splitlines()) > 4, command


def test_challenge_list_and_show():
    run = iugc("challenge", "list")
    assert "psfhs2023" in run.stdout and "ellipse" in run.stdout and "iugc2024" in run.stdout
    bad = iugc("challenge", "show", "nope")
    assert bad.returncode != 0 and "unknown challenge" in bad.stderr


def test_demo_ranks_the_stand_in_teams(tmp_path):
    run = iugc("demo", "--workdir", str(tmp_path / "demo"), "--cases", "12")
    assert run.returncode == 0, run.stderr
    table = run.stdout.split("aggregate-then-rank")[1].splitlines()[2:8]
    teams = [line.split()[1] for line in table]
    assert teams[0] == "near-perfect" and teams[-1] == "misses-cases", run.stdout
    assert len(list((tmp_path / "demo" / "results").glob("*.json"))) == 6
