"""Search-space files: load a plain-Python file of constants, validate it, sample it for Optuna.

A space file assigns UPPERCASE constants (see ``SPACE_KEYS``); it is Python and runs as such, so
only load files you trust. ``PARAMS`` values are a list (categorical) or a tuple
``("loguniform" | "uniform" | "int", low, high)``. Weights are chosen per backbone, under a
parameter named per backbone, because Optuna wants one fixed choice list per parameter name.
"""
from __future__ import annotations

import ast
import itertools
import re
from dataclasses import dataclass, field, replace
from pathlib import Path

from tl.core.columns import DEFAULT_METRIC, DEFAULT_MODE
from tl.core.errors import TLError
from tl.core.cv import CHOICES, DEFAULT_CHOICE
from tl.core.finalists import DEFAULT_SEEDS
from tl.train.models import FREEZE_MODES, get_backbone
from tl.core.tasks import ALL_VAL_METRICS, TASKS
from tl.core.uncertain import POLICY_KEY, check_policy, space_policy
from tl.train.config import CLASS_WEIGHTS, DEFAULTS, OPTIMIZERS, PRECISIONS, SCHEDULERS, compile_backend
from tl.train.weights import validate_weights

SPACE_KEYS = {
    "DATASET": "dataset name (MedMNIST) or path (.npz, ImageFolder root, or a .csv/.tsv label table)",
    "BACKBONES": "dict backbone -> list of weights versions to try",
    "FREEZE": "list of freeze modes for pretrained backbones (none, backbone, partial)",
    "PARAMS": "dict trial key -> list of choices or (distribution, low, high)",
    "FIXED": "dict trial key -> constant value",
    "METRIC": "val metric that drives ASHA and Optuna (val_acc, val_auc, val_loss, val_balanced_acc; "
              "ordinal: val_mae, val_qwk; multilabel: val_auc is the mean AUC, val_map; see tl.core.tasks)",
    "MODE": "max or min",
    "MAX_EPOCHS": "ASHA's max_t and the cap on any trial's epochs",
    "NUM_SAMPLES": "number of trials",
    "GRACE_PERIOD": "ASHA: epochs before a trial can be stopped",
    "REDUCTION_FACTOR": "ASHA: keep the top 1/REDUCTION_FACTOR at each rung",
    "SAMPLER": "tpe, random, cmaes, qmc (Optuna) or grid (every combination once; NUM_SAMPLES is ignored)",
    "CPUS_PER_TRIAL": "CPUs per trial (torch threads follow it)",
    "GPUS_PER_TRIAL": "GPUs per trial, fractions allowed",
    "MAX_FAILURES": "retries of a crashed trial from its last checkpoint",
    "START_WITH": "list of known-good recipes (dicts of parameters) the sampler tries first",
    "GROUPS": "regex whose first capture group is the patient (group) id in each file's path; "
              "carved splits are then disjoint by group",
    "FINALISTS": "after the search, re-train the top K tested recipes for their full epochs over seeds (None: off)",
    "FINALIST_SEEDS": "seeds per finalist recipe (per fold with CV), none of them the search's (default 3; with CV 1)",
    "CV": "finalists by K-fold cross-validation over train + val (patient-grouped when groups are known), "
          "ranked out of fold; the winner's K fold models are the recommended ensemble (None: off)",
    "CHOOSE": "finalists with CV: best (the best out-of-fold figure) or one-se (the cheapest recipe within one "
              "standard error of the best)",
    "TASK": "binary, multiclass, multilabel or ordinal; overrides the task table (tl.core.tasks) or the labels' inference",
    "POSITIVE_CLASS": "binary tasks: the name of the class sensitivity is about (default: the table's, else class 1)",
    # A label table's options (tl.data.table_source.TableOptions), the same as tl.search's flags.
    "LABELS": "label table: label column(s), a |-joined findings column, or COL!=VALUE (--labels)",
    "PATH_COLUMN": "label table: the column naming each image (default: detected; --path-column)",
    "NO_FINDING": "label table: the text meaning no finding in a |-joined column (default 'No Finding')",
    "GROUP_COLUMN": "label table: patient (or lesion) id column, or a DICOM keyword such as PatientID",
    "SPLIT_COLUMN": "label table: the official split per row (train/val/valid/test)",
    "IMAGE_ROOT": "label table: where images are looked up by name or stem (default: the table's folder)",
    # Subgroups of the test images for the report (tl.data.subgroups); never a trial's config.
    "SUBGROUP_COLUMNS": "report figures per subgroup of test: table columns or DICOM keywords (--subgroup-columns)",
    "SUBGROUP_PATH": "report figures per subgroup of test: a regex over each test image's path (--subgroup-path)",
    "UNCERTAIN": "uncertain (-1) findings in training: ignore, zeros or ones; or search it: PARAMS['uncertain']",
    "DATASETS": "several datasets (names or paths) searched with this same space, one experiment each "
                "under a common folder; instead of DATASET",
}
DISTRIBUTIONS = ("loguniform", "uniform", "int")
SAMPLERS = ("tpe", "random", "cmaes", "qmc", "grid")
VAL_METRICS = ALL_VAL_METRICS  # which of them a dataset reports is checked once its task is known


