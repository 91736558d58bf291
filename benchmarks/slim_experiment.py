"""Copy an experiment folder without what a reader does not need, so it can be committed beside its
report (docs/results): checkpoints, TensorBoard events and Ray's pickled state stay behind.

    python -m benchmarks.slim_experiment results/EXP docs/results/EXP/experiment

Kept: tl_search.json, split_audit.npz, and per trial params.json, result.json, progress.csv,
error.txt and the test/val predictions (from the trial folder, else from its newest checkpoint),
recursively for the finalist stage's folder. Ray's experiment_state-*.json (half a megabyte of
pickled blobs) stays behind: without it a trial's status comes from its own rows (tested, or
stopped by ASHA), which is the same for a finished search. ``tl.core.results.load_experiments``
reads the copy as it reads the original.
"""
from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from tl.core.results import FINALIST_DIR, PREDICTION_KEYS, SEARCH_FILE, AUDIT_FILE, find_predictions_file, trial_dirs

TRIAL_FILES = ("params.json", "result.json", "progress.csv", "error.txt")


def slim(source: Path, dest: Path) -> int:
    """Copy what a reader needs of ``source`` into ``dest``; return the bytes written."""
    dest.mkdir(parents=True, exist_ok=False)
    for name in (SEARCH_FILE, AUDIT_FILE):
        if (source / name).is_file():
            shutil.copy(source / name, dest / name)
    for trial in trial_dirs(source):
        target = dest / trial.name
        target.mkdir()
        for name in TRIAL_FILES:
            if (trial / name).is_file():
                shutil.copy(trial / name, target / name)
        for key in PREDICTION_KEYS:
            found = find_predictions_file(trial, f"{key}.npz")
            if found is not None:
                shutil.copy(found, target / f"{key}.npz")
    if (source / FINALIST_DIR).is_dir():
        slim(source / FINALIST_DIR, dest / FINALIST_DIR)
    return sum(p.stat().st_size for p in dest.rglob("*") if p.is_file())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.slim_experiment", description=__doc__.splitlines()[0])
    p.add_argument("source", type=Path, help="experiment folder")
    p.add_argument("dest", type=Path, help="new folder to write")
    args = p.parse_args(argv)
    if args.dest.exists():
        print(f"error: {args.dest} exists", file=sys.stderr)
        return 2
    print(f"{args.dest}: {slim(args.source, args.dest) / 1e6:.2f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
