"""``python -m tl.export EXP --out DIR``: the experiment's recommended model as a bundle.

The model is ``tl.core.recommend``'s (the finalist winner's seed ensemble, else the search's single
pick; ``--trial`` or ``--ensemble K`` on request): the one the console printed, the report describes
and MLflow's ``tl.chosen`` tag marks. Temperature and threshold are fitted on the members' saved val
predictions, never on test. Before the bundle is written it must reproduce the members' saved test
predictions from its own files, so a bundle that would score differently never leaves this command.
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

from tl.use.bundle import bundle_meta, load_bundle, save_weights, write_meta
from tl.train.config import DEFAULTS
from tl.core.calibration import TARGET_SENSITIVITY, calibration_figures
from tl.core.columns import HEADLINE_TEST_METRICS
from tl.core.errors import TLError
from tl.core.no_space import NO_SPACE, is_no_space
from tl.core.recommend import Recommendation, recommend, recommended_predictions
from tl.core.results import (
    BEST_WEIGHTS_FILE, EXPLAIN_DIR, GRADCAM_GRID, GRADCAM_RECORD, PARAMS_FILE, TEST_PREDICTIONS, VAL_PREDICTIONS,
    Predictions, dataset_record, load_experiments, rank_column, read_result_rows, trial_table,
)
from tl.data.store.layout import atomic_write
from tl.train.models import get_backbone
from tl.train.weights import normalization

VERIFY_TOLERANCE = 1e-5  # max |bundle - saved| test probability, on the device the trial ran on
# A GPU-trained trial checked on a CPU: cuDNN's convolutions (TF32 by default) and the CPU's differ
# by more than rounding: 3.5e-3 for a Lite0 trained on an H200, 2026-11-25 (docs/speed.md, "On a GPU").
# A preprocessing mismatch, what the check is for, moves probabilities far more than this.
CROSS_DEVICE_TOLERANCE = 1e-2
PACKAGES = ("torch", "torchvision", "timm", "numpy", "safetensors", "ray", "pydicom", "tl-search")
PROVENANCE_METRICS = ("best_val_loss", *HEADLINE_TEST_METRICS)


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m tl.export", description=__doc__.splitlines()[0])
    p.add_argument("experiment", type=Path, help="experiment folder (what tl.search printed)")
    p.add_argument("--out", type=Path, required=True, help="bundle folder to create (must not exist)")
    p.add_argument("--trial", help="export this trial id instead of the recommended model")
    p.add_argument("--ensemble", type=int, default=1, metavar="K",
                   help="instead of the recommended model: the mean probability of the top K tested search "
                        "trials by val (same test split)")
    p.add_argument("--target-sensitivity", type=float, default=TARGET_SENSITIVITY,
                   help="binary tasks: the val sensitivity the threshold must reach (default %(default)s)")
    p.add_argument("--data-dir", help="where named datasets live, if not where the search found them")
    p.add_argument("--gradcam", type=int, default=3, metavar="N",
                   help="Grad-CAM grid of N test images per TP/FP/TN/FN cell (0: none)")
    p.add_argument("--onnx", action="store_true",
                   help="also write member<i>.onnx, checked against PyTorch with ONNX Runtime")
    return p


def _checkpoint_dir(trial_dir: Path) -> Path:
    """The newest checkpoint holding the tested weights: its best_model.pt is what was tested."""
    found = sorted(p for p in trial_dir.glob("checkpoint_*")
                   if (p / BEST_WEIGHTS_FILE).is_file() and (p / TEST_PREDICTIONS).is_file())
    if not found:
        raise TLError(f"{trial_dir}: no checkpoint with {BEST_WEIGHTS_FILE} and {TEST_PREDICTIONS}")
    return found[-1]


def _config(trial_dir: Path) -> dict:
    return {**DEFAULTS, **json.loads((trial_dir / PARAMS_FILE).read_text())}


def _verify_device(trial_dirs: tuple[Path, ...]) -> tuple[str, str]:
    """(device type the trials ran on, device to check the bundle on): the same one when this
    machine has it, so the saved predictions are reproduced to rounding; else the CPU."""
    ran = {str(rows[-1].get("device", "cpu")) for rows, _ in map(read_result_rows, trial_dirs) if rows}
    trained_on = "cuda" if "cuda" in ran else "cpu"
    return trained_on, "cuda" if trained_on == "cuda" and torch.cuda.is_available() else "cpu"


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
                          positive_class=cfg.get("positive_class"), table=cfg.get("table"))
    if want_fingerprint and arrays.test_fingerprint != want_fingerprint:
        raise TLError(f"dataset {cfg['dataset']}: its test split is not the one the trial was tested on "
                      f"(fingerprint {arrays.test_fingerprint}, saved {want_fingerprint}); the data changed")
    return arrays


def _member_spec(cfg: dict, trial: str, arrays, index: int) -> dict:
    mean, std = normalization(cfg["backbone"], cfg["weights"])
    return {"trial": trial, "weights_file": f"member{index}.safetensors", "backbone": cfg["backbone"],
            "pretrained_weights": cfg["weights"], "freeze": cfg["freeze"],
            "input_size": get_backbone(cfg["backbone"]).input_size(cfg["image_size"]),
            "decode_size": int(arrays.images["test"].shape[-1]), "mean": list(mean), "std": list(std),
            "channels_last": bool(cfg["channels_last"]), "precision": cfg["precision"],
            "patch_size": int(cfg["patch_size"]), "image_size": int(cfg["image_size"])}


def _write_members(rec: Recommendation, arrays, folder: Path, load_member_arrays) -> list[dict]:
    """Write each member's tested weights as safetensors into ``folder``; return their specs."""
    members = []
    for i, (trial, trial_dir) in enumerate(zip(rec.trials, rec.trial_dirs)):
        cfg = _config(trial_dir)
        spec = _member_spec(cfg, trial.rsplit("/", 1)[-1], load_member_arrays(cfg), i)
        state = torch.load(_checkpoint_dir(trial_dir) / BEST_WEIGHTS_FILE, map_location="cpu", weights_only=True)
        spec["sha256"] = save_weights(state, folder / spec["weights_file"])
        members.append(spec)
    if len({m["decode_size"] for m in members}) > 1:
        raise TLError("--ensemble: the trials decode images at different sizes; export them one by one")
    return members


