"""Cycle model of the tile engine: the engine's timing written as formulas.

The RTL blocks state their latencies as properties; this module composes them into the cycle a
stream of tiles finishes, with no Python simulation of the hardware. Simulation asserts these
predictions equal what the RTL measures, cycle for cycle.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from rtl.config import EngineConfig
from rtl.tile import TileTiming

__all__ = ["StreamTiming", "tile_stream_cycles"]


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
    """Predict a run of tiles; ``extents`` are the tiles' K (``os``) or M (``ws``).

    Output-stationary: one beat per cycle, but a tile's last beat waits until the previous
    tile's last beat is ``min_tile_cycles`` (= rows) behind it, so the drain keeps up; results
    leave ``latency`` cycles after a tile's last beat, rows beats long.

    Weight-stationary: a tile's ``rows`` weight beats load one per cycle, no earlier than
    ``weight_swap_cycles`` after the previous tile's first row (when its swap wave has passed
    every PE); its first row of A enters once they are in, then one row per cycle; row ``m``
    of C leaves ``latency`` cycles after row ``m`` of A.
    """
    if not extents:
        raise ValueError("a run needs at least one tile")
    if any(not isinstance(e, int) or e < 1 for e in extents):
        raise ValueError(f"tile extents must be positive integers, not {list(extents)!r}")
    engine = TileTiming(config)
    r, c = config.rows, config.cols
    t = 0
    bubbles = 0
    if config.dataflow == "os":
        prev_last = -engine.min_tile_cycles
        for k in extents:
            ready = t + k - 1
            last = max(ready, prev_last + engine.min_tile_cycles)
            bubbles += last != ready
            prev_last = last
            t = last + 1
        end = prev_last + engine.latency + r - 1
        macs = sum(extents) * r * c
    else:
        weights_free = 0  # first cycle the shadow weight chain may shift
        b_next = 0        # next cycle the weight stream can deliver
        last_row = 0
        for m in extents:
            load = max(b_next, weights_free)
            full = load + r
            b_next = full
            first = max(t, full)
            bubbles += first != t
            weights_free = first + engine.weight_swap_cycles
            last_row = first + m - 1
            t = first + m
        end = last_row + engine.latency
        macs = sum(extents) * r * c
    return StreamTiming(cycles=end + 1, macs=macs, bubbles=bubbles)
