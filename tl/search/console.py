"""What ``python -m tl.search`` prints while it runs: a status line at a steady pace, one line per
finished trial, and a short summary of the space. Built on Ray Tune's ``Callback`` API, so it
reads trial state, not Ray's stdout; Ray's own progress tables stay off unless ``--verbose``.
"""
from __future__ import annotations

import shlex
import time
from pathlib import Path
from typing import Any, Callable, TextIO

from ray import tune

from tl.core.columns import is_tested
from tl.core.results import ERROR_FILE
from tl.core.uncertain import DEFAULT_POLICY
from tl.search.space import SearchSpace

PREFIX = "[tl.search]"
WIDTH = 110  # the space summary's lines, wrapped for a terminal
STATUS_INTERVAL_S = 30.0  # often enough to follow a search (epochs take 10-60 s here), rare enough for a log
FREEZE_WORDS = {"none": "fine-tune", "backbone": "fixed extractor", "partial": "partial freeze"}


def _short(value: float) -> str:
    return f"{value:.2g}" if isinstance(value, float) else str(value)


def _duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h{rest // 60:02d}m" if hours else f"{rest // 60}m{rest % 60:02d}s"


def recipe(config: dict) -> str:
    """Return a trial's recipe in a few words: backbone, weights, freeze, lr, image size."""
    words = [str(config.get("backbone", "?")).removeprefix("timm/"), str(config.get("weights", "?")),
             FREEZE_WORDS.get(config.get("freeze"), str(config.get("freeze", "?")))]
    if config.get("freeze") == "partial" and "freeze_fraction" in config:
        words[-1] += f" {config['freeze_fraction']:.2f}"
    if "lr" in config:
        words.append(f"lr {config['lr']:.2g}")
    if "image_size" in config:
        words.append(f"{config['image_size']} px")
    return ", ".join(words)


def _pack(head: str, parts: list[str]) -> list[str]:
    """Join ``parts`` with "; " after ``head``, wrapping between parts (never inside one) at WIDTH."""
    lines, line = [], head
    for i, part in enumerate(parts):
        piece = part + (";" if i < len(parts) - 1 else "")
        if len(line) + 1 + len(piece) > WIDTH and line.strip():
            lines.append(line)
            line = " "
        line += " " + piece
    return lines + [line]


def space_summary(space: SearchSpace) -> list[str]:
    """Return the resolved space as a few human lines (the full JSON goes to tl_search.json)."""
    pairs = sum(len(ws) for ws in space.backbones.values())
    lines = _pack(f"{space.dataset}, {pairs} (backbone, weights) pairs:",
                  [f"{b.removeprefix('timm/')} × {'|'.join(ws)}" for b, ws in space.backbones.items()])
    lines.append(f"freeze: {', '.join(space.freeze)}")
    ranges = []
    for key, value in space.params.items():
        if isinstance(value, tuple):
            kind, low, high = value
            ranges.append(f"{key} {_short(low)}–{_short(high)}" + (" (log)" if kind == "loguniform" else ""))
        else:
            ranges.append(f"{key} {{{', '.join(_short(v) for v in value)}}}")
    if ranges:
        lines += _pack("params:", ranges)
    pinned = {k: v for k, v in space.fixed.items() if k in ("image_size", "optimizer", "scheduler")}
    if pinned:
        lines.append("fixed: " + ", ".join(f"{k}={_short(v)}" for k, v in pinned.items()))
    budget = (f"{space.num_samples} trials" if space.sampler != "grid" else "grid") + (
        f" ({space.sampler}), ≤ {space.max_epochs} epochs each; ASHA grace {space.grace_period}, "
        f"factor {space.reduction_factor}; chosen by {space.metric} ({space.mode})")
    lines.append(budget)
    return lines


def dataset_summary(arrays, uncertain: str | list = DEFAULT_POLICY) -> list[str]:
    """The dataset in a few lines: task and classes; for a label table its source, label columns,
    per-finding prevalence per split, uncertain and blank labels with the policy, and the group source.

    Args:
        arrays: the driver's ``DatasetArrays``.
        uncertain: the trials' policy for uncertain findings (a list when the search varies it).
    """
    what = "findings" if arrays.task == "multilabel" else "classes"
    lines = [f"task {arrays.task}: {arrays.num_classes} {what}"
             + (f", positive class {arrays.class_names[arrays.positive_index]!r}" if arrays.task == "binary" else "")]
    record = arrays.split_record
    table = record.get("table") if record.get("source") == "label table" else None
    if table:
        labels = table.get("labels", {})
        lines.append(f"label table {table.get('table')}: {table.get('rows_kept', '?'):,} images, labels "
                     f"{', '.join(map(str, labels.get('columns', [])))} ({labels.get('mode', '?')}), paths from "
                     f"{table.get('path_column', {}).get('column', '?')}")
    if arrays.task == "multilabel":
        from tl.data.arrays import label_counts

        counts = label_counts(arrays.labels, arrays.class_names)
        blank = (table or {}).get("labels", {}).get("counts", {})
        parts = []
        for name in arrays.class_names:
            shares = "/".join(f"{counts[s][name]['positive'] / max(counts[s][name]['n'], 1):.1%}" for s in counts)
            unsure = sum(counts[s][name]["uncertain"] for s in counts)
            blanks = blank.get(name, {}).get("blank", 0) if isinstance(blank.get(name), dict) else 0
            parts.append(f"{name} {shares}" + (f" ({unsure:,} uncertain)" if unsure else "")
                         + (f" ({blanks:,} blank = 0)" if blanks else ""))
        lines += _pack("prevalence train/val/test:", parts)
        if any(counts[s][n]["uncertain"] for s in counts for n in arrays.class_names):
            policy = "searched over " + ", ".join(uncertain) if isinstance(uncertain, list) else uncertain
            lines.append(f"uncertain (-1) findings in training: {policy}; val and test leave them out of every metric")
    for split, carved in (record.get("carved") or {}).items():
        if carved.get("strata_note"):
            lines.append(f"carving {split}: {carved['strata_note']}")
    groups = record.get("groups")
    if groups:
        lines.append(f"groups: {groups.get('source', '?')}, "
                     + ", ".join(f"{s} {g['n_groups']:,}" for s, g in groups.get("splits", {}).items()))
    return lines


def resume_command(argv: list[str], name: str) -> str:
    """Return the command that continues this search: the same arguments plus ``--name NAME --resume``."""
    kept, skip = [], False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg == "--name":
            skip = True
            continue
        if arg.startswith("--name=") or arg == "--resume":
            continue
        kept.append(arg)
    return shlex.join(["python", "-m", "tl.search", *kept, "--name", name, "--resume"])


def _last_error_line(trial) -> str:
    try:
        lines = [ln.strip() for ln in Path(trial.error_file).read_text(errors="replace").splitlines() if ln.strip()]
    except (OSError, TypeError):
        lines = []
    return lines[-1][:200] if lines else f"see {ERROR_FILE} in its folder"


class SilentReporter(tune.ProgressReporter):
    """Ray's progress-table slot, left empty: ``LiveView`` prints the progress instead."""

    def should_report(self, trials, done: bool = False) -> bool:
        return False

    def report(self, trials, done: bool, *sys_info: str) -> None:
        pass


def run_options(callbacks: list, verbose: bool) -> dict:
    """The console's ``tune.RunConfig`` settings: quiet, with ``callbacks`` (a ``LiveView``)
    speaking instead of Ray (verbose 0, an empty progress table), or Ray's full output."""
    return {"callbacks": callbacks, "verbose": 2 if verbose else 0,
            "progress_reporter": None if verbose else SilentReporter()}


def set_restored_options(tuner, options: dict) -> None:
    """Give a restored Tuner this run's console settings.

    ``Tuner.restore`` brings back the saved RunConfig, callbacks included (a stale ``LiveView``,
    the old verbosity); Ray 2.60 has no public way to replace them, so set them on the local tuner.
    """
    run_config = getattr(getattr(tuner, "_local_tuner", None), "_run_config", None)
    if run_config is not None:
        for key, value in options.items():
            setattr(run_config, key, value)


class LiveView(tune.Callback):
    """Status line every ``interval_s``, one line per ended or retried trial.

    ``stopped by ASHA`` means the scheduler ended the trial before its planned ``epochs``;
    ``finished`` trials ran all their epochs (and were tested once).
    """

    def __init__(self, metric: str, mode: str, num_samples: int, time_budget_s: float | None = None,
                 interval_s: float = STATUS_INTERVAL_S, out: Callable[[str], Any] | TextIO | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self.metric, self.mode, self.num_samples = metric, mode, num_samples
        self.time_budget_s, self.interval_s, self.clock = time_budget_s, interval_s, clock
        self._print = out if callable(out) else (lambda line: print(line, file=out, flush=True))
        self.started = self.clock()
        self.last_status = self.started
        self.running: set[str] = set()
        self.finished: set[str] = set()
        self.stopped: set[str] = set()
        self.errored: set[str] = set()
        self.best: tuple[float, dict] | None = None  # (metric value, config)
        self._best_of: dict[str, float] = {}

    # -- Ray Tune callback hooks ------------------------------------------------------------------
    def setup(self, **info):
        self.started = self.last_status = self.clock()

    def on_trial_start(self, iteration, trials, trial, **info):
        self.running.add(trial.trial_id)

    def on_trial_restore(self, iteration, trials, trial, **info):
        self.running.add(trial.trial_id)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        value = result.get(self.metric)
        if value is None:
            return
        better = (lambda a, b: a > b) if self.mode == "max" else (lambda a, b: a < b)
        mine = self._best_of.get(trial.trial_id)
        if mine is None or better(value, mine):
            self._best_of[trial.trial_id] = value
        if self.best is None or better(value, self.best[0]):
            self.best = (value, dict(trial.config))

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.running.discard(trial.trial_id)
        last = trial.last_result or {}
        epochs = int(last.get("training_iteration", 0) or 0)
        planned = int(trial.config.get("epochs", epochs) or epochs)
        tested = is_tested(last)
        asha = epochs < planned and not tested
        (self.stopped if asha else self.finished).add(trial.trial_id)
        best = self._best_of.get(trial.trial_id)
        figure = f"best {self.metric} {best:.4f}" if best is not None else f"no {self.metric}"
        ending = "stopped by ASHA" if asha else ("finished, tested once" if tested else "finished")
        self._print(f"{PREFIX} trial {trial.trial_id} {ending} after {epochs}/{planned} epochs: "
                    f"{figure} | {recipe(trial.config)}")

    def on_trial_error(self, iteration, trials, trial, **info):
        self.running.discard(trial.trial_id)
        self.errored.add(trial.trial_id)
        self._print(f"{PREFIX} trial {trial.trial_id} errored: {_last_error_line(trial)} | {recipe(trial.config)}"
                    f" | {trial.error_file}")

    def on_trial_recover(self, iteration, trials, trial, **info):
        from tl.search.full_disk import trial_ran_out_of_space

        if trial_ran_out_of_space(trial):  # FullDiskStop stops the search before any retry: say so
            self._print(f"{PREFIX} trial {trial.trial_id} failed: storage full; not retried, the search stops")
            return
        checkpoint = trial.checkpoint
        where = f"from checkpoint {Path(checkpoint.path).name}" if checkpoint else "from scratch"
        self._print(f"{PREFIX} trial {trial.trial_id} failed ({_last_error_line(trial)}); retrying {where}")

    def on_step_end(self, iteration, trials, **info):
        now = self.clock()
        if now - self.last_status >= self.interval_s:
            self.last_status = now
            self._print(self.status_line(now))

    # -- what is printed --------------------------------------------------------------------------
    def status_line(self, now: float | None = None) -> str:
        """Return one line: trial counts, best so far with its recipe, elapsed and remaining time."""
        now = self.clock() if now is None else now
        elapsed = now - self.started
        ended = len(self.finished) + len(self.stopped) + len(self.errored)
        parts = [f"{_duration(elapsed)}",
                 f"trials {len(self.running)} running, {len(self.finished)} finished, "
                 f"{len(self.stopped)} stopped by ASHA, {len(self.errored)} errored "
                 f"({ended}/{self.num_samples} done)"]
        if self.best is not None:
            parts.append(f"best {self.metric} {self.best[0]:.4f}: {recipe(self.best[1])}")
        else:
            parts.append(f"best {self.metric}: none yet")
        if self.time_budget_s:
            parts.append(f"{_duration(self.time_budget_s - elapsed)} left of the time budget")
        return f"{PREFIX} " + " | ".join(parts)
