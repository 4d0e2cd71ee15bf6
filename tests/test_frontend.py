"""The PyTorch door: modules (yours, attention blocks, timm's DeiT) traced into workloads."""

import textwrap

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mapping.frontend import from_torch, load_module, parse_shapes
from mapping.mapper import map_workload
from mapping.workloads import WorkloadError, build
from rtl.config import preset
from tessera.cli import main


def kinds(workload):
    return [(o.name, o.kind, o.shape, o.count) for o in workload.ops]


def test_multihead_attention_becomes_projections_two_matmuls_per_head_and_a_softmax():
    mha = nn.MultiheadAttention(64, 4, batch_first=True)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.mha = mha

        def forward(self, x):
            return self.mha(x, x, x)[0]

    w = from_torch(Net(), torch.randn(2, 10, 64))
    # 2 inputs x 10 tokens; 4 heads of 16 per input
    assert kinds(w) == [("mha.in_proj", "linear", "20x64x192", 1),
                        ("mha.qk", "matmul", "10x16x10", 8),
                        ("mha.softmax", "softmax", "100", 8),
                        ("mha.av", "matmul", "10x10x16", 8),
                        ("mha.out_proj", "linear", "20x64x64", 1)]


def test_sdpa_relu_embedding_mean_cat_and_batchnorm():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(50, 32)
            self.fc = nn.Linear(32, 32)
            self.conv = nn.Conv2d(4, 8, 3, padding=1)
            self.bn = nn.BatchNorm2d(8)

        def forward(self, ids, img):
            x = self.emb(ids)                              # a lookup
            h = F.relu(self.fc(x))                         # fused: after a GEMM
            q = h.view(2, 6, 2, 16).transpose(1, 2)
            a = F.scaled_dot_product_attention(q, q, q, is_causal=True)
            y = torch.cat([h, a.transpose(1, 2).reshape(2, 6, 32)], dim=-1)   # free
            z = torch.relu(y)                              # not after a GEMM: on the vector unit
            c = self.bn(self.conv(img))                    # folded into the conv
            return z.mean(dim=1), c

    w = from_torch(Net(), torch.zeros(2, 6, dtype=torch.long), torch.randn(1, 4, 5, 5))
    assert kinds(w) == [
        ("emb", "gather", "384", 1),
        ("fc", "linear", "12x32x32", 1),
        ("scaled_dot_product_attention.qk", "matmul", "6x16x6", 4),
        ("scaled_dot_product_attention.softmax", "softmax", "36", 4),
        ("scaled_dot_product_attention.av", "matmul", "6x6x16", 4),
        ("relu_1", "relu", "768", 1),
        ("conv", "conv", "25x36x8", 1),
        ("mean", "reduce", "768", 1),
    ]
    assert map_workload(w, preset("tiny")).cycles > 0


def test_what_cannot_be_mapped_is_named_with_the_line_of_user_code(tmp_path):
    source = tmp_path / "mine.py"
    source.write_text(textwrap.dedent("""\
        import torch
        from torch import nn

        class Net(nn.Module):
            def __init__(self):
                super().__init__()
                self.fc = nn.Linear(8, 8)
                self.act = nn.SiLU()

            def forward(self, x):
                x = self.act(self.fc(x))
                return torch.sigmoid(x)
        """))
    with pytest.raises(WorkloadError) as e:
        from_torch(load_module(f"{source}:Net"), torch.randn(2, 8))
    message = str(e.value)
    assert "cannot map 2 op(s)" in message
    assert "act (SiLU) at mine.py:11 `x = self.act(self.fc(x))`" in message
    assert "sigmoid (sigmoid) at mine.py:12 `return torch.sigmoid(x)`" in message


@pytest.mark.parametrize("spec, inputs, message", [
    ("nope.py:Net", None, "module file 'nope.py' does not exist"),
    ("{src}:Gone", None, "has no 'Gone'; its modules: Net"),
    ("{src}:Net", [torch.randn(2, 9)], "the example input ((2, 9)) does not run through Net at "
                                       "fc at mine.py:7 `return self.fc(x)`: RuntimeError: "),
    ("{src}:Net", [], "Net.forward takes 1 input(s) (x); 0 example input(s) given"),
    ("{src}:make", None, "gives a int, not a torch.nn.Module"),
    ("no_such_package.x:Net", None, "cannot import 'no_such_package.x'"),
    ("model", None, "a module is named FILE.py:Name"),
])
def test_bad_modules_and_inputs_are_refused_with_the_reason(tmp_path, spec, inputs, message):
    source = tmp_path / "mine.py"
    source.write_text("from torch import nn\n\nclass Net(nn.Module):\n    def __init__(self):\n"
                      "        super().__init__(); self.fc = nn.Linear(8, 8)\n"
                      "    def forward(self, x):\n        return self.fc(x)\n\n"
                      "def make():\n    return 3\n")
    with pytest.raises(WorkloadError) as e:
        module = load_module(spec.format(src=source))
        from_torch(module, *inputs)
    assert message in str(e.value)


def test_shapes_on_the_command_line():
    assert parse_shapes("1,197,192") == [(1, 197, 192)]
    assert parse_shapes("2x10;1,3") == [(2, 10), (1, 3)]
    with pytest.raises(WorkloadError, match="positive dimensions"):
        parse_shapes("1,0")


def test_timm_deit_tiny_maps_as_it_is():
    """timm builds its model without weights (no download); attention through
    F.scaled_dot_product_attention; every op mapped, close to the built-in DeiT-Tiny."""
    model = load_module("timm:deit_tiny_patch16_224")
    assert model.blocks[0].attn.fused_attn   # the F.scaled_dot_product_attention path
    w = from_torch(model, torch.randn(1, 3, 224, 224))
    counts = {}
    for o in w.ops:
        counts[o.kind] = counts.get(o.kind, 0) + 1
    assert counts == {"conv": 1, "add": 25, "layernorm": 25, "linear": 49, "matmul": 24,
                      "softmax": 12, "gelu": 12}
    ours = build("deit-tiny")
    gemm_macs = sum(o.macs for o in w.ops if o.is_gemm)
    assert gemm_macs == sum(o.macs for o in ours.ops if o.is_gemm)


def test_the_command_line_maps_a_module(tmp_path, capsys):
    source = tmp_path / "mine.py"
    source.write_text("from torch import nn\n\nclass Net(nn.Module):\n    def __init__(self):\n"
                      "        super().__init__(); self.fc = nn.Linear(8, 16)\n"
                      "    def forward(self, x):\n        return self.fc(x)\n")
    assert main(["map", f"{source}:Net", "--input-shape", "4,8", "--preset", "tiny",
                 "--csv"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("name,kind,shape") and lines[1].startswith("fc,linear,4x8x16,")
    assert main(["map", f"{source}:Net", "--preset", "tiny"]) == 2
    assert "give the example input's shape with --input-shape" in capsys.readouterr().err
