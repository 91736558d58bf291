"""Smoke space: small and fast on 2 CPU cores; what the end-to-end tests run.

PneumoniaMNIST at its native 28 px, the from-scratch ConvModel only, 4 trials of up to 3 epochs.
ASHA (grace 1, factor 2) stops the weaker half at each rung, so a 4-trial run stops some early.
"""
DATASET = "pneumoniamnist"
BACKBONES = {"convmodel": ["none"]}
FREEZE = ["none"]
PARAMS = {
    "lr": ("loguniform", 1e-4, 3e-2),
    "batch_size": [64, 128],
}
FIXED = {"image_size": 28, "epochs": 3, "weight_decay": 1e-4, "augment": False}
METRIC = "val_acc"
MODE = "max"
MAX_EPOCHS = 3
NUM_SAMPLES = 4
GRACE_PERIOD = 1
REDUCTION_FACTOR = 2
CPUS_PER_TRIAL = 1
