"""The seeds' two tasks in one command: chest X-ray pneumonia and colorectal histology, same recipes.

The reports this product replaces ran the same recipes on a 2-class chest X-ray set and a
colorectal histology set and compared them side by side. ``DATASETS`` runs this space on each, one
experiment per dataset under a common folder (each with its own carve, split audit, choice and
test), and ends with the recipe x dataset table: each recipe's test figure and its rank by val on
each dataset, and its mean rank. Not a search: ``SAMPLER = "grid"`` runs every recipe once, and
ASHA's grace period equals MAX_EPOCHS, so every recipe gets the same epochs on both datasets.
Pretrained EfficientNet-Lite0 is run fine-tuned (``none``) and as a fixed extractor
(``backbone``); ConvModel and ResNet-18 are trained from scratch (random weights are never frozen).

chest_xray: Kermany's JPEG folders (train/ and the official 624-image test/, val carved from
train). kather2016_240: 240 H&E tiles of 8 tissue classes (Kather et al. 2016), val and test carved
from them: a few dozen test tiles, so its intervals are wide. Both under --data-dir:

    python -m tl.search search_spaces/seeds_study.py --data-dir ../shared/data --offline
"""
DATASETS = ["chest_xray", "kather2016_240"]
BACKBONES = {
    "timm/efficientnet_lite0": ["IMAGENET1K_PYPI"],
    "convmodel": ["none"],
    "resnet18": ["none"],
}
FREEZE = ["none", "backbone"]
PARAMS = {"lr": [1e-3]}
FIXED = {"image_size": 64, "epochs": 4, "batch_size": 32, "weight_decay": 1e-4,
         "optimizer": "adamw", "scheduler": "cosine", "augment": True}
SAMPLER = "grid"
METRIC = "val_acc"
MODE = "max"
MAX_EPOCHS = 4
GRACE_PERIOD = 4
CPUS_PER_TRIAL = 1
