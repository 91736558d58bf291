"""Colorectal histology (Kather et al.): H&E tiles as an ImageFolder, 6 or 8 tissue classes.

Point ``--dataset`` at the unpacked Kather_texture_2016_image_tiles_5000 folder (8 classes,
150 px tiles; bare ``root/CLASS/*.tif`` layout: val and test are carved from it, stratified and
seeded), or at a 6-class subset. PathMNIST (``--dataset pathmnist``) is the MedMNIST version.
Histology has no canonical orientation, so augmentation is always on.
"""
DATASET = "pathmnist"

BACKBONES = {
    "timm/efficientnet_lite0": ["IMAGENET1K_PYPI"],
    "resnet18": ["IMAGENET1K_V1"],
    "resnet50": ["IMAGENET1K_V1", "IMAGENET1K_V2"],
    "densenet121": ["IMAGENET1K_V1"],
    "efficientnet_b0": ["IMAGENET1K_V1"],
    "convmodel": ["none"],
}
FREEZE = ["none", "backbone", "partial"]

PARAMS = {
    "lr": ("loguniform", 1e-4, 1e-2),
    "batch_size": [32, 64],
    "weight_decay": ("loguniform", 1e-6, 1e-2),
    "image_size": [64, 128],
    "freeze_fraction": ("uniform", 0.5, 0.9),
}
FIXED = {"optimizer": "adamw", "scheduler": "cosine", "augment": True, "epochs": 10}

METRIC = "val_acc"
MODE = "max"
MAX_EPOCHS = 10
NUM_SAMPLES = 32
GRACE_PERIOD = 1
REDUCTION_FACTOR = 3
