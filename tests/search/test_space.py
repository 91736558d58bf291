"""tl.search.space: space files load, validate with errors that name file/key, pin, and sample for Optuna."""
from __future__ import annotations

import pickle
import textwrap
from pathlib import Path

import optuna
import pytest

from tl.core.errors import TLError
from tl.search.space import SpaceSampler, apply_overrides, grid_configs, load_space, optuna_points

SPACE_FILES = sorted((Path(__file__).resolve().parents[2] / "search_spaces").glob("*.py"))

VALID = """
DATASET = "pneumoniamnist"
BACKBONES = {"timm/efficientnet_lite0": ["IMAGENET1K_PYPI", "none"], "resnet18": ["IMAGENET1K_V1"],
             "convmodel": ["none"]}
FREEZE = ["none", "backbone", "partial"]
PARAMS = {"lr": ("loguniform", 1e-4, 1e-2), "batch_size": [16, 32], "epochs": [2, 20],
          "image_size": [64, 28], "freeze_fraction": ("uniform", 0.5, 0.9)}
FIXED = {"optimizer": "adamw", "augment": False}
METRIC = "val_auc"
MAX_EPOCHS = 5
NUM_SAMPLES = 6
START_WITH = [{"backbone": "timm/efficientnet_lite0", "weights": "IMAGENET1K_PYPI", "freeze": "none", "lr": 1e-3}]
"""


def _space_file(tmp_path: Path, text: str, name: str = "space.py") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def _with(tmp_path: Path, extra: str) -> Path:
    """The valid space with ``extra`` lines appended (later assignments win)."""
    return _space_file(tmp_path, VALID + textwrap.dedent(extra))


@pytest.fixture
def space(tmp_path: Path):
    return load_space(_space_file(tmp_path, VALID))


@pytest.mark.parametrize("path", SPACE_FILES, ids=lambda p: p.name)
def test_shipped_space_file_loads(path: Path):
    space = load_space(path)
    assert space.weight_pairs(), f"{path.name}: no (backbone, weights) pair"


def test_valid_space_loads_and_echo_round_trips(space, tmp_path: Path):
    assert space.metric == "val_auc" and space.max_epochs == 5 and space.num_samples == 6
    assert space.mode == "max" and space.sampler == "tpe", "unset keys keep their defaults"
    assert space.image_sizes() == [28, 64], space.image_sizes()
    echo = space.echo()
    assert echo["backbones"]["resnet18"] == ["IMAGENET1K_V1"] and echo["path"] == space.path, echo
    # Writing the echo back as a space file gives the same space.
    text = "\n".join(f"{k.upper()} = {v!r}" for k, v in echo.items() if k != "path")
    again = load_space(_space_file(tmp_path, text, "echoed.py"))
    assert {**again.echo(), "path": None} == {**echo, "path": None}


def test_syntax_error_names_file_and_line(tmp_path: Path):
    path = _space_file(tmp_path, 'DATASET = "pneumoniamnist"\nMAX_EPOCHS = 3\nPARAMS = {"lr": [0.1,\n')
    with pytest.raises(TLError) as info:
        load_space(path)
    msg = str(info.value)
    assert str(path) in msg and "syntax error at line 3" in msg, msg


def test_file_that_raises_is_reported(tmp_path: Path):
    with pytest.raises(TLError, match="raised ZeroDivisionError"):
        load_space(_space_file(tmp_path, "MAX_EPOCHS = 1 / 0\n"))


def test_unknown_uppercase_key_is_named(tmp_path: Path):
    with pytest.raises(TLError, match="LEARNING_RATE: unknown key; allowed: DATASET, BACKBONES"):
        load_space(_with(tmp_path, "LEARNING_RATE = 0.1\n"))


def test_lowercase_and_private_names_are_helpers_not_keys(tmp_path: Path):
    space = load_space(_with(tmp_path, "_SCALE = 2\nbase = 8\nNUM_SAMPLES = base * _SCALE\n"))
    assert space.num_samples == 16


def test_unknown_backbone_names_backbones(tmp_path: Path):
    with pytest.raises(TLError) as info:
        load_space(_with(tmp_path, 'BACKBONES = {"resnet19": ["none"]}\n'))
    msg = str(info.value)
    assert "BACKBONES" in msg and "resnet19" in msg, msg


def test_weights_the_backbone_lacks_fail(tmp_path: Path):
    with pytest.raises(TLError, match="BACKBONES: weights 'IMAGENET1K_V2' are not valid for resnet18"):
        load_space(_with(tmp_path, 'BACKBONES = {"resnet18": ["IMAGENET1K_V2"]}\n'))


def test_empty_choice_list_names_the_key(tmp_path: Path):
    with pytest.raises(TLError, match="batch_size: empty choice list"):
        load_space(_with(tmp_path, 'PARAMS = {"batch_size": []}\n'))


def test_unknown_precision_is_rejected(tmp_path: Path):
    with pytest.raises(TLError, match=r"precision: must be one of \['fp32', 'bf16'\], got 'fp16'"):
        load_space(_with(tmp_path, 'FIXED = {"precision": "fp16"}\n'))


