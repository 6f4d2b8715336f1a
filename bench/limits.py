"""How far the engine is from what the hardware allows, how it holds up beside other programs, and what a
national map would take.

    python -m bench.limits [--cells 200000] [--trees 100]

- Forest: nodes visited per cell are counted (`decision_path` of the depth-specialised trees the engine walks)
  and the time per node visit is measured on one thread, in nanoseconds and in clock cycles.
- CNN: the floating-point operations of one dense `predict_block` pass are counted from the shapes of every
  convolution and linear layer's output (forward hooks), and the achieved FLOP/s compared with this machine's
  float32 matrix multiply (2 n³ operations, n = 2,048) on the same number of threads.
- Beside other programs: the transfer CNN's training time alone, then while two CPU-bound processes compete
  for the cores; the fair-share slowdown is (training threads + competitors) / cores.
- Projection: hours for 10⁸, 10⁹ and 10¹⁰ cells x 6 depths on 1 to 1,024 cores from the measured cells/s per
  core, assuming the linear scaling that tile-parallel prediction gives (see `bench.cluster` for the measured
  speed-up of two workers).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import time
from pathlib import Path

import numpy as np

from bench.predict import INTERVALS, SAMPLE, print_table, sample_sites

MATMUL_SIZE = 2048
PROJECTION_CELLS = (1e8, 1e9, 1e10)
PROJECTION_CORES = (1, 16, 128, 1024)
COMPETITORS = 2


def clock_hz() -> float | None:
    """The CPU's current clock from /proc/cpuinfo (the first core), or None where it is not reported."""
    info = Path("/proc/cpuinfo")
    if not info.exists():
        return None
    for line in info.read_text().splitlines():
        if line.startswith("cpu MHz"):
            return float(line.split(":")[1]) * 1e6
    return None


def matmul_flops(threads: int) -> float:
    import torch

    torch.set_num_threads(threads)
    a = torch.randn(MATMUL_SIZE, MATMUL_SIZE)
    b = torch.randn(MATMUL_SIZE, MATMUL_SIZE)
    a @ b  # warm-up
    best = min(_timed(lambda: a @ b) for _ in range(5))
    return 2 * MATMUL_SIZE**3 / best


def _timed(function) -> float:
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def forest_limits(cells: int, trees: int, rows: list) -> float:
    """Nodes per cell and time per node visit; returns the forest's cells x depths per second per core."""
    from soc_depth_mapper.core.models.forest import RandomForestDepthModel

    patches, targets = sample_sites(SAMPLE, 300, 1, seed=0)
    model = RandomForestDepthModel(n_trees=trees, n_jobs=1).fit(patches, targets, INTERVALS)
    forest = model.forests_[0]
    rng = np.random.default_rng(1)
    x = patches[rng.integers(0, len(patches), cells), :, 0, 0].astype(np.float32)
    x += rng.normal(0, 0.01, x.shape).astype(np.float32) * np.abs(x)  # distinct cells, same distribution
    visits = 0
    seconds = 0.0
    for interval in INTERVALS:
        lookup = forest._lookup(tuple(interval))
        visits += sum(int(tree.decision_path(x).nnz) for tree in lookup.trees)
        fixed = tuple(interval)
        seconds += min(_timed(lambda fixed=fixed: forest.predict(x, None, 1, fixed)) for _ in range(2))
    per_visit = seconds / visits
    hz = clock_hz()
    rows.append((f"forest: nodes visited per cell and depth ({trees} trees)", f"{visits / cells / 6:,.0f}", "", ""))
    cycles = f"{per_visit * hz:.1f} cycles" if hz else "clock unknown"
    rows.append(("forest: time per node visit, 1 thread", f"{per_visit * 1e9:.2f} ns", cycles, ""))
    rate = cells * len(INTERVALS) / seconds
    rows.append(("forest: cell-depths per second per core", f"{rate:,.0f}", "", ""))
    return rate


