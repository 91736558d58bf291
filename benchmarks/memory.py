"""Memory of a search's processes, read from ``/proc/PID/smaps_rollup`` while it runs.

    python -m benchmarks.memory [--json out.json] -- SEARCH ARGS...

runs ``python -m tl.search SEARCH ARGS...`` and samples, twice a second, the driver and every trial
process (Ray's function-trainable actors, ``ray::ImplicitFunc``): Rss, Pss, Private_Clean,
Private_Dirty and Shared (Shared_Clean + Shared_Dirty). It prints each process's peak private
memory (Private_Clean + Private_Dirty: what it alone holds) with the rest of its rollup at that
moment, then the model's working set of each trial config it saw (``model_working_set``: weights,
gradients, optimizer state, the activations autograd saves at the trial's batch size), so the
remainder is what holds memory besides the model.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

FIELDS = ("Rss", "Pss", "Private_Clean", "Private_Dirty", "Shared_Clean", "Shared_Dirty", "Anonymous")
TRIAL_TITLES = ("ray::ImplicitFunc", "ray::_Inner", "ray::train_transfer")


def smaps_rollup(pid: int) -> dict[str, int] | None:
    """Bytes per field of ``/proc/PID/smaps_rollup`` (None when the process is gone), plus
    ``Private`` (clean + dirty) and ``Shared`` (clean + dirty)."""
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return None
    out = {}
    for line in text.splitlines()[1:]:
        key, _, rest = line.partition(":")
        if key in FIELDS:
            out[key] = int(rest.split()[0]) * 1024
    out["Private"] = out.get("Private_Clean", 0) + out.get("Private_Dirty", 0)
    out["Shared"] = out.get("Shared_Clean", 0) + out.get("Shared_Dirty", 0)
    return out


def _parent(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/status").read_text().split("PPid:")[1].split()[0])
    except (OSError, IndexError, ValueError):
        return 0


def trial_pids(ancestor: int | None = None) -> list[int]:
    """Processes whose title is a Ray function trainable's actor (a trial's process); with ``ancestor``,
    only its descendants (a local Ray's workers descend from the driver that started it), so other
    searches on the machine are left out."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            title = (entry / "cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
        except OSError:
            continue
        if not title.startswith(TRIAL_TITLES):
            continue
        pid = up = int(entry.name)
        while ancestor is not None and up not in (0, 1, ancestor):
            up = _parent(up)
        if ancestor is None or up == ancestor:
            pids.append(pid)
    return pids


class PeakSampler(threading.Thread):
    """Samples ``trial_pids()`` (and ``extra`` pids) every ``interval_s``; keeps each one's rollup at
    its peak private memory, and the sum over trials at the moment it peaked."""

    def __init__(self, extra: dict[str, int] | None = None, interval_s: float = 0.5, ancestor: int | None = None):
        super().__init__(daemon=True)
        self.extra = extra or {}
        self.ancestor = ancestor
        self.series: dict[str, list[tuple[float, int]]] = {}  # per process: (time, private bytes)
        self.started = time.monotonic()
        self.interval_s = interval_s
        self.peaks: dict[str, dict] = {}
        self.stop_event = threading.Event()
        self.max_concurrent = 0

    def run(self) -> None:
        while not self.stop_event.is_set():
            self.sample()
            time.sleep(self.interval_s)

    def sample(self) -> None:
        named = {f"trial {pid}": pid for pid in trial_pids(self.ancestor)}
        self.max_concurrent = max(self.max_concurrent, len(named))
        for name, pid in {**named, **self.extra}.items():
            roll = smaps_rollup(pid)
            if roll:
                self.series.setdefault(name, []).append((round(time.monotonic() - self.started, 1), roll["Private"]))
            if roll and roll["Private"] >= self.peaks.get(name, {}).get("Private", -1):
                self.peaks[name] = roll

    def stop(self) -> dict[str, dict]:
        self.stop_event.set()
        self.join()
        return self.peaks


def model_working_set(backbone: str, weights: str, image_size: int, batch_size: int, num_classes: int = 2,
                      optimizer: str = "adamw") -> dict[str, int]:
    """Bytes the model needs to train: parameters, their gradients, the optimizer's state after a step,
    and the tensors autograd saves for backward on one batch at ``image_size`` (what a training
    step holds at its peak besides temporaries)."""
    import torch

    from tl.train.config import OPTIMIZERS
    from tl.train.models import build_model, get_backbone
    from tl.train.weights import load_state_dict

    spec = get_backbone(backbone)
    size = spec.input_size(image_size)
    model = build_model(backbone, num_classes, load_state_dict(backbone, weights), image_size=size)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = OPTIMIZERS[optimizer](params, 1e-3, 1e-4)
    saved = []

    def pack(t):
        saved.append(t.untyped_storage().nbytes())
        return t

    x = torch.randn(batch_size, 3, size, size)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = model(x).logsumexp(1).mean()
    loss.backward()
    opt.step()
    param_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    grad_bytes = sum(p.grad.numel() * p.grad.element_size() for p in params if p.grad is not None)
    state_bytes = sum(v.numel() * v.element_size() for s in opt.state.values() for v in s.values()
                      if torch.is_tensor(v))
    return {"weights": param_bytes, "gradients": grad_bytes, "optimizer_state": state_bytes,
            "saved_activations": sum(saved), "total": param_bytes + grad_bytes + state_bytes + sum(saved)}


def mb(n: float) -> str:
    return f"{n / 2**20:8.1f}"


def print_peaks(peaks: dict[str, dict]) -> None:
    print(f"{'process':<16}{'Private MB':>11}{'Rss':>9}{'Pss':>9}{'Shared':>9}{'Priv.Dirty':>11}{'Priv.Clean':>11}")
    for name, r in sorted(peaks.items()):
        print(f"{name:<16}{mb(r['Private']):>11}{mb(r['Rss']):>9}{mb(r['Pss']):>9}{mb(r['Shared']):>9}"
              f"{mb(r['Private_Dirty']):>11}{mb(r['Private_Clean']):>11}")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    ours, search = (argv[:argv.index("--")], argv[argv.index("--") + 1:]) if "--" in argv else (argv, [])
    p = argparse.ArgumentParser(prog="python -m benchmarks.memory", description=__doc__.splitlines()[0])
    p.add_argument("--json", type=Path)
    p.add_argument("--model", nargs=4, metavar=("BACKBONE", "WEIGHTS", "SIZE", "BATCH"), action="append", default=[],
                   help="also print this config's model working set")
    args = p.parse_args(ours)
    from tl.core.errors import TLError
    from tl.train.models import get_backbone
    try:
        for backbone, _, size, batch in args.model:  # before the search: a typo should not cost a run
            get_backbone(backbone)
            if not (size.isdigit() and batch.isdigit()):
                raise TLError(f"--model {backbone}: SIZE and BATCH must be integers, got {size!r} {batch!r}")
    except TLError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    result: dict = {"search": search}
    if search:
        t0 = time.time()
        proc = subprocess.Popen([sys.executable, "-m", "tl.search", *search], env=os.environ.copy())
        sampler = PeakSampler({"driver": proc.pid}, ancestor=proc.pid)
        sampler.start()
        rc = proc.wait()
        peaks = sampler.stop()
        print(f"\nsearch exit {rc} after {time.time() - t0:.0f} s; up to {sampler.max_concurrent} trial processes at once")
        print_peaks(peaks)
        result.update({"exit": rc, "peaks": peaks, "max_concurrent": sampler.max_concurrent, "series": sampler.series})
    for backbone, weights, size, batch in args.model:
        ws = model_working_set(backbone, weights, int(size), int(batch))
        print(f"model working set {backbone} {weights} {size} px batch {batch}: "
              + ", ".join(f"{k} {mb(v).strip()} MB" for k, v in ws.items()))
        result.setdefault("models", []).append({"config": [backbone, weights, size, batch], **ws})
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
