"""One command lists a folder once: the label check before Ray and the decode share the listing
(``tl.data.dataset.listed_once``), and nothing outlives the command."""
from __future__ import annotations

import shutil

import tl.data.dataset as dataset
from tl.data.dataset import check_labels, listed_once, load_dataset


def _count_listings(monkeypatch) -> list:
    calls = []
    real = dataset.list_image_folder

    def counted(*args, **kwargs):
        calls.append(args[0])
        return real(*args, **kwargs)

    monkeypatch.setattr(dataset, "list_image_folder", counted)
    return calls


def test_a_command_walks_the_folder_once_for_its_checks_and_each_image_size(monkeypatch, small_data_dir):
    calls = _count_listings(monkeypatch)
    folder = str(small_data_dir / "chest_xray")
    with listed_once():
        task = check_labels(folder)
        small, large = load_dataset(folder, 16, use_cache=False), load_dataset(folder, 24, use_cache=False)
    assert len(calls) == 1, calls
    assert task.kind == small.task and small.labels["test"].tolist() == large.labels["test"].tolist()
    assert small.images["train"].shape[-2:] == (16, 16) and large.images["train"].shape[-2:] == (24, 24)


def test_outside_a_command_every_call_sees_the_folder_as_it_is_now(monkeypatch, small_data_dir, tmp_path):
    calls = _count_listings(monkeypatch)
    folder = tmp_path / "chest_xray"
    shutil.copytree(small_data_dir / "chest_xray", folder)
    check_labels(str(folder))
    before = sum(map(len, dataset.list_source(folder, None, None).files.values()))
    victim = next((folder / "test" / "NORMAL").iterdir())
    victim.unlink()
    after = sum(map(len, dataset.list_source(folder, None, None).files.values()))
    assert after == before - 1 and len(calls) == 3
    with listed_once():  # a new command lists afresh too
        assert sum(map(len, dataset.list_source(folder, None, None).files.values())) == after
    assert len(calls) == 4
