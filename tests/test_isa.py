import pytest

from mapping.gemm import PlanError, plan_gemm
from rtl import isa
from rtl.config import EngineConfig, preset
from rtl.isa import AsmError, Op, Spad

CFG = preset("tiny")


def sample_program():
    return [
        isa.config(zero_point=-3, qmin=-100, qmax=127, relu=True),
        isa.load(Spad.Q, 0, 3, 16, 0x400, 16),
        isa.load(Spad.A, 0, 4, 4, 0x100, 16, "push_next"),
        isa.load("B", 8, 4, 3, 0x200, 7, "pop_next"),
        isa.compute(0, 8, 0, 4, False, "pop_prev", "push_next", "push_prev"),
        isa.store(0, 4, 4, 0x300, 4, True, "pop_prev", "push_prev", q_row=0),
        isa.store(0, 4, 3, 0x340, 12, False),
    ]


def test_encode_matches_the_amaranth_layout():
    """The fast encoder and Amaranth's own constant of insn_layout give the same bits."""
    for insn in sample_program():
        args = {name: insn.args[name] for name in isa._FIELDS[insn.op]}
        if insn.op == Op.LOAD:
            args["spad"] = Spad(args["spad"])
        reference = isa.insn_layout.const({
            "op": insn.op,
            "deps": {d: int(d in insn.deps) for d in isa._DEP_NAMES},
            "args": {insn.op.name.lower(): args},
        }).as_value().value
        assert isa.encode(insn, CFG) == reference
        assert isa.decode(reference) == insn


def test_text_round_trip():
    words = isa.assemble(sample_program(), CFG)
    text = isa.disassemble(words)
    assert "load A row=0 rows=4 length=4 addr=0x100 stride=16 push_next" in text
    assert isa.parse(text) == sample_program()
    assert isa.assemble(isa.parse(text), CFG) == words


@pytest.mark.parametrize("insn, message", [
    (isa.load(Spad.A, 4090, 10, 4, 0, 4), "rows 4090..4099 overrun scratchpad A (4096 rows)"),
    (isa.load(Spad.B, 0, 1, 5, 0, 4), "a row of 5 bytes does not fit scratchpad B's 4-byte rows"),
    (isa.load(Spad.A, 0, 0, 4, 0, 4), "row count must be at least 1, not 0"),
    (isa.load(Spad.Q, 0, 3, 16, 2, 16), "Q rows hold int32 values"),
    (isa.compute(0, 0, 0, 0, False), "extent must be at least 1, not 0"),
    (isa.compute(0, 0, 1022, 4, False), "rows 1022..1025 overrun the accumulator (1024 rows)"),
    (isa.store(0, 4, 4, 0x102, 16, False), "misaligned int32 store: addr (258) and stride (16)"),
    (isa.store(0, 4, 4, 0x100, 18, False), "misaligned int32 store"),
    (isa.store(0, 2, 4, 0x100, 3, True), "stride 3 is shorter than a stored row of 4 bytes"),
    (isa.store(0, 2, 5, 0x100, 8, True), "cols must be between 1 and 4, not 5"),
    (isa.config(zero_point=200), "zero_point 200 is outside the int8 range"),
    (isa.config(qmin=10, qmax=5), "qmin 10 is above qmax 5"),
    (isa.Insn(Op.LOAD, {**isa.load(Spad.A, 0, 1, 4, 0, 4).args}, frozenset({"pop_prev"})),
     "dependency flag(s) pop_prev make no sense on a load instruction"),
    (isa.Insn(Op.CONFIG, isa.config().args, frozenset({"push_prev"})),
     "dependency flag(s) push_prev make no sense on a config instruction"),
    (isa.compute(0, 0, 0, 65536, False), "extent=65536 does not fit its 16-bit field (0..65535)"),
    (isa.load(Spad.A, 0, 1, 4, 1 << 32, 4), "addr=4294967296 does not fit its 32-bit field"),
    (isa.load(Spad.A, 0, 1, 4, -4, 4), "addr=-4 does not fit its 32-bit field"),
    (isa.config(zero_point=40000), "zero_point=40000 does not fit its 16-bit field "
                                   "(-32768..32767)"),
    (isa.load(Spad.A, 0, 2, 4, (1 << 32) - 6, 4), "memory range 0xfffffffa..0x100000002 is "
                                                   "outside the 32-bit address space"),
    (isa.store(0, 1, 4, 0x100, 16, True, q_row=767), "rows 767..769 overrun scratchpad Q"),
])
def test_the_assembler_refuses_with_the_reason(insn, message):
    with pytest.raises(AsmError) as e:
        isa.assemble([isa.config(), insn], CFG)
    assert "instruction 1: " in str(e.value)
    assert message in str(e.value)