def test_compile_names_a_backend_or_a_bool(tmp_path: Path):
    assert load_space(_with(tmp_path, 'FIXED = {"compile": "aot_eager"}\n')).fixed["compile"] == "aot_eager"
    with pytest.raises(TLError, match=r"compile: must be true, false or one of .*got 'tvm'"):
        load_space(_with(tmp_path, 'FIXED = {"compile": "tvm"}\n'))


@pytest.mark.parametrize("extra, reason", [
    ('PARAMS = {"lr": ("loguniform", -1, 1)}\n', "loguniform needs low > 0, got -1"),
    ('FIXED = {"lr": -0.1}\n', "must be positive, got -0.1"),
    ('PARAMS = {"lr": ("uniform", 0.1, 0.01)}\n', "low must be below high"),
    ('PARAMS = {"lr": ("normal", 0.1, 1.0)}\n', "a range must be (distribution, low, high)"),
])
def test_impossible_lr_is_rejected(tmp_path: Path, extra: str, reason: str):
    with pytest.raises(TLError) as info:
        load_space(_with(tmp_path, extra))
    assert f"lr: {reason}" in str(info.value), str(info.value)


def test_test_metric_may_not_drive_the_search(tmp_path: Path):
    with pytest.raises(TLError, match=r"METRIC: must be a val metric .* \(test never drives the search\), got 'test_acc'"):
        load_space(_with(tmp_path, 'METRIC = "test_acc"\n'))


def test_start_with_outside_backbones_fails(tmp_path: Path):
    with pytest.raises(TLError, match="START_WITH"):
        load_space(_with(tmp_path, 'START_WITH = [{"backbone": "resnet50", "lr": 1e-3}]\n'))


def test_overrides_pin_backbone_and_lr_without_touching_the_loaded_space(space):
    pinned = apply_overrides(space, ["backbone=resnet18", "lr=0.01"])
    assert pinned.backbones == {"resnet18": ["IMAGENET1K_V1"]}, "the backbone keeps its weights from the file"
    assert pinned.fixed["lr"] == 0.01 and "lr" not in pinned.params, (pinned.fixed, pinned.params)
    assert "lr" in space.params and len(space.backbones) == 3, "the original space is not modified"
    assert optuna_points(pinned) == [], "a START_WITH recipe outside the pinned backbones is dropped"


def test_pinning_weights_away_from_the_start_with_recipe_drops_it(tmp_path: Path):
    # The shipped X-ray space starts with pretrained Lite0 recipes; pinning weights=none excludes them
    # and keeps the from-scratch ones.
    xray = Path(__file__).resolve().parents[2] / "search_spaces" / "xray.py"
    source = load_space(xray) if xray.exists() else load_space(_space_file(tmp_path, VALID))
    assert source.start_with, "the example needs a START_WITH recipe"
    pinned = apply_overrides(source, ["weights=none"])
    assert all(ws == ["none"] for ws in pinned.backbones.values()), pinned.backbones
    kept = [pt for pt in source.start_with if pt.get("weights", "none") == "none"]
    assert len(kept) < len(source.start_with), "the example needs a pretrained START_WITH recipe"
    assert pinned.start_with == kept and len(optuna_points(pinned)) == len(kept), pinned.start_with
    assert source.start_with, "the loaded space keeps its recipes"


def test_override_of_unknown_key_fails(space):
    with pytest.raises(TLError, match="--set learning_rate: unknown key"):
        apply_overrides(space, ["learning_rate=0.1"])
    with pytest.raises(TLError, match="expected KEY=VALUE"):
        apply_overrides(space, ["lr"])


def test_override_is_validated(space):
    with pytest.raises(TLError, match="lr: must be positive"):
        apply_overrides(space, ["lr=-1"])


def test_start_with_uses_the_samplers_parameter_names(space):
    assert optuna_points(space) == [{"backbone": "timm/efficientnet_lite0", "freeze": "none", "lr": 1e-3,
                                     "weights_for_timm_efficientnet_lite0": "IMAGENET1K_PYPI"}]


def _sampled(space, n: int = 60) -> list[tuple[dict, dict]]:
    """(Optuna trial params, trial config) for ``n`` random trials of an in-memory study."""
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    sampler, out = SpaceSampler(space), []
    for _ in range(n):
        trial = study.ask()
        config = sampler(trial)
        out.append((dict(trial.params), config))
        study.tell(trial, 0.5)
    return out


def test_sampler_never_freezes_random_weights(space):
    trials = _sampled(space)
    scratch = [(p, c) for p, c in trials if c["weights"] == "none"]
    assert scratch, "the example must sample some from-scratch trials"
    for params, config in scratch:
        assert config["freeze"] == "none" and "freeze" not in params, (params, config)
    assert {c["freeze"] for _, c in trials if c["weights"] != "none"} == {"none", "backbone", "partial"}


