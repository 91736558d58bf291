"""Image-level vs patient-grouped val: the val−test gap of each recipe, and whose val ranks as test does.

    python -m benchmarks.grouping_study IMAGE_LEVEL_EXPERIMENT GROUPED_EXPERIMENT [--json out.json]
        [--more-image-level EXP ...] [--more-grouped EXP ...]

Both experiments run the same grid (``search_spaces/chest_xray_grouping.py``: recipes × seeds) on
the same official test split; they differ only in how val was carved from train. For each
experiment and recipe: best val acc and test acc, mean ± std over seeds, and the gap between them.
Then whether val orders the recipes as test does: by the recipes' means, seed by seed, and over
all trials (Kendall's tau of best val acc against test acc). With ``--more-*``, the same grid run
with other carve seeds: the gap per carve, and its mean ± std over carves. Reads results only.
"""
from __future__ import annotations

import argparse
import datetime as dt
import functools
import json
from pathlib import Path

import numpy as np
import pandas as pd

from tl.core.results import load_experiments, trial_table

RECIPE = ("backbone", "weights", "freeze")


@functools.lru_cache(maxsize=None)  # study() and carve_table() read the same experiments
def trial_frame(experiment: Path) -> tuple[pd.DataFrame, dict]:
    """One row per tested trial: recipe, seed, best val acc, test acc, gap; and the search's record."""
    exp = load_experiments([experiment])
    table = trial_table(exp).merge(exp.trials[["trial", "seed"]], on="trial")
    table = table.dropna(subset=["test_acc", "best_val_acc"]).copy()
    table["recipe"] = table[list(RECIPE)].astype(str).agg(" ".join, axis=1).str.removeprefix("timm/")
    table["gap"] = table["best_val_acc"] - table["test_acc"]
    return table[["trial", "recipe", "seed", "best_val_acc", "test_acc", "gap"]], exp.meta


def _kendall_tau(a: np.ndarray, b: np.ndarray) -> float:
    from scipy.stats import kendalltau

    return float(kendalltau(a, b).statistic) if len(a) > 1 else float("nan")


def study(experiment: Path) -> dict:
    """Per-recipe means and the ranking checks of one experiment."""
    trials, meta = trial_frame(experiment)
    recipes = {}
    for recipe, rows in trials.groupby("recipe", sort=True):
        recipes[recipe] = {"n_seeds": int(rows["seed"].nunique())}
        for c in ("best_val_acc", "test_acc", "gap"):
            recipes[recipe].update({f"{c}_mean": float(rows[c].mean()), f"{c}_std": float(rows[c].std(ddof=1))})
    by_val = sorted(recipes, key=lambda r: -recipes[r]["best_val_acc_mean"])
    by_test = sorted(recipes, key=lambda r: -recipes[r]["test_acc_mean"])
    per_seed = {}
    for seed, rows in trials.groupby("seed"):
        if rows["recipe"].nunique() == len(recipes) == len(rows):
            per_seed[int(seed)] = {"val_best": rows.loc[rows["best_val_acc"].idxmax(), "recipe"],
                                   "test_best": rows.loc[rows["test_acc"].idxmax(), "recipe"]}
    chosen = trials.sort_values(["best_val_acc", "trial"], ascending=[False, True]).iloc[0]
    test_rank = int((trials["test_acc"] > chosen["test_acc"]).sum()) + 1
    audit = meta.get("split_audit") or {}
    return {"experiment": str(experiment), "groups": (meta.get("args") or {}).get("groups"),
            "group_overlap": audit.get("group_overlap"), "exact_duplicates": audit.get("exact_duplicates"),
            "trials": trials.to_dict("records"), "recipes": recipes,
            "recipes_by_val": by_val, "recipes_by_test": by_test, "same_recipe_order": by_val == by_test,
            "per_seed": per_seed,
            "seeds_where_val_picks_tests_best": sum(s["val_best"] == s["test_best"] for s in per_seed.values()),
            "kendall_tau_val_test": _kendall_tau(trials["best_val_acc"].to_numpy(), trials["test_acc"].to_numpy()),
            "val_pick": {"trial": chosen["trial"], "recipe": chosen["recipe"], "seed": int(chosen["seed"]),
                         "test_acc": float(chosen["test_acc"]), "test_rank": test_rank}}


