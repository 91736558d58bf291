"""The experiment folder, owned in one place: its file names and formats (``files``), reading it
into one ``Experiment`` (``load``), per-trial ranking rows (``rows``) and the recorded split audit
(``split_audit``). Writers live here too, so a format changes in one module.
"""
from tl.core.results.files import (
    AUDIT_FILE, BEST_WEIGHTS_FILE, CHOSEN_ARTIFACTS, ERROR_FILE, EXPLAIN_DIR, FINALIST_DIR, GRADCAM_GRID, GRADCAM_RECORD, PARAMS_FILE, PREDICTION_KEYS, PROGRESS_FILE,
    RECIPE_KEY, RESULT_FILE, RESUME_STATE_FILE, SEARCH_FILE,
    SOURCE_KEY, STAGE, STAGE_KEY, TEST_PREDICTIONS, VAL_PREDICTIONS, Predictions, check_experiment_dir,
    dataset_record, find_predictions_file, mean_predictions, newest_experiment, positive_index, read_error,
    read_params, read_predictions, read_ray_statuses, read_result_rows, read_results, read_search_meta,
    read_trial_predictions,
    save_predictions, trial_dirs, update_search_meta, write_search_meta,
)
from tl.core.results.load import (
    COMPLETED, ERROR, PENDING, RUNNING, STOPPED, UNKNOWN, Experiment, load_experiments, split_stages, trial_status,
)
from tl.core.results.rows import final_column, rank_column, trial_row, trial_table

__all__ = [
    "AUDIT_FILE", "BEST_WEIGHTS_FILE", "CHOSEN_ARTIFACTS", "COMPLETED", "ERROR_FILE", "ERROR", "EXPLAIN_DIR", "Experiment", "FINALIST_DIR", "GRADCAM_GRID",
    "GRADCAM_RECORD", "PARAMS_FILE", "PENDING", "PREDICTION_KEYS", "PROGRESS_FILE", "RESULT_FILE", "RESUME_STATE_FILE", "Predictions", "RECIPE_KEY", "RUNNING", "SEARCH_FILE",
    "SOURCE_KEY", "STAGE", "STAGE_KEY", "STOPPED", "TEST_PREDICTIONS", "UNKNOWN", "VAL_PREDICTIONS",
    "check_experiment_dir", "dataset_record", "final_column", "find_predictions_file", "load_experiments",
    "mean_predictions", "newest_experiment", "positive_index", "rank_column", "read_error", "read_params",
    "read_predictions", "read_ray_statuses", "read_result_rows", "read_results", "read_search_meta", "read_trial_predictions",
    "save_predictions", "split_stages", "trial_dirs", "trial_row", "trial_status", "trial_table",
    "update_search_meta", "write_search_meta",
]