def cnn_limits(threads: int, rows: list) -> float:
    """Achieved FLOP/s of dense prediction against matrix multiply; returns cell-depths/s per core."""
    import torch
    from torch import nn

    from soc_depth_mapper.core.models.cnn import TransferCNNDepthModel

    patches, targets = sample_sites(SAMPLE, 300, 7, seed=1)
    model = TransferCNNDepthModel(epochs=3, patience=2, finetune_epochs=2, random_state=0)
    model.fit(patches, targets, INTERVALS)
    side = 256
    rng = np.random.default_rng(2)
    cells = patches[rng.integers(0, len(patches), (side + 6) ** 2), :, 3, 3]  # real covariate values
    block = np.ascontiguousarray(cells.T.reshape(-1, side + 6, side + 6), dtype=np.float32)
    flops = 0

    def count(module: nn.Module, inputs, output) -> None:
        nonlocal flops
        if isinstance(module, nn.Conv2d):
            k = module.kernel_size[0] * module.kernel_size[1]
            flops += 2 * module.in_channels // module.groups * k * output.numel()
        elif isinstance(module, nn.Linear):
            flops += 2 * module.in_features * output.numel()

    hooks = [layer.register_forward_hook(count) for net in model.nets_ for layer in net.modules()]
    torch.set_num_threads(threads)
    model.n_threads = threads
    model.predict_block(block)
    for hook in hooks:
        hook.remove()
    seconds = min(_timed(lambda: model.predict_block(block)) for _ in range(3))
    achieved = flops / seconds
    peak = matmul_flops(threads)
    rows.append((f"matrix multiply float32 ({threads} threads)", f"{peak / 1e9:.1f} GFLOP/s", "", ""))
    rows.append(
        (
            f"transfer CNN dense prediction ({threads} threads)",
            f"{achieved / 1e9:.1f} GFLOP/s",
            f"{100 * achieved / peak:.0f} % of matmul",
            f"{flops / side**2 / 6 / 1e3:.1f} kFLOP per cell-depth",
        )
    )
    rate = side * side * len(INTERVALS) / seconds / threads
    rows.append(("transfer CNN: cell-depths per second per core", f"{rate:,.0f}", "", ""))
    return rate


def _spin(stop_after: float) -> None:
    end = time.perf_counter() + stop_after
    while time.perf_counter() < end:
        pass


def contention(rows: list) -> None:
    """Transfer CNN training time alone and beside COMPETITORS busy processes."""
    from soc_depth_mapper.core.models.cnn import TransferCNNDepthModel

    patches, targets = sample_sites(SAMPLE, 300, 7, seed=3)

    def fit() -> float:
        model = TransferCNNDepthModel(epochs=15, patience=15, finetune_epochs=10, random_state=0)
        return _timed(lambda: model.fit(patches, targets, INTERVALS))

    alone = fit()
    context = multiprocessing.get_context("spawn")
    competitors = [context.Process(target=_spin, args=(alone * 10 + 60,)) for _ in range(COMPETITORS)]
    for process in competitors:
        process.start()
    try:
        beside = fit()
    finally:
        for process in competitors:
            process.terminate()
            process.join()
    threads = TransferCNNDepthModel().n_threads or 1
    cores = os.cpu_count() or 1
    fair = max(1.0, (threads + COMPETITORS) / cores)
    slowdown = beside / alone
    rows.append(("transfer CNN training alone", f"{alone:.1f} s", "", ""))
    rows.append(
        (
            f"... beside {COMPETITORS} CPU-bound processes",
            f"{beside:.1f} s ({slowdown:.2f}x)",
            f"<= fair share {fair:.2f}x",
            "ok" if slowdown <= fair * 1.1 else "MISSED",
        )
    )


def _duration(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:,.1f} h"
    return f"{seconds / 60:.0f} min" if seconds >= 60 else f"{seconds:.0f} s"


def projection(rates: dict[str, float], rows: list) -> None:
    for name, rate in rates.items():
        for cells in PROJECTION_CELLS:
            times = [cells * len(INTERVALS) / (rate * cores) for cores in PROJECTION_CORES]
            text = ", ".join(f"{cores} cores {_duration(t)}" for cores, t in zip(PROJECTION_CORES, times))
            rows.append((f"projection {name}, {cells:.0e} cells x 6 depths", text, "", ""))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=200_000, help="cells the forest predicts (default 200,000)")
    parser.add_argument("--trees", type=int, default=500, help="trees in the forest (default 500, the plugin's)")
    parser.add_argument("--skip-contention", action="store_true")
    options = parser.parse_args(argv)
    rows: list = []
    rates = {"forest": forest_limits(options.cells, options.trees, rows)}
    rates["transfer CNN"] = cnn_limits(os.cpu_count() or 1, rows)
    if not options.skip_contention:
        contention(rows)
    projection(rates, rows)
    print_table(rows)


if __name__ == "__main__":
    main()
