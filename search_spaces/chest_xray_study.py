"""Fine-tuning vs fixed feature extractor on the chest X-ray JPEGs, 3 seeds per recipe (issue 6).

Not a search: ``SAMPLER = "grid"`` runs every combination once, and the PARAMS ``seed`` list
repeats each recipe per seed so the report can give mean ± std and paired CIs. Pretrained
EfficientNet-Lite0 is run both fine-tuned (``none``) and as a fixed extractor (``backbone``);
ConvModel and ResNet-18 are trained from scratch (random weights are never frozen). ASHA's grace
period equals MAX_EPOCHS, so no trial is stopped early: every recipe gets the same epochs.

    python -m tl.search search_spaces/chest_xray_study.py --data-dir ../shared/data --offline
"""
DATASET = "chest_xray"  # ImageFolder under --data-dir: train/ and the official 624-image test/
BACKBONES = {
    "timm/efficientnet_lite0": ["IMAGENET1K_PYPI"],
    "convmodel": ["none"],
    "resnet18": ["none"],
}
FREEZE = ["none", "backbone"]
PARAMS = {"seed": [0, 1, 2]}
FIXED = {"image_size": 64, "epochs": 8, "lr": 1e-3, "batch_size": 32, "weight_decay": 1e-4,
         "optimizer": "adamw", "scheduler": "cosine", "augment": True}
SAMPLER = "grid"
METRIC = "val_acc"
MODE = "max"
MAX_EPOCHS = 8
GRACE_PERIOD = 8
CPUS_PER_TRIAL = 1
MAX_FAILURES = 2
