"""Whole-GEMM simulation speed: the native path against cocotb's and against a bare array.

Three measurements in one run, on one configuration (default: the 16x16 ``default`` engine and
the 128x768x768 GEMM of ``benchmarks/utilization.py``):

1. the GEMM's program on the engine through ``sim/native.py`` (Verilator with its own C++ main);
   cycles per second of the clock loop, and of the whole run (loading, reading back included);
2. the same program through cocotb (``backend="cocotb"``: VPI, ``--public-flat-rw``); its
   time is the simulator process's (loading and reading back included, the build not);
3. a bare systolic array of the same size in a plain Verilator C++ main: operands from a
   64-bit LCG every cycle, outputs folded into one port so nothing is optimized away. What a
   simulator of the array alone does is the ceiling the whole engine is compared with.

Printed as cycles per second and as ratios (native / cocotb, native / bare array); the
issue's targets are >= 400k cycles/s, >= 13x cocotb and >= 50% of the bare array.

    .venv/bin/python benchmarks/engine_speed.py [--preset default] [--shape 128,768,768]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from rtl.config import preset  # noqa: E402
from sim.build import tool_env, verilator_bin  # noqa: E402

MAIN = r"""
#include "Vbare_array.h"
#include "verilated.h"
#include <chrono>
#include <cstdio>
#include <cstdlib>
int main(int argc, char** argv) {
    unsigned long long n = std::strtoull(argv[1], nullptr, 10);
    VerilatedContext ctx;
    Vbare_array top{&ctx};
    top.rst = 1; top.clk = 0; top.eval(); top.clk = 1; top.eval(); top.rst = 0;
    auto t0 = std::chrono::steady_clock::now();
    for (unsigned long long i = 0; i < n; ++i) {
        top.clk = 0; top.eval();
        top.clk = 1; top.eval();
    }
    double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::printf("%llu %.6f %u\n", n, s, (unsigned)top.fold);
    return 0;
}
"""


def bare_array(cfg, cycles: int, directory: Path) -> float:
    """Cycles per second of the bare array under a plain C++ main (built once per config)."""
    from amaranth.back import verilog
    from amaranth.hdl import Module, Signal
    from amaranth.lib import wiring
    from amaranth.lib.wiring import Out

    from rtl.array import SystolicArray

    class Bare(wiring.Component):
        def __init__(self):
            super().__init__({"fold": Out(32)})

        def elaborate(self, platform):
            m = Module()
            m.submodules.array = array = SystolicArray(cfg)
            x = Signal(64, init=1)
            t = Signal(8)
            m.d.sync += [x.eq(x * 6364136223846793005 + 1442695040888963407), t.eq(t + 1)]
            operand = lambda i: x.bit_select((8 * i) % 57, 8).as_signed()   # noqa: E731
            for i in range(cfg.rows):
                m.d.comb += array.a[i].eq(operand(i))
                last = array.a_last[i] if cfg.dataflow == "os" else array.a_swap[i]
                m.d.comb += last.eq(t == i)
            for j in range(cfg.cols):
                m.d.comb += (array.b[j] if cfg.dataflow == "os" else array.w[j]) \
                    .eq(operand(cfg.rows + j))
            if cfg.dataflow == "ws":
                m.d.comb += array.w_shift.eq(t[7])
            outs = array.c if cfg.dataflow == "os" else array.psum
            fold = 0
            for j in range(cfg.cols):
                fold = fold ^ outs[j].as_unsigned()[:32]
            m.d.sync += self.fold.eq(fold)
            return m

    exe = directory / "obj" / "Vbare_array"
    if not exe.exists():
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "bare_array.v").write_text(verilog.convert(Bare(), name="bare_array"))
        (directory / "main.cpp").write_text(MAIN)
        with tool_env():
            subprocess.run([str(verilator_bin()), "--cc", "--exe", "--build", "-O3",
                            "--x-assign", "fast", "--x-initial", "fast", "-Wno-fatal",
                            "-Mdir", "obj", "-CFLAGS", "-O2", "bare_array.v", "main.cpp"],
                           cwd=directory, check=True, capture_output=True)
    out = subprocess.run([str(exe), str(cycles)], capture_output=True, text=True, check=True)
    n, seconds, _ = out.stdout.split()
    return int(n) / float(seconds)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="default")
    parser.add_argument("--dataflow", choices=("os", "ws"), default="os")
    parser.add_argument("--shape", default="128,768,768", help="M,K,N of the GEMM")
    parser.add_argument("--bare-cycles", type=int, default=3_000_000)
    parser.add_argument("--no-cocotb", action="store_true", help="skip the cocotb run")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    from sim.cosim import cosim_gemm

    cfg = preset(args.preset).replace(dataflow=args.dataflow)
    m, k, n = (int(x) for x in args.shape.split(","))
    print(f"{cfg.label}, GEMM {m}x{k}x{n}", file=sys.stderr)
    rows = {}
    cosim_gemm(cfg, m, k, n, backend="native")        # the build, outside the timing
    t0 = time.perf_counter()
    native = cosim_gemm(cfg, m, k, n, backend="native")
    wall = time.perf_counter() - t0
    assert native["bit_exact"] and native["cycles"] == native["predicted_cycles"]
    rows["native"] = native["cycles"] / native["sim_seconds"]
    rows["native, whole run"] = native["cycles"] / wall
    if not args.no_cocotb:
        cocotb = cosim_gemm(cfg, m, k, n, backend="cocotb")
        assert cocotb["bit_exact"] and cocotb["cycles"] == native["cycles"]
        rows["cocotb"] = cocotb["cycles"] / cocotb["sim_seconds"]
    label = cfg.label.replace(" ", "-")
    rows["bare array (C++ main)"] = bare_array(cfg, args.bare_cycles,
                                               ROOT / "build" / "bench" / f"bare-{label}")
    ratios = {"native / bare array": rows["native"] / rows["bare array (C++ main)"]}
    if "cocotb" in rows:
        ratios["native / cocotb"] = rows["native"] / rows["cocotb"]
    if args.json:
        print(json.dumps({"config": cfg.label, "shape": [m, k, n],
                          "cycles": native["cycles"], "cycles_per_second": rows,
                          "ratios": ratios}, indent=2))
        return 0
    print(f"{native['cycles']:,} cycles (= the model), bit-exact")
    for name, rate in rows.items():
        print(f"  {name:<24} {rate:>12,.0f} cycles/s")
    for name, ratio in ratios.items():
        print(f"  {name:<24} {ratio:>12.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
