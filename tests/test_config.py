import argparse

import pytest

from rtl.config import (
    PRESETS,
    ConfigError,
    EngineConfig,
    add_config_arguments,
    config_from_args,
    preset,
)


def test_presets_cover_the_named_design_points():
    sizes = {(c.rows, c.cols) for c in PRESETS.values()}
    assert {(4, 4), (8, 8), (16, 16), (32, 32)} <= sizes
    assert preset("default") == EngineConfig()
    assert preset("16x16") is PRESETS["default"]
    assert preset("tiny").rows == 4


@pytest.mark.parametrize("changes, message", [
    ({"rows": 0}, "rows must be a positive integer, not 0"),
    ({"cols": -3}, "cols must be a positive integer, not -3"),
    ({"rows": 2.5}, "rows must be a positive integer, not 2.5"),
    ({"dataflow": "is"}, "dataflow must be one of os, ws, not 'is'"),
    ({"acc_bits": 15}, "acc_bits (15) is too narrow for 8-bit operands: a product needs 16 bits"),
    ({"in_bits": 1}, "in_bits must be between 2 and 16, not 1"),
    ({"acc_bits": 65}, "acc_bits must be at most 64, not 65"),
    ({"mem_latency": -1}, "mem_latency must be a non-negative integer, not -1"),
    ({"clock_mhz": 0}, "clock_mhz must be a positive number, not 0"),
    ({"rows": 300}, "array of 300x16 is larger than the 256x256 the generator supports"),
    ({"banana": 1}, "unknown engine parameter(s): banana"),
])
def test_invalid_configs_are_refused_with_the_reason(changes, message):
    with pytest.raises(ConfigError) as e:
        preset("default").replace(**changes)
    assert str(e.value) == message


def test_unknown_preset_lists_the_choices():
    with pytest.raises(ConfigError, match="unknown preset 'huge'; choose one of tiny"):
        preset("huge")


def test_config_is_frozen_and_hashable():
    cfg = preset("edge")
    with pytest.raises(AttributeError):
        cfg.rows = 3
    assert cfg.key == preset("edge").replace(name="other").key
    assert cfg.key != cfg.replace(dataflow="ws").key


def test_toml(tmp_path):
    path = tmp_path / "e.toml"
    path.write_text('preset = "tiny"\ncols = 5\ndataflow = "ws"\n')
    cfg = EngineConfig.from_toml(path)
    assert (cfg.rows, cfg.cols, cfg.dataflow) == (4, 5, "ws")
    path.write_text("[engine]\nrows = 3\n")
    assert EngineConfig.from_toml(path).rows == 3
    path.write_text("rows = 3\nwidth = 9\n")
    with pytest.raises(ConfigError, match="unknown engine parameter"):
        EngineConfig.from_toml(path)
    path.write_text("rows = [\n")
    with pytest.raises(ConfigError, match="is not valid TOML"):
        EngineConfig.from_toml(path)
    with pytest.raises(ConfigError, match="does not exist"):
        EngineConfig.from_toml(tmp_path / "missing.toml")


def test_cli_flags_apply_over_preset_and_file(tmp_path):
    parser = argparse.ArgumentParser()
    add_config_arguments(parser)
    path = tmp_path / "e.toml"
    path.write_text("rows = 6\nacc_bits = 24\n")
    args = parser.parse_args(["--preset", "edge", "--config", str(path), "--cols", "3",
                              "--dataflow", "ws", "--in-bits", "4"])
    cfg = config_from_args(args)
    assert (cfg.rows, cfg.cols, cfg.dataflow, cfg.in_bits, cfg.acc_bits) == (6, 3, "ws", 4, 24)
    assert config_from_args(parser.parse_args([])) == preset("default")