def test_each_refusal_names_the_code_the_hardware_raises():
    """The assembler's error carries the engine's ErrorCode for the same word (the hardware's
    side is tests/test_units.py); a value no word can hold has none."""
    cases = {
        isa.compute(0, 0, 0, 0, False): isa.ErrorCode.EXTENT,
        isa.config(qmin=3, qmax=2): isa.ErrorCode.RANGE,
        isa.store(0, 2, 4, 0x100, 3, True): isa.ErrorCode.STRIDE,
        isa.compute(0, 0, 0, 65536, False): None,
    }
    for insn, code in cases.items():   # (instructions are hashable values)
        with pytest.raises(AsmError) as e:
            isa.check(insn, CFG)
        assert e.value.code == code, str(insn)


def test_instructions_are_values():
    a = isa.store(0, 4, 4, 0x300, 4, True, "pop_prev", q_row=3)
    b = isa.store(0, 4, 4, 0x300, 4, True, "pop_prev", q_row=3)
    assert a == b and hash(a) == hash(b) and len({a, b}) == 1
    assert a.queue == isa.Queue.STORE and a.pops() == ("c2s",) and a.pushes() == ()
    assert isa.config().queue == isa.Queue.STORE   # in order with the stores around it
    assert isa.q_block_row(2, "shift") == 2 * isa.Q_BLOCK_ROWS + 2


def test_numbers_in_the_text_form_are_decimal_or_hex():
    (insn,) = isa.parse("compute a_row=010 b_row=0x10 extent=1")
    assert insn.args["a_row"] == 10 and insn.args["b_row"] == 16
    with pytest.raises(AsmError, match="field a_row given twice"):
        isa.parse("compute a_row=1 a_row=2")


def test_parse_errors_name_the_line():
    with pytest.raises(AsmError, match="line 2: unknown instruction 'jump'"):
        isa.parse("config\njump row=1")
    with pytest.raises(AsmError, match="line 1: 'colour=3' is not a field of compute"):
        isa.parse("compute colour=3")
    with pytest.raises(AsmError, match="load needs a scratchpad"):
        isa.parse("load row=1")


@pytest.mark.parametrize("dataflow", ["os", "ws"])
@pytest.mark.parametrize("shape", [(1, 1, 1), (37, 53, 29), (128, 768, 768), (197, 192, 576)])
def test_gemm_plans_assemble_and_cover_every_output(dataflow, shape):
    cfg = preset("default").replace(dataflow=dataflow)
    m, k, n = shape
    plan = plan_gemm(cfg, m, k, n, requant=True)
    isa.assemble(plan.program, cfg)
    covered = set()
    macs = 0
    for insn in plan.program:
        if insn.op == Op.STORE:
            a = insn.args
            base = a["addr"] - plan.layout.c_addr
            for r in range(a["rows"]):
                row0 = base + r * a["stride"]
                covered |= {row0 + j for j in range(a["cols"])}
        if insn.op == Op.COMPUTE:
            macs += insn.args["extent"]
    assert covered == {i * plan.layout.ldc + j for i in range(m) for j in range(n)}


def test_plan_errors():
    with pytest.raises(PlanError, match="GEMM dimension K must be a positive integer, not 0"):
        plan_gemm(CFG, 4, 0, 4)
    small = EngineConfig(rows=4, cols=4, spad_kib=1, acc_kib=1)
    with pytest.raises(PlanError, match="requantization parameter rows"):
        plan_gemm(small, 4, 4, 4 * 257, requant=True)
