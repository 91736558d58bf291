"""Issue 25's study: the recommended model's test figure under three protocols, over carve seeds.

    python -m benchmarks.cv_study [--datasets chestxray14_1000 nih-table pneumoniamnist] [--seeds 0 1 2]
        [--storage results/cv-study] [--out docs/results/cv-study] [--data-dir ../shared/data]

For each dataset and seed it runs ``search_spaces/cv_study.py`` twice with the same ``--seed``: once
with ``--finalists 3`` (finalists over 3 new seeds) and once with ``--finalists 3 --cv 5``. From
the first it reads (a) the search's single val pick and (b) the finalists' seed ensemble; from the
second (c) the cross-validated fold ensemble. Each protocol's test figure (AUC; mean AUC over
findings for multilabel sets) with its 95 % bootstrap interval, the wall time of the search and of
each stage (from the trials' own timestamps), and per dataset the mean and spread over seeds.
Writes each command's console, ``study.csv`` and ``study.md`` into ``--out``.
"""
from __future__ import annotations

import argparse
import datetime as dt
import re
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

from tl.core.finalists import ensemble_figures
from tl.core.recommend import recommend, recommended_predictions
from tl.core.results import load_experiments, positive_index, split_stages
from tl.core.results.files import dataset_record

SPACE = "search_spaces/cv_study.py"
DATASETS = {
    # the patient is the 8 digits before "_" in each NIH file name: folds must not split one
    "chestxray14_1000": ["--dataset", "chestxray14_1000", "--groups", r"^(\d{8})_"],
    "nih-table": ["--dataset", "{data}/nih_cxr14_1000/Data_Entry_2017.csv", "--labels", "Finding Labels",
                  "--group-column", "Patient ID"],
    # MedMNIST ships it at 28 px: the space's 64 px would only upsample it, at 5x the ConvModel's cost
    "pneumoniamnist": ["--dataset", "pneumoniamnist", "--set", "image_size=28"],
}
PROTOCOLS = {"seeds": ["--finalists", "3"], "cv": ["--finalists", "3", "--cv", "5"]}


def run(name: str, dataset: str, seed: int, protocol: str, args: argparse.Namespace) -> float:
    """Run one search; write its console to ``--out``; return its wall seconds."""
    extra = [a.replace("{data}", str(args.data_dir)) for a in DATASETS[dataset]]
    cmd = [sys.executable, "-m", "tl.search", SPACE, *extra, "--data-dir", str(args.data_dir), "--offline",
           "--seed", str(seed), *PROTOCOLS[protocol], "--storage", str(args.storage), "--name", name]
    shown = " ".join(c if " " not in c else f"'{c}'" for c in ["python", *cmd[1:]])
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    text = f"$ {shown}\n{proc.stdout}{proc.stderr[-3000:] if proc.returncode else ''}[exit {proc.returncode}, {seconds:.0f} s]\n"
    (args.out / f"{name}.txt").write_text(_public(text, args))
    if proc.returncode:
        raise SystemExit(f"error: {name} failed (exit {proc.returncode}); see {args.out / (name + '.txt')}")
    return seconds


def _public(text: str, args: argparse.Namespace) -> str:
    """No machine paths in what is committed."""
    return text.replace(str(Path(args.storage).resolve()), "<storage>").replace(str(args.storage), "<storage>") \
        .replace(str(Path(args.data_dir).resolve()), "../shared/data").replace(str(Path.home()), "~")


def _span(exp) -> float:
    """Wall seconds from the first trial's first epoch start to the last report."""
    f = exp.frame
    if f.empty or "timestamp" not in f.columns:
        return float("nan")
    start = (f["timestamp"] - f.get("time_this_iter_s", 0)).min()
    return float(f["timestamp"].max() - start)


def figures(exp, rec) -> dict:
    val, test = recommended_predictions(rec)
    found = ensemble_figures(test, positive=positive_index(exp.meta), task=dataset_record(exp.meta).get("task"))
    return {"test_auc": found["test_auc"], "low": found["test_auc_low"], "high": found["test_auc_high"],
            "val": rec.val, "members": len(rec.trials), "model": rec.kind}


def measure(storage: Path, dataset: str, seed: int, walls: dict, out: Path) -> list[dict]:
    rows = []
    seeds_exp = load_experiments([storage / f"{dataset}-seeds-{seed}"])
    search, stage = split_stages(seeds_exp)
    rows.append({"protocol": "(a) single val pick", **figures(search, recommend(search)),
                 "wall_s": _span(search)})
    rows.append({"protocol": "(b) finalists over 3 seeds", **figures(seeds_exp, recommend(seeds_exp)),
                 "wall_s": _span(search) + _span(stage)})
    cv_exp = load_experiments([storage / f"{dataset}-cv-{seed}"])
    cv_search, cv_stage = split_stages(cv_exp)
    rows.append({"protocol": "(c) finalists with 5-fold CV", **figures(cv_exp, recommend(cv_exp)),
                 "wall_s": _span(cv_search) + _span(cv_stage)})
    for r in rows:
        r.update(dataset=dataset, seed=seed)
    rows[-1]["command_s"] = walls.get("cv", _console_seconds(out, f"{dataset}-cv-{seed}"))
    rows[1]["command_s"] = walls.get("seeds", _console_seconds(out, f"{dataset}-seeds-{seed}"))
    return rows


def _console_seconds(out: Path, name: str) -> float | None:
    """The wall seconds a search run before this call took, from the ``[exit 0, N s]`` line of its saved console."""
    console = out / f"{name}.txt"
    found = re.search(r"\[exit 0, (\d+) s\]\s*$", console.read_text()) if console.is_file() else None
    return float(found.group(1)) if found else None


def summary(frame: pd.DataFrame) -> str:
    lines = ["| dataset | protocol | test AUC per seed | mean ± sd over seeds | wall time (mean) |", "|---|---|---|---|---|"]
    for (dataset, protocol), g in frame.groupby(["dataset", "protocol"], sort=False):
        each = ", ".join(f"{a:.3f} [{lo:.3f}, {hi:.3f}]" for a, lo, hi in zip(g["test_auc"], g["low"], g["high"]))
        sd = g["test_auc"].std(ddof=1) if len(g) > 1 else float("nan")
        lines.append(f"| {dataset} | {protocol} | {each} | {g['test_auc'].mean():.3f} ± {sd:.3f} | "
                     f"{g['wall_s'].mean() / 60:.1f} min |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.cv_study", description=__doc__.splitlines()[0])
    p.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--storage", type=Path, default=Path("results/cv-study"))
    p.add_argument("--out", type=Path, default=Path("docs/results/cv-study"))
    p.add_argument("--data-dir", type=Path, default=Path("../shared/data"))
    p.add_argument("--measure-only", action="store_true", help="read the experiments already in --storage")
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for dataset in args.datasets:
        for seed in args.seeds:
            walls = {}
            for protocol in PROTOCOLS:
                name = f"{dataset}-{protocol}-{seed}"
                if not args.measure_only and not (args.storage / name).is_dir():
                    walls[protocol] = run(name, dataset, seed, protocol, args)
                    print(f"[cv_study] {name}: {walls[protocol]:.0f} s", flush=True)
            rows += measure(args.storage, dataset, seed, walls, args.out)
            frame = pd.DataFrame(rows)
            frame.to_csv(args.out / "study.csv", index=False)
            (args.out / "study.md").write_text(f"# CV study ({dt.date.today()}, {SPACE})\n\n{summary(frame)}\n")
    print(summary(pd.DataFrame(rows)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
