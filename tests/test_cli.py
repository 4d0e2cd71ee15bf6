import json
import subprocess
import sys

import pytest

from sim.build import WAIVERS, verilator_bin
from tessera.cli import main


@pytest.mark.parametrize("dataflow", ["os", "ws"])
def test_verilog_for_a_non_square_array_lints_clean(tmp_path, dataflow):
    out = tmp_path / "x.v"
    assert main(["verilog", "--rows", "3", "--cols", "5", "--dataflow", dataflow,
                 "-o", str(out)]) == 0
    text = out.read_text()
    assert "module tessera_tile(" in text
    lint = subprocess.run([str(verilator_bin()), "--lint-only", "-Wall", str(WAIVERS), str(out)],
                          capture_output=True, text=True)
    assert lint.returncode == 0, lint.stdout + lint.stderr


@pytest.mark.parametrize("dataflow", ["os", "ws"])
def test_verilog_of_the_programmable_engine_lints_clean(tmp_path, dataflow, capsys):
    out = tmp_path / "e.v"
    assert main(["verilog", "--top", "engine", "--rows", "3", "--cols", "5", "--spad-kib", "2",
                 "--acc-kib", "2", "--dataflow", dataflow, "-o", str(out), "--lint"]) == 0
    assert "clean" in capsys.readouterr().err


def test_verilog_lint_flag(tmp_path, capsys):
    assert main(["verilog", "--preset", "tiny", "-o", str(tmp_path / "t.v"), "--lint"]) == 0
    assert "clean" in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["verilog", "--rows", "0", "-o", "x.v"], "rows must be a positive integer, not 0"),
    (["verilog", "--dataflow", "rs", "-o", "x.v"], "dataflow must be one of os, ws"),
    (["verilog", "--acc-bits", "8", "-o", "x.v"], "acc_bits (8) is too narrow"),
    (["sim", "--preset", "nope"], "unknown preset 'nope'"),
    (["cosim", "gemm", "0", "5", "5", "--preset", "tiny"],
     "GEMM dimension M must be a positive integer, not 0"),
    (["cosim", "gemm", "4", "4", "4", "--preset", "tiny", "--stall", "300"],
     "--stall is a chance out of 256 that memory refuses a request (0 to 255), not 300"),
    # shapes: refused before anything is allocated or built
    (["cosim", "gemm", "-1", "5", "5", "--preset", "tiny"],
     "GEMM dimension M must be a positive integer, not -1"),
    (["cosim", "gemm", "100000", "100000", "100000", "--preset", "tiny"],
     "exceed the 32-bit address space"),
    (["cosim", "gemm", "8000", "8000", "4000", "--preset", "tiny"],
     "co-simulation holds at most 64 MiB"),
    # options
    (["verilog", "--name", "bad name", "-o", "x.v"], "--name must be a Verilog identifier"),
    (["map", "deit-tiny", "--acc-bits", "16"], "the requantizer needs acc_bits of at least 17"),
    (["map", "deit-tiny", "--mem-bytes-per-cycle", "100000"],
     "mem_bytes_per_cycle must be at most 1024"),
    (["map", "deit-tiny", "--spad-kib", "10000000"], "spad_kib = 10000000 gives scratchpad A"),
    (["verilog", "--top", "engine", "--mem-bytes-per-cycle", "100000", "-o", "x.v"],
     "mem_bytes_per_cycle must be at most 1024"),
    (["map", "deit-tiny", "--input-shape", "1,3"], "--input-shape applies to a PyTorch module"),
])
def test_bad_configs_exit_2_with_the_reason(argv, message, capsys):
    assert main(argv) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("what", ["config dir", "output dir", "csv dir", "utf16 csv", "bom csv",
                                  "binary csv", "energy number", "spec scheduler", "asm text",
                                  "disasm text", "bad toml"])
