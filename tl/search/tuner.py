"""Ray and the Tuner for a search: start or join Ray quietly, the searcher (Optuna's samplers or
Ray's grid), ASHA, and the trial folders' names. ``trial_dirname`` is pickled by path into each
experiment's ``tuner.pkl``: it stays here."""
from __future__ import annotations

import logging
import os

from tl.core.errors import TLError
from tl.search.console import run_options
from tl.search.space import SearchSpace, SpaceSampler, grid_configs, optuna_points, points_param_space
from tl.train.trainable import trial_run_options


# What a trial's process imports before its first line runs: torch, the trainable, Tune's function trainable.
PRELOAD_MODULES = "tl.train.trainable,ray.tune.trainable.function_trainable"


def warm_trial_workers() -> None:
    """Before a local Ray starts: let the first trials run in the idle workers Ray starts with itself,
    with torch and the trainable already imported, instead of a new process each (0.9 s to start it,
    2.8 s to import; docs/results/scale/first-trial-timeline-smoke.txt).

    - ``RAY_preload_python_modules`` (ray-project/ray#33572): each worker imports ``PRELOAD_MODULES``
      as it starts, while the driver lists, loads and audits. A user's own list wins.
    - Ray gives an actor an idle worker only when both have the same runtime environment, and Tune
      gives every trial actor ``{"env_vars": {"PL_DISABLE_FORK": "1"}}`` (for PyTorch Lightning,
      ray-project/ray#28197), which no idle worker has (docs/results/scale/actor-workers.txt). The
      variable goes into this process's environment instead, which Ray's workers inherit, and out of
      Tune's defaults. If Ray moves it, trials start in new processes again, as before: slower, not wrong.
    """
    os.environ.setdefault("RAY_preload_python_modules", PRELOAD_MODULES)
    from ray.tune.execution import class_cache

    defaults = getattr(class_cache, "DEFAULT_ENV_VARS", {})
    for name, value in list(defaults.items()):
        os.environ.setdefault(name, value)
        defaults.pop(name)


def probe_address(address: str) -> None:
    """Fail in seconds on a dead ``host:port`` (ray.init would wait minutes for the GCS)."""
    import socket

    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not port.isdigit():
        return  # "auto" and other forms: Ray resolves them and fails fast itself
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except OSError as exc:
        raise TLError(f"cannot reach Ray at --address {address}: {exc.strerror or exc}") from None


def quiet_ray() -> None:
    """Silence Ray's and Optuna's chatter: the token-auth notice, study creation, MLflow's DB set-up and
    the "failed to fetch metrics" warning for trials a time budget left unstarted, and the
    "snapshotting ... may become a bottleneck" warning that fixed-extractor trials (an epoch a
    second, a checkpoint each) set off at every epoch."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    for name in ("ray._private.authentication", "ray.tune.analysis.experiment_analysis",
                 "ray.tune.execution.experiment_state", "mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.ERROR)


def init_ray(address: str | None, verbose: bool = False) -> None:
    """Start a local Ray, or join ``address``; nothing when this process already runs Ray (the next
    dataset of a several-dataset search)."""
    import ray

    if ray.is_initialized():
        return

    if address:
        probe_address(address)
    if not verbose:
        quiet_ray()
    # Quiet: worker stdout stays in Ray's session logs; the LiveView callback reports trials instead.
    quiet = {} if verbose else {"log_to_driver": False, "logging_level": logging.WARNING}
    try:
        if address:
            ray.init(address=address, **({"log_to_driver": True} | quiet))
        else:  # a new local instance: never join a cluster some other job started with `ray start`
            warm_trial_workers()
            ray.init(address="local", include_dashboard=False, dashboard_host="127.0.0.1", **quiet)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise TLError(f"cannot reach Ray at --address {address}: {str(exc).splitlines()[0]}") from None


def make_searcher(space: SearchSpace, seed: int, max_concurrent: int = 0):
    """The search algorithm; ``max_concurrent`` > 0 caps trials at once (``--repeatable``: 1).

    The cap goes on the searcher itself: Ray ignores ``TuneConfig.max_concurrent_trials`` for a
    ``BasicVariantGenerator`` passed in."""
    import optuna
    from ray.tune.search import ConcurrencyLimiter
    from ray.tune.search.basic_variant import BasicVariantGenerator
    from ray.tune.search.optuna import OptunaSearch

    if space.sampler == "grid":  # Ray's own generator: each listed config replaces one sample
        return BasicVariantGenerator(points_to_evaluate=grid_configs(space), max_concurrent=max_concurrent)

    samplers = {"tpe": lambda: optuna.samplers.TPESampler(seed=seed, n_startup_trials=min(10, max(2, space.num_samples // 3))),
                "random": lambda: optuna.samplers.RandomSampler(seed=seed),
                "cmaes": lambda: optuna.samplers.CmaEsSampler(seed=seed),
                "qmc": lambda: optuna.samplers.QMCSampler(seed=seed)}
    searcher = OptunaSearch(SpaceSampler(space), metric=space.metric, mode=space.mode,
                            sampler=samplers[space.sampler](), points_to_evaluate=optuna_points(space) or None)
    return ConcurrencyLimiter(searcher, max_concurrent=max_concurrent) if max_concurrent else searcher


def trial_dirname(trial) -> str:
    """Short trial folders (Ray's default embeds every constant of the config)."""
    c = trial.config
    return f"{trial.trial_id}_{str(c.get('backbone', '')).replace('/', '-')}_{c.get('weights', '')}_{c.get('freeze', '')}"


def new_tuner(trainable, space: SearchSpace, *, name: str, storage: str, seed: int, repeatable: bool,
              time_budget_s: float | None, verbose: bool, callbacks: list):
    """A Tuner for a new search: the searcher, ASHA on ``training_iteration`` (epochs), the trial folders'
    names, and each trial's checkpoints and retries (``trial_run_options``)."""
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler

    param_space = points_param_space(grid_configs(space)) if space.sampler == "grid" else None
    return tune.Tuner(
        trainable,
        param_space=param_space,
        tune_config=tune.TuneConfig(
            search_alg=make_searcher(space, seed, max_concurrent=1 if repeatable else 0),
            scheduler=ASHAScheduler(time_attr="training_iteration", max_t=space.max_epochs,
                                    grace_period=space.grace_period, reduction_factor=space.reduction_factor),
            metric=space.metric, mode=space.mode, num_samples=space.num_samples,
            time_budget_s=time_budget_s,
            # A finished trial's process (torch and the project already imported) runs the next one.
            reuse_actors=True,
            trial_dirname_creator=trial_dirname),
        run_config=tune.RunConfig(
            name=name, storage_path=storage,
            # no per-trial config boxes or tables (LiveView prints instead); --verbose: Ray's all
            **run_options(callbacks, verbose),
            **trial_run_options(space.metric, space.mode, space.max_failures)))
