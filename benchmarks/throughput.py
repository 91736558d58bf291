"""P1: full fine-tuning throughput, the project's epoch loop vs the tutorial's loop.

    python -m benchmarks.throughput [--quick] [--json out.json]

Same JPEGs (an evenly spaced subset of chest_xray/train, symlinked), models (resnet18 with random
weights — speed does not depend on the weights — and pretrained EfficientNet-Lite0), every
parameter trained, SGD (momentum 0.9), image size, batch size, epochs, device and torch threads.

- tutorial: ImageFolder + PIL RandomResizedCrop/flip/ToTensor/Normalize every epoch, a DataLoader
  with 2 workers, a ``.item()`` host sync per batch.
- tl: the JPEGs decoded once at the image size (``load_image_folder``, timed on its own), then
  ``train_one_epoch`` with ``Batcher(size, mean, std, augment=True)`` (random affine on the batch).

Reported per model: images/s of each side; ``ratio`` = tl / tutorial in steady state (decode
excluded: what every later trial and epoch pays, the decode being shared through the object
store); ``ratio_with_decode`` = tl with the one decode charged to this run's epochs.
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

from benchmarks.common import device_description, subset_folder, write_json
from benchmarks.tutorial import tutorial_loaders, tutorial_train
from tl.data import load_image_folder
from tl.models import build_model, get_backbone, get_classifier
from tl.trainable import Batcher, train_one_epoch
from tl.weights import load_state_dict, normalization

TARGET = 1.5
MODELS = [("resnet18", "none"), ("timm/efficientnet_lite0", "IMAGENET1K_PYPI")]
LR = 1e-3


def _tl_seconds(backbone: str, weights: str, images: torch.Tensor, labels: torch.Tensor, size: int,
                batch: int, epochs: int, device: torch.device) -> float:
    """Wall seconds of ``epochs`` calls to ``train_one_epoch`` on already-decoded uint8 images."""
    torch.manual_seed(0)
    model = build_model(backbone, 2, load_state_dict(backbone, weights), image_size=size).to(device)
    mean, std = (torch.tensor(v, device=device).view(1, 3, 1, 1) for v in normalization(backbone, weights))
    batcher = Batcher(size, mean, std, augment=True)
    optimizer = torch.optim.SGD(model.parameters(), lr=LR, momentum=0.9)
    criterion = nn.CrossEntropyLoss()
    t0 = time.perf_counter()
    for epoch in range(epochs):
        train_one_epoch(model, criterion, optimizer, images, labels, batcher, batch,
                        torch.Generator().manual_seed(epoch), device)
    return time.perf_counter() - t0


def _tutorial_seconds(backbone: str, weights: str, root: Path, n_train: int, size: int, batch: int,
                      epochs: int, device: torch.device) -> float:
    """Wall seconds of the tutorial's fine-tuning loop (all parameters optimised)."""
    torch.manual_seed(0)
    model = build_model(backbone, 2, load_state_dict(backbone, weights), image_size=size).to(device)
    mean, std = normalization(backbone, weights)
    loader = tutorial_loaders(root, size, batch, n_train, workers=2, mean=mean, std=std)
    return tutorial_train(model, get_classifier(model, get_backbone(backbone)), loader, epochs, LR, device,
                          params=model.parameters())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.throughput", description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default=os.environ.get("TL_DATA_DIR", "../shared/data"))
    p.add_argument("--quick", action="store_true", help="200 images, 96 px, 2 epochs: a few minutes on 2 CPU cores")
    p.add_argument("--epochs", type=int, help="default 2 with --quick, else 3")
    p.add_argument("--threads", type=int, default=2, help="torch threads, the same for both loops")
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    n_train, size, batch = (200, 96, 32) if args.quick else (1000, 224, 32)
    epochs = args.epochs or (2 if args.quick else 3)
    torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    root = Path(args.data_dir) / "chest_xray"

    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        sub = subset_folder(root, n_train, Path(tmp) / "data")
        t0 = time.perf_counter()
        # every subset image goes to train: both loops see exactly the same files
        arrays = load_image_folder(sub, size, val_fraction=0.0, test_fraction=0.0, seed=0)
        decode_s = time.perf_counter() - t0
        images, labels = torch.from_numpy(arrays.images["train"]), torch.from_numpy(arrays.labels["train"])
        n = len(labels)
        # train_one_epoch drops a last batch of one image; the tutorial does not
        tl_images = epochs * min(n, (n // batch + (n % batch > 1)) * batch)
        for backbone, weights in MODELS:
            tut_s = _tutorial_seconds(backbone, weights, sub, n_train, size, batch, epochs, device)
            tl_s = _tl_seconds(backbone, weights, images, labels, size, batch, epochs, device)
            tut_ips, tl_ips = epochs * n / tut_s, tl_images / tl_s
            tl_dec_ips = tl_images / (tl_s + decode_s)
            rows[backbone] = {"tutorial_s": round(tut_s, 2), "tl_s": round(tl_s, 2),
                              "tutorial_images_per_s": round(tut_ips, 1), "tl_images_per_s": round(tl_ips, 1),
                              "tl_with_decode_images_per_s": round(tl_dec_ips, 1),
                              "ratio": round(tl_ips / tut_ips, 2), "ratio_with_decode": round(tl_dec_ips / tut_ips, 2)}

    ratio = min(r["ratio"] for r in rows.values())
    result = {"benchmark": "P1 throughput", "ratio": ratio, "target": TARGET, "met": ratio >= TARGET,
              "models": rows, "decode_s": round(decode_s, 2), "decode_images_per_s": round(n / decode_s, 1),
              "epochs": epochs, "train_images": n, "image_size": size, "batch_size": batch, "freeze": "none",
              "device": device_description(device, args.threads),
              "date": dt.date.today().isoformat(), "quick": args.quick, "load_avg": os.getloadavg()[0]}
    print(f"{'images/s':26}{'tutorial':>10}{'tl':>10}{'tl+decode':>11}{'ratio':>8}{'w/ decode':>11}")
    for name, r in rows.items():
        print(f"{name:26}{r['tutorial_images_per_s']:>10.1f}{r['tl_images_per_s']:>10.1f}"
              f"{r['tl_with_decode_images_per_s']:>11.1f}{r['ratio']:>7.2f}x{r['ratio_with_decode']:>10.2f}x")
    print(f"decode once: {n} JPEGs in {decode_s:.1f} s ({n / decode_s:.0f} images/s); {epochs} epochs, "
          f"{size} px, batch {batch}")
    print(f"ratio (worst model) {ratio:.2f}x (target >= {TARGET}x) on {result['device']}, {result['date']}")
    write_json(result, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
