"""Prediction with ONNX Runtime only -- what the submission container runs (no PyTorch).

Same preprocessing and post-processing as the PyTorch path, so masks agree.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from iugc.baseline.frames import SMOOTH, to_network
from iugc.baseline.postprocess import Steps, finish


class OnnxPredictor:
    """``predict(frame)`` -> (canonical mask at the frame's size, p(standard plane)).

    >>> # OnnxPredictor("model.onnx").predict(np.zeros((300, 400), np.uint8))
    """

    def __init__(self, path: str | Path, threads: int | None = None, steps: Steps = Steps(), smooth: float = SMOOTH):
        self.steps, self.smooth = steps, smooth
        import onnxruntime as ort

        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        meta = self.session.get_modelmeta().custom_metadata_map
        if "iugc_input_size" not in meta:
            raise ValueError(f"{path}: not an `iugc baseline export` model (no iugc_input_size metadata)")
        self.size = int(meta["iugc_input_size"])

    def predict_batch(self, frames: list[np.ndarray]) -> list[tuple[np.ndarray, float]]:
        batch = np.stack([to_network(f, self.size, self.smooth) for f in frames])[:, None]
        logits, standard = self.session.run(None, {"image": batch})
        p_head = 1 / (1 + np.exp(-standard.reshape(-1).astype(np.float64)))
        shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
        softmax = shifted / shifted.sum(axis=1, keepdims=True)
        return [finish(softmax[i], float(p_head[i]), frame.shape, self.steps) for i, frame in enumerate(frames)]

    def predict(self, frame: np.ndarray) -> tuple[np.ndarray, float]:
        return self.predict_batch([frame])[0]
