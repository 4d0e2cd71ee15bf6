"""cocotb driver and monitor for programs on the engine (used by ``sim.cosim``).

The job (``TESSERA_JOB``, JSON) names the program words, a memory image and the regions to read
back. The driver writes both through the simulator's backdoor, pulses ``start`` and waits for
``done`` with no Python in the per-cycle loop; the monitor reads counters and the result regions
and writes them to the job's ``out`` file. Checking against the golden model is the caller's.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, RisingEdge, with_timeout

from rtl.counters import counter_layout

COUNTERS = [name for name, _ in counter_layout]


@cocotb.test()
async def run_programs(dut):
    spec = json.loads(Path(os.environ["TESSERA_JOB"]).read_text())
    Clock(dut.clk, 10, unit="ns").start()
    storage = dut.mem.storage
    written: set[int] = set()
    for job in spec["jobs"]:
        w = job["bytes_per_word"]
        dut.rst.value = 1
        dut.start.value = 0
        await ClockCycles(dut.clk, 2)
        dut.rst.value = 0

        # Driver: program and memory image through the backdoor (clearing the last job's).
        words = [int(x, 16) for x in job["program"]]
        for i, word in enumerate(words):
            dut.imem[i].value = word
        image = Path(job["memory"]).read_bytes()
        now: set[int] = set()
        for i in range(0, len(image), w):
            word = int.from_bytes(image[i:i + w], "little")
            if word:
                storage[i // w].value = word
                now.add(i // w)
        for i in written - now:
            storage[i].value = 0
        dut.n_insns.value = len(words)
        dut.stall.value = job.get("stall", 0)
        dut.start.value = 1
        await RisingEdge(dut.clk)
        dut.start.value = 0
        await with_timeout(RisingEdge(dut.done), job["timeout_cycles"] * 10, "ns")
        await ClockCycles(dut.clk, 1)

        # Monitor: counters and result regions.
        flat = int(dut.counters.value)
        counters = {name: (flat >> (32 * i)) & 0xFFFFFFFF for i, name in enumerate(COUNTERS)}
        regions = []
        for addr, length in job["read"]:
            first, last = addr // w, (addr + length - 1) // w
            raw = b"".join(int(storage[i].value).to_bytes(w, "little")
                           for i in range(first, last + 1))
            regions.append(raw[addr - first * w: addr - first * w + length].hex())
            # results count as written words too: clear them before the next job
            now |= set(range(first, last + 1))
        written = now
        result = {
            "cycles": int(dut.cycles.value),
            "error": int(dut.error.value),
            "error_code": int(dut.error_code.value),
            "counters": counters,
            "mem_reads": int(dut.mem_reads.value),
            "mem_writes": int(dut.mem_writes.value),
            "regions": regions,
        }
        with open(job["out"], "w") as f:
            json.dump(result, f)
