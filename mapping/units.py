"""Numbers for people: times, energies and sizes scaled to a unit that reads well.

Tables, summaries and plot axes show ``4.779 s``, ``52.86 J``, ``1.5 MiB``; machine outputs (CSV,
JSON) keep fixed, stated units (cycles, ms, pJ, bytes) and use :func:`clean` so a float prints
as what it is (``578381414.4``, not ``578381414.4000001``).
"""

from __future__ import annotations

import math

__all__ = ["SCALES", "clean", "format_bytes", "format_energy_pj", "format_time_ms", "scale_for"]

#: (factor from the base unit, name), smallest first: time in ms, energy in pJ
SCALES = {
    "time_ms": [(1e-6, "ns"), (1e-3, "us"), (1.0, "ms"), (1e3, "s")],
    "energy_pj": [(1.0, "pJ"), (1e3, "nJ"), (1e6, "uJ"), (1e9, "mJ"), (1e12, "J")],
}


def scale_for(kind: str, value: float) -> tuple[float, str]:
    """The factor and unit name that put ``value`` (in the base unit of ``kind``) between 1
    and 1000, or as close as the units allow."""
    scales = SCALES[kind]
    if value == 0 or not math.isfinite(value):
        return scales[0] if kind == "energy_pj" else scales[2]
    chosen = scales[0]
    for factor, name in scales:
        if abs(value) >= factor:
            chosen = (factor, name)
    return chosen


def _format(kind: str, value: float, digits: int) -> str:
    factor, name = scale_for(kind, value)
    scaled = value / factor
    # three significant digits before the point at most: 4.78, 47.8, 478
    decimals = max(0, digits - 1 - int(math.floor(math.log10(abs(scaled))))) if scaled else 0
    return f"{scaled:,.{decimals}f} {name}"


def format_time_ms(ms: float, digits: int = 4) -> str:
    """A time given in milliseconds, as ``123 ns``, ``4.779 s``..."""
    return _format("time_ms", ms, digits)


def format_energy_pj(pj: float, digits: int = 4) -> str:
    """An energy given in picojoules, as ``12.3 nJ``, ``52.86 J``..."""
    return _format("energy_pj", pj, digits)


def format_bytes(n: float) -> str:
    """A size in bytes, as ``512 B``, ``1.5 KiB``, ``3.25 MiB``..."""
    for factor, name in ((1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")):
        if abs(n) >= factor:
            return f"{n / factor:,.3g} {name}" if n / factor < 1000 else \
                f"{n / factor:,.0f} {name}"
    return f"{n:,.0f} B"


def clean(value: float, digits: int = 12) -> float | int:
    """A float rounded to ``digits`` significant digits (an integer if it is one), for CSV and
    JSON: the representation error of sums of floats is not a figure."""
    if isinstance(value, bool) or not isinstance(value, float):
        return value
    if not math.isfinite(value) or value == 0:
        return value
    rounded = round(value, digits - 1 - int(math.floor(math.log10(abs(value)))))
    return int(rounded) if rounded.is_integer() and abs(rounded) < 1 << 53 else rounded
