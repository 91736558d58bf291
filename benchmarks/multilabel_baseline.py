"""The multilabel yardstick: the search's val-chosen model vs logistic regression on raw pixels.

    python -m benchmarks.multilabel_baseline EXPERIMENT [--data-dir DIR] [--json out.json]

Both are scored on the same test split of the experiment's dataset (``chestxray14_1000`` for
``search_spaces/chest14.py``): mean AUC over findings that have a positive and a negative in test,
each with a 95% percentile bootstrap interval, and the paired bootstrap interval of their
difference (the same resampled test images for both). The baseline is scikit-learn's logistic
regression, one-vs-rest (one per finding), on the pixels scaled to [0, 1]; its C is chosen on val
mean AUC from a small grid, so test never tunes it. MedMNIST's ACC of both and of predicting "no
finding" everywhere is printed too, to show how little ACC says on rare findings. When the search
ran a finalist stage (``--finalists K``), the winner's seed ensemble is compared with the same
baseline on the same resamples.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
from pathlib import Path

import numpy as np

from tl.core.finalists import RECIPE_KEY, build_finalists
from tl.core.metrics import findings_left_out, label_accuracy, task_auc
from tl.core.recommend import recommend
from tl.core.results import Predictions, load_experiments, split_stages
from tl.core.stats import bootstrap_interval
from tl.data import load_dataset

C_GRID = (1e-3, 1e-2, 1e-1, 1.0)


def logistic_regression_probs(arrays, c_grid=C_GRID, seed: int = 0) -> tuple[np.ndarray, float, dict]:
    """Test probabilities (N, K) of one-vs-rest logistic regression on raw pixels; C picked on val."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.multiclass import OneVsRestClassifier

    def flat(split: str) -> np.ndarray:
        return arrays.images[split].reshape(len(arrays.images[split]), -1).astype(np.float32) / 255

    x_train, y_train = flat("train"), arrays.labels["train"]
    val_auc = {}
    models = {}
    for c in c_grid:
        model = OneVsRestClassifier(LogisticRegression(C=c, max_iter=2000, random_state=seed))
        model.fit(x_train, y_train)
        models[c] = model
        val_auc[c] = task_auc(model.predict_proba(flat("val")), arrays.labels["val"])
    best = max(val_auc, key=val_auc.get)
    return models[best].predict_proba(flat("test")), best, val_auc


def compare(experiment: Path, data_dir: str | None, n_resamples: int = 2000, seed: int = 0) -> dict:
    loaded = load_experiments([experiment])
    search, stage = split_stages(loaded)
    pick = recommend(search)  # the search's single pick; the finalist winner's ensemble comes below
    trial = pick.trials[0]
    model = search.predictions[trial]
    cfg = json.loads((pick.trial_dirs[0] / "params.json").read_text())
    dataset = search.meta["dataset"]["name"]
    split_seed = (search.meta["dataset"].get("split") or {}).get("seed", cfg.get("seed", 0))
    arrays = load_dataset(cfg["dataset"], cfg.get("image_size", 64), data_dir or cfg.get("data_dir"), offline=True,
                          seed=split_seed, groups=cfg.get("groups"), table=cfg.get("table"))
    if arrays.test_fingerprint != model.fingerprint:
        raise SystemExit(f"{dataset}: its test split is not the one the trial was tested on")
    probs, c, val_auc = logistic_regression_probs(arrays)
    baseline = Predictions(probs, arrays.labels["test"])
    n, kw = len(baseline.labels), {"n_resamples": n_resamples, "seed": seed}
    def stat(pred):
        return lambda i: task_auc(pred.probs[i], pred.labels[i])
    ci_model, ci_base = bootstrap_interval(stat(model), n, **kw), bootstrap_interval(stat(baseline), n, **kw)
    diff = bootstrap_interval(lambda i: stat(model)(i) - stat(baseline)(i), n, **kw)
    acc = {name: label_accuracy(p.probs, p.labels) for name, p in (("model", model), ("baseline", baseline))}
    fin = build_finalists(stage, n_resamples=200) if stage is not None else None
    finalist = None
    if fin is not None and fin.ensemble_predictions is not None:  # the finalist winner's seed ensemble
        ens = Predictions(fin.ensemble_predictions.probs, baseline.labels)
        finalist = {"recipe": int(fin.ensemble[RECIPE_KEY].iloc[0]), "trials": list(fin.ensemble_trials),
                    "mean_auc": list(bootstrap_interval(stat(ens), n, **kw)[:3]),
                    "difference": list(bootstrap_interval(lambda i: stat(ens)(i) - stat(baseline)(i), n, **kw)[:3])}
    return {"experiment": str(experiment), "dataset": dataset, "trial": trial, "test_n": n,
            "finalist_ensemble": finalist,
            "config": {k: pick.config[k] for k in ("backbone", "freeze", "weights") if k in pick.config},
            "left_out_of_mean": findings_left_out(baseline.labels, arrays.class_names),
            "model_mean_auc": list(ci_model[:3]), "baseline_mean_auc": list(ci_base[:3]),
            "difference": list(diff[:3]), "baseline_C": c, "baseline_val_mean_auc": val_auc,
            "acc_model": acc["model"], "acc_baseline": acc["baseline"],
            "acc_no_finding": float((baseline.labels == 0).sum() / max((baseline.labels >= 0).sum(), 1)),
            "bootstrap": f"{n_resamples} resamples of the test images, percentile 95%, seed {seed}",
            "measured": dt.date.today().isoformat()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("experiment", type=Path)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    r = compare(args.experiment, args.data_dir)
    fmt = lambda v: f"{v[0]:.3f} [{v[1]:.3f}, {v[2]:.3f}]"  # noqa: E731
    print(f"{r['dataset']}, test n={r['test_n']}; mean AUC over findings (left out: "
          f"{', '.join(r['left_out_of_mean']) or 'none'}), 95% bootstrap intervals:")
    print(f"  val-chosen model {r['trial']} {r['config']}: {fmt(r['model_mean_auc'])}")
    print(f"  logistic regression on raw pixels (C={r['baseline_C']:g}, chosen on val): {fmt(r['baseline_mean_auc'])}")
    print(f"  difference (model - baseline), paired: {fmt(r['difference'])}")
    if r["finalist_ensemble"]:
        f = r["finalist_ensemble"]
        print(f"  finalist winner's seed ensemble (recipe {f['recipe']}, {len(f['trials'])} seeds): "
              f"{fmt(f['mean_auc'])}; difference (ensemble - baseline), paired: {fmt(f['difference'])}")
    print(f"  MedMNIST ACC: model {r['acc_model']:.3f}, baseline {r['acc_baseline']:.3f}, "
          f"predicting no finding everywhere {r['acc_no_finding']:.3f}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(r, indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
