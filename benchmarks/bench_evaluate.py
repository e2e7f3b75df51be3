"""Speed of `iugc evaluate` against a straightforward SimpleITK evaluation, side by side.

Builds 700 cases from the shared real PSFHS frames (658 real, the first 42 repeated under
new ids) with imperfect predictions, then for each challenge:

* runs `iugc evaluate` as a fresh process (start-up included), with a cold and a warm
  truth cache, several times, and reports the median wall time and cases/s;
* runs the reference implementation (per-structure SimpleITK filters, and the official
  biometry as plain loops for the contour method) in this process on a sample of cases,
  and extrapolates its time to 700 cases;
* checks that both give the same numbers (1e-6 on Dice/HD/ASD, 1e-3 degrees on AoP).

Usage: python benchmarks/bench_evaluate.py [--repeats 3] [--reference-sample 70]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from headline import emit  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from iugc.data_manifest.io import read_mask  # noqa: E402
from iugc.evaluator.reference import reference_biometry, sitk_segmentation_metrics  # noqa: E402

PSFHS = ROOT.parent / "shared" / "data" / "psfhs"
N_CASES = 700
OFFICIAL_MS = {"psfhs2023": 42.0, "iugc2024": 126.0}  # per case, quoted in the issue


def degrade(mask: np.ndarray, index: int) -> np.ndarray:
    kernel = np.ones((3, 3), np.uint8)
    out = np.roll(mask, ((index % 5) - 2, (index % 7) - 3), axis=(0, 1))
    if index % 3 == 0:
        out = cv2.dilate(out, kernel)
    elif index % 3 == 1:
        out = cv2.erode(out, kernel)
    return out


def build_cases(work: Path) -> list[str]:
    masks = sorted((PSFHS / "masks").glob("*.png"))
    truth, preds = work / "truth", work / "preds"
    truth.mkdir()
    preds.mkdir()
    ids = []
    for i in range(N_CASES):
        source = masks[i % len(masks)]
        case_id = source.stem if i < len(masks) else f"{source.stem}r{i}"
        shutil.copy(source, truth / f"{case_id}.png")
        cv2.imwrite(str(preds / f"{case_id}.png"), degrade(read_mask(source), i))
        ids.append(case_id)
    return ids


def run_cli(work: Path, challenge: str, cache: Path | None) -> tuple[float, dict]:
    out = work / f"{challenge}.json"
    cmd = [str(ROOT / ".venv" / "bin" / "iugc"), "evaluate", "--predictions", str(work / "preds"),
           "--ground-truth", str(work / "truth"), "--challenge", challenge, "--out", str(out), "--quiet"]
    if not Path(cmd[0]).exists():
        cmd[:1] = [sys.executable, "-m", "iugc"]
    cmd += ["--cache-dir", str(cache)] if cache else ["--no-cache"]
    start = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start, json.loads(out.read_text())


def reference_case(pred: np.ndarray, gt: np.ndarray, method: str) -> dict:
    values = sitk_segmentation_metrics(pred, gt)
    p, g = reference_biometry(pred, method), reference_biometry(gt, method)
    values["aop_pred"], values["aop_gt"] = p.aop, g.aop
    values["hsd_pred"], values["hsd_gt"] = p.hsd, g.hsd
    return values


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--reference-sample", type=int, default=70)
    args = parser.parse_args()
    if not PSFHS.is_dir():
        sys.exit(f"needs the shared real data at {PSFHS}")
    print(f"machine: {os.cpu_count()} cores; {N_CASES} cases of 256x256; median of {args.repeats} runs\n")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        ids = build_cases(work)
        sample = ids[:: max(1, N_CASES // args.reference_sample)][: args.reference_sample]
        rows = []
        for challenge, method in (("psfhs2023", "ellipse"), ("iugc2024", "contour")):
            cold, warm = [], []
            for r in range(args.repeats):
                cache = work / f"cache-{challenge}-{r}"
                seconds, result = run_cli(work, challenge, cache)
                cold.append(seconds)
                seconds, result = run_cli(work, challenge, cache)
                warm.append(seconds)
            start = time.perf_counter()
            mismatches = 0
            for case_id in sample:
                gt = read_mask(work / "truth" / f"{case_id}.png")
                pred = read_mask(work / "preds" / f"{case_id}.png")
                ref = reference_case(pred, gt, method)
                ours = result["cases"][case_id]
                for key, value in ref.items():
                    tol = 1e-3 if key.startswith("aop") else 1e-6
                    if key.startswith("hsd") and method == "ellipse":
                        continue
                    if (value is None) != (ours[key] is None) or (value is not None and abs(value - ours[key]) > tol):
                        mismatches += 1
            ref_ms = (time.perf_counter() - start) / len(sample) * 1e3
            ref_total = ref_ms * N_CASES / 1e3
            rows.append((challenge, statistics.median(cold), statistics.median(warm), ref_ms, ref_total, mismatches))
        header = f"{'challenge':<10} {'cold s':>7} {'warm s':>7} {'cases/s':>8} {'ref ms/case':>11} {'ref 700 s':>9} {'x vs ref':>9} {'x vs official':>13}  numbers"
        print(header)
        for challenge, cold, warm, ref_ms, ref_total, mismatches in rows:
            official = OFFICIAL_MS[challenge] * N_CASES / 1e3
            verdict = "identical" if mismatches == 0 else f"{mismatches} MISMATCHES"
            print(f"{challenge:<10} {cold:7.2f} {warm:7.2f} {N_CASES / warm:8.0f} {ref_ms:11.1f} {ref_total:9.1f} "
                  f"{ref_total / warm:8.1f}x {official / warm:12.1f}x  {verdict}")
            print(f"{'':<10} (cold cache: {N_CASES / cold:.0f} cases/s, {ref_total / cold:.1f}x vs ref)")
            emit(f"evaluate-{challenge}", f"evaluation, {challenge}, {N_CASES} cases (warm)", warm, "s",
                 f"SimpleITK reference, {N_CASES} cases", ref_total)
        print("\nwarm = truth biometry cached by checksum (the truth is fixed across submissions); "
              "x vs official uses the issue's 42/126 ms per case.")


if __name__ == "__main__":
    main()
