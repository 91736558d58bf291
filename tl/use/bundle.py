"""An exported model: ``model.json`` (schema, preprocessing, classes, calibration, provenance) beside
plain weights, and the one code path that turns images into probabilities with it.

Weights are safetensors (no pickle at all); a ``.pt`` member is read with ``weights_only=True``,
so a pickle payload is refused, never run. Preprocessing and inference are the training code's own:
files are decoded by ``tl.data``'s decoder at the size the trial's arrays had, and probabilities come
from ``tl.train.inference.predict_probs``, so a bundle scores the trial's test split exactly as the trial
did. ``model.json``'s layout is written here (:func:`bundle_meta`) beside its reader (:func:`read_meta`).
``reference_features.npz`` holds the first member's penultimate features of the val images (float16,
with their labels; ``tl.use.features``): what new data's features can be compared against.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn

from tl.core.calibration import apply_temperature
from tl.core.errors import TLError
from tl.data import decode_images
from tl.train.inference import Batcher, autocast_dtype, predict_probs
from tl.train.models import build_model

SCHEMA_VERSION = 1
META_FILE = "model.json"
REFERENCE_FEATURES = "reference_features.npz"  # val's penultimate features (tl.use.features)


@dataclass
class Member:
    """One network of a bundle (an ensemble has several) and how its inputs are prepared."""

    model: nn.Module
    spec: dict  # the member's entry in model.json

    def batcher(self, device: torch.device) -> Batcher:
        mean, std = (torch.tensor(self.spec[k], device=device).view(1, 3, 1, 1) for k in ("mean", "std"))
        return Batcher(int(self.spec["input_size"]), mean, std, False, bool(self.spec["channels_last"]))


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def save_weights(state_dict: dict, path: Path) -> str:
    """Write ``state_dict`` as safetensors; return the file's sha256 (model.json records it)."""
    from safetensors.torch import save_file

    save_file({k: v.detach().cpu().contiguous() for k, v in state_dict.items()}, str(path))
    return file_sha256(path)


def load_weights(path: Path, sha256: str | None = None) -> dict:
    """Read safetensors, or a ``.pt`` state dict with ``weights_only=True``; a pickle payload or
    a corrupt file raises ``TLError`` without running anything."""
    if not path.is_file():
        raise TLError(f"{path}: weights file missing")
    if sha256 and file_sha256(path) != sha256:
        raise TLError(f"{path}: corrupt weights (sha256 differs from model.json's); re-export the bundle")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError) as exc:
            raise TLError(f"{path}: corrupt or not a safetensors file ({exc})") from None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # UnpicklingError for a payload, others for truncation: all refused
        raise TLError(f"{path}: refused: not a plain state dict of tensors ({type(exc).__name__}: "
                      f"{str(exc).splitlines()[0][:120]})") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise TLError(f"{path}: refused: not a state dict of tensors")
    return state


def build_member(spec: dict, state_dict: dict, num_classes: int) -> nn.Module:
    """Rebuild a member's network (no pretrained download: every weight comes from the bundle)."""
    model = build_model(spec["backbone"], num_classes, None, image_size=int(spec["input_size"]),
                        patch_size=int(spec.get("patch_size", 4)))
    try:
        model.load_state_dict(state_dict)
    except RuntimeError as exc:
        raise TLError(f"{spec['backbone']}: bundle weights do not fit: {str(exc).splitlines()[0]}") from None
    if spec.get("channels_last"):
        model = model.to(memory_format=torch.channels_last)
    return model.eval()


