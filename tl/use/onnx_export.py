"""Optional ONNX copies of a bundle's members, for deployment outside Python/PyTorch.

Each ``member<i>.onnx`` takes the *preprocessed* float batch (N, 3, S, S) that
``tl.train.inference.Batcher`` makes (model.json says S, mean and std) and returns logits. It is written
only if ONNX Runtime reproduces the PyTorch member's probabilities within ``ONNX_TOLERANCE`` on
real test images; the measured difference goes into model.json.
"""
from __future__ import annotations

import contextlib
import io
from pathlib import Path

import numpy as np
import torch

from tl.core.errors import TLError
from tl.train.inference import to_probs

ONNX_TOLERANCE = 1e-4  # max |probability difference|, ONNX Runtime vs PyTorch, on up to 64 test images


def export_onnx(bundle, images: np.ndarray, folder: Path) -> list[dict]:
    """Write ``member<i>.onnx`` per member into ``folder``; return per member {file, max_abs_diff, tolerance}."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise TLError("--onnx needs the onnx, onnxscript and onnxruntime packages "
                      "(pip install onnx onnxscript onnxruntime)") from None
    images = bundle.check_channels(np.asarray(images[:64]))
    out = []
    for i, member in enumerate(bundle.members):
        model = member.model.to(memory_format=torch.contiguous_format).eval()
        x = member.batcher(torch.device("cpu"))(torch.from_numpy(images)).contiguous()
        path = folder / f"member{i}.onnx"
        with contextlib.redirect_stdout(io.StringIO()):
            try:
                torch.onnx.export(model.cpu(), (x,), str(path), input_names=["image"], output_names=["logits"],
                                  dynamic_shapes=({0: torch.export.Dim("batch")},), dynamo=True)
            except Exception as exc:  # an architecture the exporter cannot trace: say which
                raise TLError(f"ONNX export of {member.spec['backbone']} failed: "
                              f"{type(exc).__name__}: {str(exc).splitlines()[0][:160]}") from None
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        logits = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
        with torch.no_grad():
            reference = to_probs(model(x), bundle.task).numpy()
        diff = float(np.abs(to_probs(torch.from_numpy(logits), bundle.task).numpy() - reference).max())
        if diff > ONNX_TOLERANCE:
            raise TLError(f"ONNX Runtime differs from PyTorch by {diff:.2e} > {ONNX_TOLERANCE} on test images; "
                          "not exported")
        out.append({"file": path.name, "max_abs_diff": diff, "tolerance": ONNX_TOLERANCE,
                    "input": "float32 (N, 3, input_size, input_size) after Batcher: /255, gray to 3 channels, "
                             "resize, (x - mean) / std", "output": "logits (softmax, then the bundle's temperature; multilabel: a sigmoid per finding)"})
    return out
