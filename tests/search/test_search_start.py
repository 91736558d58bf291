"""How a search starts. The pixels while Ray starts (tl.search.beside_ray): a dataset the decode store
holds loads in a thread beside Ray's start; one that needs decoding is refused there (``only_stored``)
and waits for Ray; a bad input raised in the thread reaches the caller. The first trials take Ray's
idle workers, which imported torch and the trainable as they started (``warm_trial_workers``)."""
from __future__ import annotations

import importlib
import os
import threading

import pytest

import tl.data.store.chunks as store_chunks
from tl.core.errors import TLError
from tl.data import load_dataset
from tl.data.store.fill import _MAY_DECODE, DecodeNeeded, only_stored
from tl.search.beside_ray import load_beside_ray
from tl.search.tuner import PRELOAD_MODULES, warm_trial_workers


def _counted_decodes(monkeypatch) -> list:
    calls = []
    real = store_chunks.decode_chunk

    def counted(*args, **kwargs):
        calls.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(store_chunks, "decode_chunk", counted)
    return calls


def test_only_stored_refuses_to_decode_and_lets_a_stored_dataset_through(small_data_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("TL_CACHE_DIR", str(tmp_path / "cache"))
    folder = str(small_data_dir / "chest_xray")
    calls = _counted_decodes(monkeypatch)
    with only_stored(), pytest.raises(DecodeNeeded):
        load_dataset(folder, 20, seed=0)
    assert not calls, "nothing is decoded where decoding is refused"
    load_dataset(folder, 20, seed=0)  # outside: decodes, the store is filled
    decoded = len(calls)
    assert decoded
    with only_stored():
        beside = load_dataset(folder, 20, seed=1)
    assert len(calls) == decoded, "another seed of a filled store decodes nothing"
    plain = load_dataset(folder, 20, seed=1)
    for split in ("train", "val", "test"):
        assert beside.names[split] == plain.names[split]
        assert (beside.images[split][:] == plain.images[split][:]).all()


def test_the_refusal_stays_in_its_thread():
    """A thread's refusal does not reach the caller's thread, nor the caller's a new thread."""
    seen, inside, release = {}, threading.Event(), threading.Event()

    def in_thread():
        seen["at_start"] = _MAY_DECODE.get()
        with only_stored():
            seen["inside"] = _MAY_DECODE.get()
            inside.set()
            release.wait(10)

    with only_stored():  # the caller refuses; a thread it starts may decode
        t = threading.Thread(target=in_thread)
        t.start()
        inside.wait(10)
        release.set()
        t.join()
    assert seen == {"at_start": True, "inside": False}
    seen.clear(), inside.clear(), release.clear()
    t = threading.Thread(target=in_thread)
    t.start()
    inside.wait(10)
    assert _MAY_DECODE.get() is True, "the caller's thread may decode while the other one refuses"
    release.set()
    t.join()
    assert seen == {"at_start": True, "inside": False}


def test_load_beside_ray_gives_the_result_none_to_decode_or_the_error():
    assert load_beside_ray(lambda: 42).result(timeout=10) == 42

    def needs_decode():
        raise DecodeNeeded("3 chunks missing")

    assert load_beside_ray(needs_decode).result(timeout=10) is None

    def bad_input():
        raise TLError("broken.png: not an image")

    with pytest.raises(TLError, match="broken.png"):
        load_beside_ray(bad_input).result(timeout=10)


def test_the_loading_thread_refuses_to_decode_and_does_not_hold_the_exit():
    threads = {}

    def where():
        threads["daemon"] = threading.current_thread().daemon
        return _MAY_DECODE.get()

    assert load_beside_ray(where).result(timeout=10) is False
    assert threads == {"daemon": True}


@pytest.fixture
def tune_defaults(monkeypatch):
    """Tune's trial-actor defaults as Ray ships them, and none of the variables it would propagate."""
    from ray.tune.execution import class_cache

    monkeypatch.setattr(class_cache, "DEFAULT_ENV_VARS", {"PL_DISABLE_FORK": "1"})
    for name in {"RAY_preload_python_modules", "PL_DISABLE_FORK", *class_cache.ENV_VARS_TO_PROPAGATE}:
        monkeypatch.delenv(name, raising=False)
    return class_cache


def test_trial_actors_carry_no_runtime_env_so_ray_s_idle_workers_can_take_them(tune_defaults):
    class Trainable:
        pass

    assert tune_defaults._ActorClassCache().get(Trainable)._default_options["runtime_env"]["env_vars"], \
        "as shipped, Tune gives its trial actors an environment no idle worker has"
    warm_trial_workers()
    assert not tune_defaults._ActorClassCache().get(Trainable)._default_options["runtime_env"].get("env_vars")
    assert os.environ["PL_DISABLE_FORK"] == "1", "the variable reaches the workers through the raylet's environment"
    assert os.environ["RAY_preload_python_modules"] == PRELOAD_MODULES


def test_a_user_s_own_preload_list_wins_and_every_preloaded_module_imports(tune_defaults, monkeypatch):
    monkeypatch.setenv("RAY_preload_python_modules", "numpy")
    warm_trial_workers()
    assert os.environ["RAY_preload_python_modules"] == "numpy"
    for name in PRELOAD_MODULES.split(","):  # a typo would log an import error in every worker
        importlib.import_module(name)