def _provenance(experiment: Path, exp, rec: Recommendation, arrays, val: Predictions | None,
                test: Predictions) -> dict:
    table = trial_table(exp).set_index("trial")
    metric_column = rank_column(rec.metric)
    return {"experiment": str(experiment.resolve()), "recommendation": rec.kind,
            "trials": [t.rsplit("/", 1)[-1] for t in rec.trials], "dataset": _config(rec.trial_dirs[0])["dataset"],
            "data_fingerprint": arrays.fingerprint, "test_fingerprint": test.fingerprint,
            "val_fingerprint": val.fingerprint if val is not None else "",
            "metrics": [{"trial": t, metric_column: _plain(table.loc[t].get(metric_column)),
                         **{k: _plain(table.loc[t].get(k)) for k in PROVENANCE_METRICS}} for t in rec.trials],
            "versions": _versions(), "exported": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}


def _verify(folder: Path, rec: Recommendation, arrays, test: Predictions) -> tuple[object, dict]:
    """Load the written bundle and check it reproduces the members' mean saved test probabilities."""
    trained_on, verify_on = _verify_device(rec.trial_dirs)
    tolerance = VERIFY_TOLERANCE if verify_on == trained_on else CROSS_DEVICE_TOLERANCE
    bundle = load_bundle(folder, device=verify_on)
    again = bundle.predict_raw(arrays.images["test"], batch_size=256)
    diff = float(np.abs(again - test.probs).max())
    if diff > tolerance:
        raise TLError(f"the bundle does not reproduce the trial's test predictions on {verify_on} (trained on "
                      f"{trained_on}; max |diff| {diff:.2e} > {tolerance}); not exported")
    return bundle, {"verified_max_abs_diff_test": diff, "verified_on": verify_on, "trained_on": trained_on,
                    "verify_tolerance": tolerance}


def export(experiment: Path, out: Path, trial: str | None = None, ensemble: int = 1,
           target_sensitivity: float = TARGET_SENSITIVITY, data_dir: str | None = None,
           gradcam: int = 3, onnx: bool = False) -> dict:
    """Write the bundle to ``out`` (atomically: a temp folder renamed at the end); return model.json.

    Phases: choose (``tl.core.recommend``), calibrate on val, load the data as the search did, write
    the members' weights and model.json, verify against the saved test predictions, compute the val
    and test features and their val-vs-test classifier, then draw the Grad-CAM grid and write ONNX
    copies if asked.
    """
    if out.exists():
        raise TLError(f"--out {out} exists; give a new folder")
    if not experiment.is_dir():
        raise TLError(f"{experiment}: not an experiment folder")
    exp = load_experiments([experiment])
    rec = recommend(exp, trial=trial, top_k=ensemble)
    val, test = recommended_predictions(rec)
    if val is None:
        raise TLError(f"{rec.trial_dirs[0]}: no {VAL_PREDICTIONS} (trials saved val predictions only from "
                      "issue 14 on: re-run the search to calibrate)")
    dataset = dataset_record(exp.meta)
    split_seed = (dataset.get("split") or {}).get("seed")
    skip_bad = bool((exp.meta.get("args") or {}).get("skip_bad_images"))
    cfg0 = _config(rec.trial_dirs[0])
    arrays = _load_arrays(cfg0, data_dir, test.fingerprint, split_seed, skip_bad)

    def member_arrays(cfg: dict):
        return arrays if cfg["image_size"] == cfg0["image_size"] else _load_arrays(
            cfg, data_dir, test.fingerprint, split_seed, skip_bad)

    figures = calibration_figures(val.probs, val.labels, test.probs, test.labels, target_sensitivity,
                                  arrays.task, arrays.positive_index)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        meta = bundle_meta(task=arrays.task, class_names=list(dataset.get("class_names") or arrays.class_names),
                           positive=arrays.positive_index, channels=arrays.channels,
                           members=_write_members(rec, arrays, tmp, member_arrays), calibration=figures,
                           provenance=_provenance(experiment, exp, rec, arrays, val, test))
        write_meta(tmp, meta)
        bundle, check = _verify(tmp, rec, arrays, test)
        meta["provenance"].update(check)
        meta["provenance"].update(_shift_files(bundle, arrays, cfg0, tmp, experiment))
        if gradcam > 0:
            _gradcam_grid(bundle, arrays, test.probs, tmp, experiment, gradcam)
        if onnx:
            from tl.use.onnx_export import export_onnx

            for spec, found in zip(meta["members"], export_onnx(bundle, arrays.images["test"], tmp)):
                spec["onnx"] = found
        write_meta(tmp, meta)  # with the check's figures
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return meta


