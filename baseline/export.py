"""`iugc baseline export --format onnx`: the network as ONNX, with its input size in the
model's metadata, for the ONNX Runtime predictor (`iugc.baseline.onnx_predict`)."""
from __future__ import annotations

import os
from pathlib import Path


def export_onnx(weights: str | Path, out: str | Path, opset: int = 17) -> Path:
    """Export a training checkpoint to ONNX (inputs ``image`` (N, 1, S, S) float in [0, 1];
    outputs ``masks`` (N, 3, S, S) logits and ``standard`` (N,) logit)."""
    import onnx
    import torch

    from iugc.baseline.predict import load_model

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
    from iugc.baseline.predict import WEIGHTS_DIR
    from iugc.common.files import sha256_file
    from iugc.evaluator.evaluate import default_cache_dir

    weights = WEIGHTS_DIR / "baseline.pt"
    if not weights.is_file():
        raise FileNotFoundError(f"no shipped weights at {weights}; pass --model model.onnx (`iugc baseline export`)")
    cache = default_cache_dir().parent / "onnx"
    out = cache / f"baseline-{sha256_file(weights)[:16]}.onnx"
    if not out.is_file():
        export_onnx(weights, out)
    return out


def quantize_int8(tensor):
    """Symmetric int8 per output channel (dim 0): ``(q int8, scale float32 (C,))`` with
    ``tensor ~= q * scale`` (error at most scale / 2 per weight)."""
    import torch

    flat = tensor.detach().float().reshape(tensor.shape[0], -1)
    scale = flat.abs().amax(dim=1).clamp_min(1e-12) / 127
    q = torch.round(flat / scale[:, None]).clamp(-127, 127).to(torch.int8)
    return q.reshape(tensor.shape), scale


def export_release(weights: str | Path, out: str | Path, precision: str = "fp16") -> Path:
    """A checkpoint ('default' or a path; training or release) as shippable weights: the
    model, its config and input size only (no optimizer, no log); loads like any
    checkpoint (:func:`iugc.baseline.predict.read_checkpoint`).

    ``precision``: "fp16" (every float tensor in half precision, half the size) or "int8"
    (convolution and linear weights as int8 per output channel with float32 scales under
    ``"int8_scales"``, the rest fp16: about a quarter of the size, which is what keeps a
    resnet18 U-Net under the 16 MB the repository allows).
    """
    import torch

    from iugc.baseline.predict import read_checkpoint

    if precision not in ("fp16", "int8"):
        raise ValueError(f"precision must be 'fp16' or 'int8', got {precision!r}")
    state = read_checkpoint(weights)  # float32 whatever it was stored as: release weights re-export correctly
    model, scales = {}, {}
    for key, value in state["model"].items():
        if precision == "int8" and value.is_floating_point() and value.ndim >= 2:
            model[key], scales[key] = quantize_int8(value)
        else:
            model[key] = value.half() if value.is_floating_point() else value
    release = {"model": model, "model_config": state["model_config"], "size": state["size"], "epoch": state.get("epoch")}
    if scales:
        release["int8_scales"] = scales
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    torch.save(release, tmp)
    os.replace(tmp, out)
    return out
