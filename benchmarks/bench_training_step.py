"""What one training frame costs: milliseconds per frame of a full training step (forward,
backward, AdamW step, weight average) for the shipped architecture at each precision,
input size and batch size given, and of preparing one augmented frame; all in one run on
the CPU threads given, so the ratios between rows hold on a noisy machine.

This is the cost column of the cheaper-epoch table in docs/baseline.md; whether a cheaper
setting keeps its validation figures needs short training runs (the same table).

Usage: python benchmarks/bench_training_step.py [--data DATASET] [--threads 2] [--steps 6]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from headline import emit  # noqa: E402

import torch  # noqa: E402


def step_ms_per_frame(size: int, batch: int, amp: bool, steps: int) -> float:
    from iugc.baseline.train import TrainConfig, WeightAverage, build_model, loss_fn

    model = build_model(TrainConfig(data="", out="")).to(memory_format=torch.channels_last).train()
    average = WeightAverage(model, 0.99)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    images = torch.randn(batch, 1, size, size).to(memory_format=torch.channels_last)
    masks = torch.randint(0, 3, (batch, size, size))
    standard = torch.ones(batch)
    times = []
    for i in range(steps + 1):  # the first is a warm-up
        began = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
            logits, standard_logit = model(images)
            loss = loss_fn(logits.float(), masks, standard_logit.float(), standard)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        average.update(model)
        if i:
            times.append(time.perf_counter() - began)
    return 1000 * statistics.median(times) / batch


def augment_ms_per_frame(data: Path, size: int, frames: int) -> float:
    from iugc.baseline.data import FrameDataset

    dataset = FrameDataset(data, ("train",), size, augment=True, seed=0)
    dataset.preload()
    began = time.perf_counter()
    for index in range(frames):
        dataset[index]
    return 1000 * (time.perf_counter() - began) / frames


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=None, help="A split dataset, to time the augmentation too.")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=6, help="Timed steps per row (median quoted).")
    parser.add_argument("--quick", action="store_true", help="Only the float32 and bfloat16 rows at 256 px, batch 16.")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = [(256, 16, False), (256, 16, True), (256, 8, True), (256, 32, True), (192, 16, True), (128, 16, True)]
    if args.quick:
        rows = rows[:2]
    reference = None
    print("| size | batch | precision | ms per frame | ratio to 256 / 16 / float32 |")
    print("|---|---|---|---|---|")
    for size, batch, amp in rows:
        ms = step_ms_per_frame(size, batch, amp, args.steps)
        reference = reference or ms
        print(f"| {size} | {batch} | {'bfloat16' if amp else 'float32'} | {ms:.0f} | {ms / reference:.2f} |", flush=True)
        if (size, batch, amp) == (256, 16, True):
            emit("training-step-bf16", "baseline training step, 256 px, batch 16, bfloat16", ms, "ms/frame", "float32, same run", reference)
    if args.data:
        print(f"augmentation: {augment_ms_per_frame(args.data, 256, 64):.1f} ms per frame (one process)")


if __name__ == "__main__":
    main()