def _shift_files(bundle, arrays, cfg: dict, tmp: Path, experiment: Path) -> dict:
    """The report's covariate-shift figure: the model's val and test features and a val-vs-test
    classifier on them (``tl.use.features``), in EXP/explain/ and, val's, in the bundle. A CPU pass
    over val and test; a model without a Linear head has no features to read and gets a note."""
    from tl.use.features import write_shift_files

    try:
        domain = write_shift_files(bundle, arrays, cfg.get("groups"), tmp, experiment)
    except TLError as exc:
        print(f"[tl.export] no covariate-shift check: {exc}")
        return {}
    return {"val_test_classifier": domain.as_record()}


def _gradcam_grid(bundle, arrays, test_probs: np.ndarray, tmp: Path, experiment: Path, per_cell: int) -> None:
    """The report's Grad-CAM grid of test images (TP/FP/TN/FN), in the bundle and in EXP/explain/,
    with the trials it shows (the report shows it only beside the model it describes)."""
    try:
        from tl.use.gradcam import save_test_grid
    except ImportError:
        print("[tl.export] grad-cam is not installed: no Grad-CAM grid (pip install grad-cam)")
        return
    save_test_grid(bundle, arrays, test_probs, tmp / GRADCAM_GRID, per_cell)
    explain = experiment / EXPLAIN_DIR
    explain.mkdir(exist_ok=True)
    # Each written whole or not at all (a full disk): the report never shows a cut-off grid.
    atomic_write(explain / GRADCAM_GRID, lambda f: f.write((tmp / GRADCAM_GRID).read_bytes()))
    record = json.dumps({"trials": bundle.meta["provenance"]["trials"]}).encode()
    atomic_write(explain / GRADCAM_RECORD, lambda f: f.write(record))


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
    except Exception as exc:  # a full disk: export() removed its temporary folder, so --out was never made
        if not is_no_space(exc):
            raise
        print(f"error: the disk is full ({NO_SPACE}) writing {getattr(exc, 'filename', None) or 'the bundle'}; "
              f"nothing was written to --out {args.out}: free space and run again", file=sys.stderr)
        return 2
    cal = meta["provenance"]["calibration"]
    print(f"[tl.export] {meta['provenance']['recommendation']}: {meta['kind']} bundle of trial(s) "
          f"{', '.join(meta['provenance']['trials'])} -> {args.out}")
    if "calibration_note" in cal:  # multilabel: no temperature, 0.5 per finding
        print(f"  {cal['calibration_note']}")
    else:
        print(f"  temperature {cal['temperature']:.3f} (fitted on val); test ECE ({cal['ece_bins']} bins) "
              f"{cal['test_ece_before']:.4f} -> {cal['test_ece_after']:.4f}")
    if cal["threshold"] is not None:
        print(f"  threshold {cal['threshold']:.4f} for val sensitivity >= {cal['target_sensitivity']}: "
              f"test sensitivity {cal['test_sensitivity']:.3f}, specificity {cal['test_specificity']:.3f}")
    print(f"  reproduces the saved test predictions within {meta['provenance']['verified_max_abs_diff_test']:.1e}")
    shift = meta["provenance"].get("val_test_classifier")
    if shift and not np.isnan(shift["auc"]):
        print(f"  a classifier tells val from test images by the model's features with AUC {shift['auc']:.3f} "
              f"[{shift['low']:.3f}, {shift['high']:.3f}] (0.5: alike; {args.experiment}/explain/shift.json)")
    for spec in meta["members"]:
        if "onnx" in spec:
            print(f"  {spec['onnx']['file']}: ONNX Runtime matches PyTorch within {spec['onnx']['max_abs_diff']:.1e} "
                  f"(tolerance {spec['onnx']['tolerance']:.0e})")
    return 0
