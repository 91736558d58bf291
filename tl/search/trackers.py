"""MLflow for a search (``--mlflow``): Ray's ``MLflowLoggerCallback`` logs every trial as a run, and
the recommended model's runs are tagged ``tl.chosen`` with the files the report needs."""
from __future__ import annotations

from pathlib import Path

from tl.core.errors import TLError
from tl.core.results import CHOSEN_ARTIFACTS

DEFAULT_MLFLOW = "./mlruns"


def mlflow_uri(where: str) -> str:
    """Return the tracking URI for ``--mlflow``: a URI as given, a folder as a SQLite store inside it.

    MLflow 3 refuses a plain-folder (file) store unless ``MLFLOW_ALLOW_FILE_STORE=true``;
    ``file:`` URIs are passed through for users who set it.
    """
    if "://" in where or where.startswith("file:"):
        return where
    folder = Path(where).expanduser().resolve()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise TLError(f"--mlflow {where} is not writable: {exc.strerror or exc}") from None
    return f"sqlite:///{folder / 'mlflow.db'}"


def mlflow_callback(uri: str, experiment: str):
    """Ray's MLflowLoggerCallback on ``experiment``; a SQLite store keeps artifacts beside its database."""
    import mlflow
    from ray.air.integrations.mlflow import MLflowLoggerCallback

    client = mlflow.MlflowClient(tracking_uri=uri)
    if uri.startswith("sqlite:///") and client.get_experiment_by_name(experiment) is None:
        artifacts = Path(uri.removeprefix("sqlite:///")).parent / "artifacts"
        client.create_experiment(experiment, artifact_location=artifacts.as_uri())
    return MLflowLoggerCallback(tracking_uri=uri, experiment_name=experiment, tags={"tl.experiment": experiment})


def log_chosen_to_mlflow(uri: str, experiment: str, trials: list[tuple[str, str]]) -> list[str]:
    """Tag the MLflow runs of the recommended model's trials ``tl.chosen`` and attach their files.

    Args:
        trials: (trial id, trial folder) of each member: one for a single pick, the seeds of a
            finalist ensemble.
    Returns:
        The tagged run ids (a member without a run, e.g. logged to no experiment, is skipped).
    """
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return []
    runs = client.search_runs([found.experiment_id])
    tagged = []
    for trial_id, trial_dir in trials:
        # MLflowLoggerCallback names each run after its trial: "<trainable>_<trial_id>".
        mine = [r for r in runs if r.info.run_name.endswith(f"_{trial_id}")]
        if not mine:
            continue
        run_id = mine[0].info.run_id
        client.set_tag(run_id, "tl.chosen", "true")
        for name in CHOSEN_ARTIFACTS:
            if (Path(trial_dir) / name).is_file():
                client.log_artifact(run_id, str(Path(trial_dir) / name))
        tagged.append(run_id)
    return tagged


def require_mlflow() -> None:
    try:
        import mlflow  # noqa: F401
    except ImportError:
        raise TLError("--mlflow needs MLflow: pip install -e '.[mlflow]'") from None