@dataclass
class SearchSpace:
    path: str
    dataset: str = "pneumoniamnist"
    datasets: list = field(default_factory=list)  # DATASETS: one search per dataset (tl.search.datasets)
    backbones: dict = field(default_factory=lambda: {"convmodel": ["none"]})
    freeze: list = field(default_factory=lambda: ["none"])
    params: dict = field(default_factory=dict)
    fixed: dict = field(default_factory=dict)
    metric: str = DEFAULT_METRIC
    mode: str = DEFAULT_MODE
    max_epochs: int = 10
    num_samples: int = 8
    grace_period: int = 1
    reduction_factor: int = 3
    sampler: str = "tpe"
    cpus_per_trial: float = 1
    gpus_per_trial: float = 0
    max_failures: int = 2
    start_with: list = field(default_factory=list)
    groups: str | None = None
    finalists: int | None = None
    finalist_seeds: int | None = None  # None: DEFAULT_SEEDS over seeds, 1 per fold with CV (seeds_per_recipe)
    cv: int | None = None  # folds of the finalist stage (--cv); None: finalists over seeds
    choose: str = DEFAULT_CHOICE  # --choose: how cross-validated finalists pick their winner
    task: str | None = None
    positive_class: str | None = None
    labels: list | str | None = None
    path_column: str | None = None
    no_finding: str | None = None
    group_column: str | None = None
    split_column: str | None = None
    image_root: str | None = None
    uncertain: str | None = None  # the file's UNCERTAIN; what trials use is uncertain_policy()
    subgroup_columns: list | str | None = None  # the driver reads them; never in FIXED, never in a trial
    subgroup_path: str | None = None

    def uncertain_policy(self) -> str | list:
        """The uncertain-label policy the trials train with (a list when PARAMS searches over it)."""
        return space_policy(self.params, self.fixed)

    def table_options(self) -> dict:
        """The file's label-table options (``tl.data.table_source.TableOptions`` keys) it sets."""
        keys = ("labels", "path_column", "no_finding", "group_column", "split_column", "image_root")
        return {k: getattr(self, k) for k in keys if getattr(self, k) is not None}

    def weight_pairs(self) -> list[tuple[str, str]]:
        return [(b, w) for b, ws in self.backbones.items() for w in ws]

    def seeds_per_recipe(self) -> int:
        """Finalist seeds per recipe (per fold with CV): FINALIST_SEEDS, else 3 over seeds and 1 with CV
        (the folds already re-train each recipe K times)."""
        return self.finalist_seeds or (1 if self.cv else DEFAULT_SEEDS)

    def stage_trials(self) -> int:
        """Trials of the finalist stage: recipes x seeds, x folds with CV (0 without a stage)."""
        return (self.finalists or 0) * self.seeds_per_recipe() * (self.cv or 1)

    def image_sizes(self) -> list[int]:
        if "image_size" in self.params:
            return sorted(self.params["image_size"])
        return [self.fixed.get("image_size", DEFAULTS["image_size"])]

    def echo(self) -> dict:
        out = {k.lower(): getattr(self, k.lower()) for k in SPACE_KEYS}
        out["path"] = self.path
        return out


