"""P3: how many training epochs ASHA + TPE spends to come within 1 point of an exhaustive grid's best.

    python -m benchmarks.search_efficiency [--quick] [--json out.json]

A fixed discrete space (ConvModel from scratch on PneumoniaMNIST, 28 px, no augmentation: lr x
batch size x weight decay) is run twice through the real CLI, ``python -m tl.search``:

1. ``SAMPLER = "grid"`` with ASHA's grace period = max epochs: every configuration, every epoch.
   Its best val acc (any trial, any epoch) is the reference.
2. ``SAMPLER = "tpe"`` with ASHA (grace 1, reduction factor 3), as many trials as the grid has
   configurations, once per sampler seed. Trials keep seed 0 (``--set seed=0``), so a
   configuration trains exactly as it did in the grid; only the sampler's seed changes.

Every epoch a trial reports is one epoch consumed. The search's epochs are put in the order Ray
stamped them (``timestamp``, whole seconds; ties count in full, which can only overcount), and
the count stops at the first epoch whose val acc is within 1 point (0.01) of the grid's best.
fraction = that count / the grid's epochs. A search that never gets there has no fraction and
misses the target.
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from tl.core.results import trial_dirs
from tl.core.results import read_params, read_result_rows
from benchmarks.common import device_description, write_json

TARGET = 0.33
WITHIN = 0.01
SPACE = '''
DATASET = "pneumoniamnist"
BACKBONES = {{"convmodel": ["none"]}}
FREEZE = ["none"]
PARAMS = {params!r}
FIXED = {{"image_size": 28, "augment": False, "epochs": {epochs}}}
METRIC = "val_acc"
MODE = "max"
MAX_EPOCHS = {epochs}
GRACE_PERIOD = 1
REDUCTION_FACTOR = 3
CPUS_PER_TRIAL = 1
'''
FULL = {"lr": [1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2], "batch_size": [32, 128], "weight_decay": [0.0, 1e-3]}
QUICK = {"lr": [3e-4, 1e-3, 3e-3, 1e-2], "batch_size": [64, 256]}


def run_search(space_file: Path, storage: Path, name: str, data_dir: str, extra: list[str]) -> list[dict]:
    """One ``python -m tl.search`` run; every reported epoch row of every trial."""
    cmd = [sys.executable, "-m", "tl.search", str(space_file), "--data-dir", data_dir, "--storage", str(storage),
           "--name", name, "--set", "seed=0", *extra]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}:\n{proc.stderr[-3000:]}")
    rows = []
    for trial_dir in trial_dirs(storage / name):
        params = read_params(trial_dir)
        for r in read_result_rows(trial_dir)[0]:
            rows.append({"trial": trial_dir.name, "timestamp": r["timestamp"], "val_acc": r["val_acc"],
                         "config": {k: params[k] for k in ("lr", "batch_size", "weight_decay")}})
    return rows


def epochs_to_reach(rows: list[dict], target_acc: float) -> int | None:
    """Epochs consumed, in reporting order, until one reaches ``target_acc`` (ties in time count in full)."""
    ordered = sorted(rows, key=lambda r: r["timestamp"])
    for r in ordered:
        if r["val_acc"] >= target_acc:
            return sum(1 for o in ordered if o["timestamp"] <= r["timestamp"])
    return None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.search_efficiency", description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default=os.environ.get("TL_DATA_DIR", "../shared/data"))
    p.add_argument("--quick", action="store_true", help="8 configurations x 3 epochs, 2 sampler seeds")
    p.add_argument("--seeds", type=int, help="sampler seeds for ASHA + TPE (default 3, quick 2)")
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    data_dir = str(Path(args.data_dir).resolve())
    params, epochs = (QUICK, 3) if args.quick else (FULL, 6)
    seeds = args.seeds or (2 if args.quick else 3)
    n_configs = 1
    for choices in params.values():
        n_configs *= len(choices)

    with tempfile.TemporaryDirectory() as tmp:
        storage, space_file = Path(tmp) / "results", Path(tmp) / "p3_space.py"
        space_file.write_text(SPACE.format(params=params, epochs=epochs))
        os.environ["TL_CACHE_DIR"] = str(Path(tmp) / "cache")
        grid = run_search(space_file, storage, "grid", data_dir, ["--sampler", "grid", "--grace-period", str(epochs)])
        grid_epochs = len(grid)
        best = max(grid, key=lambda r: r["val_acc"])
        runs = []
        for seed in range(seeds):
            rows = run_search(space_file, storage, f"tpe{seed}", data_dir,
                              ["--sampler", "tpe", "--seed", str(seed), "--num-samples", str(n_configs)])
            used = epochs_to_reach(rows, best["val_acc"] - WITHIN)
            runs.append({"sampler_seed": seed, "epochs_to_within": used, "epochs_total": len(rows),
                         "trials": len({r["trial"] for r in rows}), "best_val_acc": max(r["val_acc"] for r in rows),
                         "fraction": None if used is None else round(used / grid_epochs, 3)})

    fractions = [r["fraction"] for r in runs]
    reached = [f for f in fractions if f is not None]
    median = statistics.median(reached) if len(reached) == len(runs) else None
    result = {"benchmark": "P3 search efficiency", "fraction": median, "target": TARGET,
              "met": median is not None and median <= TARGET, "fraction_per_seed": fractions,
              "grid_configs": n_configs, "grid_epochs": grid_epochs, "max_epochs": epochs,
              "grid_best_val_acc": best["val_acc"], "grid_best_config": best["config"], "within": WITHIN,
              "space": params, "runs": runs, "device": device_description(torch.device("cpu")),
              "date": dt.date.today().isoformat(), "quick": args.quick}
    print(f"grid: {n_configs} configurations x {epochs} epochs = {grid_epochs} epochs, best val acc "
          f"{best['val_acc']:.4f} ({best['config']})")
    print(f"{'sampler seed':>12}{'epochs to within 1 pt':>24}{'fraction':>10}{'epochs run':>12}{'best val':>10}")
    for r in runs:
        frac = "never" if r["fraction"] is None else f"{r['fraction']:.3f}"
        print(f"{r['sampler_seed']:>12}{str(r['epochs_to_within']):>24}{frac:>10}{r['epochs_total']:>12}"
              f"{r['best_val_acc']:>10.4f}")
    shown = "n/a (a seed never got within 1 point)" if median is None else f"{median:.3f}"
    print(f"median fraction {shown} (target <= {TARGET}) on {result['device']}, {result['date']}")
    write_json(result, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
