"""SIGINT and SIGTERM end every long command promptly with exit status 130 and leave
nothing half-written (issue 19, item 6): `evaluate`, `data import`, `baseline predict`,
`baseline train`. Each runs as a background job in its own session (SIGINT ignored, as
`setsid cmd &` gives it) and the signal goes to the whole process group, as
`kill -INT -- -PGID` sends it; Ctrl-C in a terminal (SIGINT not ignored) is tested too.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import ROOT, link_frames

PROMPT_SECONDS = 30  # "promptly": the old `evaluate` never ended at all


def _background():
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def start(args, *, ignore_sigint=True, env=None):
    return subprocess.Popen([sys.executable, "-m", "iugc", *map(str, args)], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True,
                            preexec_fn=_background if ignore_sigint else None, env={**os.environ, **(env or {})})


def wait_for(condition, timeout=120.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError("the command never reached the point to interrupt")


def interrupt(process, sig):
    """Signal the process group, then the exit status and stderr (killed if it hangs)."""
    os.killpg(process.pid, sig)
    try:
        _, err = process.communicate(timeout=PROMPT_SECONDS)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        pytest.fail(f"still running {PROMPT_SECONDS} s after {signal.Signals(sig).name}")
    return process.returncode, err


@pytest.fixture(scope="module")
def many_cases(psfhs_dir, tmp_path_factory):
    """A plain truth folder of 8 x 658 real masks (links) and the same as predictions:
    about 10 s of scoring on 2 cores, long enough to be interrupted half-way."""
    root = tmp_path_factory.mktemp("many")
    for name in ("truth", "preds"):
        (root / name).mkdir()
    for path in sorted((psfhs_dir / "masks").glob("*.png")):
        for k in range(8):
            for name in ("truth", "preds"):
                (root / name / f"{path.stem}_{k}.png").symlink_to(path)
    return root


@pytest.mark.parametrize("sig, ignore_sigint", [(signal.SIGINT, True), (signal.SIGTERM, True), (signal.SIGINT, False)],
                         ids=["background-SIGINT", "SIGTERM", "terminal-Ctrl-C"])
def test_evaluate_ends_on_a_signal(many_cases, tmp_path, sig, ignore_sigint):
    out = tmp_path / "r.json"
    worker = start(["evaluate", "--predictions", many_cases / "preds", "--ground-truth", many_cases / "truth",
                    "--challenge", "psfhs2023", "--out", out, "--no-cache", "--jobs", "2"], ignore_sigint=ignore_sigint)
    progress = []

    def scoring_started():  # the progress bar writes to stderr once the pool runs
        progress.append(os.read(worker.stderr.fileno(), 4096).decode(errors="replace"))
        return "case/s" in "".join(progress) or worker.poll() is not None

    wait_for(scoring_started)
    time.sleep(1.0)  # well inside the scoring, past the progress bar's own set-up
    assert worker.poll() is None, "finished before it could be interrupted; give it more cases"
    code, err = interrupt(worker, sig)
    assert code == 130, err[-2000:]
    assert "cancelled" in err and "Traceback" not in err and "Aborted" not in err
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_data_import_ends_on_a_signal_and_leaves_no_staging_folder(psfhs_dir, tmp_path):
    dest = tmp_path / "ds"
    worker = start(["data", "import", "--layout", "png", "--source", psfhs_dir, "--dest", dest])
    wait_for(lambda: any(tmp_path.glob(".ds.partial-*/images/*.png")) or worker.poll() is not None)
    assert worker.poll() is None, "finished before it could be interrupted"
    code, err = interrupt(worker, signal.SIGTERM)
    assert code == 130, err[-2000:]
    assert list(tmp_path.iterdir()) == []  # neither the dataset nor its staging folder


def test_baseline_predict_ends_on_a_signal_and_removes_its_masks(psfhs_dir, tmp_path):
    pytest.importorskip("torch")
    out = tmp_path / "preds"
    worker = start(["baseline", "predict", "--input", psfhs_dir / "images", "--output", out])
    wait_for(lambda: len(list(out.glob("*.png"))) >= 3 or worker.poll() is not None)
    assert worker.poll() is None, "finished before it could be interrupted"
    code, err = interrupt(worker, signal.SIGINT)
    assert code == 130, err[-2000:]
    assert not out.exists()  # no partial folder that `iugc evaluate` would score as missing cases


def test_baseline_train_ends_on_a_signal_with_whole_checkpoints(psfhs_dir, tmp_path):
    torch = pytest.importorskip("torch")
    from iugc.data_manifest.importers import import_dataset
    from iugc.data_manifest.manifest import load_manifest, write_manifest
    from iugc.data_manifest.split import parse_blocks, split_by_blocks

    ds = tmp_path / "ds"
    import_dataset("png", link_frames(tmp_path / "source", ["03744", "03745", "03746", "03747", "04301", "04302"]), ds,
                   progress=False)
    write_manifest(ds, split_by_blocks(load_manifest(ds), parse_blocks("train=03744-04300,validation=04301-04401")))
    run_dir = tmp_path / "run"
    worker = start(["baseline", "train", "--data", ds, "--out", run_dir, "--epochs", "200", "--size", "64",
                    "--batch-size", "2", "--decoder-channels", "16,8,8,8,8"])
    wait_for(lambda: (run_dir / "last.pt").is_file() or worker.poll() is not None, timeout=240)
    assert worker.poll() is None, worker.communicate()[1][-2000:]
    code, err = interrupt(worker, signal.SIGINT)
    assert code == 130, err[-2000:]
    state = torch.load(run_dir / "last.pt", map_location="cpu", weights_only=False)  # whole, not half-written
    assert "model" in state


_POOL_PROBE = """
import multiprocessing, time
from iugc.common.signals import interrupt_on_signals

interrupt_on_signals()
with multiprocessing.get_context("fork").Pool(2) as pool:  # leaving the block terminates the workers (SIGTERM)
    print(pool.apply(sum, ([1, 2],)))
    pool.apply_async(time.sleep, (60,))  # a worker busy in Python code when the SIGTERM comes
    time.sleep(1)
"""


def test_pool_workers_of_any_command_end_quietly_on_terminate():
    """A command's worker pool (the ranking report's, say) forks after the handlers are
    set: SIGTERM from Pool.terminate must end a worker as before, not raise
    KeyboardInterrupt in it (a traceback per worker on a successful run)."""
    run = subprocess.run([sys.executable, "-c", _POOL_PROBE], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and run.stdout.strip() == "3", run.stderr
    assert "Traceback" not in run.stderr and "KeyboardInterrupt" not in run.stderr, run.stderr