class Bundle:
    """A loaded bundle: ``predict`` images (arrays or files) into (calibrated) probabilities."""

    def __init__(self, meta: dict, members: list[Member], device: torch.device | None = None):
        self.meta, self.members = meta, members
        self.device = device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
        for m in members:
            m.model.to(self.device)

    @property
    def class_names(self) -> list[str]:
        return list(self.meta["class_names"])

    @property
    def threshold(self) -> float | None:
        return self.meta.get("threshold")

    def check_channels(self, images: np.ndarray, what: str = "images") -> np.ndarray:
        """Return uint8 (N, C, H, W) the bundle can take, or raise where the conversion is not obvious.

        Gray into a colour model is replicated (as in training); colour into a gray model only
        when its channels are equal (a gray image saved as RGB).
        """
        if images.ndim == 3:
            images = images[:, None]
        if images.ndim == 4 and images.shape[-1] in (1, 3) and images.shape[1] not in (1, 3):
            images = images.transpose(0, 3, 1, 2)
        if images.ndim != 4 or images.shape[1] not in (1, 3):
            raise TLError(f"{what}: shape {images.shape} does not fit: expected (N, H, W), (N, 1|3, H, W) "
                          "or (N, H, W, 1|3)")
        if images.dtype != np.uint8:
            raise TLError(f"{what}: dtype {images.dtype}; expected uint8 pixels 0-255 as in training")
        if images.shape[1] == 3 and int(self.meta["channels"]) == 1:
            if not (np.array_equal(images[:, 0], images[:, 1]) and np.array_equal(images[:, 0], images[:, 2])):
                raise TLError(f"{what}: colour images, but the model was trained on grayscale; "
                              "converting colour to gray is not obvious, so convert them yourself")
            images = images[:, :1]
        return np.ascontiguousarray(images)

    @property
    def task(self) -> str:
        """The task from model.json: it picks the activation (sigmoid per finding, or softmax)."""
        return str(self.meta.get("task") or ("binary" if len(self.class_names) == 2 else "multiclass"))

    def predict_raw(self, images: np.ndarray, batch_size: int = 64, progress: bool = False) -> np.ndarray:
        """Mean probabilities of the members (N, C), before temperature scaling (``tl.train.inference``)."""
        images = self.check_channels(np.asarray(images))
        total = np.zeros((len(images), len(self.class_names)), dtype=np.float64)
        for member in self.members:
            total += predict_probs(member.model, images, member.batcher(self.device), self.task, self.device,
                                   batch_size, autocast_dtype(member.spec.get("precision", "fp32")),
                                   progress=f"predict {member.spec['trial']}" if progress else None)
        return total / len(self.members)

    def predict(self, images: np.ndarray | Sequence[str | Path], batch_size: int = 64, calibrated: bool = True,
                progress: bool = False) -> np.ndarray:
        """Class probabilities (N, C) for uint8 images (N, [C,] H, W) or image file paths.

        ``calibrated`` applies the bundle's val-fitted temperature; its threshold is on those.
        """
        if hasattr(images, "__array__") and not isinstance(images, np.ndarray):  # a decode-store split (ChunkRows)
            images = np.asarray(images)
        if not isinstance(images, np.ndarray):
            images, _ = self.decode_files(images, skip_bad=False)
        probs = self.predict_raw(images, batch_size, progress)
        if self.task == "multilabel":  # no temperature: see tl.core.calibration.MULTILABEL_CALIBRATION
            return probs
        return apply_temperature(probs, float(self.meta.get("temperature", 1.0))) if calibrated else probs

    def decode_files(self, paths: Sequence[str | Path], skip_bad: bool) -> tuple[np.ndarray, dict[int, str]]:
        """Decode files as training did (``tl.data``: RGB, bilinear to the trial's decode size).

        Returns the uint8 images of the readable files and ``{index: error}`` for the others.
        """
        size = int(self.meta["decode_size"])
        try:
            images, kept, _ = decode_images([Path(p) for p in paths], size, skip_bad)
        except TLError as exc:
            raise TLError(f"{exc}".replace("pass --skip-bad-images to skip such files",
                                           "pass --skip-bad-images to list them in the CSV instead")) from None
        bad = {i: "corrupt or undecodable image" for i in sorted(set(range(len(paths))) - set(kept))}
        return images, bad

    def called_labels(self, probs: np.ndarray) -> tuple[list[str], list[str]]:
        """(label at the bundle's threshold, label at argmax) per row; threshold only for binary tasks.

        Multilabel: the findings at or above each finding's threshold, joined by ``;`` ("" for
        none), and the findings at 0.5.
        """
        names = self.class_names
        if self.task == "multilabel":
            cut = np.asarray(self.meta.get("thresholds") or [0.5] * len(names))
            def called(t):
                return [";".join(n for n, c in zip(names, row) if c) for row in probs >= t]
            return called(cut), called(0.5)
        argmax = [names[i] for i in probs.argmax(1)]
        if self.threshold is None:
            return argmax, argmax
        pos = int(self.meta["positive_index"])
        other = 1 - pos
        at = [names[pos] if p >= self.threshold else names[other] for p in probs[:, pos]]
        return at, argmax


