"""The same sweep as examples/array_shapes.toml, from Python, and what to do with its rows.

    .venv/bin/python examples/sweep_shapes.py [--scheduler tcp://host:8786]
"""

import argparse

from tessera.sweep import Sweep

parser = argparse.ArgumentParser()
parser.add_argument("--scheduler", default=None, help="a Dask scheduler address (optional)")
parser.add_argument("--jobs", type=int, default=None, help="local worker processes")
args = parser.parse_args()

sweep = Sweep(
    name="DeiT-Tiny on array shapes",
    base="default",                                   # 16x16, 64 KiB scratchpads, 16 B/cycle
    axes={
        "rows": [8, 16, 32],
        "cols": [8, 16, 32],
        "dataflow": ["os", "ws"],
        "mem_bytes_per_cycle": [8, 32],
    },
    workloads=["deit-tiny"],
)
print(f"{len(sweep.points)} points")

# Local processes by default; a Dask cluster with scheduler=. The output folder caches every
# finished point: run this twice and the second run computes nothing.
result = sweep.run(jobs=args.jobs, scheduler=args.scheduler, out="build/sweeps/array_shapes")
print(f"{result.computed} computed, {result.cached} cached, {result.seconds:.1f} s")

# The rows are plain dicts: filter, sort, or load sweep.csv into pandas.
for r in result.pareto("latency_ms", "energy_uj"):
    print(f"{r['rows']:>3}x{r['cols']:<3} {r['dataflow']} {r['mem_bytes_per_cycle']:>2} B/cycle: "
          f"{r['latency_ms']:.2f} ms, {r['energy_uj']:.0f} uJ, {100 * r['utilization']:.1f}% util")