def test_user_mistakes_with_files_get_a_message_not_a_traceback(tmp_path, capsys, what):
    """One case per kind of file mistake; each message names the file and the problem."""
    csv_text = "Layer,M,N,K\nfc,4,4,4\n"
    spec = tmp_path / "spec.toml"
    spec.write_text('workloads = ["deit-tiny"]\n[axes]\nrows = [4]\n')
    cases = {
        "config dir": (["map", "deit-tiny", "--config", str(tmp_path)], 2, "is a directory"),
        "output dir": (["verilog", "--preset", "tiny", "-o", str(tmp_path)], 2,
                       "is a directory: give a file name"),
        "csv dir": (["map", str(tmp_path)], 2, "is a directory, not a model"),
        "utf16 csv": (["map", "t16.csv", "--preset", "tiny"], 0, None),
        "bom csv": (["map", "bom.csv", "--preset", "tiny"], 0, None),
        "binary csv": (["map", "bin.csv", "--preset", "tiny"], 2,
                       "is not text in UTF-8 (or UTF-16 with a byte-order mark)"),
        "energy number": (["map", "deit-tiny", "--energy-table", "e.toml"], 2,
                          "[energy] must be a table of figures in pJ, not 5"),
        "spec scheduler": (["sweep", str(spec), "-o", str(tmp_path / "o"), "--scheduler",
                            "nonsense", "--quiet"], 2,
                           "a Dask scheduler address looks like tcp://host:8786"),
        "asm text": (["asm", "p.s", "--preset", "tiny"], 2, "line 2: compute: extent=70000 "
                                                           "does not fit its 16-bit field"),
        "disasm text": (["disasm", "w.hex"], 2, "line 1: 'zz' is not a hexadecimal"),
        "bad toml": (["map", "deit-tiny", "--config", "bad.toml"], 2, "is not valid TOML"),
    }
    (tmp_path / "t16.csv").write_text(csv_text, encoding="utf-16")
    (tmp_path / "bom.csv").write_text(csv_text, encoding="utf-8-sig")
    (tmp_path / "bin.csv").write_bytes(b"\x80\x81\xfe" * 10)
    (tmp_path / "e.toml").write_text("energy = 5\n")
    (tmp_path / "p.s").write_text("config\ncompute extent=70000\n")
    (tmp_path / "w.hex").write_text("zz\n")
    (tmp_path / "bad.toml").write_text("rows = = 4\n")
    argv, code, message = cases[what]
    import os

    here = os.getcwd()
    os.chdir(tmp_path)
    try:
        assert main(argv) == code
    finally:
        os.chdir(here)
    err = capsys.readouterr().err
    assert "Traceback" not in err
    if message:
        assert message in err, err


def test_console_script_is_installed():
    done = subprocess.run([sys.executable, "-m", "tessera.cli", "--help"], capture_output=True,
                          text=True)
    assert done.returncode == 0 and "verilog" in done.stdout


@pytest.mark.sim
def test_sim_command_json(capsys):
    code = main(["sim", "--rows", "2", "--cols", "2", "-k", "corner", "--programs", "6",
                 "--json"])
    out = capsys.readouterr().out
    assert code == 0, out
    tiles, programs, softmax = json.loads(out)
    assert (tiles["kind"], programs["kind"], softmax["kind"]) == ("tiles", "programs", "softmax")
    assert tiles["tests"] == 1 and tiles["passed"] == 1 and tiles["elements"] > 0
    assert programs["tests"] == programs["passed"] == 6 and programs["elements"] > 0
    assert softmax["tests"] == softmax["passed"] == 3 and softmax["elements"] > 0


def test_cosim_op_lists_ops_and_refuses_what_has_no_rtl(capsys):
    assert main(["cosim", "op", "bert-base", "--seq", "16", "--preset", "tiny"]) == 0
    listing = capsys.readouterr().out
    assert "layer.qkv" in listing and "no RTL unit yet" in listing
    assert main(["cosim", "op", "bert-base", "layer.gelu", "--seq", "16"]) == 2
    assert "modeled vector unit" in capsys.readouterr().err
    assert main(["cosim", "op", "bert-base", "nonsense", "--seq", "16"]) == 2
    assert "has no op 'nonsense'" in capsys.readouterr().err
    assert main(["cosim", "op", "no-such-model", "x"]) == 2
    assert "error" in capsys.readouterr().err


def test_map_explains_each_blocking(capsys):
    assert main(["map", "gemm", "64", "64", "64", "--preset", "tiny", "--explain"]) == 0
    out = capsys.readouterr().out
    assert "blocking: mb=" in out and "blockings replayed" in out


def test_a_closed_pipe_ends_the_command_quietly():
    """``tessera ... | head``: no BrokenPipeError traceback when the reader has gone away (here
    before the first write, so the writer meets the closed pipe for sure)."""
    import os

    read, write = os.pipe()
    os.close(read)
    proc = subprocess.run([sys.executable, "-m", "tessera.cli", "map", "deit-tiny", "--json"],
                          stdout=write, stderr=subprocess.PIPE, timeout=120)
    os.close(write)
    assert b"Traceback" not in proc.stderr and b"BrokenPipe" not in proc.stderr, \
        proc.stderr.decode()
    assert proc.returncode == 141   # 128 + SIGPIPE, as Unix tools end


def test_cosim_softmax_flags_are_checked(capsys):
    # --causal masks a softmax: alone it is refused before anything is built
    assert main(["cosim", "gemm", "4", "4", "4", "--preset", "tiny", "--causal"]) == 2
    assert "--causal masks the softmax" in capsys.readouterr().err
    # an x0 outside Shiftmax's range, and rows of scores the accumulator cannot hold whole
    assert main(["cosim", "gemm", "4", "4", "4", "--preset", "tiny", "--softmax", "0"]) == 2
    assert "softmax x0 must be an integer in [-65535, -1]" in capsys.readouterr().err
    assert main(["cosim", "gemm", "4", "4", "700", "--preset", "tiny", "--softmax",
                 "-3"]) == 2
    assert "a softmax over rows of 700" in capsys.readouterr().err
