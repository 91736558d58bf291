"""A hundred thousand images: the decode store, the audit and the search's start at N images.

    python -m benchmarks.scale --n 10000 [--work /tmp/tl_scale] [--size 128] [--json out.json]
        [--scheduler tasks|ray-data] [--decode-only]

Builds N distinct grey images from the real ones in --data-dir (Kermany's chest X-ray JPEGs and the
SIIM DICOMs): each a random crop (85-100 %), a small rotation (+-4 deg), a gamma and contrast change
and a resize to 256-320 px a side, the size CheXpert-v1.0-small ships, written as a user would have
them: 40 % 8-bit PNG, 10 % 16-bit PNG, 35 % JPEG, 15 % DICOM (8-bit and 12-bit MONOCHROME2 with a
window, 12-bit MONOCHROME1), in class folders (val and test are carved). The set is kept in --work
and reused by later runs. Then, side by side:

- decode: images/s of a single-process ``decode_image`` loop (today's path) over up to
  --loop-sample of the files, against the decode store (``tl.data.store``: chunks in a process pool)
  over all N, cold, in a fresh process; its peak RSS against the decoded size, the store's size on
  disk; the store on the same files with 1 and with all workers (scaling with cores); the store over
  all N in a Ray driver (Ray started first, as in a search), where chunks are Ray tasks or, with
  ``--scheduler ray-data`` (``TL_DECODE_SCHEDULER``, inherited by every child), Ray Data's
  ``map``, which then also replaces the process pool (starting a local Ray inside the timed rows);
- a second load with another seed: time to arrays, chunks decoded (must be 0);
- the split audit (``audit_splits``) against the all-pairs reference (``near_pairs_all_pairs``, on a
  slice of rows above --slice-pairs comparisons and scaled up, as benchmarks.audit_speed does);
- a trial's training images/s (``run_epochs``, ConvModel, 1 thread) on the carve's rows of the
  memory-mapped chunks (``ChunkRows``, what trials read), on a memory-mapped split file holding a
  copy of the same rows (what carves wrote before they were indices) and on an in-memory copy;
- ``python -m tl.search`` on the set (ConvModel, 1 epoch, 4 trials at 0.5 CPU each), cold (a fresh
  cache: Ray, decode as Ray tasks, audit) and again with --other-seeds other seeds (the median is the
  figure: one start on 2 cores swings by seconds): seconds from the command
  to the first trial's start, the driver's peak RSS (VmHWM), and each trial's memory from
  /proc/PID/smaps_rollup (private, Pss, Rss, and the Rss of the store's mapped files in it); then a
  further --seed with the driver's phases timed (``SEARCH_CHILD`` with TL_PHASES: imports, listing, Ray's
  start, the store, the audit, Tune), to say where the seconds before its first trial go. The first
  trial's start is Tune's (``on_trial_start``), seen through a callback ``SEARCH_CHILD`` adds; each
  search starts once the CPUs are 90 % idle (``settle``), not while the last one's Ray winds down.

Figures are printed, not asserted: the issue's targets on 2 cores are decode >= 1.8x the loop,
100,000 images decoded and audited before the first trial in <= 10 min, a second search decoding
nothing (<= 10 s to its first trial), the store on disk <= 1.1x the decoded size after two seeds
(carves are row indices), peak driver RSS <= 1.5x the decoded size, each of four trials adding
<= 10 % of the decoded size, and a trial's images/s within 10 % of the split files carves used to
copy (and of the in-memory path).
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import resource
import signal
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from benchmarks.memory import PeakSampler, trial_pids

FORMATS = ["png8"] * 8 + ["png16"] * 2 + ["jpeg"] * 7 + ["dcm8", "dcm12", "dcm12inv"]  # per 20 images
SPACE = """# benchmarks.scale: ConvModel, one epoch, four trials at once on 2 cores
DATASET = {root!r}
BACKBONES = {{"convmodel": ["none"]}}
FREEZE = ["none"]
PARAMS = {{"lr": ("loguniform", 1e-3, 3e-3)}}
FIXED = {{"image_size": {size}, "epochs": 1, "batch_size": 64, "augment": False}}
METRIC = "val_acc"
MODE = "max"
MAX_EPOCHS = 1
NUM_SAMPLES = 4
GRACE_PERIOD = 1
REDUCTION_FACTOR = 2
CPUS_PER_TRIAL = 0.5
"""


# --- the generated set ---------------------------------------------------------------------------

_SOURCES: list | None = None


def _sources(data_dir: Path) -> list[tuple[np.ndarray, str]]:
    """(grey uint8 pixels, class) of every Kermany JPEG and SIIM DICOM, read once per process."""
    global _SOURCES
    if _SOURCES is None:
        from PIL import Image

        from tl.data.dicom import read_dicom

        out = []
        for cls in ("NORMAL", "PNEUMONIA"):
            for split in ("train", "test"):
                for p in sorted((data_dir / "chest_xray" / split / cls).glob("*.jpeg")):
                    with Image.open(p) as im:
                        out.append((np.asarray(im.convert("L")), cls))
        for p in sorted((data_dir / "siim_acr_11" / "dicom-images").glob("*.dcm")):
            out.append((read_dicom(p)[0], "PNEUMONIA" if len(out) % 2 else "NORMAL"))
        _SOURCES = out
    return _SOURCES


def _variant(pixels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A re-encoded look-alike: crop, rotate, gamma and contrast, resize to 256-320 px a side (float 0..1)."""
    from PIL import Image

    h, w = pixels.shape
    ch, cw = int(h * rng.uniform(0.85, 1)), int(w * rng.uniform(0.85, 1))
    top, left = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
    im = Image.fromarray(pixels[top:top + ch, left:left + cw])
    im = im.rotate(rng.uniform(-4, 4), resample=Image.BILINEAR)
    im = im.resize((int(rng.integers(256, 321)), int(rng.integers(256, 321))), Image.BILINEAR)
    x = np.asarray(im, dtype=np.float64) / 255
    x = x ** rng.uniform(0.8, 1.25)
    return np.clip((x - 0.5) * rng.uniform(0.9, 1.1) + 0.5 + rng.uniform(-0.04, 0.04), 0, 1)


