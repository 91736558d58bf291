"""Trial configuration: every key a trial config may carry with its default, and the name tables
for optimizers, schedulers, precisions and class weighting.

The one home of these rules: ``tl.search.space`` checks a space file against them without importing the
training loop, and ``tl.train.trainable`` builds from them.
"""
from __future__ import annotations

import torch

from tl.core.columns import DEFAULT_METRIC, DEFAULT_MODE
from tl.core.uncertain import DEFAULT_POLICY, POLICY_KEY

# Every key a trial config may carry, with its default. The search space overrides these.
DEFAULTS: dict = {
    "dataset": "pneumoniamnist", "data_dir": None, "backbone": "convmodel", "weights": "none",
    "freeze": "none", "freeze_fraction": 0.75, "lr": 1e-3, "batch_size": 64, "weight_decay": 1e-4,
    "epochs": 5, "image_size": 28, "optimizer": "adamw", "scheduler": "cosine", "augment": True,
    "label_smoothing": 0.0, "patch_size": 4, "seed": 0, "metric": DEFAULT_METRIC, "mode": DEFAULT_MODE,
    "fail_at_epoch": 0, "feature_cache": True, "compile": False, "precision": "fp32",
    "channels_last": True,
    # The task (tl.core.tasks): None takes the table's or the inferred one; TASK / POSITIVE_CLASS set them.
    "task": None, "positive_class": None,
    # "balanced": inverse-frequency class weights (multilabel: per-finding pos_weight = negatives / positives).
    "class_weight": "none",
    # Label tables (tl.data.table_source.TableOptions as a dict) and what training does with uncertain (-1)
    # findings (tl.core.uncertain): ignore (masked out of the loss), zeros or ones. Val and test always leave them out.
    "table": None, POLICY_KEY: DEFAULT_POLICY,
}

OPTIMIZERS = {
    "adamw": lambda params, lr, wd: torch.optim.AdamW(params, lr=lr, weight_decay=wd),
    "sgd": lambda params, lr, wd: torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=wd, nesterov=True),
    "adam": lambda params, lr, wd: torch.optim.Adam(params, lr=lr, weight_decay=wd),
}
SCHEDULERS = {
    "cosine": lambda opt, epochs: torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(epochs, 1)),
    "constant": lambda opt, epochs: torch.optim.lr_scheduler.LambdaLR(opt, lambda e: 1.0),
    "step": lambda opt, epochs: torch.optim.lr_scheduler.StepLR(opt, step_size=max(epochs // 3, 1), gamma=0.1),
}
PRECISIONS = ("fp32", "bf16")
# torch.compile backends a trial may name (timm's --torchcompile takes a backend name the same way):
# True means inductor, the one that generates kernels; aot_eager traces forward and backward without
# generating code, so it checks a model compiles in seconds, not a minute.
COMPILE_BACKENDS = ("inductor", "aot_eager", "eager")


def compile_backend(value) -> str | None:
    """The torch.compile backend a config's ``compile`` names, or None to run eagerly."""
    if value is None or value is False or value == "none":
        return None
    if value is True:
        return "inductor"
    if value in COMPILE_BACKENDS:
        return value
    raise ValueError(f"must be true, false or one of {list(COMPILE_BACKENDS)}, got {value!r}")
CLASS_WEIGHTS = ("none", "balanced")