def _fail(path: str, key: str, reason: str) -> TLError:
    return TLError(f"{path}: {key}: {reason}")


def load_space(path: str | Path) -> SearchSpace:
    """Run the file, keep its UPPERCASE constants, validate them; TLError names file, key, reason."""
    path = Path(path)
    if not path.is_file():
        raise TLError(f"search-space file {path} does not exist")
    source = path.read_text()
    try:
        code = compile(source, str(path), "exec")
    except SyntaxError as exc:
        raise TLError(f"{path}: syntax error at line {exc.lineno}: {exc.msg}") from None
    namespace: dict = {"__file__": str(path), "__name__": "tl_space"}
    try:
        exec(code, namespace)  # a space file is Python: it runs with the user's rights
    except Exception as exc:
        raise TLError(f"{path}: raised {type(exc).__name__}: {exc}") from None
    constants = {k: v for k, v in namespace.items() if k.isupper() and not k.startswith("_")}
    unknown = sorted(set(constants) - set(SPACE_KEYS))
    if unknown:
        raise _fail(str(path), unknown[0], f"unknown key; allowed: {', '.join(SPACE_KEYS)}")
    if "DATASET" in constants and constants.get("DATASETS"):
        raise _fail(str(path), "DATASETS", "set DATASET (one dataset) or DATASETS (several), not both")
    space = SearchSpace(str(path), **{k.lower(): v for k, v in constants.items()})
    validate_space(space)
    return space


def _check_param(path: str, key: str, value) -> None:
    if key not in DEFAULTS:
        raise _fail(path, key, f"unknown trial parameter; known: {', '.join(sorted(DEFAULTS))}")
    if isinstance(value, list):
        if not value:
            raise _fail(path, key, "empty choice list")
        values = value
    elif isinstance(value, tuple):
        if len(value) != 3 or value[0] not in DISTRIBUTIONS:
            raise _fail(path, key, f"a range must be (distribution, low, high) with distribution in {DISTRIBUTIONS}, got {value!r}")
        dist, low, high = value
        if not low < high:
            raise _fail(path, key, f"low must be below high, got {low} >= {high}")
        if dist == "loguniform" and low <= 0:
            raise _fail(path, key, f"loguniform needs low > 0, got {low}")
        values = [low, high]
    else:
        values = [value]
    for v in values:
        if key in ("lr", "batch_size", "epochs", "image_size") and (not isinstance(v, (int, float)) or v <= 0):
            raise _fail(path, key, f"must be positive, got {v!r}")
        if key == "weight_decay" and v < 0:
            raise _fail(path, key, f"must be >= 0, got {v!r}")
        if key == "optimizer" and v not in OPTIMIZERS:
            raise _fail(path, key, f"must be one of {sorted(OPTIMIZERS)}, got {v!r}")
        if key == "scheduler" and v not in SCHEDULERS:
            raise _fail(path, key, f"must be one of {sorted(SCHEDULERS)}, got {v!r}")
        if key == "class_weight" and v not in CLASS_WEIGHTS:
            raise _fail(path, key, f"must be one of {list(CLASS_WEIGHTS)}, got {v!r}")
        if key in ("task", "positive_class"):
            raise _fail(path, key, "set it through TASK / POSITIVE_CLASS, not PARAMS or FIXED")
        if key == POLICY_KEY:
            check_policy(v, f"{path}: {key}")
        if key == "table":
            raise _fail(path, key, "set a label table's options through LABELS, PATH_COLUMN, GROUP_COLUMN, ...")
        if key == "compile":
            try:
                compile_backend(v)
            except ValueError as e:
                raise _fail(path, key, str(e)) from None
        if key == "precision" and v not in PRECISIONS:
            raise _fail(path, key, f"must be one of {list(PRECISIONS)}, got {v!r}")
        if key in ("backbone", "weights", "freeze"):
            raise _fail(path, key, "set it through BACKBONES / FREEZE, not PARAMS or FIXED")


