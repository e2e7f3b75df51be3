"""Baseline inference speed: frames/s for PyTorch and ONNX Runtime at batch 1 and 16 on
the CPU threads given (default 2), for an architecture (weights do not change speed).

Usage: python benchmarks/bench_baseline.py [--encoder resnet34] [--size 256] [--threads 2]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from headline import emit  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402


def timed(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--encoder", default="resnet34")
    parser.add_argument("--decoder", default="256,128,64,32,16", help="decoder channels")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from iugc.baseline.model import BaselineNet
    from iugc.baseline.onnx_predict import OnnxPredictor
    from iugc.baseline.export import export_onnx

    model = BaselineNet(args.encoder, decoder_channels=tuple(int(c) for c in args.decoder.split(","))).eval()
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = Path(tmp) / "m.pt"
        torch.save({"model": model.state_dict(), "model_config": model.config, "size": args.size}, ckpt)
        export_onnx(ckpt, Path(tmp) / "m.onnx")
        onnx = OnnxPredictor(Path(tmp) / "m.onnx", threads=args.threads)
        print(f"{args.encoder} (decoder {args.decoder}) at {args.size}x{args.size}, {args.threads} CPU threads, median of {args.repeats}")
        for batch in (1, 16):
            x = torch.rand(batch, 1, args.size, args.size)
            with torch.no_grad():
                t_torch = timed(lambda: model(x), args.repeats)
            feed = {"image": x.numpy()}
            t_onnx = timed(lambda: onnx.session.run(None, feed), args.repeats)
            if batch == 16:
                emit("baseline-onnx", f"baseline prediction, {args.encoder}, batch 16, ONNX Runtime, {args.threads} threads",
                     batch / t_onnx, "frames/s", "PyTorch, same weights", batch / t_torch, higher_is_better=True)
            print(f"batch {batch:>2}: PyTorch {batch / t_torch:6.1f} frames/s   ONNX Runtime {batch / t_onnx:6.1f} frames/s"
                  f"   (ONNX {t_torch / t_onnx:.2f}x)")
        frames = [np.random.randint(0, 255, (256, 256), np.uint8) for _ in range(16)]
        t_full = timed(lambda: onnx.predict_batch(frames), args.repeats)
        print(f"ONNX end to end (resize, network, post-processing), batch 16: {16 / t_full:.1f} frames/s")


if __name__ == "__main__":
    main()
