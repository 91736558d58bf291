"""Datasets: find, validate and decode once into uint8 arrays that every trial shares.

Formats: MedMNIST-style ``.npz`` files (``npz``) and ImageFolder trees (``imagefolder``). Each
ends as ``DatasetArrays`` (``arrays``): uint8 images (N, C, H, W) per split, labels, class names and
the split record. ``load_dataset`` (``load``) is the entry point: files are decoded once per (files,
image size, decoder) into the decode store (``store``: parallel, resumable, grey at one channel),
and each carve's splits are memory-mapped files every trial of a node shares, so trials never touch
an image file. Carving (``carve``) and grouping keys (``groups``) are pure functions of labels and
names, applied after decoding.
"""
from tl.data.arrays import SPLITS, DatasetArrays
from tl.data.decode import decode_images
from tl.data.formats import IMAGE_EXTENSIONS
from tl.data.imagefolder import load_image_folder
from tl.data.dataset import load_dataset
from tl.data.locate import cache_dir, default_data_dir, resolve_dataset_path
from tl.data.npz import load_npz_splits

__all__ = ["SPLITS", "IMAGE_EXTENSIONS", "DatasetArrays", "cache_dir", "decode_images", "default_data_dir",
           "load_dataset", "load_image_folder", "load_npz_splits", "resolve_dataset_path"]
