"""Containerized evaluation: platform overhead and the baseline image's throughput.

    python benchmarks/bench_container.py [--repeats 5] [--skip-baseline]

1. Overhead: a trivial image (writes 20 all-background masks) on a 20-case phase of real
   frames, evaluated `--repeats` times. Model time is the container's own run time as the
   engine records it (StartedAt -> FinishedAt); overhead is everything else: image checks,
   input preparation, container create/start/removal, output validation, scoring.
   Target: at most 1.5 s per evaluation.
2. Throughput: `iugc/baseline:latest` (committed weights) on 700 real cases (658 PSFHS
   frames + 42 generated non-standard frames), iugc2024, 2 CPUs. Target: under 60 s.

Needs a Docker engine, root (for the tmpfs /output) and ../shared/data/psfhs.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from headline import emit, yardstick  # noqa: E402

from iugc.challenge.definition import load_challenge  # noqa: E402
from iugc.data_manifest.importers import import_dataset  # noqa: E402
from iugc.sandbox import docker_engine  # noqa: E402
from iugc.sandbox.docker_engine import Limits  # noqa: E402
from iugc.sandbox.evaluate_image import evaluate_image  # noqa: E402
from iugc.sandbox.images import build_base  # noqa: E402

PSFHS = ROOT.parent / "shared" / "data" / "psfhs"
NULL_SUBMISSION = '''
import json, numpy as np
from PIL import Image
cases = json.load(open("/input/cases.json"))["cases"]
for c in cases:
    Image.fromarray(np.zeros((c["height"], c["width"]), np.uint8)).save(f"/output/{c['case_id']}.png")
json.dump({c["case_id"]: {"p_standard_plane": 0.5} for c in cases}, open("/output/predictions.json", "w"))
'''


def null_image(engine, work: Path) -> str:
    context = work / "null"
    context.mkdir()
    (context / "run.py").write_text(NULL_SUBMISSION)
    (context / "Dockerfile").write_text('FROM iugc/base:latest\nCOPY run.py /run.py\nUSER 10001\nENTRYPOINT ["python3", "/run.py"]\n')
    docker_engine.build_image(engine, context, "iugc-bench/null:latest")
    return "iugc-bench/null:latest"


def dataset(work: Path, n: int, nonstandard: int = 0) -> Path:
    from iugc.data_manifest.manifest import load_manifest, write_manifest

    real = work / f"real{n}"
    import_dataset("png", PSFHS, real, progress=False)
    manifest = load_manifest(real)
    manifest.cases = manifest.cases[:n]
    for case in manifest.cases:
        case.standard_plane = True
    write_manifest(real, manifest)
    if not nonstandard:
        return real
    from iugc.data_manifest.nonstandard import generate_nonstandard_dataset

    out = work / f"ns{n}"
    generate_nonstandard_dataset(real, out, per_frame=nonstandard / n, seed=0, progress=False)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--skip-baseline", action="store_true")
    args = parser.parse_args()
    engine = docker_engine.client()
    build_base(progress=False, engine=engine)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        image = null_image(engine, work)
        phase = dataset(work, 20)
        limits = Limits(time_limit_seconds=300, memory_mb=2048, cpus=2, output_limit_mb=50)
        challenge = load_challenge("psfhs2023")
        evaluate_image(image, phase, challenge, limits, engine=engine, jobs=1)  # warm-up: truth cache, page cache
        runs = []
        for _ in range(args.repeats):
            began = time.monotonic()
            result = evaluate_image(image, phase, challenge, limits, engine=engine, jobs=1)
            total = time.monotonic() - began
            assert result["status"] == "succeeded", result["error"]
            runs.append((total, result["runtime_seconds"], result["timings"]))
        totals = [r[0] for r in runs]
        models = [r[1] for r in runs]
        overheads = [t - m for t, m, _ in runs]
        print(f"20-case phase, trivial image, {args.repeats} runs (medians):")
        print(f"  total {statistics.median(totals):.2f} s = model {statistics.median(models):.2f} s "
              f"+ platform overhead {statistics.median(overheads):.2f} s (target <= 1.5 s; "
              f"{1.5 / statistics.median(overheads):.1f}x under)")
        steps = ("provision", "collect_outputs", "scoring", "deprovision")
        print("  steps: " + ", ".join(f"{s} {statistics.median(r[2].get(s, 0) for r in runs):.3f} s" for s in steps)
              + f", container create/start/wait/logs {statistics.median(r[2]['total'] - r[1] - sum(r[2].get(s, 0) for s in steps) for r in runs):.3f} s")
        stick = yardstick()
        emit("container-overhead", "platform overhead per 20-case phase", statistics.median(overheads), "s", "yardstick", stick)
        if args.skip_baseline:
            return
        data = dataset(work, 658, nonstandard=42)
        began = time.monotonic()
        result = evaluate_image("iugc/baseline:latest", data, load_challenge("iugc2024"), limits, engine=engine)
        total = time.monotonic() - began
        agg = result["aggregates"]
        print(f"iugc/baseline:latest on {agg['n_cases']} cases, 2 CPUs: {result['status']}, total {total:.1f} s "
              f"(model {result['runtime_seconds']:.1f} s, {agg['n_cases'] / result['runtime_seconds']:.1f} frames/s; "
              f"target < 60 s, {60 / total:.1f}x under)")
        emit("container-baseline", f"baseline image, {agg['n_cases']} real cases, 2 CPUs, end to end", total, "s", "yardstick", stick)
        print("  " + json.dumps({k: round(agg[k], 4) for k in ("dice", "hd", "asd", "aop_error", "hsd_error", "accuracy", "auc")}))


if __name__ == "__main__":
    main()
