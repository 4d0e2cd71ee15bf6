"""Design-space sweeps: engine configurations x workloads -> one row of metrics per point.

A sweep names axes of :class:`~rtl.config.EngineConfig` (rows, cols, dataflow, widths, hash
bits, scratchpad and accumulator sizes, memory bandwidth and latency, clock) and workloads
(model presets with their options, SCALE-Sim topologies, or :class:`~mapping.workloads.Workload`
objects such as a traced ``torch.nn.Module``). Every point is costed by the mapper, the same
call ``tessera map`` makes, so a row holds the numbers ``tessera map`` prints for that point::

    from tessera.sweep import Sweep

    sweep = Sweep(axes={"rows": [8, 16, 32], "cols": [8, 16, 32], "dataflow": ["os", "ws"]},
                  workloads=["deit-tiny"], base="default")
    result = sweep.run(jobs=2, out="build/sweeps/shapes")   # CSV, JSON and plots in out/
    result.pareto("latency_ms", "energy_uj")                # the non-dominated rows

or from a TOML file with ``tessera sweep SPEC.toml`` (see ``examples/``). Points run on a local
process pool, or on a Dask cluster with ``scheduler=`` (an address or a ``distributed.Client``).
Each finished point is cached under ``out/cache/`` by a hash of the point, so an interrupted or
extended sweep recomputes only what is new; a point that fails is recorded with its error and
the sweep goes on. Everything is checked before any work starts: an unknown axis, a value
``EngineConfig`` refuses, an unknown model or an empty sweep is refused naming the entry.

Optional columns, each switched on by the user because it costs more: ``per_op`` (each op's
row, in ``ops.csv``), ``validate=N`` (N points, spread over the sweep, run on the RTL: one GEMM
op of the workload through ``tessera cosim``, measured cycles beside predicted). Units are in
the column names: cycles, ms, uJ, bytes, mm2, KiB.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import itertools
import json
import math
import os
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mapping.units import clean, scale_for
from rtl.config import ConfigError, EngineConfig, preset, read_toml
from rtl.engine import check_engine

from .parallel import SchedulerError, run_batches

__all__ = ["AXES", "SweepError", "Sweep", "SweepInterrupted", "SweepResult", "area_mm2",
           "evaluate", "load_spec"]

#: the EngineConfig fields a sweep may vary, with the type of their values (``in_bits`` is
#: not one: the programmable engine moves int8 operands)
AXES: dict[str, type] = {
    "rows": int, "cols": int, "dataflow": str, "acc_bits": int,
    "hash_bits": int, "spad_kib": int, "acc_kib": int, "mem_bytes_per_cycle": int,
    "mem_latency": int, "clock_mhz": float,
}

#: workload options a model entry may carry (as ``tessera map`` takes them)
_MODEL_OPTIONS = ("seq", "image_size", "batch", "attention")

#: bump when a row's meaning changes, so cached rows from older code are not reused
CACHE_VERSION = "1"

#: Area model (relative; for ranking design points, not a layout estimate). 45 nm figures
#: from M. Horowitz, "Computing's energy problem", ISSCC 2014: 8-bit multiplier 282 um^2,
#: 32-bit adder 137 um^2 (one MAC = one of each). SRAM: Intel's 45 nm 6T bit cell, 0.346 um^2
#: (K. Mistry et al., IEDM 2007), at an assumed 50% array efficiency.
MAC_UM2 = 282 + 137
SRAM_BIT_UM2 = 0.346 / 0.5


class SweepError(ConfigError):
    """A sweep that cannot run as specified; the message names the offending entry."""


def area_mm2(cfg: EngineConfig) -> float:
    """Relative silicon area of the array and its memories in mm^2 (see :data:`MAC_UM2`)."""
    sram_bits = 8 * 1024 * (2 * cfg.spad_kib + cfg.acc_kib)
    return (cfg.pes * MAC_UM2 + sram_bits * SRAM_BIT_UM2) / 1e6


# -- points ---------------------------------------------------------------------------------------

def _workload_spec(entry: Any, where: str) -> dict[str, Any]:
    """A workload entry as a plain dict: {"model": name, options...}, {"topology": path} or
    {"workload": Workload}."""
    from mapping.workloads import ATTENTIONS, MODELS, Workload

    if isinstance(entry, Workload):
        return {"workload": entry, "label": entry.name}
    if isinstance(entry, str):
        entry = {"topology": entry} if entry.endswith(".csv") else {"model": entry}
    if not isinstance(entry, dict):
        raise SweepError(f"{where}: a workload is a model name, a .csv topology or a table, "
                         f"not {entry!r}")
    entry = dict(entry)
    if "topology" in entry:
        path = Path(entry["topology"])
        if set(entry) - {"topology"}:
            raise SweepError(f"{where}: a topology takes no options, got "
                             f"{', '.join(sorted(set(entry) - {'topology'}))}")
        if not path.is_file():
            raise SweepError(f"{where}: topology file {str(path)!r} does not exist")
        return {"topology": str(path.resolve()), "label": path.stem}
    model = entry.get("model")
    if model not in MODELS:
        raise SweepError(f"{where}: unknown model {model!r}; models: {', '.join(MODELS)}")
    unknown = set(entry) - {"model", *_MODEL_OPTIONS}
    if unknown:
        raise SweepError(f"{where}: unknown workload option(s) {', '.join(sorted(unknown))}; "
                         f"options: {', '.join(_MODEL_OPTIONS)}")
    if entry.get("attention", "softmax") not in ATTENTIONS:
        raise SweepError(f"{where}: attention must be one of {', '.join(ATTENTIONS)}, not "
                         f"{entry['attention']!r}")
    for option in ("seq", "image_size", "batch"):
        v = entry.get(option)
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
            raise SweepError(f"{where}: {option} must be a positive integer, not {v!r}")
    # build it once now, so what the model itself refuses is said before any work starts
    from mapping.workloads import WorkloadError, build

    try:
        build(model, seq=entry.get("seq"), image_size=entry.get("image_size"),
              batch=entry.get("batch", 1), attention=entry.get("attention", "softmax"))
    except WorkloadError as e:
        raise SweepError(f"{where}: {e}") from None
    label = model + "".join(f" {k}={entry[k]}" for k in _MODEL_OPTIONS if k in entry)
    return {**entry, "label": label}


def _build_workload(spec: dict[str, Any], cfg: EngineConfig):
    from mapping.workloads import build, from_scalesim_csv

    if "workload" in spec:
        return spec["workload"]
    if "topology" in spec:
        return from_scalesim_csv(spec["topology"])
    return build(spec["model"], seq=spec.get("seq"), image_size=spec.get("image_size"),
                 batch=spec.get("batch", 1), attention=spec.get("attention", "softmax"),
                 hash_bits=cfg.hash_bits)


def _point_key(config: dict[str, Any], spec: dict[str, Any], options: dict[str, Any]) -> str:
    """A stable hash of what a row depends on."""
    wl = {k: v for k, v in spec.items() if k != "workload"}
    if "workload" in spec:
        # a Workload object: hash its ops, so a changed module is a different point
        w = spec["workload"]
        wl["ops"] = [repr(op) for op in w.ops]
    if "topology" in spec:
        wl["topology_sha"] = hashlib.sha256(Path(spec["topology"]).read_bytes()).hexdigest()
    blob = json.dumps({"v": CACHE_VERSION, "config": config, "workload": wl,
                       "options": options}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


@dataclass
class _Point:
    index: int
    config: dict[str, Any]          # EngineConfig fields
    spec: dict[str, Any]            # workload
    options: dict[str, Any]
    key: str
    validate: bool = False


# -- evaluating one point (runs in a worker) -------------------------------------------------------

_WORKLOADS: dict[str, Any] = {}   # per worker process: workloads already built


def evaluate(point: _Point) -> dict[str, Any]:
    """The row of one point: its parameters and the mapper's metrics (or its error)."""
    row: dict[str, Any] = {"point": point.index, "key": point.key,
                           "workload": point.spec["label"], **point.config}
    try:
        cfg = EngineConfig(**point.config)
        wkey = json.dumps({k: v for k, v in point.spec.items() if k != "workload"},
                          sort_keys=True) + f"/{cfg.hash_bits}"
        workload = _WORKLOADS.get(wkey) if "workload" not in point.spec else None
        if workload is None:
            workload = _build_workload(point.spec, cfg)
            if "workload" not in point.spec:
                _WORKLOADS[wkey] = workload
        from mapping.mapper import map_workload

        result = map_workload(workload, cfg, ideal_memory=point.options["ideal_memory"])
        t = result.totals()
        batch = int(result.params.get("batch", 1) or 1)
        row.update({
            "pes": cfg.pes,
            "sram_kib": 2 * cfg.spad_kib + cfg.acc_kib,
            "area_mm2": round(area_mm2(cfg), 6),
            "cycles": t["cycles"],
            "compute_cycles": t["compute_cycles"],
            "stall_cycles": t["stall_cycles"],
            "modeled_cycles": t["modeled_cycles"],
            "latency_ms": t["time_ms"],
            "utilization": t["utilization"],
            "macs": t["macs"],
            "dram_bytes": t["dram_bytes"],
            "onchip_bytes": t["onchip_bytes"],
            "energy_uj": t["energy_pj"] / 1e6,
            # a run maps the whole batch; the plots compare designs per input
            "batch": batch,
            "error": "",
        })
        if point.options["per_op"]:
            row["ops"] = [{k: v for k, v in op.to_dict().items() if k not in ("gemm", "why")}
                          for op in result.ops]
        if point.validate:
            row.update(_validate(cfg, result))
    except Exception as e:  # noqa: BLE001 - a failing point is recorded and the sweep goes on
        row["error"] = f"{type(e).__name__}: {e}"
    return row


