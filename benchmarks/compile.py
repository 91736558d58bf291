"""Does ``compile=True`` (torch.compile) pay for a training step on this device?

    python -m benchmarks.compile [--quick] [--json out.json]

For each model: the same training step (forward, cross-entropy, backward, AdamW) on resident
random tensors, eager vs ``torch.compile``, after a warm-up that includes compilation (inductor's
cache pointed at an empty folder, so the compile time is a cold one). ratio = compiled images/s /
eager images/s in steady state; break_even_steps = steps the compiled model needs before its
saving has paid for the compilation (none when it is not faster).
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from benchmarks.common import device_description, write_json
from tl.train.models import build_model

MODELS = ["resnet18", "timm/efficientnet_lite0", "convmodel"]


def step_rate(name: str, compiled: bool, size: int, batch: int, steps: int, device: torch.device) -> tuple[float, float]:
    """(warm-up seconds including compilation, steady-state images/s)."""
    torch.manual_seed(0)
    model = build_model(name, 2, None, image_size=size).to(device)
    opt = torch.optim.AdamW(model.parameters(), 1e-3)
    net = torch.compile(model) if compiled else model
    x = torch.randn(batch, 3, size, size, device=device)
    y = torch.randint(0, 2, (batch,), device=device)

    def step():
        loss = F.cross_entropy(net(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    t0 = time.perf_counter()
    step(), step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    warm = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return warm, steps * batch / (time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.compile", description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="10 timed steps instead of 30")
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    steps = 10 if args.quick else 30
    rows = []
    with tempfile.TemporaryDirectory() as cache:
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = cache
        for name in MODELS:
            eager_warm, eager = step_rate(name, False, args.size, args.batch, steps, device)
            compile_warm, compiled = step_rate(name, True, args.size, args.batch, steps, device)
            saving_per_step = args.batch / eager - args.batch / compiled
            extra = compile_warm - eager_warm
            rows.append({"model": name, "eager_images_per_s": round(eager, 1), "compiled_images_per_s": round(compiled, 1),
                         "ratio": round(compiled / eager, 2), "compile_s": round(extra, 1),
                         "break_even_steps": round(extra / saving_per_step) if saving_per_step > 0 else None})
    result = {"benchmark": "torch.compile", "ratio": {r["model"]: r["ratio"] for r in rows}, "target": "> 1 to keep",
              "rows": rows, "image_size": args.size, "batch_size": args.batch, "steps": steps,
              "device": device_description(device, torch.get_num_threads()), "date": dt.date.today().isoformat(),
              "load_avg": os.getloadavg()[0]}
    print(f"{'model':26}{'eager img/s':>12}{'compiled':>10}{'ratio':>7}{'compile s':>11}{'break-even steps':>18}")
    for r in rows:
        print(f"{r['model']:26}{r['eager_images_per_s']:>12}{r['compiled_images_per_s']:>10}{r['ratio']:>7}"
              f"{r['compile_s']:>11}{str(r['break_even_steps']):>18}")
    print(f"{args.size} px, batch {args.batch}, on {result['device']}, {result['date']}")
    write_json(result, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