def _point_in_space(space: SearchSpace, point: dict) -> bool:
    """Whether a START_WITH recipe's (backbone, weights) is still offered by the space."""
    b, w = point.get("backbone"), point.get("weights")
    return b in space.backbones and (w is None or w in space.backbones[b])


def validate_space(space: SearchSpace) -> None:
    """Check every constant; raises TLError naming the file, the key and the reason."""
    for check in (_check_models, _check_params_and_labels, _check_budget, _check_data_options, _check_stage):
        check(space, space.path)


def _check_models(space: SearchSpace, p: str) -> None:
    """BACKBONES (each known, each weights version real), DATASETS and FREEZE."""
    if not isinstance(space.backbones, dict) or not space.backbones:
        raise _fail(p, "BACKBONES", "must be a non-empty dict backbone -> list of weights")
    for backbone, weights in space.backbones.items():
        try:
            get_backbone(backbone)
        except TLError as exc:
            raise _fail(p, "BACKBONES", str(exc)) from None
        if not isinstance(weights, list) or not weights:
            raise _fail(p, "BACKBONES", f"{backbone}: needs a non-empty list of weights, got {weights!r}")
        for w in weights:
            try:
                validate_weights(backbone, w)
            except TLError as exc:
                raise _fail(p, "BACKBONES", str(exc)) from None
    if not isinstance(space.datasets, list) or not all(isinstance(d, str) and d for d in space.datasets):
        raise _fail(p, "DATASETS", f"must be a list of dataset names or paths, got {space.datasets!r}")
    if not space.freeze or any(f not in FREEZE_MODES for f in space.freeze):
        raise _fail(p, "FREEZE", f"must be a non-empty list from {FREEZE_MODES}, got {space.freeze!r}")


def _check_params_and_labels(space: SearchSpace, p: str) -> None:
    """PARAMS and FIXED values, METRIC, TASK, POSITIVE_CLASS and UNCERTAIN."""
    for key, value in {**space.params, **space.fixed}.items():
        _check_param(p, key, value)
    if space.metric not in VAL_METRICS:
        raise _fail(p, "METRIC", f"must be a val metric {VAL_METRICS} (test never drives the search), got {space.metric!r}")
    if space.task is not None and space.task not in TASKS:
        raise _fail(p, "TASK", f"must be one of {', '.join(TASKS)}, got {space.task!r}")
    if space.positive_class is not None and not isinstance(space.positive_class, str):
        raise _fail(p, "POSITIVE_CLASS", f"must be a class name (a string), got {space.positive_class!r}")
    if space.uncertain is not None:
        check_policy(space.uncertain, f"{p}: UNCERTAIN")


def _check_budget(space: SearchSpace, p: str) -> None:
    """MODE, the trial and epoch budget, ASHA's settings, the sampler and START_WITH."""
    if space.mode not in ("max", "min"):
        raise _fail(p, "MODE", f"must be max or min, got {space.mode!r}")
    for key in ("max_epochs", "num_samples", "grace_period"):
        if not isinstance(getattr(space, key), int) or getattr(space, key) < 1:
            raise _fail(p, key.upper(), f"must be an integer >= 1, got {getattr(space, key)!r}")
    if space.grace_period > space.max_epochs:
        raise _fail(p, "GRACE_PERIOD", f"ASHA's grace period ({space.grace_period}) must not exceed MAX_EPOCHS "
                                       f"({space.max_epochs}): pass --grace-period too")
    if space.reduction_factor < 2:
        raise _fail(p, "REDUCTION_FACTOR", f"must be >= 2, got {space.reduction_factor}")
    if space.sampler not in SAMPLERS:
        raise _fail(p, "SAMPLER", f"must be one of {SAMPLERS}, got {space.sampler!r}")
    if space.sampler == "grid":
        ranged = [k for k, v in space.params.items() if not isinstance(v, list)]
        if ranged:
            raise _fail(p, "PARAMS", f"SAMPLER grid needs a list of choices, {ranged[0]} is a range {space.params[ranged[0]]!r}")
    for point in space.start_with:
        if not _point_in_space(space, point):
            raise _fail(p, "START_WITH", f"{point!r} is not in BACKBONES")


