"""The cycle model against the whole engine in amaranth.sim, instruction by instruction: the
cycle each unit takes each instruction, not only the total (no Verilator needed)."""

import random

import pytest
from engine_trace import trace

from mapping.gemm import plan_gemm
from mapping.operands import make_operands, memory_image
from mapping.program import program_cycles
from rtl import isa
from rtl.config import EngineConfig
from rtl.isa import Spad


def _assert_exact(cfg, program, image, stall=0):
    got = trace(cfg, program, image, stall=stall)
    want = program_cycles(cfg, program, stall=stall)
    assert not got.error
    for n, (insn, start, (predicted, _)) in enumerate(zip(program, got.starts, want.per_insn,
                                                          strict=True)):
        assert start == predicted, f"instruction {n} ({insn}): RTL {start}, model {predicted}"
    assert got.cycles == want.cycles


def test_the_held_out_gemm_is_exact_instruction_by_instruction():
    """The shape that was two cycles off: 780 one-row loads fill the load queue, and the
    dispatcher's decode FIFO holds three instructions behind a full queue."""
    cfg = EngineConfig(rows=2, cols=7, dataflow="ws")
    ops = make_operands(5, 129, 64, seed=3, requant=False)
    plan = plan_gemm(cfg, 5, 129, 64)
    _assert_exact(cfg, plan.program, memory_image(plan, ops))


@pytest.mark.parametrize("stall", [64, 200])
def test_with_memory_stalls_the_model_knows_each_refusal(stall):
    cfg = EngineConfig(rows=3, cols=5, dataflow="os", spad_kib=4, acc_kib=4,
                       mem_bytes_per_cycle=4, mem_latency=3)
    ops = make_operands(7, 30, 12, seed=stall, requant=True)
    plan = plan_gemm(cfg, 7, 30, 12, requant=True, zero_point=ops.zero_point)
    _assert_exact(cfg, plan.program, memory_image(plan, ops), stall=stall)


def test_a_hand_made_program_that_fills_every_queue():
    """Short computes that outrun the array (the descriptor FIFOs and then the compute queue
    fill), loads and stores around them holding tokens, a CONFIG between stores."""
    cfg = EngineConfig(rows=2, cols=3, dataflow="ws", spad_kib=2, acc_kib=2,
                       mem_bytes_per_cycle=2, mem_latency=5)
    rng = random.Random(4)
    program = [isa.load(Spad.A, 0, 8, 2, 0, 2), isa.load(Spad.B, 0, 8, 3, 64, 3, "push_next")]
    for n in range(90):
        program.append(isa.compute(rng.randint(0, 6), rng.randint(0, 6), rng.randint(0, 20),
                                   rng.randint(1, 3), n % 3 != 0,
                                   *(["pop_prev"] if n == 0 else [])))
    program[-1] = isa.Insn(program[-1].op, program[-1].args, frozenset({"push_next"}))
    program += [isa.load(Spad.A, 8, 70, 2, 128, 2) for _ in range(3)]
    program += [isa.store(0, 4, 3, 0x400, 12, False, "pop_prev"), isa.config(zero_point=2),
                isa.store(4, 3, 3, 0x440, 12, False)]
    image = bytes(rng.randrange(256) for _ in range(2048))
    _assert_exact(cfg, program, image)