# How a bundle turns files and arrays into network inputs, in words, for model.json's readers.
PREPROCESSING = ("files: tl.data's decoder (PIL; DICOM through pydicom's pixel pipeline), bilinear resize to "
                 "decode_size; arrays as given; then /255, gray replicated to 3 channels, bilinear (antialiased when "
                 "shrinking) to each member's input_size, (x - mean) / std (tl.train.inference.Batcher)")


def bundle_meta(*, task: str, class_names: list[str], positive: int | None, channels: int, members: list[dict],
                calibration: dict, provenance: dict) -> dict:
    """``model.json``'s layout, schema ``SCHEMA_VERSION`` (what :func:`read_meta` and ``Bundle`` read).

    Args:
        positive: binary tasks: the positive class's index (None otherwise).
        members: one spec per network (``tl.export``'s member specs: weights file, backbone, sizes,
            mean/std, sha256); their ``decode_size`` must agree.
        calibration: ``tl.core.calibration.calibration_figures`` (temperature, threshold(s), ECE ...).
        provenance: experiment, trials, dataset fingerprints, metrics, versions, export time.
    """
    binary = task == "binary" and positive is not None
    return {
        "schema_version": SCHEMA_VERSION, "kind": "ensemble" if len(members) > 1 else "single",
        "task": task, "class_names": list(class_names),
        "positive_index": positive if binary else None, "positive_class": class_names[positive] if binary else None,
        "thresholds": calibration.get("thresholds"), "channels": int(channels),
        "decode_size": members[0]["decode_size"], "preprocessing": PREPROCESSING,
        "temperature": calibration["temperature"], "threshold": calibration["threshold"],
        "target_sensitivity": calibration["target_sensitivity"], "members": members,
        "provenance": {**provenance, "calibration": calibration},
    }


def write_meta(folder: Path, meta: dict) -> None:
    """Write ``model.json`` into a bundle folder."""
    (folder / META_FILE).write_text(json.dumps(meta, indent=1))


def read_meta(path: Path) -> dict:
    """Read and check ``model.json``: a newer schema than this code is refused."""
    file = path / META_FILE if path.is_dir() else path
    try:
        meta = json.loads(file.read_text())
    except (OSError, ValueError) as exc:
        raise TLError(f"{file}: not a readable bundle description ({exc})") from None
    version = meta.get("schema_version") if isinstance(meta, dict) else None
    if not isinstance(version, int):
        raise TLError(f"{file}: no schema_version: not a tl bundle")
    if version > SCHEMA_VERSION:
        raise TLError(f"{file}: bundle schema {version} is newer than this tl understands ({SCHEMA_VERSION}); "
                      "upgrade tl")
    return meta


def load_bundle(path: str | Path, device: str | torch.device | None = None) -> Bundle:
    """Load an exported bundle folder (``model.json`` + weights) for prediction.

    Raises:
        TLError: a newer schema, missing or corrupt weights, a pickle payload, weights that do not fit.
    """
    path = Path(path)
    meta = read_meta(path)
    root = path if path.is_dir() else path.parent
    members = []
    for spec in meta["members"]:
        state = load_weights(root / spec["weights_file"], spec.get("sha256"))
        members.append(Member(build_member(spec, state, len(meta["class_names"])), spec))
    return Bundle(meta, members, torch.device(device) if device else None)
