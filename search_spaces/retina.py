"""Ordinal fundus grading: RetinaMNIST's 5 diabetic-retinopathy grades, chosen by quadratic weighted kappa.

Needs ``retinamnist.npz`` (MedMNIST, 28 px) in the data dir, or online: it is downloaded from the
official URL and MD5 checked (``retinamnist_64`` etc. for larger files). The task table knows it as
ordinal, so val/test report accuracy, MAE in grades and QWK. The loss is cross-entropy over the 5
grades (no ordinal head: none was measured to beat it). TASK says ordinal explicitly, so the same
file grades a set of your own: ``--dataset graded.npz`` (e.g. ``python -m benchmarks.graded_synthetic``).
"""
DATASET = "retinamnist"
TASK = "ordinal"

BACKBONES = {
    "timm/efficientnet_lite0": ["IMAGENET1K_PYPI"],
    "resnet18": ["none"],
    "convmodel": ["none"],
}
FREEZE = ["none", "partial"]

PARAMS = {
    "lr": ("loguniform", 3e-4, 3e-3),
    "batch_size": [32, 64],
    "weight_decay": ("loguniform", 1e-5, 1e-3),
    "class_weight": ["none", "balanced"],  # grade 0 dominates RetinaMNIST
    "freeze_fraction": ("uniform", 0.5, 0.9),
}
FIXED = {"image_size": 28, "epochs": 5, "optimizer": "adamw", "scheduler": "cosine", "augment": True}

METRIC = "val_qwk"
MODE = "max"
MAX_EPOCHS = 5
NUM_SAMPLES = 8
GRACE_PERIOD = 1
REDUCTION_FACTOR = 2
SAMPLER = "tpe"
CPUS_PER_TRIAL = 1
