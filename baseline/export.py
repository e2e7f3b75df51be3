"""`iugc baseline export --format onnx`: the network as ONNX, with its input size in the
model's metadata, for the ONNX Runtime predictor (`baseline.onnx_predict`)."""
from __future__ import annotations

import os
from pathlib import Path


def export_onnx(weights: str | Path, out: str | Path, opset: int = 17) -> Path:
    """Export a training checkpoint to ONNX (inputs ``image`` (N, 1, S, S) float in [0, 1];
    outputs ``masks`` (N, 3, S, S) logits and ``standard`` (N,) logit)."""
    import onnx
    import torch

    from baseline.predict import load_model

    model, size = load_model(weights)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp.onnx")
    dummy = torch.zeros(1, 1, size, size)
    torch.onnx.export(
        model, (dummy,), str(tmp), input_names=["image"], output_names=["masks", "standard"],
        dynamic_axes={"image": {0: "batch"}, "masks": {0: "batch"}, "standard": {0: "batch"}},
        opset_version=opset, dynamo=False,
    )
    proto = onnx.load(str(tmp))
    onnx.helper.set_model_props(proto, {"iugc_input_size": str(size), "iugc_labels": "0 background, 1 PS, 2 FH"})
    onnx.save(proto, str(tmp))
    os.replace(tmp, out)
    return out


def cached_default_onnx() -> Path:
    """The committed default weights exported to ONNX once, cached by their sha256."""
    from baseline.predict import WEIGHTS_DIR
    from data_manifest.io import sha256_file
    from evaluator.evaluate import default_cache_dir

    weights = WEIGHTS_DIR / "baseline.pt"
    if not weights.is_file():
        raise FileNotFoundError(f"no shipped weights at {weights}; pass --model model.onnx (`iugc baseline export`)")
    cache = default_cache_dir().parent / "onnx"
    out = cache / f"baseline-{sha256_file(weights)[:16]}.onnx"
    if not out.is_file():
        export_onnx(weights, out)
    return out


def export_release(weights: str | Path, out: str | Path) -> Path:
    """A training checkpoint as shippable weights: the model in fp16, its config and input
    size only (no optimizer, no log), about half the size; loads like any checkpoint."""
    import torch

    state = torch.load(weights, map_location="cpu", weights_only=False)
    release = {
        "model": {k: v.half() if v.is_floating_point() else v for k, v in state["model"].items()},
        "model_config": state["model_config"],
        "size": state["size"],
        "epoch": state.get("epoch"),
    }
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    torch.save(release, tmp)
    os.replace(tmp, out)
    return out
