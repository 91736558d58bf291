"""Does a patient-grouped val rank recipes as the test set does? (issue 12, part 5a)

Lite0 fine-tuned vs as a fixed feature extractor on the Kermany chest X-ray JPEGs, 3 seeds each,
the same recipe as ``chest_xray_study.py``. Run it twice: once with val carved image by image
(siblings of a val image stay in train), once with val carved by patient:

    python -m tl.search search_spaces/chest_xray_grouping.py --data-dir ../shared/data --offline \\
        --name chest_xray-image-val
    python -m tl.search search_spaces/chest_xray_grouping.py --data-dir ../shared/data --offline \\
        --groups '((?:NORMAL2-)?IM-\\d+|person\\d+)' --name chest_xray-grouped-val

The test set is the official 624 images in both runs, so the val−test gaps are comparable.
"""
DATASET = "chest_xray"
BACKBONES = {"timm/efficientnet_lite0": ["IMAGENET1K_PYPI"]}
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