def _make(job: tuple[Path, Path, int, int]) -> int:
    """Write images start..stop-1 under root (one class folder each); returns how many."""
    from PIL import Image

    from tl.data.dicom import write_dicom

    data_dir, root, start, stop = job
    sources = _sources(data_dir)
    for i in range(start, stop):
        rng = np.random.default_rng(i)
        pixels, cls = sources[int(rng.integers(len(sources)))]
        x = _variant(pixels, rng)
        kind = FORMATS[i % len(FORMATS)]
        stem = root / cls / f"{i:06d}"
        if kind == "png8":
            Image.fromarray(np.rint(x * 255).astype(np.uint8)).save(f"{stem}.png", compress_level=6)
        elif kind == "png16":
            Image.fromarray(np.rint(x * 65535).astype(np.uint16)).save(f"{stem}.png")
        elif kind == "jpeg":
            Image.fromarray(np.rint(x * 255).astype(np.uint8)).save(f"{stem}.jpeg", quality=90)
        elif kind == "dcm8":
            write_dicom(Path(f"{stem}.dcm"), np.rint(x * 255), 8)
        elif kind == "dcm12":
            write_dicom(Path(f"{stem}.dcm"), np.rint(x * 4095), 12, WindowCenter=2048, WindowWidth=4096)
        else:
            write_dicom(Path(f"{stem}.dcm"), 4095 - np.rint(x * 4095), 12, photometric="MONOCHROME1")
    return stop - start


def generate(data_dir: Path, root: Path, n: int, workers: int) -> float:
    """The N-image set under root (reused when its marker says it is complete); seconds spent."""
    marker = root / ".complete"
    if marker.exists() and int(marker.read_text()) == n:
        return 0.0
    for cls in ("NORMAL", "PNEUMONIA"):
        (root / cls).mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    jobs = [(data_dir, root, s, min(n, s + 1000)) for s in range(0, n, 1000)]
    with ProcessPoolExecutor(workers) as pool:
        done = 0
        for k in pool.map(_make, jobs):
            done += k
            print(f"  generated {done:,}/{n:,} images ({time.perf_counter() - t0:.0f} s)", flush=True)
    marker.write_text(str(n))
    return time.perf_counter() - t0


def image_files(root: Path) -> list[Path]:
    return sorted(p for cls in ("NORMAL", "PNEUMONIA") for p in (root / cls).iterdir() if p.is_file())


# --- decode --------------------------------------------------------------------------------------

def warm(files: list[Path]) -> None:
    """Read the files once, so every decoder below finds them in the page cache alike."""
    for p in files:
        p.read_bytes()