def test_sampler_asks_freeze_fraction_only_for_partial(space):
    trials = _sampled(space)
    for params, config in trials:
        assert ("freeze_fraction" in params) == (config["freeze"] == "partial"), (params, config)
        if config["freeze"] == "partial":
            assert 0.5 <= config["freeze_fraction"] <= 0.9 and config["freeze_fraction"] == params["freeze_fraction"]


def test_sampler_names_weights_per_backbone(space):
    trials = _sampled(space)
    for params, config in trials:
        names = [k for k in params if k.startswith("weights_for_")]
        assert all("/" not in k for k in names), names
        if len(space.backbones[config["backbone"]]) > 1:  # a single choice is not asked
            slug = config["backbone"].replace("/", "_")
            assert names == [f"weights_for_{slug}"] and params[names[0]] == config["weights"], (params, config)
    assert {c["backbone"] for _, c in trials} == set(space.backbones)


def test_sampler_caps_epochs_and_keeps_constants(space):
    trials = _sampled(space)
    assert {p["epochs"] for p, _ in trials} == {2, 20}, "both epoch choices are sampled"
    assert {c["epochs"] for _, c in trials} == {2, 5}, "20 epochs is capped at MAX_EPOCHS = 5"
    for _, config in trials:
        assert config["metric"] == "val_auc" and config["mode"] == "max" and config["augment"] is False, config
        assert 1e-4 <= config["lr"] <= 1e-2, config["lr"]


def test_sampler_survives_pickling(space):
    sampler = SpaceSampler(space)
    clone = pickle.loads(pickle.dumps(sampler))
    params = {"backbone": "timm/efficientnet_lite0", "weights_for_timm_efficientnet_lite0": "IMAGENET1K_PYPI",
              "freeze": "partial", "freeze_fraction": 0.6, "lr": 3e-3, "batch_size": 32, "epochs": 20,
              "image_size": 64}
    expected = sampler(optuna.trial.FixedTrial(params))
    assert clone(optuna.trial.FixedTrial(params)) == expected
    assert expected["freeze_fraction"] == 0.6 and expected["epochs"] == 5, expected


GRID = """
DATASET = "pneumoniamnist"
BACKBONES = {"timm/efficientnet_lite0": ["IMAGENET1K_PYPI", "none"], "small_vit": ["none"]}
FREEZE = ["none", "backbone", "partial"]
PARAMS = {"seed": [0, 1, 2], "lr": [1e-3, 1e-2], "freeze_fraction": [0.5, 0.8], "patch_size": [4, 8]}
FIXED = {"epochs": 9}
MAX_EPOCHS = 4
SAMPLER = "grid"
"""


def test_grid_enumerates_each_combination_once_with_the_samplers_conditionals(tmp_path: Path):
    configs = grid_configs(load_space(_space_file(tmp_path, GRID)))
    keys = [(c["backbone"], c["weights"], c["freeze"], c["seed"], c["lr"], c["freeze_fraction"], c["patch_size"])
            for c in configs]
    assert len(keys) == len(set(keys)), "a combination was repeated"
    # pretrained Lite0: none + backbone (6 each) + partial x 2 fractions (12); Lite0 from scratch:
    # never frozen (6); small_vit from scratch x 2 patch sizes (12). 6 = 3 seeds x 2 lr.
    assert len(configs) == 6 + 6 + 12 + 6 + 12, len(configs)
    assert all(c["freeze"] == "none" for c in configs if c["weights"] == "none")
    lite = [c for c in configs if c["backbone"] != "small_vit"]
    assert {c["patch_size"] for c in lite} == {4}, "patch_size is asked for small_vit only (default elsewhere)"
    assert {c["epochs"] for c in configs} == {4}, "epochs are capped at MAX_EPOCHS as in the sampler"


def test_grid_rejects_a_range(tmp_path: Path):
    with pytest.raises(TLError, match=r"PARAMS: SAMPLER grid needs a list of choices, lr is a range"):
        load_space(_space_file(tmp_path, GRID + 'PARAMS = {"lr": ("loguniform", 1e-4, 1e-2)}\n'))


@pytest.mark.parametrize("extra, key", [("FINALISTS = 0", "FINALISTS"), ("FINALISTS = 2.5", "FINALISTS"),
                                        ("FINALISTS = True", "FINALISTS"), ("FINALIST_SEEDS = 0", "FINALIST_SEEDS"),
                                        ("FINALIST_SEEDS = '3'", "FINALIST_SEEDS")])
def test_finalist_counts_in_the_file_must_be_integers_of_at_least_one(tmp_path: Path, extra: str, key: str):
    with pytest.raises(TLError, match=rf"{key}: must be an integer >= 1"):
        load_space(_with(tmp_path, extra))


def test_finalists_are_off_by_default_and_read_from_the_file(space, tmp_path: Path):
    assert space.finalists is None and space.seeds_per_recipe() == 3 and space.cv is None
    loaded = load_space(_with(tmp_path, "FINALISTS = 3\nFINALIST_SEEDS = 5"))
    assert (loaded.finalists, loaded.finalist_seeds) == (3, 5)