def _check_data_options(space: SearchSpace, p: str) -> None:
    """SUBGROUP_COLUMNS, SUBGROUP_PATH and GROUPS."""
    if space.subgroup_columns is not None and not (isinstance(space.subgroup_columns, str) or (
            isinstance(space.subgroup_columns, list) and all(isinstance(c, str) for c in space.subgroup_columns))):
        raise _fail(p, "SUBGROUP_COLUMNS", f"must be a list of column names, got {space.subgroup_columns!r}")
    if space.subgroup_path is not None and (not isinstance(space.subgroup_path, str) or not space.subgroup_path):
        raise _fail(p, "SUBGROUP_PATH", f"must be a regex string, got {space.subgroup_path!r}")
    if space.groups is not None and (not isinstance(space.groups, str) or not space.groups):
        raise _fail(p, "GROUPS", f"must be a regex string with a capture group, got {space.groups!r}")


def _check_stage(space: SearchSpace, p: str) -> None:
    """The finalist stage (FINALISTS, FINALIST_SEEDS, CV, CHOOSE) and each trial's resources."""
    for key in ("finalists", "finalist_seeds"):
        value = getattr(space, key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise _fail(p, key.upper(), f"must be an integer >= 1 or None, got {value!r}")
    if space.cv is not None and (isinstance(space.cv, bool) or not isinstance(space.cv, int) or space.cv < 2):
        raise _fail(p, "CV", f"must be an integer >= 2 (the number of folds) or None, got {space.cv!r}")
    if space.choose not in CHOICES:
        raise _fail(p, "CHOOSE", f"must be one of {', '.join(CHOICES)}, got {space.choose!r}")
    if space.cpus_per_trial <= 0 or space.gpus_per_trial < 0:
        raise _fail(p, "CPUS_PER_TRIAL", "CPUs must be > 0 and GPUs >= 0")


def pin_uncertain(space: SearchSpace, flag: str | None) -> SearchSpace:
    """Pin the uncertain-label policy in FIXED: ``flag`` (``--uncertain``), else the file's UNCERTAIN
    unless PARAMS searches over it. Apply ``--set`` pins after it, so ``--set uncertain=...`` beats both.

    Raises:
        TLError: ``flag`` is not a policy.
    """
    policy = flag or space.uncertain
    if not policy or (not flag and POLICY_KEY in space.params):
        return space
    space = replace(space, params=dict(space.params), fixed=dict(space.fixed))
    space.params.pop(POLICY_KEY, None)
    space.fixed[POLICY_KEY] = check_policy(policy, "--uncertain" if flag else f"{space.path}: UNCERTAIN")
    return space


def apply_overrides(space: SearchSpace, pins: list[str]) -> SearchSpace:
    """Pin parameters from ``--set KEY=VALUE``: the key must exist in the file or the trial defaults."""
    space = replace(space, backbones=dict(space.backbones), params=dict(space.params), fixed=dict(space.fixed))
    for pin in pins:
        key, sep, raw = pin.partition("=")
        if not sep:
            raise TLError(f"--set {pin!r}: expected KEY=VALUE")
        try:
            value = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            value = raw  # bare strings: --set backbone=resnet18
        if key == "backbone":
            weights = space.backbones.get(value) or ["none"]
            space.backbones = {value: weights}
        elif key == "weights":
            space.backbones = {b: [value] for b, ws in space.backbones.items() if value in ws} or \
                              {b: [value] for b in space.backbones}
        elif key == "freeze":
            space.freeze = [value]
        elif key in DEFAULTS:
            space.params.pop(key, None)
            space.fixed[key] = value
        else:
            raise TLError(f"--set {key}: unknown key; settable: backbone, weights, freeze, {', '.join(sorted(DEFAULTS))}")
    # A pin may leave a START_WITH recipe outside BACKBONES: drop it (as optuna_points would), don't fail.
    space.start_with = [pt for pt in space.start_with if _point_in_space(space, pt)]
    validate_space(space)
    return space


def _slug(name: str) -> str:
    return re.sub(r"\W", "_", name)


def optuna_points(space: SearchSpace) -> list[dict]:
    """START_WITH recipes in the sampler's parameter names, skipping pairs no longer in the space."""
    points = []
    for point in filter(lambda pt: _point_in_space(space, pt), space.start_with):
        b, w = point["backbone"], point.get("weights")
        renamed = {k: v for k, v in point.items() if k != "weights"}
        if w is not None:
            renamed[f"weights_for_{_slug(b)}"] = w
        points.append(renamed)
    return points


class SpaceSampler:
    """Optuna define-by-run function for a ``SearchSpace`` (a class, so Ray can pickle it for resume)."""

    def __init__(self, space: SearchSpace):
        self.backbones = space.backbones
        self.freeze = space.freeze
        self.params = space.params
        self.fixed = space.fixed
        self.max_epochs = space.max_epochs
        self.constants = {"metric": space.metric, "mode": space.mode}

    def _choose(self, trial, name: str, spec):
        if isinstance(spec, list):
            return spec[0] if len(spec) == 1 else trial.suggest_categorical(name, spec)
        dist, low, high = spec
        if dist == "int":
            return trial.suggest_int(name, low, high)
        return trial.suggest_float(name, low, high, log=dist == "loguniform")

    def __call__(self, trial) -> dict:
        backbone = self._choose(trial, "backbone", list(self.backbones))
        weights = self._choose(trial, f"weights_for_{_slug(backbone)}", self.backbones[backbone])
        freeze = self._choose(trial, "freeze", freeze_choices(self.freeze, weights))
        chosen = {"backbone": backbone, "weights": weights, "freeze": freeze}
        for key in asked_params(self.params, backbone, freeze):
            chosen[key] = self._choose(trial, key, self.params[key])
        return self.trial_config(chosen)

    def trial_config(self, chosen: dict) -> dict:
        """The full trial config: defaults, then FIXED, then the chosen values; epochs capped."""
        out = {**DEFAULTS, **self.fixed, **chosen, **self.constants}
        out["epochs"] = min(out["epochs"], self.max_epochs)
        return out


def freeze_choices(freeze: list, weights: str) -> list:
    # Freezing random weights is meaningless: from-scratch runs always train everything.
    return freeze if weights != "none" else ["none"]


def asked_params(params: dict, backbone: str, freeze: str) -> list[str]:
    """The PARAMS that apply to this (backbone, freeze): conditional ones are skipped elsewhere."""
    skip = {"freeze_fraction"} if freeze != "partial" else set()
    if backbone != "small_vit":
        skip.add("patch_size")
    return [k for k in params if k not in skip]


def grid_configs(space: SearchSpace) -> list[dict]:
    """Every combination of the space once (SAMPLER grid), with the same conditionals as the sampler."""
    sampler = SpaceSampler(space)
    configs = []
    for backbone, weights_list in space.backbones.items():
        for weights in weights_list:
            for freeze in freeze_choices(space.freeze, weights):
                keys = asked_params(space.params, backbone, freeze)
                for values in itertools.product(*(space.params[k] for k in keys)):
                    chosen = {"backbone": backbone, "weights": weights, "freeze": freeze, **dict(zip(keys, values))}
                    configs.append(sampler.trial_config(chosen))
    return configs


def points_param_space(points: list[dict]) -> dict:
    """The param_space Ray's ``BasicVariantGenerator`` fills ``points`` into: every key they set,
    and a choice over the values of each key that varies. A constant there that a point sets
    otherwise makes Ray warn, once per point, that the point overrides it."""
    from ray import tune

    space = {}
    for key in dict.fromkeys(k for point in points for k in point):
        values = []
        for point in points:
            if key in point and point[key] not in values:
                values.append(point[key])
        space[key] = values[0] if len(values) == 1 else tune.choice(values)
    return space