def carve_table(experiments: dict[str, list[Path]]) -> pd.DataFrame:
    """Per val mode, carve and recipe: the mean best val acc, test acc and gap of its trials.

    Each experiment is one carve of val (its carve seed is in ``tl_search.json``); several carves
    per mode show how much the carve alone moves the gap, beside what grouping moves it.
    """
    rows = []
    for mode, paths in experiments.items():
        for path in paths:
            trials, meta = trial_frame(path)
            carve = ((meta.get("dataset") or {}).get("split") or {}).get("seed")
            for recipe, group in trials.groupby("recipe", sort=True):
                rows.append({"val": mode, "carve_seed": carve, "recipe": recipe, "n_trials": len(group),
                             **{c: float(group[c].mean()) for c in ("best_val_acc", "test_acc", "gap")}})
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("image_level", type=Path, help="experiment whose val was carved image by image")
    p.add_argument("grouped", type=Path, help="the same grid with val carved by patient (--groups)")
    p.add_argument("--more-image-level", type=Path, nargs="*", default=[],
                   help="the same grid, image-level val, other carve seeds (--seed N)")
    p.add_argument("--more-grouped", type=Path, nargs="*", default=[],
                   help="the same grid, grouped val, other carve seeds")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    result = {"image_level": study(args.image_level), "grouped": study(args.grouped),
              "measured": dt.date.today().isoformat()}
    if args.more_image_level or args.more_grouped:
        carves = carve_table({"image-level": [args.image_level, *args.more_image_level],
                              "by patient": [args.grouped, *args.more_grouped]})
        result["carves"] = carves.to_dict("records")
    print("| val carved | recipe | best val acc | test acc | val − test gap |")
    print("|---|---|---|---|---|")
    for name, r in (("image-level", result["image_level"]), ("by patient", result["grouped"])):
        for recipe, s in r["recipes"].items():
            print(f"| {name} | {recipe} | " + " | ".join(
                f"{s[c + '_mean']:.3f} ± {s[c + '_std']:.3f}" for c in ("best_val_acc", "test_acc", "gap")) + " |")
    for name, r in (("image-level", result["image_level"]), ("by patient", result["grouped"])):
        print(f"{name} val: recipes by val {r['recipes_by_val']}, by test {r['recipes_by_test']} "
              f"({'same' if r['same_recipe_order'] else 'different'} order); val's best is test's best in "
              f"{r['seeds_where_val_picks_tests_best']} of {len(r['per_seed'])} seeds; "
              f"Kendall tau (best val acc vs test acc, {len(r['trials'])} trials) {r['kendall_tau_val_test']:+.2f}; "
              f"the best-val trial ({r['val_pick']['recipe']}, seed {r['val_pick']['seed']}) is "
              f"{r['val_pick']['test_rank']} of {len(r['trials'])} on test ({r['val_pick']['test_acc']:.3f}); "
              f"group overlap {r['group_overlap']}")
    if "carves" in result:
        print("\n| val carved | carve seed | recipe | trials | best val acc | test acc | gap |")
        print("|---|---|---|---|---|---|---|")
        for r in result["carves"]:
            print(f"| {r['val']} | {r['carve_seed']} | {r['recipe']} | {r['n_trials']} | {r['best_val_acc']:.3f} | "
                  f"{r['test_acc']:.3f} | {r['gap']:.3f} |")
        over = carves.groupby(["val", "recipe"], sort=True)[["best_val_acc", "test_acc", "gap"]].agg(["mean", "std"])
        for (mode, recipe), r in over.iterrows():
            print(f"{mode}, {recipe}, over {len(carves[(carves['val'] == mode) & (carves['recipe'] == recipe)])} "
                  "carves: " + ", ".join(f"{c} {r[(c, 'mean')]:.3f} ± {r[(c, 'std')]:.3f}"
                                          for c in ("best_val_acc", "test_acc", "gap")))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