def cpu_seconds() -> float:
    """CPU time of this process and of its children that have ended (a pool's workers)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def single_process_loop(files: list[Path], size: int) -> tuple[float, float]:
    """(images/s, CPU seconds per image) of today's path: decode_image per file, one process."""
    from tl.data.decode import decode_image

    warm(files)
    t0, c0 = time.perf_counter(), cpu_seconds()
    for p in files:
        decode_image(p, size)
    return len(files) / (time.perf_counter() - t0), (cpu_seconds() - c0) / len(files)


def store_rate(files: list[Path], root: Path, size: int, cache: Path, workers: int) -> tuple[float, float]:
    """(images/s, CPU seconds per image, workers included) of the store decoding ``files`` cold with
    ``workers`` processes (1: in this process)."""
    from tl.data.store import store_splits

    warm(files)
    t0, c0 = time.perf_counter(), cpu_seconds()
    store_splits({"train": files, "val": [], "test": []}, root, size, cache=cache, workers=workers, progress=False)
    return len(files) / (time.perf_counter() - t0), (cpu_seconds() - c0) / len(files)


LOAD_CHILD = """
import json, resource, sys, time
t0 = time.perf_counter()
from tl.data import load_dataset
from pathlib import Path
imported = time.perf_counter() - t0
base_rss = int(open('/proc/self/status').read().split('VmRSS:')[1].split()[0]) * 1024
t0 = time.perf_counter()
arrays = load_dataset(sys.argv[1], int(sys.argv[2]), seed=int(sys.argv[3]))
load_s = time.perf_counter() - t0
own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
load_cpu = own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime
load_peak = int(open('/proc/self/status').read().split('VmHWM:')[1].split()[0]) * 1024
decoded = {s: int(x.nbytes) for s, x in arrays.images.items()}
t0 = time.perf_counter()
from tl.data.audit import audit_splits
record, _ = audit_splits(arrays.images, names=arrays.names)
audit_s = time.perf_counter() - t0
store = Path(arrays.images['train'].chunks).parent
chunks = len(list(store.glob('chunks-*/*.json')))
print(json.dumps({'load_s': load_s, 'load_cpu_s': load_cpu, 'audit_s': audit_s, 'import_s': imported, 'decoded_bytes': sum(decoded.values()),
                  'channels': arrays.channels, 'n': sum(len(v) for v in arrays.labels.values()),
                  'store': str(store), 'chunks': chunks,
                  'base_rss': base_rss, 'load_peak_rss': load_peak,
                  'peak_rss': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
                  'near': record['near_duplicates'], 'exact': record['exact_duplicates']}))
"""


def load_in_child(root: Path, size: int, seed: int, cache: Path) -> dict:
    """load_dataset + audit_splits in a fresh process (the pool's driver): times and its peak RSS."""
    env = {**os.environ, "TL_CACHE_DIR": str(cache)}
    out = subprocess.run([sys.executable, "-c", LOAD_CHILD, str(root), str(size), str(seed)], env=env,
                         capture_output=True, text=True, check=True)
    decoded = re.search(r"decoded ([\d,]+) images", out.stdout)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result["images_decoded"] = int(decoded.group(1).replace(",", "")) if decoded else 0
    return result


DRIVER_CHILD = """
import json, sys, time
from pathlib import Path
import ray
ray.init(num_cpus=int(sys.argv[4]), include_dashboard=False, log_to_driver=False)
from tl.data.store import store_splits
files = [Path(line) for line in Path(sys.argv[1]).read_text().splitlines()]
t0 = time.perf_counter()
out = store_splits({"train": files, "val": [], "test": []}, Path(sys.argv[2]), int(sys.argv[3]), cache=Path(sys.argv[5]),
                   progress=False)
print(json.dumps({"seconds": time.perf_counter() - t0, "chunks": len(out.decoded)}))
"""


def driver_rate(files: list[Path], root: Path, size: int, cache: Path, cpus: int) -> float:
    """Images/s of the store decoding ``files`` cold in a fresh Ray driver (Ray's start not timed): the
    search's path, Ray tasks or Ray Data as ``TL_DECODE_SCHEDULER`` says."""
    listing = cache.with_suffix(".files")
    cache.parent.mkdir(parents=True, exist_ok=True)
    listing.write_text("\n".join(map(str, files)))
    warm(files)
    out = subprocess.run([sys.executable, "-c", DRIVER_CHILD, str(listing), str(root), str(size), str(cpus), str(cache)],
                         capture_output=True, text=True, check=True)
    return len(files) / json.loads(out.stdout.strip().splitlines()[-1])["seconds"]


def dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


# --- audit ---------------------------------------------------------------------------------------

def audit_vs_all_pairs(images: dict[str, np.ndarray], slice_pairs: float) -> dict:
    """Near-pair search time (faiss multi-index hashing) vs all pairs (sliced and scaled), on the
    same dHashes; the hashing itself timed apart."""
    from tl.data.audit import PAIRS
    from tl.data.fingerprints import NEAR_THRESHOLD, dhash, near_pairs, near_pairs_all_pairs

    t0 = time.perf_counter()
    hashes = {s: dhash(x) for s, x in images.items()}
    hash_s = time.perf_counter() - t0
    search_s = reference_s = 0.0
    same = True
    for a, b in PAIRS:
        t0 = time.perf_counter()
        ia, ib, dist = near_pairs(hashes[a], hashes[b], NEAR_THRESHOLD)
        search_s += time.perf_counter() - t0
        k = min(len(hashes[a]), max(1, int(slice_pairs // max(1, len(hashes[b])))))
        t0 = time.perf_counter()
        ref = near_pairs_all_pairs(hashes[a][:k], hashes[b], NEAR_THRESHOLD)
        reference_s += (time.perf_counter() - t0) * len(hashes[a]) / k
        mine = {t for t in zip(ia.tolist(), ib.tolist(), dist.tolist()) if t[0] < k}
        same &= mine == set(zip(*(x.tolist() for x in ref)))
    return {"hash_s": hash_s, "search_s": search_s, "all_pairs_s": reference_s, "same_on_slice": same}


# --- a trial's speed -----------------------------------------------------------------------------

def trial_images_per_s(arrays, rows: int, size: int, folder: Path, repeats: int = 2) -> dict:
    """Training images/s of a 1-epoch ConvModel trial (1 thread) on the first ``rows`` training images:
    as the carve's rows of the memory-mapped chunks (``store_rows``), as a memory-mapped split file
    holding a copy of them (``split_copy``, written to ``folder``: the carve before it was indices)
    and in memory; best of ``repeats`` each, alternating."""
    import torch

    from tl.data import DatasetArrays
    from tl.train.trainable import run_epochs

    torch.set_num_threads(1)
    take = {"train": rows, "val": min(rows // 4, len(arrays.labels["val"])),
            "test": min(rows // 4, len(arrays.labels["test"]))}
    labels = {s: arrays.labels[s][:n] for s, n in take.items()}
    indexed = DatasetArrays(arrays.name, {s: arrays.images[s].subset(np.arange(n)) for s, n in take.items()},
                            labels, arrays.class_names)
    for s, x in indexed.images.items():
        np.save(folder / f"{s}.npy", np.asarray(x))
    copied = DatasetArrays(arrays.name, {s: np.load(folder / f"{s}.npy", mmap_mode="r") for s in take}, labels,
                           arrays.class_names)
    memory = DatasetArrays(arrays.name, {s: np.array(x) for s, x in indexed.images.items()}, labels,
                           arrays.class_names)
    cfg = {"backbone": "convmodel", "weights": "none", "freeze": "none", "image_size": size, "epochs": 1,
           "lr": 1e-3, "batch_size": 64, "augment": False, "seed": 0}
    best = {"store_rows": 0.0, "split_copy": 0.0, "in_memory": 0.0}
    for _ in range(repeats):
        for name, data in (("store_rows", indexed), ("split_copy", copied), ("in_memory", memory)):
            metrics = [m for m, _ in run_epochs(cfg, data, None, device=torch.device("cpu"))][-1]
            best[name] = max(best[name], metrics["images_per_s"])
    return best


# --- the search ----------------------------------------------------------------------------------

def _vm_hwm(pid: int) -> int:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    return int(status.split("VmHWM:")[1].split()[0]) * 1024 if "VmHWM:" in status else 0  # a zombie has none


def _mapped_store_rss(pid: int, store: str) -> tuple[int, int]:
    """(Rss, private bytes) of the mappings of files under ``store`` in process ``pid``."""
    rss = private = 0
    inside = False
    try:
        lines = Path(f"/proc/{pid}/smaps").read_text().splitlines()
    except OSError:
        return 0, 0
    for line in lines:
        if re.match(r"^[0-9a-f]+-[0-9a-f]+ ", line):
            inside = store in line
        elif inside and line.startswith("Rss:"):
            rss += int(line.split()[1]) * 1024
        elif inside and line.startswith(("Private_Clean:", "Private_Dirty:")):
            private += int(line.split()[1]) * 1024
    return rss, private


# tl.search's main as the command runs it, plus a Tune callback that prints "[trial-start]" when Tune
# starts the first trial (``on_trial_start``: its actor is up and its trainable constructed, Tune's
# RUNNING), so the parent times the start on its own clock. Not a trial folder's params.json: Tune
# writes those into a local staging folder and syncs them to --storage with its experiment state,
# seconds later (the figures before 2026-12-02 timed that sync). With TL_PHASES=1, a few of the
# driver's functions are wrapped to print, as each returns, the seconds since this interpreter started
# and their own.
SEARCH_CHILD = """
import os, sys, time
t0 = time.perf_counter()
import tl.data.dataset as dataset, tl.data.listing as listing, tl.search.cli as cli
from ray.tune import Callback
if os.environ.get("TL_PHASES"):
    print(f"[phase] {time.perf_counter() - t0:.2f} imports {time.perf_counter() - t0:.2f}", flush=True)
class FirstTrialStart(Callback):
    def on_trial_start(self, iteration, trials, trial, **info):
        print(f"[trial-start] {time.perf_counter() - t0:.2f} {trial.trial_id}", flush=True)
console_callbacks = cli._console_callbacks
def with_first_trial_start(*args, **kwargs):
    live, callbacks, trackers = console_callbacks(*args, **kwargs)
    return live, [FirstTrialStart(), *callbacks], trackers
cli._console_callbacks = with_first_trial_start
def timed(module, name, label):
    real = getattr(module, name)
    def run(*args, **kwargs):
        start = time.perf_counter()
        try:
            return real(*args, **kwargs)
        finally:
            print(f"[phase] {time.perf_counter() - t0:.2f} {label} {time.perf_counter() - start:.2f}", flush=True)
    setattr(module, name, run)
for module, name, label in [(cli, "check_labels", "labels"), (cli, "init_ray", "ray"), (cli, "load_dataset", "dataset"),
                            (dataset, "list_source", "listing"), (listing, "store_splits", "store"),
                            (cli, "audit_splits", "audit"), (cli, "_shared_trainable", "trainable"),
                            (cli, "_tuner", "tuner")]:
    if os.environ.get("TL_PHASES") and hasattr(module, name):
        timed(module, name, label)
sys.exit(cli.main(sys.argv[1:]))
"""


def phase_line(log: str, first_trial_s: float | None) -> str:
    """The phases SEARCH_CHILD printed, in order (a phase that ran twice, twice), then the first trial."""
    found = re.findall(r"^\[phase\] ([\d.]+) (\w+) ([\d.]+)$", log, flags=re.M)
    return ", ".join(f"{label} {float(own):.1f}" for _, label, own in found) + \
        f"; first trial at {first_trial_s or float('nan'):.1f} s"


def settle(idle_share: float = 0.9, window_s: float = 2.0, max_s: float = 90.0) -> float:
    """Wait until the machine's CPUs were at least ``idle_share`` idle over ``window_s`` (the previous
    search's Ray winding down), at most ``max_s``; the seconds waited. A start timed on cores still
    busy with the last search's teardown measures that teardown (the load average, a minute's
    decaying mean, stays high long after)."""
    def idle_total() -> tuple[int, int]:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        return fields[3] + fields[4], sum(fields)  # idle + iowait, all

    t0 = time.perf_counter()
    while time.perf_counter() - t0 < max_s:
        idle0, total0 = idle_total()
        time.sleep(window_s)
        idle1, total1 = idle_total()
        if (idle1 - idle0) >= idle_share * max(1, total1 - total0):
            break
    return time.perf_counter() - t0


def run_search(space: Path, storage: Path, name: str, cache: Path, seed: int, stop_after_first: bool,
               budget_s: float, phases: bool = False) -> dict:
    """``python -m tl.search`` (as SEARCH_CHILD), once the CPUs are idle (``settle``), until Tune starts
    its first trial (then stopped) or its time budget ends: seconds from the command to that start,
    driver VmHWM, the trials' memory at their peak, the log. ``phases``: the log also says how long
    each phase of the driver took."""
    env = {**os.environ, "TL_CACHE_DIR": str(cache), **({"TL_PHASES": "1"} if phases else {})}
    log = storage / f"{name}.log"
    cmd = [sys.executable, "-c", SEARCH_CHILD, str(space), "--offline", "--storage", str(storage), "--name", name,
           "--seed", str(seed), "--time-budget-s", str(budget_s)]
    settled_s = settle()
    t0, load_avg = time.perf_counter(), os.getloadavg()[0]
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
    sampler = PeakSampler({"driver": proc.pid}, interval_s=1.0, ancestor=proc.pid)
    sampler.start()
    first = None
    hwm, data_rss = 0, {}
    while proc.poll() is None:
        hwm = max(hwm, _vm_hwm(proc.pid))
        if first is None and "[trial-start]" in log.read_text(errors="replace"):
            first = time.perf_counter() - t0
            if stop_after_first:
                proc.send_signal(signal.SIGINT)
        for pid in trial_pids(proc.pid):
            rss, private = _mapped_store_rss(pid, str(cache))
            if rss >= data_rss.get(pid, (0, 0))[0]:
                data_rss[pid] = (rss, private)
        time.sleep(0.05 if first is None else 0.5)
    peaks = sampler.stop()
    text = log.read_text()
    decoded = re.search(r"decoded ([\d,]+) images in ([\d.]+) s", text)
    audit = re.search(r"split audit \(([\d.]+) s\)", text)
    started = re.search(r"^\[trial-start\] ([\d.]+)", text, flags=re.M)
    trials = {k: v for k, v in peaks.items() if k.startswith("trial")}
    return {"exit": proc.returncode, "first_trial_s": first, "driver_hwm": hwm, "load_avg_start": load_avg,
            "settled_s": settled_s, "first_trial_s_in_driver": float(started.group(1)) if started else None,
            "decode_s": float(decoded.group(2)) if decoded else 0.0,
            "images_decoded": int(decoded.group(1).replace(",", "")) if decoded else 0,
            "audit_s": float(audit.group(1)) if audit else None, "max_concurrent": sampler.max_concurrent,
            "trials": trials, "trial_store_rss": {str(k): v for k, v in data_rss.items()}, "log": str(log),
            "seconds": time.perf_counter() - t0}


# --- report --------------------------------------------------------------------------------------

def gb(n: float) -> str:
    return f"{n / 1e9:.2f} GB"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.scale", description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=10_000, help="images to generate and decode")
    p.add_argument("--size", type=int, default=128, help="decode size (px)")
    p.add_argument("--work", type=Path, default=Path("/tmp/tl_scale"), help="generated images, caches, results")
    p.add_argument("--data-dir", type=Path, default=Path(os.environ.get("TL_DATA_DIR", "../shared/data")))
    p.add_argument("--loop-sample", type=int, default=10_000, help="files the single-process loop decodes")
    p.add_argument("--scaling-sample", type=int, default=4_000, help="files for the 1-vs-all-workers decode")
    p.add_argument("--trial-rows", type=int, default=4_000, help="training images of the images/s comparison")
    p.add_argument("--slice-pairs", type=float, default=2e8, help="comparisons above which all pairs is sliced")
    p.add_argument("--budget-s", type=float, default=120, help="the first search's --time-budget-s")
    p.add_argument("--other-seeds", type=int, default=3, help="searches with another --seed (the median is the figure)")
    p.add_argument("--skip-search", action="store_true")
    p.add_argument("--scheduler", choices=["tasks", "ray-data"], default="tasks",
                   help="TL_DECODE_SCHEDULER for every decode of the run: Ray tasks (or the process pool "
                        "outside Ray) as shipped, or Ray Data's map")
    p.add_argument("--decode-only", action="store_true", help="stop after the decode table")
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    os.environ["TL_DECODE_SCHEDULER"] = args.scheduler
    from tl.data.store import local_cpus

    n, size, cpus = args.n, args.size, local_cpus()
    work = args.work / f"n{n}"
    root = work / "images"
    run_dir = work / f"run-{dt.datetime.now():%H%M%S}"
    run_dir.mkdir(parents=True)
    result: dict = {"benchmark": "scale", "n": n, "size": size, "cpus": cpus, "date": dt.date.today().isoformat(),
                    "load_avg_start": os.getloadavg()[0], "scheduler": args.scheduler}

    print(f"benchmarks.scale: N = {n:,} images of 256-320 px -> {size} px grey, {cpus} cores; work in {work}; "
          f"load average {result['load_avg_start']:.1f} at the start")
    gen_s = generate(args.data_dir.resolve(), root, n, cpus)
    files = image_files(root)
    result["generate_s"] = gen_s
    print(f"set: {len(files):,} files, {gb(dir_bytes(root))} on disk" + (f", generated in {gen_s:.0f} s" if gen_s else ", reused"))

    sample = files[::max(1, len(files) // args.loop_sample)][:args.loop_sample]
    loop_ips, loop_cpu = single_process_loop(sample, size)
    small = files[::max(1, len(files) // args.scaling_sample)][:args.scaling_sample]
    scaling = {w: store_rate(small, root, size, run_dir / f"scaling-{w}", w) for w in sorted({1, cpus})}
    driver_ips = driver_rate(files, root, size, run_dir / "cache-driver", cpus)
    cold = load_in_child(root, size, 0, run_dir / "cache-load")
    store_ips = cold["images_decoded"] / max(cold["load_s"], 1e-9)
    warm = load_in_child(root, size, 1, run_dir / "cache-load")
    cache_bytes = dir_bytes(Path(cold["store"]))
    store_cpu = cold["load_cpu_s"] / max(1, cold["images_decoded"])
    result.update({"loop_images_per_s": loop_ips, "loop_cpu_per_image": loop_cpu, "store_cpu_per_image": store_cpu,
                   "loop_files": len(sample), "scaling": scaling, "driver_images_per_s": driver_ips,
                   "cold_load": cold, "warm_load": warm, "store_images_per_s": store_ips, "cache_bytes": cache_bytes})
    print(f"\ndecode, {size} px (load average {os.getloadavg()[0]:.1f}; TL_DECODE_SCHEDULER={args.scheduler})"
          "     images/s   vs loop   CPU ms/image")
    print(f"  single-process loop ({len(sample):,} files)  {loop_ips:9.0f}     1.00x   {loop_cpu * 1e3:8.2f}")
    for w, (ips, c) in scaling.items():
        print(f"  store, {w} worker{'s' if w > 1 else ' '} ({len(small):,} files)     {ips:9.0f}  {ips / loop_ips:8.2f}x   {c * 1e3:8.2f}")
    print(f"  store, auto ({cpus} cores), all {cold['images_decoded']:,}  {store_ips:9.0f}  {store_ips / loop_ips:8.2f}x   "
          f"{store_cpu * 1e3:8.2f}   (target >= 1.8x; load {cold['load_s']:.1f} s)")
    print(f"  store in a Ray driver, all {len(files):,}    {driver_ips:9.0f}  {driver_ips / loop_ips:8.2f}x   "
          f"           ({'Ray Data map' if args.scheduler == 'ray-data' else 'Ray tasks'}; Ray started before the clock)")
    if args.scheduler == "ray-data":  # Ray's workers are not this process's children: their CPU is not counted
        print("  (CPU ms/image of the Ray Data rows leaves out Ray's worker processes: not comparable)")
    else:
        print(f"  on {cpus} idle cores the store's CPU per image would give {cpus * loop_cpu / store_cpu:.2f}x the loop "
              "(an estimate: the cores were shared with other jobs)")
    print(f"  decoded size {gb(cold['decoded_bytes'])} ({cold['n']:,} images, {cold['channels']} channel); store on disk "
          f"{gb(cache_bytes)} = {cache_bytes / cold['decoded_bytes']:.3f}x decoded after two seeds (chunks + 2 carves "
          f"as rows, {dir_bytes(Path(cold['store']) / 'splits') / 1e6:.1f} MB; target <= 1.1x) at {cold['store']}")
    print(f"  loader peak RSS {gb(cold['load_peak_rss'])} = {cold['load_peak_rss'] / cold['decoded_bytes']:.2f}x decoded "
          f"(target <= 1.5x; {gb(cold['base_rss'])} of it before loading), {gb(cold['peak_rss'])} with the audit "
          "(torch imported)")
    print(f"  another seed: {warm['images_decoded']} images decoded, arrays in {warm['load_s']:.1f} s "
          f"(+ {warm['import_s']:.1f} s imports); audit {warm['audit_s']:.1f} s")
    if args.decode_only:
        result["load_avg_end"] = os.getloadavg()[0]
        print(f"load average at the end {result['load_avg_end']:.1f}")
        if args.json:
            args.json.write_text(json.dumps(result, indent=1, default=str))
        return 0

    from tl.data import load_dataset

    os.environ["TL_CACHE_DIR"] = str(run_dir / "cache-load")
    arrays = load_dataset(str(root), size, seed=0)
    audit = audit_vs_all_pairs(arrays.images, args.slice_pairs)
    result["audit"] = {**audit, "audit_splits_s": cold["audit_s"]}
    print(f"\naudit of {cold['n']:,} images: audit_splits {cold['audit_s']:.1f} s (dHash {audit['hash_s']:.1f} s, "
          f"near-pair search {audit['search_s']:.2f} s) vs all pairs {audit['all_pairs_s']:.1f} s"
          f"{' (est. from a slice)' if args.slice_pairs < 1e12 else ''} + the same hashing; "
          f"same pairs on the rows both ran: {'yes' if audit['same_on_slice'] else 'NO'}")

    copy_dir = run_dir / "split-copy"
    copy_dir.mkdir()
    ips = trial_images_per_s(arrays, min(args.trial_rows, len(arrays.labels["train"])), size, copy_dir)
    result["trial_images_per_s"] = ips
    print(f"\na trial's training images/s (ConvModel, {size} px, 1 thread, {args.trial_rows:,} images; load average "
          f"{os.getloadavg()[0]:.1f}): store rows {ips['store_rows']:.0f}, split copy {ips['split_copy']:.0f} "
          f"({ips['store_rows'] / ips['split_copy'] - 1:+.1%}; target within 10 %), in memory {ips['in_memory']:.0f} "
          f"({ips['store_rows'] / ips['in_memory'] - 1:+.1%})")

    if not args.skip_search:
        space = run_dir / "space.py"
        space.write_text(SPACE.format(root=str(root), size=size))
        storage = run_dir / "results"
        storage.mkdir()
        first = run_search(space, storage, "cold", run_dir / "cache-search", 0, False, args.budget_s)
        others = [run_search(space, storage, f"seed{seed}", run_dir / "cache-search", seed, True, args.budget_s)
                  for seed in range(1, 1 + args.other_seeds)]  # one start on 2 cores swings by seconds
        second = sorted(others, key=lambda r: r["first_trial_s"] or float("inf"))[len(others) // 2]  # the median
        phased = run_search(space, storage, "phases", run_dir / "cache-search", 1 + args.other_seeds, True,
                            args.budget_s, phases=True)
        phased["phases"] = phase_line(Path(phased["log"]).read_text(), phased["first_trial_s"])
        result["search"] = {"cold": first, "another_seed": second, "other_seeds": others, "another_seed_phases": phased}
        decoded = cold["decoded_bytes"]
        print(f"\npython -m tl.search ({space.name}: ConvModel, 1 epoch, 4 trials at 0.5 CPU), cold cache:")
        print(f"  command -> first trial {first['first_trial_s'] or float('nan'):.0f} s (decode {first['decode_s']:.0f} s "
              f"of {first['images_decoded']:,} images as {'Ray Data' if args.scheduler == 'ray-data' else 'Ray tasks'}, audit {first['audit_s']} s; target <= 600 s at 100,000)")
        print(f"  driver peak RSS {gb(first['driver_hwm'])} = {first['driver_hwm'] / decoded:.2f}x decoded")
        print(f"  {first['max_concurrent']} trials at once; per trial at its peak private memory "
              "(private / Pss / Rss, Rss of the store's files in it):")
        for name, r in sorted(first["trials"].items()):
            pid = name.split()[1]
            data = first["trial_store_rss"].get(pid, (0, 0))
            print(f"    {name}: {r['Private'] / 2**20:.0f} / {r['Pss'] / 2**20:.0f} / {r['Rss'] / 2**20:.0f} MB, store pages "
                  f"{data[0] / 2**20:.0f} MB ({data[1] / 2**20:.0f} MB private) = {data[1] / decoded:.1%} of decoded private")
        starts = ", ".join(f"{r['first_trial_s'] or float('nan'):.1f}" for r in others)
        print(f"  another --seed ({len(others)} seeds, each a fresh command: {starts} s): command -> first trial, "
              f"the median, {second['first_trial_s'] or float('nan'):.1f} s, "
              f"{second['images_decoded']} images decoded, audit {second['audit_s']} s (target <= 10 s; "
              f"started once the CPUs were 90 % idle, {second['settled_s']:.0f} s after the last search; load average "
              f"{second['load_avg_start']:.1f}, a minute's mean)")
        print(f"  one more --seed, the driver's phases (s): {phased['phases']}")
    result["load_avg_end"] = os.getloadavg()[0]
    if args.json:
        args.json.write_text(json.dumps(result, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
