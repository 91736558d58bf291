"""What every benchmark shares: the same data subset for both loops, the device line, the JSON file."""
from __future__ import annotations

import json
import os
import platform
from pathlib import Path

import torch


def subset_folder(root: Path, n_train: int, dest: Path) -> Path:
    """Symlink an evenly spaced subset of train/ so both loops read the same files."""
    files = sorted((root / "train").glob("*/*"))
    step = max(1, len(files) // n_train)
    for f in files[::step][:n_train]:
        (dest / "train" / f.parent.name).mkdir(parents=True, exist_ok=True)
        (dest / "train" / f.parent.name / f.name).symlink_to(f.resolve())
    return dest


def device_description(device: torch.device, threads: int | None = None) -> str:
    """The device a figure was measured on, as the README and the JSON name it."""
    if device.type != "cpu":
        return torch.cuda.get_device_name(device)
    text = f"cpu: {platform.processor() or platform.machine()}, {os.cpu_count()} cores"
    return text + (f", {threads} torch threads" if threads else "")


def write_json(result: dict, path: Path | None) -> None:
    if path:
        path.write_text(json.dumps(result, indent=1))
