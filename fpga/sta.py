"""Every endpoint's slack, from the SDF nextpnr writes after routing.

nextpnr's report names one critical path per clock; closing timing needs the whole picture:
how many endpoints fail, in which part of the design, by how much. This reads the routed
design's delays (``--sdf``: each cell's arcs, each net's interconnect delays, each register's
setup time) and propagates arrival times from every register output (and block RAM, DSP)
through the combinational arcs, as nextpnr's own analysis does for a single clock::

    python -m fpga.sta build/fpga/<board>-<hash> [--period-ns 10] [--paths 8]

prints the endpoints that fail, grouped by hierarchy (``engine.requant``, ``link.fsm``, ...),
with the worst slack of each group and its path.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import Counter, defaultdict, deque
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Endpoint", "TimingReport", "analyze", "parse_sdf"]

#: pins whose arcs start at a clock edge (registers, block RAM, DSP, LUT RAM write clock)
CLOCK_PINS = {"CLK", "CLKA", "CLKB", "WCK", "CLK0", "CLK1", "CLK2", "CLK3"}

_TOKEN = re.compile(r'\(|\)|"(?:[^"\\]|\\.)*"|(?:[^\s()"\\]|\\.)+')


class SdfError(ValueError):
    """The file is not an SDF file this reader understands."""


@dataclass
class Endpoint:
    pin: str              # "cell/PORT"
    slack_ps: float
    path: list[tuple[str, float]]   # (pin, arrival in ps), startpoint first


@dataclass
class TimingReport:
    period_ps: float
    endpoints: int
    failing: list[Endpoint] = field(default_factory=list)

    @property
    def worst_ps(self) -> float | None:
        return self.failing[0].slack_ps if self.failing else None

    def groups(self, depth: int = 2) -> list[tuple[str, int, float]]:
        """(hierarchy prefix, failing endpoints, worst slack), most endpoints first."""
        count: Counter[str] = Counter()
        worst: dict[str, float] = {}
        for e in self.failing:
            key = group_of(e.pin, depth)
            count[key] += 1
            worst[key] = min(worst.get(key, 0.0), e.slack_ps)
        return [(k, n, worst[k]) for k, n in count.most_common()]


def group_of(pin: str, depth: int = 2) -> str:
    """``engine.requant$12.core.x4_1_TRELLIS_FF_Q/DI`` -> ``engine.requant`` (depth 2)."""
    cell = pin.rsplit("/", 1)[0]
    parts = [re.sub(r"\$\d+$", "", p) for p in cell.split(".")]
    parts = [p.split("_TRELLIS")[0].split("$")[0] for p in parts]
    return ".".join(parts[:depth])


def _tree(text: str) -> list:
    stack: list[list] = [[]]
    for tok in _TOKEN.findall(text):
        if tok == "(":
            stack.append([])
        elif tok == ")":
            if len(stack) < 2:
                raise SdfError("unbalanced parentheses")
            done = stack.pop()
            stack[-1].append(done)
        else:
            stack[-1].append(tok)
    if len(stack) != 1 or not stack[0] or stack[0][0][:1] != ["DELAYFILE"]:
        raise SdfError("not an SDF DELAYFILE")
    return stack[0][0]


def _name(s: str) -> str:
    return re.sub(r"\\(.)", r"\1", s.strip('"'))


def _delay(triples) -> float:
    """The largest value of ``(min:typ:max)`` triples (rise and fall)."""
    best = 0.0
    for t in triples:
        for part in (t if isinstance(t, list) else [t]):
            if isinstance(part, str):
                for v in part.split(":"):
                    try:
                        best = max(best, float(v))
                    except ValueError:
                        pass
    return best


def parse_sdf(text: str):
    """(arcs: pin -> [(pin, ps)], starts: pin -> clock-to-output ps, setups: pin -> ps)."""
    arcs: dict[str, list[tuple[str, float]]] = defaultdict(list)
    starts: dict[str, float] = {}
    setups: dict[str, float] = {}
    for cell in _tree(text)[1:]:
        if not isinstance(cell, list) or cell[:1] != ["CELL"]:
            continue
        inst = ""
        for item in cell[1:]:
            if isinstance(item, list) and item[:1] == ["INSTANCE"]:
                inst = _name(item[1]) if len(item) > 1 else ""
        for item in cell[1:]:
            if not isinstance(item, list):
                continue
            if item[:1] == ["DELAY"]:
                for block in item[1:]:
                    for arc in block[1:]:
                        if arc[:1] == ["IOPATH"]:
                            src, dst, d = arc[1], arc[2], _delay(arc[3:])
                            if isinstance(src, list) or src in CLOCK_PINS:
                                pin = f"{inst}/{dst}"
                                starts[pin] = max(starts.get(pin, 0.0), d)
                            else:
                                arcs[f"{inst}/{src}"].append((f"{inst}/{dst}", d))
                        elif arc[:1] == ["INTERCONNECT"]:
                            arcs[_name(arc[1])].append((_name(arc[2]), _delay(arc[3:])))
            elif item[:1] == ["TIMINGCHECK"]:
                for check in item[1:]:
                    if check[:1] in (["SETUP"], ["SETUPHOLD"]):
                        data = check[1][-1] if isinstance(check[1], list) else check[1]
                        pin = f"{inst}/{data}"
                        setups[pin] = max(setups.get(pin, 0.0), _delay(check[3:4]))
    return arcs, starts, setups


def analyze(sdf: str | Path, *, period_ns: float = 10.0) -> TimingReport:
    """Slack of every register input (and block RAM / DSP input with a setup check) at
    ``period_ns``; the failing ones worst first, each with its path."""
    arcs, starts, setups = parse_sdf(Path(sdf).read_text())
    fanin: Counter[str] = Counter(b for outs in arcs.values() for b, _ in outs)
    arrival = dict(starts)
    prev: dict[str, str] = {}
    queue = deque(p for p in set(arcs) | set(starts) if fanin[p] == 0)
    while queue:                      # longest path, in topological order
        pin = queue.popleft()
        here = arrival.get(pin)
        for nxt, d in arcs.get(pin, ()):
            if here is not None and here + d > arrival.get(nxt, float("-inf")):
                arrival[nxt] = here + d
                prev[nxt] = pin
            fanin[nxt] -= 1
            if fanin[nxt] == 0:
                queue.append(nxt)
    period = period_ns * 1000.0
    report = TimingReport(period_ps=period, endpoints=0)
    for pin, setup in setups.items():
        if pin not in arrival:
            continue
        report.endpoints += 1
        slack = period - setup - arrival[pin]
        if slack < 0:
            path = [pin]
            while path[-1] in prev:
                path.append(prev[path[-1]])
            report.failing.append(Endpoint(pin, slack, [(p, arrival.get(p, 0.0))
                                                         for p in reversed(path)]))
    report.failing.sort(key=lambda e: e.slack_ps)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("directory", type=Path, help="a build directory holding top.sdf")
    parser.add_argument("--period-ns", type=float, default=10.0)
    parser.add_argument("--paths", type=int, default=8, help="paths to show, one per group")
    parser.add_argument("--depth", type=int, default=3, help="hierarchy levels per group")
    args = parser.parse_args(argv)
    sdf = args.directory / "top.sdf"
    if not sdf.exists():
        print(f"error: {sdf} does not exist (build with place and route first)", file=sys.stderr)
        return 2
    try:
        r = analyze(sdf, period_ns=args.period_ns)
    except SdfError as e:
        print(f"error: {sdf}: {e}", file=sys.stderr)
        return 2
    print(f"{r.endpoints:,} endpoints, {len(r.failing):,} fail at {args.period_ns:g} ns"
          + (f", worst {r.worst_ps:.0f} ps" if r.failing else ""))
    for key, n, worst in r.groups(args.depth):
        print(f"{n:7,}  {worst:8.0f} ps  {key}")
    shown: set[str] = set()
    for e in r.failing:
        key = group_of(e.pin, args.depth)
        if key in shown or len(shown) >= args.paths:
            continue
        shown.add(key)
        print(f"\n{e.slack_ps:.0f} ps at {e.pin}")
        for pin, t in e.path:
            print(f"  {t:8.0f}  {pin}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
