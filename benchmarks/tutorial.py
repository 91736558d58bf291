"""A faithful re-implementation of the PyTorch transfer-learning tutorial's loop, the baseline.

ImageFolder + PIL transforms every epoch, DataLoader workers, a ``.item()`` host sync per batch,
and — for "ConvNet as fixed feature extractor" — a full forward pass through the frozen backbone.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Iterable

import torch
from torch import nn
from torch.utils.data import DataLoader, Subset
from torchvision import datasets, transforms


def tutorial_loaders(root: Path, size: int, batch_size: int, n_train: int, workers: int,
                     mean, std) -> DataLoader:
    """The tutorial's training pipeline: RandomResizedCrop + flip + normalize, decoded by PIL each epoch."""
    tf = transforms.Compose([transforms.RandomResizedCrop(size), transforms.RandomHorizontalFlip(),
                             transforms.ToTensor(), transforms.Normalize(mean, std)])
    ds = datasets.ImageFolder(str(root / "train"), tf)
    step = max(1, len(ds) // n_train)
    ds = Subset(ds, list(range(0, len(ds), step))[:n_train])
    return DataLoader(ds, batch_size=batch_size, shuffle=True, num_workers=workers)


def tutorial_train(model: nn.Module, head: nn.Module, loader: DataLoader, epochs: int, lr: float,
                   device: torch.device, params: Iterable[nn.Parameter] | None = None) -> float:
    """The tutorial's train loop over ``epochs``; returns wall seconds.

    Only ``head`` is optimised ("fixed feature extractor") unless ``params`` is given: pass
    ``model.parameters()`` for the tutorial's "finetuning the ConvNet" variant.
    """
    criterion = nn.CrossEntropyLoss()
    optimizer = torch.optim.SGD(head.parameters() if params is None else params, lr=lr, momentum=0.9)
    t0 = time.perf_counter()
    for _ in range(epochs):
        model.train()
        running_loss, running_corrects = 0.0, 0
        for inputs, labels in loader:
            inputs, labels = inputs.to(device), labels.to(device)
            optimizer.zero_grad()
            with torch.set_grad_enabled(True):
                outputs = model(inputs)
                _, preds = torch.max(outputs, 1)
                loss = criterion(outputs, labels)
                loss.backward()
                optimizer.step()
            running_loss += loss.item() * inputs.size(0)  # the per-batch host sync
            running_corrects += torch.sum(preds == labels.data).item()
    return time.perf_counter() - t0
