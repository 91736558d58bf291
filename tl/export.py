"""``python -m tl.export EXP --out DIR``: the chosen trial (or a top-k ensemble) as a bundle.

The trial is the one ``tl.search`` printed: ``tl.core.choice``'s rule over the experiment's Table 1
(read by ``analysis``, which only reads folders). Temperature and threshold are fitted on the
trial's saved val predictions, never on test. Before the bundle is written it must reproduce the
trial's saved test predictions from its own files, so a bundle that would score differently never
leaves this command.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import shutil
import sys
import tempfile
from importlib import metadata
from pathlib import Path

import numpy as np
import torch

from tl.bundle import META_FILE, SCHEMA_VERSION, load_bundle, save_weights
from tl.core.calibration import (
    ECE_BINS, TARGET_SENSITIVITY, apply_temperature, expected_calibration_error, fit_operating_point,
    sensitivity_specificity,
)
from tl.core.errors import TLError
from tl.trainable import DEFAULTS, _input_size
from tl.weights import normalization

VERIFY_TOLERANCE = 1e-5  # max |bundle - saved| test probability, on the device the trial ran on
# A GPU-trained trial checked on a CPU: cuDNN's convolutions (TF32 by default) and the CPU's differ
# by more than rounding: 3.5e-3 for a Lite0 trained on an H200, 2026-11-25 (README, "On a GPU").
# A preprocessing mismatch, what the check is for, moves probabilities far more than this.
CROSS_DEVICE_TOLERANCE = 1e-2
PACKAGES = ("torch", "torchvision", "timm", "numpy", "safetensors", "ray", "tl-search")


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m tl.export", description=__doc__.splitlines()[0])
    p.add_argument("experiment", type=Path, help="experiment folder (what tl.search printed)")
    p.add_argument("--out", type=Path, required=True, help="bundle folder to create (must not exist)")
    p.add_argument("--trial", help="export this trial id instead of the chosen one")
    p.add_argument("--ensemble", type=int, default=1, metavar="K",
                   help="mean probability of the top K tested trials by val (same test split)")
    p.add_argument("--target-sensitivity", type=float, default=TARGET_SENSITIVITY,
                   help="binary tasks: the val sensitivity the threshold must reach (default %(default)s)")
    p.add_argument("--data-dir", help="where named datasets live, if not where the search found them")
    p.add_argument("--gradcam", type=int, default=3, metavar="N",
                   help="Grad-CAM grid of N test images per TP/FP/TN/FN cell (0: none)")
    p.add_argument("--onnx", action="store_true",
                   help="also write member<i>.onnx, checked against PyTorch with ONNX Runtime")
    return p


def _tested_rows(exp) -> tuple[list[dict], list[str]]:
    """An experiment's tested trials best-first by ``tl.core.choice``'s rule (Table 1's order), and every id."""
    from analysis.tables import rank_column, trial_table
    from tl.core.choice import rank_trials

    table = rank_trials(trial_table(exp), rank_column(exp.meta["metric"]), exp.meta["mode"])
    dirs = dict(zip(exp.trials["trial_id"], exp.trials["trial_dir"]))
    rows = []
    for _, row in table.iterrows():
        if "test_acc" in row and not np.isnan(row["test_acc"]) and row["trial"] in dirs:
            rows.append({**row.to_dict(), "trial_dir": Path(dirs[row["trial"]])})
    return rows, list(table["trial"])


def tested_trials(experiment: Path) -> tuple[list[dict], dict, list[str], list[dict]]:
    """The search's tested trials best-first (Table 1's order), ``tl_search.json``, every trial id
    (finalists' too), and the finalist winner's tested seed trials (empty without a finalist stage)."""
    from analysis.errors import AnalysisError
    from analysis.finalists import split_stages, winner_recipe
    from analysis.load import load_experiments
    from tl.core.finalists import RECIPE_KEY

    try:
        search, stage = split_stages(load_experiments([experiment]))
    except AnalysisError as exc:
        raise TLError(str(exc)) from None
    rows, ids = _tested_rows(search)
    winner_rows: list[dict] = []
    if stage is not None:
        stage_rows, stage_ids = _tested_rows(stage)
        ids += stage_ids
        winner = winner_recipe(stage)
        if winner is not None:
            recipe_of = dict(zip(stage.trials["trial"], stage.trials[RECIPE_KEY]))
            winner_rows = [r for r in stage_rows if recipe_of.get(r["trial"]) == winner]
    return rows, search.meta, ids, winner_rows


def _verify_device(chosen: list[dict]) -> tuple[str, str]:
    """(device type the trials ran on, device to check the bundle on): the same one when this
    machine has it, so the saved predictions are reproduced to rounding; else the CPU."""
    from analysis.load import read_result_rows

    ran = {str(rows[-1].get("device", "cpu")) for rows, _ in (read_result_rows(r["trial_dir"]) for r in chosen) if rows}
    trained_on = "cuda" if "cuda" in ran else "cpu"
    return trained_on, "cuda" if trained_on == "cuda" and torch.cuda.is_available() else "cpu"


def _checkpoint_dir(trial_dir: Path) -> Path:
    """The newest checkpoint holding the tested weights: its best_model.pt is what was tested."""
    found = sorted(p for p in trial_dir.glob("checkpoint_*")
                   if (p / "best_model.pt").is_file() and (p / "test_predictions.npz").is_file())
    if not found:
        raise TLError(f"{trial_dir}: no checkpoint with best_model.pt and test_predictions.npz")
    return found[-1]


def _predictions(trial_dir: Path, split: str) -> dict:
    for where in (trial_dir, _checkpoint_dir(trial_dir)):
        path = where / f"{split}_predictions.npz"
        if path.is_file():
            with np.load(path) as z:
                return {k: z[k] for k in z.files}
    raise TLError(f"{trial_dir}: no {split}_predictions.npz (trials saved val predictions only from "
                  "issue 14 on: re-run the search to calibrate)")


def select_trials(rows: list[dict], all_ids: list[str], trial: str | None, k: int) -> list[dict]:
    """The chosen trial (or ``trial``), plus the next best up to ``k`` that share its test split."""
    if not rows:
        raise TLError("no tested trial in the experiment: every trial was stopped early or failed, "
                      "so there is nothing with test predictions to export")
    if k < 1:
        raise TLError(f"--ensemble must be at least 1, got {k}")
    if trial is not None:
        match = [r for r in rows if r["trial"] == trial]
        if not match:
            what = "was not tested (stopped early or failed)" if trial in all_ids else "does not exist"
            raise TLError(f"--trial {trial} {what}; tested trials: {', '.join(r['trial'] for r in rows)}")
        rows = match + [r for r in rows if r["trial"] != trial]
    first = _predictions(rows[0]["trial_dir"], "test")
    same = [r for r in rows if str(_predictions(r["trial_dir"], "test").get("test_fingerprint", "")) ==
            str(first.get("test_fingerprint", ""))]
    if len(same) < k:
        raise TLError(f"--ensemble {k}: only {len(same)} tested trial(s) share the chosen trial's test split")
    return same[:k]


def _config(trial_dir: Path) -> dict:
    return {**DEFAULTS, **json.loads((trial_dir / "params.json").read_text())}


def _member_spec(cfg: dict, trial: str, arrays, index: int) -> dict:
    mean, std = normalization(cfg["backbone"], cfg["weights"])
    return {"trial": trial, "weights_file": f"member{index}.safetensors", "backbone": cfg["backbone"],
            "pretrained_weights": cfg["weights"], "freeze": cfg["freeze"],
            "input_size": _input_size(cfg["backbone"], cfg["image_size"]),
            "decode_size": int(arrays.images["test"].shape[-1]), "mean": list(mean), "std": list(std),
            "channels_last": bool(cfg["channels_last"]), "precision": cfg["precision"],
            "patch_size": int(cfg["patch_size"]), "image_size": int(cfg["image_size"])}


def _versions() -> dict:
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


def _load_arrays(cfg: dict, data_dir: str | None, want_fingerprint: str, split_seed: int | None = None,
                 skip_bad: bool = False):
    """The trial's arrays, loaded as the search loaded them: carved splits with the seed it carved
    them with, unreadable files skipped if it skipped them (both from tl_search.json)."""
    from tl.data import load_dataset

    seed = cfg["seed"] if split_seed is None else split_seed
    arrays = load_dataset(cfg["dataset"], cfg["image_size"], data_dir or cfg["data_dir"], offline=True,
                          seed=seed, groups=cfg.get("groups"), skip_bad=skip_bad, task=cfg.get("task"),
                          positive_class=cfg.get("positive_class"))
    if want_fingerprint and arrays.test_fingerprint != want_fingerprint:
        raise TLError(f"dataset {cfg['dataset']}: its test split is not the one the trial was tested on "
                      f"(fingerprint {arrays.test_fingerprint}, saved {want_fingerprint}); the data changed")
    return arrays


# Why a multilabel bundle keeps temperature 1: one softmax temperature does not apply to K
# independent sigmoids, and a per-finding fit on 94 val images (chestxray14_1000) with a few
# positives per finding would fit noise.
MULTILABEL_CALIBRATION = ("temperature scaling skipped for a multilabel task: K independent sigmoids, "
                          "too few val positives per finding to fit K temperatures; threshold 0.5 per finding")


def calibration_figures(val: dict, test: dict, target: float, task: str | None = None,
                        positive: int | None = 1) -> dict:
    """Temperature and threshold fitted on val; ECE and sensitivity/specificity measured on test.

    Multilabel: no temperature (``MULTILABEL_CALIBRATION`` says why); every finding at 0.5.
    """
    if task == "multilabel" or np.asarray(val["labels"]).ndim == 2:
        k = np.asarray(val["labels"]).shape[1]
        return {"temperature": 1.0, "ece_bins": ECE_BINS, "threshold": None, "thresholds": [0.5] * k,
                "target_sensitivity": None, "calibration_note": MULTILABEL_CALIBRATION}
    point = fit_operating_point(val["probs"], val["labels"], target, 1 if positive is None else positive)
    before, after = test["probs"], apply_temperature(test["probs"], point.temperature)
    val_after = apply_temperature(val["probs"], point.temperature)
    out = {"temperature": point.temperature, "ece_bins": ECE_BINS,
           "test_ece_before": expected_calibration_error(before, test["labels"]),
           "test_ece_after": expected_calibration_error(after, test["labels"]),
           "val_ece_before": expected_calibration_error(val["probs"], val["labels"]),
           "val_ece_after": expected_calibration_error(val_after, val["labels"]),
           "threshold": point.threshold, "target_sensitivity": point.target_sensitivity}
    if point.threshold is not None:
        pos = point.positive_class
        vs = sensitivity_specificity(val_after[:, pos], val["labels"], point.threshold, pos)
        ts = sensitivity_specificity(after[:, pos], test["labels"], point.threshold, pos)
        out.update(val_sensitivity=vs[0], val_specificity=vs[1], test_sensitivity=ts[0], test_specificity=ts[1])
    return out


def export(experiment: Path, out: Path, trial: str | None = None, ensemble: int = 1,
           target_sensitivity: float = TARGET_SENSITIVITY, data_dir: str | None = None,
           gradcam: int = 3, onnx: bool = False) -> dict:
    """Write the bundle to ``out`` (atomically: a temp folder renamed at the end); return model.json."""
    if out.exists():
        raise TLError(f"--out {out} exists; give a new folder")
    if not experiment.is_dir():
        raise TLError(f"{experiment}: not an experiment folder")
    rows, meta, all_ids, winner_rows = tested_trials(experiment)
    if winner_rows and trial is None and ensemble == 1:
        # The search re-trained its best recipes over seeds: the model to hand out is the winning
        # recipe, as its seeds' ensemble (the report's "seed ensemble" row), not the search's pick.
        chosen = select_trials(winner_rows, all_ids, None, len(winner_rows))
    else:
        chosen = select_trials(rows + winner_rows, all_ids, trial, ensemble)
    val = [_predictions(r["trial_dir"], "val") for r in chosen]
    test = [_predictions(r["trial_dir"], "test") for r in chosen]
    if len({str(v.get("val_fingerprint", "")) for v in val}) > 1:
        raise TLError("--ensemble: the trials were validated on different val splits; cannot fit one calibration")
    mean = {"val": {"probs": np.mean([v["probs"] for v in val], 0), "labels": val[0]["labels"]},
            "test": {"probs": np.mean([t["probs"] for t in test], 0), "labels": test[0]["labels"]}}
    cfg0 = _config(chosen[0]["trial_dir"])
    test_fp = str(test[0].get("test_fingerprint", ""))
    dataset = meta.get("dataset", {})
    split_seed = (dataset.get("split") or {}).get("seed")
    skip_bad = bool((meta.get("args") or {}).get("skip_bad_images"))
    arrays = _load_arrays(cfg0, data_dir, test_fp, split_seed, skip_bad)
    class_names = list(dataset.get("class_names") or arrays.class_names)
    task, positive = arrays.task, arrays.positive_index
    binary = task == "binary"
    figures = calibration_figures(mean["val"], mean["test"], target_sensitivity, task, positive)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        members = []
        for i, row in enumerate(chosen):
            cfg = _config(row["trial_dir"])
            member_arrays = (arrays if cfg["image_size"] == cfg0["image_size"]
                             else _load_arrays(cfg, data_dir, test_fp, split_seed, skip_bad))
            spec = _member_spec(cfg, row["trial"], member_arrays, i)
            state = torch.load(_checkpoint_dir(row["trial_dir"]) / "best_model.pt", map_location="cpu",
                               weights_only=True)
            spec["sha256"] = save_weights(state, tmp / spec["weights_file"])
            members.append(spec)
        if len({m["decode_size"] for m in members}) > 1:
            raise TLError("--ensemble: the trials decode images at different sizes; export them one by one")
        model_json = {
            "schema_version": SCHEMA_VERSION, "kind": "ensemble" if len(members) > 1 else "single",
            "task": task, "class_names": class_names,
            "positive_index": positive if binary else None, "positive_class": class_names[positive] if binary else None,
            "thresholds": figures.get("thresholds"),
            "channels": int(arrays.channels), "decode_size": members[0]["decode_size"],
            "preprocessing": "files: PIL convert('RGB'), bilinear resize to decode_size (tl.data); arrays as given; "
                             "then /255, gray replicated to 3 channels, bilinear (antialiased when shrinking) to "
                             "each member's input_size, (x - mean) / std (tl.trainable.Batcher)",
            "temperature": figures["temperature"], "threshold": figures["threshold"],
            "target_sensitivity": figures["target_sensitivity"],
            "members": members,
            "provenance": {
                "experiment": str(experiment.resolve()), "trials": [r["trial"] for r in chosen],
                "dataset": cfg0["dataset"], "data_fingerprint": arrays.fingerprint,
                "test_fingerprint": test_fp, "val_fingerprint": str(val[0].get("val_fingerprint", "")),
                "metrics": [{k: _plain(r.get(k)) for k in ("trial", "best_val_acc", "best_val_loss", "test_acc",
                                                           "test_auc", "test_sensitivity", "test_specificity")}
                            for r in chosen],
                "calibration": figures, "versions": _versions(),
                "exported": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")},
        }
        (tmp / META_FILE).write_text(json.dumps(model_json, indent=1))
        trained_on, verify_on = _verify_device(chosen)
        tolerance = VERIFY_TOLERANCE if verify_on == trained_on else CROSS_DEVICE_TOLERANCE
        bundle = load_bundle(tmp, device=verify_on)
        again = bundle.predict_raw(arrays.images["test"], batch_size=256)
        diff = float(np.abs(again - mean["test"]["probs"]).max())
        if diff > tolerance:
            raise TLError(f"the bundle does not reproduce the trial's test predictions on {verify_on} (trained on "
                          f"{trained_on}; max |diff| {diff:.2e} > {tolerance}); not exported")
        model_json["provenance"].update({"verified_max_abs_diff_test": diff, "verified_on": verify_on,
                                         "trained_on": trained_on, "verify_tolerance": tolerance})
        if gradcam > 0:
            _gradcam_grid(bundle, arrays, mean["test"]["probs"], tmp, experiment, gradcam)
        if onnx:
            from tl.onnx_export import export_onnx

            for spec, check in zip(model_json["members"], export_onnx(bundle, arrays.images["test"], tmp)):
                spec["onnx"] = check
        (tmp / META_FILE).write_text(json.dumps(model_json, indent=1))  # with the check's figures
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return model_json


def _gradcam_grid(bundle, arrays, test_probs: np.ndarray, tmp: Path, experiment: Path, per_cell: int) -> None:
    """The report's Grad-CAM grid of test images (TP/FP/TN/FN), in the bundle and in EXP/explain/."""
    try:
        from tl.gradcam import save_test_grid
    except ImportError:
        print("[tl.export] grad-cam is not installed: no Grad-CAM grid (pip install grad-cam)")
        return
    save_test_grid(bundle, arrays, test_probs, tmp / "gradcam_test.png", per_cell)
    explain = experiment / "explain"
    explain.mkdir(exist_ok=True)
    shutil.copy(tmp / "gradcam_test.png", explain / "gradcam_test.png")
    (explain / "gradcam.json").write_text(json.dumps({"trials": bundle.meta["provenance"]["trials"]}))


def _plain(value):
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, float) and np.isnan(value):
        return None
    return value


def main(argv: list[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    try:
        meta = export(args.experiment, args.out, args.trial, args.ensemble, args.target_sensitivity,
                      args.data_dir, args.gradcam, args.onnx)
    except TLError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    cal = meta["provenance"]["calibration"]
    print(f"[tl.export] {meta['kind']} bundle of trial(s) {', '.join(meta['provenance']['trials'])} -> {args.out}")
    if "calibration_note" in cal:  # multilabel: no temperature, 0.5 per finding
        print(f"  {cal['calibration_note']}")
    else:
        print(f"  temperature {cal['temperature']:.3f} (fitted on val); test ECE ({cal['ece_bins']} bins) "
              f"{cal['test_ece_before']:.4f} -> {cal['test_ece_after']:.4f}")
    if cal["threshold"] is not None:
        print(f"  threshold {cal['threshold']:.4f} for val sensitivity >= {cal['target_sensitivity']}: "
              f"test sensitivity {cal['test_sensitivity']:.3f}, specificity {cal['test_specificity']:.3f}")
    print(f"  reproduces the saved test predictions within {meta['provenance']['verified_max_abs_diff_test']:.1e}")
    for spec in meta["members"]:
        if "onnx" in spec:
            print(f"  {spec['onnx']['file']}: ONNX Runtime matches PyTorch within {spec['onnx']['max_abs_diff']:.1e} "
                  f"(tolerance {spec['onnx']['tolerance']:.0e})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