def _validate(cfg: EngineConfig, result) -> dict[str, Any]:
    """Run the workload's smallest GEMM op on the RTL (Verilator); cycles beside predicted."""
    gemms = [op for op in result.ops if op.gemm is not None]
    if not gemms:
        return {"rtl_op": "", "rtl_error": "no GEMM op to run on the RTL"}
    op = min(gemms, key=lambda o: (o.macs // o.count, o.name))
    from sim.cosim import cosim_gemm

    g = op.gemm
    run = cosim_gemm(cfg, g["m"], g["k"], g["n"], requant=g["requant"],
                     softmax_x0=g.get("softmax_x0"), causal=g.get("causal", False))
    return {"rtl_op": op.name, "rtl_cycles": run["cycles"], "rtl_predicted": g["cycles"],
            "rtl_bit_exact": run["bit_exact"],
            "rtl_error": run["error"] or ("" if run["bit_exact"] else "mismatch")}


def _evaluate_many(points: list[_Point], cache: Path | None = None) -> list[dict[str, Any]]:
    """Evaluate points one after another; each finished row goes into ``cache`` at once, so
    an interrupted batch keeps the points it finished."""
    rows = []
    for p in points:
        row = evaluate(p)
        if cache is not None and not row["error"]:
            _cache_write(cache, row)
        rows.append(row)
    return rows


class SweepInterrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM during a sweep; ``done`` points were finished (and are cached)."""

    def __init__(self, done: int, total: int):
        super().__init__(f"{done} of {total} points done")
        self.done, self.total = done, total


# -- the sweep -------------------------------------------------------------------------------------

@dataclass
class Sweep:
    """Axes of EngineConfig and workloads; :meth:`run` evaluates every combination.

    ``base``: a preset name, an :class:`EngineConfig` or a dict of fields (with an optional
    ``preset``) that the axes vary from. ``validate``: how many points to also run on the RTL.
    """

    axes: dict[str, Sequence[Any]]
    workloads: Sequence[Any]
    base: str | EngineConfig | dict[str, Any] = "default"
    per_op: bool = False
    ideal_memory: bool = False
    validate: int = 0
    name: str = "sweep"
    points: list[_Point] = field(init=False, default_factory=list)

    def __post_init__(self) -> None:
        self.points = self._expand()

    def _base(self) -> EngineConfig:
        if isinstance(self.base, EngineConfig):
            return self.base
        try:
            if isinstance(self.base, str):
                return preset(self.base)
            if isinstance(self.base, dict):
                return EngineConfig.from_dict(self.base)
        except ConfigError as e:
            raise SweepError(f"base: {e}") from None
        raise SweepError(f"base must be a preset name, a table of engine fields or an "
                         f"EngineConfig, not {self.base!r}")

    def _expand(self) -> list[_Point]:
        base = self._base()
        if not isinstance(self.axes, dict):
            raise SweepError(f"axes must be a table of field = [values], not {self.axes!r}")
        for name, values in self.axes.items():
            if name == "in_bits":
                raise SweepError("in_bits is not an axis: the programmable engine moves int8 "
                                 "operands (in_bits = 8)")
            if name not in AXES:
                raise SweepError(f"unknown axis {name!r}; axes: {', '.join(AXES)}")
            if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
                raise SweepError(f"axis {name}: give a list of values, not {values!r}")
            values = list(values)
            if not values:
                raise SweepError(f"axis {name} has no values")
            if len(set(map(repr, values))) != len(values):
                raise SweepError(f"axis {name} repeats a value: {values!r}")
            for v in values:
                kind = AXES[name]
                if isinstance(v, bool) or not isinstance(v, (int, float) if kind is float
                                                          else kind):
                    raise SweepError(f"axis {name}: value {v!r} is not "
                                     f"{'a number' if kind is float else kind.__name__}")
                try:
                    base.replace(**{name: v})
                except ConfigError as e:
                    raise SweepError(f"axis {name}: value {v!r}: {e}") from None
        if isinstance(self.workloads, (str, bytes)) or not isinstance(self.workloads, Sequence):
            raise SweepError("workloads must be a list")
        specs = [_workload_spec(w, f"workload {i + 1}") for i, w in enumerate(self.workloads)]
        if not specs:
            raise SweepError("the sweep names no workload")
        if isinstance(self.validate, bool) or not isinstance(self.validate, int) \
                or self.validate < 0:
            raise SweepError(f"validate must be a number of points (0 or more), not "
                             f"{self.validate!r}")
        for flag in ("per_op", "ideal_memory"):
            if not isinstance(getattr(self, flag), bool):
                raise SweepError(f"{flag} must be true or false, not "
                                 f"{getattr(self, flag)!r}")
        names = list(self.axes)
        options = {"ideal_memory": bool(self.ideal_memory), "per_op": bool(self.per_op)}
        points = []
        for values in itertools.product(*(list(self.axes[n]) for n in names)):
            changes = dict(zip(names, values, strict=True))
            try:
                cfg = base.replace(**changes) if changes else base
                # what the RTL cannot build, refused as `tessera map` and the generator do
                check_engine(cfg)
            except ConfigError as e:  # a combination the engine refuses
                where = ", ".join(f"{k}={v!r}" for k, v in changes.items()) or "base"
                raise SweepError(f"point {where}: {e}") from None
            config = cfg.to_dict()
            for spec in specs:
                points.append(_Point(len(points), config, spec, options,
                                     _point_key(config, spec, options)))
        if not points:
            raise SweepError("the sweep is empty")
        if self.validate:
            # spread the RTL runs over the sweep, deterministically
            step = len(points) / min(self.validate, len(points))
            for i in range(min(self.validate, len(points))):
                points[int(i * step)].validate = True
        return points

    def run(self, *, jobs: int | None = None, scheduler: Any = None,
            out: str | Path | None = None, progress: bool | None = None,
            chunk: int | None = None) -> SweepResult:
        """Evaluate every point; returns the rows in the sweep's order.

        ``jobs``: local worker processes (default: the CPU count; 1 runs in this process).
        ``scheduler``: a Dask scheduler address or a ``distributed.Client`` instead.
        ``out``: a folder for the cache, ``sweep.csv``, ``sweep.json`` (``ops.csv`` with
        ``per_op``) and the plots; without it nothing is cached or written.
        """
        jobs = jobs if jobs is not None else (os.cpu_count() or 1)
        if not isinstance(jobs, int) or jobs < 1:
            raise SweepError(f"jobs must be at least 1, not {jobs!r}")
        cache = Path(out) / "cache" if out is not None else None
        rows: dict[int, dict[str, Any]] = {}
        todo = []
        for p in self.points:
            hit = _cache_read(cache, p) if cache is not None else None
            if hit is not None:
                rows[p.index] = hit
            else:
                todo.append(p)
        cached = len(rows)
        t0 = time.perf_counter()
        show = progress if progress is not None else sys.stderr.isatty()
        with _Progress(show, len(self.points), cached) as bar:
            def done(batch: list[dict[str, Any]]) -> None:
                for row in batch:
                    rows[row["point"]] = row
                    if cache is not None and not row["error"]:
                        _cache_write(cache, row)
                bar.advance(len(batch))

            size = chunk or max(1, min(64, len(todo) // (8 * jobs) or 1))
            batches = [todo[i:i + size] for i in range(0, len(todo), size)]
            try:
                with _terminate_as_interrupt():
                    run_batches(_evaluate_many, batches, done, cache, jobs=jobs,
                                scheduler=scheduler)
            except SchedulerError as e:
                raise SweepError(str(e)) from None
            except KeyboardInterrupt:
                finished = sum(1 for p in self.points if p.index in rows
                               or (cache is not None and (cache / f"{p.key}.json").is_file()))
                raise SweepInterrupted(finished, len(self.points)) from None
        seconds = time.perf_counter() - t0
        result = SweepResult(self.name, [rows[p.index] for p in self.points],
                             axes=list(self.axes), computed=len(todo), cached=cached,
                             seconds=seconds)
        if out is not None:
            result.write(out)
        return result


def _cache_read(cache: Path, p: _Point) -> dict[str, Any] | None:
    path = cache / f"{p.key}.json"
    if not path.is_file():
        return None
    try:
        row = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None   # a torn write from an interrupted sweep: compute it again
    row["point"] = p.index
    if p.validate and "rtl_op" not in row:
        return None   # now asked to validate this point
    return row


def _cache_write(cache: Path, row: dict[str, Any]) -> None:
    cache.mkdir(parents=True, exist_ok=True)
    path = cache / f"{row['key']}.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(row))
    tmp.replace(path)


@contextlib.contextmanager
def _terminate_as_interrupt():
    """SIGTERM raises KeyboardInterrupt in the sweep's process while the body runs (as Ctrl-C
    does), so both stop the workers the same way."""
    import signal

    def handler(signum, frame):
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:   # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


class _Progress:
    """A rich progress bar on stderr, or nothing."""

    def __init__(self, show: bool, total: int, already: int):
        self.show, self.total, self.already = show, total, already

    def __enter__(self) -> _Progress:
        if self.show:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeRemainingColumn,
            )

            self.bar = Progress(TextColumn("sweep"), BarColumn(), MofNCompleteColumn(),
                                TimeRemainingColumn(), transient=True)
            self.bar.__enter__()
            self.task = self.bar.add_task("points", total=self.total, completed=self.already)
        return self

    def advance(self, n: int) -> None:
        if self.show:
            self.bar.advance(self.task, n)

    def __exit__(self, *exc: Any) -> None:
        if self.show:
            self.bar.__exit__(*exc)


# -- results ---------------------------------------------------------------------------------------

#: the row's columns, in file order (optional ones follow when present)
COLUMNS = ["point", "workload", *AXES, "pes", "sram_kib", "area_mm2", "batch", "cycles",
           "compute_cycles", "stall_cycles", "modeled_cycles", "latency_ms", "utilization",
           "macs", "dram_bytes", "onchip_bytes", "energy_uj"]
_OPTIONAL = ["rtl_op", "rtl_cycles", "rtl_predicted", "rtl_bit_exact", "rtl_error"]
#: the plots :func:`plot` draws
_PLOTS = ("pareto_energy.png", "pareto_area.png", "utilization.png")
#: units of the machine outputs' columns (also in their names)
_UNITS = {"cycles": "cycles", "latency_ms": "ms (for the whole batch)", "energy_uj": "uJ (for "
          "the whole batch)", "area_mm2": "mm^2 (45 nm model)", "dram_bytes": "bytes",
          "onchip_bytes": "bytes", "sram_kib": "KiB", "utilization": "fraction of PE cycles"}


def _cleaned(row: dict[str, Any]) -> dict[str, Any]:
    return {k: ([_cleaned(o) for o in v] if k == "ops" else clean(v)) for k, v in row.items()}


@dataclass
class SweepResult:
    """The rows of a sweep, in the sweep's order, and how they were obtained."""

    name: str
    rows: list[dict[str, Any]]
    #: the axes the sweep varied
    axes: list[str] = field(default_factory=list)
    computed: int = 0
    cached: int = 0
    seconds: float = 0.0
    #: the files the last :meth:`write` wrote
    written: list[Path] = field(default_factory=list)

    @property
    def ok(self) -> list[dict[str, Any]]:
        """Rows without an error."""
        return [r for r in self.rows if not r.get("error")]

    @property
    def failed(self) -> list[dict[str, Any]]:
        return [r for r in self.rows if r.get("error")]

    def pareto(self, x: str = "latency_ms", y: str = "energy_uj",
               rows: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
        """Rows no other row beats on both ``x`` and ``y`` (lower is better), sorted by x."""
        rows = self.ok if rows is None else rows
        front, best = [], math.inf
        for r in sorted(rows, key=lambda r: (r[x], r[y])):
            if r[y] < best:
                front.append(r)
                best = r[y]
        return front

    def write(self, out: str | Path) -> list[Path]:
        """``sweep.csv``, ``sweep.json``, ``ops.csv`` (per-op rows) and the plots."""
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        written = []
        extra = [c for c in _OPTIONAL if any(c in r for r in self.rows)]
        cols = COLUMNS + extra + ["error"]
        with open(out / "sweep.csv", "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=cols, extrasaction="ignore")
            w.writeheader()
            for r in self.rows:
                w.writerow({k: clean(v) for k, v in r.items()})
        written.append(out / "sweep.csv")
        (out / "sweep.json").write_text(json.dumps(
            {"name": self.name, "points": len(self.rows), "computed": self.computed,
             "cached": self.cached, "seconds": round(self.seconds, 3),
             "units": _UNITS, "rows": [_cleaned(r) for r in self.rows]}, indent=1))
        written.append(out / "sweep.json")
        if any("ops" in r for r in self.rows):
            op_cols = None
            with open(out / "ops.csv", "w", newline="") as f:
                for r in self.rows:
                    for op in r.get("ops", []):
                        line = {"point": r["point"], "workload": r["workload"], **op}
                        if op_cols is None:
                            op_cols = list(line)
                            w = csv.DictWriter(f, fieldnames=op_cols, extrasaction="ignore")
                            w.writeheader()
                        w.writerow({k: clean(v) for k, v in line.items()})
            written.append(out / "ops.csv")
        plots = plot(self, out)
        for stale in set(_PLOTS) - {p.name for p in plots}:
            (out / stale).unlink(missing_ok=True)   # not redrawn: no stale figure stays behind
        written += plots
        self.written = written
        return written


def _label(row: dict[str, Any], axes: Sequence[str]) -> str:
    """A point's name on a plot: its array shape and dataflow, then the other axes' values."""
    text = f"{row['rows']}x{row['cols']} {row['dataflow']}"
    short = {"mem_bytes_per_cycle": "B/cyc", "spad_kib": "spad KiB", "acc_kib": "acc KiB",
             "mem_latency": "lat", "clock_mhz": "MHz"}
    for a in axes:
        if a not in ("rows", "cols", "dataflow"):
            text += f" {row[a]:g}{short.get(a, a)}" if a in short else f" {a}={row[a]}"
    return text


def _per_input(row: dict[str, Any], key: str) -> float:
    """A row's figure for one input of its batch (a run maps the whole batch)."""
    return row[key] / max(1, row.get("batch", 1) or 1)


def _spread_labels(fig, ax, annotations) -> None:
    """Move point labels apart (upwards, a step at a time) until no two overlap."""
    renderer = fig.canvas.get_renderer()
    placed = []
    for ann in annotations:
        for _ in range(12):
            box = ann.get_window_extent(renderer)
            if not any(box.overlaps(other) for other in placed):
                break
            x, y = ann.xyann
            ann.xyann = (x, y + 7)
        placed.append(ann.get_window_extent(renderer))


def plot(result: SweepResult, out: str | Path) -> list[Path]:
    """PNG plots: time against energy and against area per input (Pareto fronts marked), and
    utilization over array shapes. Axes in units scaled to the data. Returns the files
    written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out)
    rows = result.ok
    if not rows:
        return []
    written = []
    workloads = sorted({r["workload"] for r in rows})
    t_factor, t_unit = scale_for("time_ms", max(_per_input(r, "latency_ms") for r in rows))
    e_factor, e_unit = scale_for("energy_pj",
                                 max(_per_input(r, "energy_uj") for r in rows) * 1e6)
    per = {r["point"]: (_per_input(r, "latency_ms") / t_factor,
                        _per_input(r, "energy_uj") * 1e6 / e_factor) for r in rows}
    batches = sorted({r.get("batch", 1) for r in rows})
    note = "" if batches == [1] else f" (batch {'/'.join(map(str, batches))})"
    for y, ylabel, fname in (("energy", f"energy per input ({e_unit})", "pareto_energy.png"),
                             ("area_mm2", "array + SRAM area (mm$^2$, 45 nm model)",
                              "pareto_area.png")):
        def yv(r, y=y):
            return per[r["point"]][1] if y == "energy" else r[y]

        fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=120)
        annotations = []
        for wl in workloads:
            pts = [{**r, "_x": per[r["point"]][0], "_y": yv(r)} for r in rows
                   if r["workload"] == wl]
            sc = ax.scatter([r["_x"] for r in pts], [r["_y"] for r in pts], s=14,
                            alpha=0.45, label=f"{wl} (all points)")
            front = result.pareto("_x", "_y", pts)
            ax.plot([r["_x"] for r in front], [r["_y"] for r in front], "-o", ms=4,
                    color=sc.get_facecolor()[0][:3], label=f"{wl} Pareto front")
            for r in front:
                annotations.append(ax.annotate(_label(r, result.axes), (r["_x"], r["_y"]),
                                               fontsize=6, xytext=(3, 3),
                                               textcoords="offset points"))
        ax.set_xlabel(f"time per input ({t_unit}){note}")
        ax.set_ylabel(ylabel)
        xs = [per[r["point"]][0] for r in rows]
        ys = [yv(r) for r in rows]
        for values, set_scale in ((xs, ax.set_xscale), (ys, ax.set_yscale)):
            # a log axis only where the values span more than a decade
            if min(values) > 0 and max(values) / min(values) > 10:
                set_scale("log")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
        ax.set_title(f"{result.name}: time vs {y.split('_')[0]}", fontsize=9)
        fig.tight_layout()
        fig.canvas.draw()
        _spread_labels(fig, ax, annotations)
        fig.savefig(out / fname)
        plt.close(fig)
        written.append(out / fname)
    # utilization over array shapes: best utilization per (rows, cols) for each workload
    shapes = sorted({(r["rows"], r["cols"]) for r in rows})
    if len(shapes) > 1:
        fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=120)
        width = 0.8 / len(workloads)
        for i, wl in enumerate(workloads):
            best = [max((r["utilization"] for r in rows
                         if r["workload"] == wl and (r["rows"], r["cols"]) == s), default=0)
                    for s in shapes]
            ax.bar([j + i * width for j in range(len(shapes))], [100 * b for b in best],
                   width=width, label=wl)
        ax.set_xticks([j + 0.4 - width / 2 for j in range(len(shapes))])
        ax.set_xticklabels([f"{a}x{b}" for a, b in shapes], rotation=45, fontsize=7)
        ax.set_xlabel("array (rows x cols)")
        ax.set_ylabel("utilization, best over other axes (%)")
        ax.set_ylim(0, 100)
        ax.grid(True, axis="y", alpha=0.3)
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out / "utilization.png")
        plt.close(fig)
        written.append(out / "utilization.png")
    return written


# -- TOML specs ------------------------------------------------------------------------------------

_SPEC_KEYS = {"name", "base", "axes", "workloads", "options"}
_OPTION_KEYS = {"per_op", "ideal_memory", "validate", "fpga", "accuracy"}


def load_spec(path: str | Path) -> Sweep:
    """A :class:`Sweep` from a TOML file::

        name = "array shapes"
        base = "default"                 # or a table of engine fields, with optional preset
        workloads = ["deit-tiny", {model = "bert-base", seq = 128}, "layers.csv"]
        [axes]
        rows = [8, 16, 32]
        cols = [8, 16, 32]
        [options]
        per_op = false                   # each op's row in ops.csv
        validate = 0                     # points to run on the RTL as well
    """
    path = Path(path)
    data = read_toml(path, "sweep spec", SweepError)
    unknown = set(data) - _SPEC_KEYS
    if unknown:
        raise SweepError(f"{path}: unknown key(s) {', '.join(sorted(unknown))}; a spec has "
                         f"{', '.join(sorted(_SPEC_KEYS))}")
    if "axes" not in data or "workloads" not in data:
        raise SweepError(f"{path}: a spec needs [axes] and workloads")
    options = data.get("options", {})
    if not isinstance(options, dict):
        raise SweepError(f"{path}: [options] must be a table")
    unknown = set(options) - _OPTION_KEYS
    if unknown:
        raise SweepError(f"{path}: unknown option(s) {', '.join(sorted(unknown))}; options: "
                         f"{', '.join(sorted(_OPTION_KEYS))}")
    if options.get("fpga"):
        raise SweepError(f"{path}: options.fpga: FPGA resources need the FPGA build flow "
                         "(fpga.build), which this version does not have yet")
    if options.get("accuracy"):
        raise SweepError(f"{path}: options.accuracy: the EcoFormer accuracy task is not part "
                         "of this version yet")
    # relative topology paths are relative to the spec
    workloads = []
    for w in data["workloads"] if isinstance(data["workloads"], list) else [data["workloads"]]:
        if isinstance(w, str) and w.endswith(".csv") and not Path(w).is_absolute():
            w = str(path.parent / w)
        elif isinstance(w, dict) and isinstance(w.get("topology"), str) \
                and not Path(w["topology"]).is_absolute():
            w = {**w, "topology": str(path.parent / w["topology"])}
        workloads.append(w)
    name = data.get("name", path.stem)
    if not isinstance(name, str):
        raise SweepError(f"{path}: name must be a string, not {name!r}")
    for flag in ("per_op", "ideal_memory"):
        if not isinstance(options.get(flag, False), bool):
            raise SweepError(f"{path}: options.{flag} must be true or false (unquoted), not "
                             f"{options[flag]!r}")
    return Sweep(axes=data["axes"], workloads=workloads, base=data.get("base", "default"),
                 per_op=options.get("per_op", False),
                 ideal_memory=options.get("ideal_memory", False),
                 validate=options.get("validate", 0), name=name)
