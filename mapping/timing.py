"""Cycle model of the array and its row sources: the engine's timing written as formulas.

The RTL blocks state their latencies as properties (``rtl/tile.py``, ``rtl/compute.py``);
:class:`ArrayModel` composes them into when each tile's operand beats enter the array and its
results leave, tile after tile, with no Python simulation of the hardware. It is the one model of
the array: :func:`tile_stream_cycles` (a stream of tiles on the tile engine alone) and the
program model (:class:`mapping.program.Replay`) both run it. Simulation asserts its predictions
equal what the RTL measures, cycle for cycle.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from rtl.compute import ComputeTiming
from rtl.config import EngineConfig
from rtl.tile import TileTiming

__all__ = ["NEVER", "ArrayModel", "StreamTiming", "tile_stream_cycles"]

#: a time that never binds a max
NEVER = -(1 << 62)


class ArrayModel:
    """Tiles on the array, in order, as the compute unit's row sources feed them.

    Times are the cycles rows are *presented* (their scratchpad address issued); a row enters
    the array ``source_latency`` cycles later, always (the sources present a row only when the
    array will take it on arrival: ``rtl/compute.py``). :meth:`issue` takes a tile whose
    descriptor its source(s) can take from cycle ``avail`` and returns when they take it, when
    its first and last beats enter the array and when its last result row leaves the tile
    engine. The state is three times (:attr:`TIMES`), so a caller can compare and shift it.

    Output-stationary, one source for A and B: it takes the tile's descriptor at
    ``tau = max(avail, pf)`` (``pf``: the previous tile's final row presented), presents row
    0 at ``tau + 1`` and one row per cycle, but the final row no sooner than ``pf + rows``
    (the previous tile's drain). Weight-stationary, two sources: B takes it at
    ``max(avail, pbf)`` and presents the ``rows`` weight rows from the next cycle, but not
    before the previous tile's first row of A has swapped through the array (``pa0 + swap``);
    A takes it at ``max(avail, pf)`` and presents its first row once the weights are all
    presented (``pbf + 1``), then one per cycle.
    """

    __slots__ = ("os", "rows", "min_tile", "swap", "source_latency", "present", "out_delay",
                 "pf", "pbf", "pa0")

    #: the state's times, for snapshots
    TIMES = ("pf", "pbf", "pa0")

    def __init__(self, config: EngineConfig):
        tile = TileTiming(config)
        compute = ComputeTiming(config)
        self.os = config.dataflow == "os"
        self.rows = config.rows
        self.min_tile = tile.min_tile_cycles
        self.swap = tile.weight_swap_cycles
        self.source_latency = compute.source_latency
        self.present = compute.present_delay
        # the last beat entering the array to the tile's last result row leaving it
        self.out_delay = tile.latency + (config.rows - 1 if self.os else 0)
        self.pf = NEVER    # the last tile's final row of A presented
        self.pbf = NEVER   # ws: its final weight row presented
        self.pa0 = NEVER   # ws: its first row of A presented

    def issue(self, avail: int, extent: int) -> tuple[int, int, int, int, int]:
        """(A's take, B's take, first beat in, last beat in, last result row out) of the next
        tile, of ``extent`` rows (os: K; ws: M), whose descriptor is there from ``avail``."""
        lat = self.source_latency
        if self.os:
            tau = avail if avail > self.pf else self.pf
            p0 = tau + self.present
            pf = p0 + extent - 1
            if self.pf + self.min_tile > pf:
                pf = self.pf + self.min_tile
            self.pf = pf
            last = pf + lat
            return tau, tau, (p0 if extent > 1 else pf) + lat, last, last + self.out_delay
        tau_b = avail if avail > self.pbf else self.pbf
        pb0 = tau_b + self.present
        if self.pa0 + self.swap > pb0:
            pb0 = self.pa0 + self.swap
        pbf = pb0 + self.rows - 1
        tau_a = avail if avail > self.pf else self.pf
        pa0 = tau_a + self.present
        if pbf + 1 > pa0:
            pa0 = pbf + 1
        self.pbf, self.pa0 = pbf, pa0
        self.pf = pf = pa0 + extent - 1
        last = pf + lat
        return tau_a, tau_b, pa0 + lat, last, last + self.out_delay

    def earliest_out(self) -> int:
        """A lower bound on the cycle the next tile's last result row leaves, whenever it
        comes: its last beat no sooner than ``min_tile`` after this one's (os), or the cycle
        after (ws)."""
        gap = self.min_tile if self.os else 1
        return self.pf + self.source_latency + gap + self.out_delay


@dataclass(frozen=True)
class StreamTiming:
    """When a back-to-back stream of tiles runs, with sources and sink that never stall.

    ``cycles`` counts from the first cycle operands may be accepted to the cycle the last
    result beat is taken, inclusive. ``busy_cycles`` are cycles the array accepts operands.
    """

    cycles: int
    macs: int
    #: tiles whose shape wastes array cycles (os: K < rows; ws: weight loads not hidden)
    bubbles: int

    def utilization(self, config: EngineConfig) -> float:
        """MACs done over MACs the array could have done in ``cycles``."""
        return self.macs / (config.pes * self.cycles)


def tile_stream_cycles(config: EngineConfig, extents: Sequence[int]) -> StreamTiming:
    """Predict a run of tiles on the tile engine alone; ``extents`` are the tiles' K (``os``)
    or M (``ws``).

    Its inputs always hold the next beat, so this is :class:`ArrayModel` with every descriptor
    there from the start (the first beat enters in cycle 0). Output-stationary: one beat per
    cycle, but a tile's last beat waits until the previous tile's last beat is
    ``min_tile_cycles`` (= rows) behind it, so the drain keeps up; results leave ``latency``
    cycles after a tile's last beat, rows beats long. Weight-stationary: a tile's ``rows``
    weight beats load one per cycle, no earlier than ``weight_swap_cycles`` after the previous
    tile's first row (when its swap wave has passed every PE); its first row of A enters once
    they are in, then one row per cycle; row ``m`` of C leaves ``latency`` cycles after row
    ``m`` of A.
    """
    if not extents:
        raise ValueError("a run needs at least one tile")
    if any(not isinstance(e, int) or isinstance(e, bool) or e < 1 for e in extents):
        raise ValueError(f"tile extents must be positive integers, not {list(extents)!r}")
    model = ArrayModel(config)
    avail = -(model.present + model.source_latency)
    bubbles = 0
    end = 0
    prev_last = -1
    for k in extents:
        _, _, first, last, end = model.issue(avail, k)
        # a bubble: the tile held the array beyond its own rows (os: its last beat waited for
        # the drain; ws: its first row waited for its weights)
        bubbles += (last != prev_last + k) if model.os else (first != prev_last + 1)
        prev_last = last
    macs = sum(extents) * config.rows * config.cols
    return StreamTiming(cycles=end + 1, macs=macs, bubbles=bubbles)
