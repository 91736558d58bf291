"""P1: full fine-tuning throughput, the project's epoch loop vs the tutorial's loop.

    python -m benchmarks.throughput [--quick] [--json out.json]

Same JPEGs (an evenly spaced subset of chest_xray/train, symlinked), models (resnet18 with random
weights — speed does not depend on the weights — and pretrained EfficientNet-Lite0), every
parameter trained, SGD (momentum 0.9), image size, batch size, epochs, device and torch threads.

- tutorial: ImageFolder + PIL RandomResizedCrop/flip/ToTensor/Normalize every epoch, a DataLoader
  with the tutorial's 4 workers (at most one per core: 2 on a 2-core CPU), a ``.item()`` host
  sync per batch.
- tl: the JPEGs decoded once at the image size (``load_image_folder``, timed on its own), then
  ``train_one_epoch`` with ``Batcher(size, mean, std, augment=True)`` (random affine on the batch),
  with the trainable's default memory format and precision (``DEFAULTS``; ``--no-channels-last``
  and ``--precision`` measure the others). On a GPU the uint8 images sit in device memory, as
  ``run_epochs`` puts them (``resident_split``); ``--host-data`` copies each batch from the host
  instead, the loop before that change.

Reported per model: images/s of each side; ``ratio`` = tl / tutorial in steady state (decode
excluded: what every later trial and epoch pays, the decode being shared through the object
store); ``ratio_with_decode`` = tl with the one decode charged to this run's epochs; ``bare`` =
the same model stepping on one resident random batch, so ``tl_fraction_of_bare`` says how close
the loop is to the model's own speed and ``ceiling_ratio`` = bare / tutorial bounds ``ratio``.
Every side is warmed up first (one untimed epoch, or a few bare steps); ``tl_warmup_epoch_s``
reports that first epoch beside the steady ``tl_epoch_s``, because a short trial pays it.
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from benchmarks.common import device_description, subset_folder, write_json
from benchmarks.tutorial import tutorial_loaders, tutorial_train
from tl.data import load_image_folder
from tl.train.models import build_model, get_backbone, get_classifier
from tl.train.config import DEFAULTS, PRECISIONS
from tl.train.inference import Batcher, autocast_dtype
from tl.train.trainable import resident_split, train_one_epoch
from tl.train.weights import load_state_dict, normalization

# P1 targets: tl / tutorial on a CPU; on a GPU also tl / bare (the loop must not starve the model).
TARGET = {"cpu": 1.5, "cuda": 3.0}
BARE_TARGET_GPU = 0.7
WARMUP_STEPS = 5  # untimed bare steps; the loops get one untimed epoch each
MODELS = [("resnet18", "none"), ("timm/efficientnet_lite0", "IMAGENET1K_PYPI")]
LR = 1e-3


def _model(backbone: str, weights: str, size: int, device: torch.device, channels_last: bool) -> nn.Module:
    torch.manual_seed(0)
    model = build_model(backbone, 2, load_state_dict(backbone, weights), image_size=size).to(device)
    return model.to(memory_format=torch.channels_last) if channels_last else model


def _bare_seconds(backbone: str, weights: str, steps: int, size: int, batch: int, device: torch.device,
                  channels_last: bool, precision: str) -> float:
    """Wall seconds of ``steps`` bare training steps on one resident random batch: the model's own
    step rate, which no loop can beat, so ``bare / tutorial`` is the ceiling of ``ratio``."""
    model = _model(backbone, weights, size, device, channels_last)
    x = torch.randn(batch, 3, size, size, device=device)
    x = x.contiguous(memory_format=torch.channels_last) if channels_last else x
    y = torch.randint(0, 2, (batch,), device=device)
    optimizer = torch.optim.SGD(model.parameters(), lr=LR, momentum=0.9)
    amp_dtype = autocast_dtype(precision)
    model.train()

    def run(n: int) -> float:
        t0 = time.perf_counter()
        for _ in range(n):
            with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                loss = nn.functional.cross_entropy(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        loss.item()  # waits for the device
        return time.perf_counter() - t0

    run(WARMUP_STEPS)
    return run(steps)


def _tl_seconds(backbone: str, weights: str, images: torch.Tensor, labels: torch.Tensor, size: int,
                batch: int, epochs: int, device: torch.device, channels_last: bool, precision: str,
                host_data: bool) -> tuple[float, float]:
    """Wall seconds of a warm-up epoch, then of ``epochs`` timed calls to ``train_one_epoch`` on
    already-decoded uint8 images. The warm-up is the one-time cost a trial's process pays on its
    first epoch (kernel selection, lazy initialisation); it is reported, not counted in the rate."""
    model = _model(backbone, weights, size, device, channels_last)
    if not host_data:  # what run_epochs does: the split moves to the GPU once, outside the timing
        images, labels = resident_split({"train": (images, labels)}, device)["train"]
    mean, std = (torch.tensor(v, device=device).view(1, 3, 1, 1) for v in normalization(backbone, weights))
    batcher = Batcher(size, mean, std, augment=True, channels_last=channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=LR, momentum=0.9)
    criterion, amp_dtype = nn.CrossEntropyLoss(), autocast_dtype(precision)
    def run(first: int, last: int) -> float:
        t0 = time.perf_counter()
        for epoch in range(first, last):
            train_one_epoch(model, criterion, optimizer, images, labels, batcher, batch,
                            torch.Generator().manual_seed(epoch), device, amp_dtype)
        return time.perf_counter() - t0  # train_one_epoch ends on a host sync

    return run(0, 1), run(1, epochs + 1)


def _tutorial_seconds(backbone: str, weights: str, root: Path, n_train: int, size: int, batch: int,
                      epochs: int, device: torch.device, workers: int) -> float:
    """Wall seconds of the tutorial's fine-tuning loop (all parameters optimised), after one
    untimed warm-up epoch, as the other two sides get."""
    torch.manual_seed(0)
    model = build_model(backbone, 2, load_state_dict(backbone, weights), image_size=size).to(device)
    mean, std = normalization(backbone, weights)
    loader = tutorial_loaders(root, size, batch, n_train, workers=workers, mean=mean, std=std)
    head = get_classifier(model, get_backbone(backbone))
    tutorial_train(model, head, loader, 1, LR, device, params=model.parameters())
    return tutorial_train(model, head, loader, epochs, LR, device, params=model.parameters())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.throughput", description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default=os.environ.get("TL_DATA_DIR", "../shared/data"))
    p.add_argument("--quick", action="store_true", help="400 images, 96 px, 3 epochs: about 3 minutes on 2 CPU cores")
    p.add_argument("--epochs", type=int, help="default 3")
    p.add_argument("--threads", type=int, default=2, help="torch threads, the same for both loops")
    p.add_argument("--no-channels-last", dest="channels_last", action="store_false",
                   default=DEFAULTS["channels_last"], help="tl side in NCHW (default: the trainable's default)")
    p.add_argument("--precision", choices=PRECISIONS, default=DEFAULTS["precision"], help="tl side's autocast")
    p.add_argument("--tutorial-workers", type=int, default=min(4, os.cpu_count() or 1),
                   help="the tutorial's DataLoader workers (default: its own 4, at most one per core)")
    p.add_argument("--host-data", action="store_true",
                   help="tl side copies every batch from host memory (default on a GPU: images resident there)")
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    n_train, size, batch = (400, 96, 32) if args.quick else (1000, 224, 32)
    epochs = args.epochs or 3
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
        # copies: the store's splits are read-only memory maps, which torch warns about
        images = torch.from_numpy(np.array(arrays.images["train"]))
        labels = torch.from_numpy(np.array(arrays.labels["train"]))
        n = len(labels)
        # train_one_epoch drops a last batch of one image; the tutorial does not
        batches = n // batch + (n % batch > 1)
        steps, tl_images = epochs * batches, epochs * min(n, batches * batch)
        for backbone, weights in MODELS:
            tut_s = _tutorial_seconds(backbone, weights, sub, n_train, size, batch, epochs, device,
                                      args.tutorial_workers)
            tl_warmup_s, tl_s = _tl_seconds(backbone, weights, images, labels, size, batch, epochs, device,
                               args.channels_last, args.precision, args.host_data)
            bare_s = _bare_seconds(backbone, weights, steps, size, batch, device, args.channels_last, args.precision)
            tut_ips, tl_ips, bare_ips = epochs * n / tut_s, tl_images / tl_s, steps * batch / bare_s
            tl_dec_ips = tl_images / (tl_s + decode_s)
            rows[backbone] = {"tutorial_s": round(tut_s, 2), "tl_s": round(tl_s, 2),
                              "tl_warmup_epoch_s": round(tl_warmup_s, 2),
                              "tl_epoch_s": round(tl_s / epochs, 2),
                              "tutorial_images_per_s": round(tut_ips, 1), "tl_images_per_s": round(tl_ips, 1),
                              "tl_with_decode_images_per_s": round(tl_dec_ips, 1),
                              "bare_images_per_s": round(bare_ips, 1),
                              "ratio": round(tl_ips / tut_ips, 2), "ratio_with_decode": round(tl_dec_ips / tut_ips, 2),
                              "tl_fraction_of_bare": round(tl_ips / bare_ips, 2),
                              "ceiling_ratio": round(bare_ips / tut_ips, 2)}

    ratio = min(r["ratio"] for r in rows.values())
    of_bare = min(r["tl_fraction_of_bare"] for r in rows.values())
    target = TARGET["cpu" if device.type == "cpu" else "cuda"]
    bare_target = None if device.type == "cpu" else BARE_TARGET_GPU
    met = ratio >= target and (bare_target is None or of_bare >= bare_target)
    result = {"benchmark": "P1 throughput", "ratio": ratio, "target": target, "tl_fraction_of_bare": of_bare,
              "bare_target": bare_target, "met": met,
              "models": rows, "decode_s": round(decode_s, 2), "decode_images_per_s": round(n / decode_s, 1),
              "epochs": epochs, "train_images": n, "image_size": size, "batch_size": batch, "freeze": "none",
              "channels_last": args.channels_last, "precision": args.precision,
              "tutorial_workers": args.tutorial_workers, "host_data": args.host_data or device.type == "cpu",
              "device": device_description(device, args.threads),
              "date": dt.date.today().isoformat(), "quick": args.quick, "load_avg": os.getloadavg()[0]}
    print(f"{'images/s':26}{'tutorial':>10}{'tl':>10}{'tl+decode':>11}{'bare':>9}{'ratio':>8}{'w/ decode':>11}"
          f"{'tl/bare':>9}{'ceiling':>9}{'1st epoch':>11}{'epoch':>8}")
    for name, r in rows.items():
        print(f"{name:26}{r['tutorial_images_per_s']:>10.1f}{r['tl_images_per_s']:>10.1f}"
              f"{r['tl_with_decode_images_per_s']:>11.1f}{r['bare_images_per_s']:>9.1f}{r['ratio']:>7.2f}x"
              f"{r['ratio_with_decode']:>10.2f}x{r['tl_fraction_of_bare']:>9.2f}{r['ceiling_ratio']:>8.2f}x"
              f"{r['tl_warmup_epoch_s']:>10.2f}s{r['tl_epoch_s']:>7.2f}s")
    print("bare: the same model stepping on one resident random batch; ceiling = bare / tutorial, "
          "the most any loop could reach; 1st epoch: tl's untimed warm-up epoch, epoch: its steady epoch")
    print(f"decode once: {n} JPEGs in {decode_s:.1f} s ({n / decode_s:.0f} images/s); {epochs} epochs, "
          f"{size} px, batch {batch}; tutorial workers {args.tutorial_workers}; tl side: "
          f"channels_last={args.channels_last}, precision={args.precision}, host_data={result['host_data']}")
    bare_line = "" if bare_target is None else f"; tl/bare (worst) {of_bare:.2f} (target >= {bare_target})"
    print(f"ratio (worst model) {ratio:.2f}x (target >= {target}x){bare_line}: {'met' if met else 'MISSED'} "
          f"on {result['device']}, {result['date']}")
    write_json(result, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
