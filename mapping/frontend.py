"""The PyTorch door: a ``torch.nn.Module`` (yours, timm's, torchvision-style blocks) as a workload.

:func:`from_torch` traces a module with ``torch.fx``, runs an example input through it for the
shapes, and lists the ops the engine runs: linear layers and matmuls as GEMMs, convolutions as
im2col GEMMs (depthwise as ``dwconv``), attention (``nn.MultiheadAttention``,
``F.scaled_dot_product_attention``) as its projections, its two matmuls per head and its
softmax, the rest on the vector unit (LayerNorm, GELU, softmax, residual adds, scaling, ReLU
unless it follows a GEMM, where the requantizer applies it for free, embedding lookups, means).
Shape changes, ``cat``, dropout and identities cost nothing; BatchNorm after a convolution or a
linear layer folds into its weights. An op it cannot map is refused naming the op and the line
of your code that calls it.

:func:`load_module` turns what a user types (``model.py:Net``, ``pkg.module:factory``,
``timm:deit_tiny_patch16_224``) into a module, and the example input's shape into a tensor.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import io
import math
import re
import sys
import types
from pathlib import Path
from typing import Any

from .workloads import Op, Workload, WorkloadError

__all__ = ["from_torch", "load_module", "parse_shapes"]

#: tensor methods that only change the view of the data
_FREE_METHODS = {"view", "reshape", "permute", "transpose", "flatten", "contiguous", "size",
                 "unsqueeze", "squeeze", "chunk", "split", "expand", "unbind", "t", "dim",
                 "type_as", "to", "float", "type", "expand_as", "repeat", "clone", "detach",
                 "unflatten", "narrow", "movedim", "__getitem__"}


def _where(node: Any) -> str:
    """`` at file.py:12 `code` `` for a traced node, from the stack torch.fx recorded."""
    trace = node.meta.get("stack_trace") or getattr(node, "stack_trace", None) or ""
    frames = re.findall(r'File "([^"]+)", line (\d+), in [^\n]*\n\s*([^\n]*)', trace)
    # the innermost frame that is not torch's own (fx records its tracer's frames too)
    frames = [f for f in frames if f"{Path('torch')}{Path('/').anchor}" not in f[0]
              and "/torch/" not in f[0]]
    if not frames:
        return ""
    path, line, code = frames[-1]
    return f" at {Path(path).name}:{line} `{code.strip()}`"


def from_torch(module: Any, *example_inputs: Any, name: str | None = None) -> Workload:
    """Trace ``module`` with ``torch.fx``, propagate ``example_inputs`` through it, and list
    the ops the engine runs (see the module docstring). Refuses, naming each, the ops it cannot
    map; a module fx cannot trace or an input that does not fit is refused with the reason."""
    import operator

    import torch
    import torch.nn.functional as F
    from torch import fx
    from torch.fx.passes.shape_prop import ShapeProp

    title = name or type(module).__name__
    if not isinstance(module, torch.nn.Module):
        raise WorkloadError(f"{title} is a {type(module).__name__}, not a torch.nn.Module")

    class Tracer(fx.Tracer):
        # keep the user's lines for messages; attention modules stay whole (expanded below)
        record_stack_traces = True

        def is_leaf_module(self, m: Any, qualname: str) -> bool:
            if isinstance(m, torch.nn.MultiheadAttention):
                return True
            return super().is_leaf_module(m, qualname)

    module = module.eval()
    try:
        graph = Tracer().trace(module)
    except Exception as e:  # tracing failures come in many types
        raise WorkloadError(f"torch.fx cannot trace {title}: {type(e).__name__}: {e}") \
            from None
    gm = fx.GraphModule(module, graph)
    shapes = ", ".join(str(tuple(x.shape)) if hasattr(x, "shape") else repr(x)
                       for x in example_inputs) or "none"
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    if len(example_inputs) < len([p for p in placeholders if not p.args]):
        raise WorkloadError(f"{title}.forward takes {len(placeholders)} input(s) "
                            f"({', '.join(p.name for p in placeholders)}); "
                            f"{len(example_inputs)} example input(s) given")
    try:
        # (ShapeProp prints the traceback of a failing op before it raises: not for users)
        with torch.no_grad(), contextlib.redirect_stderr(io.StringIO()):
            ShapeProp(gm).propagate(*example_inputs)
    except Exception as e:
        # ShapeProp wraps the error in a page about the graph: name the op and the cause
        cause = e.__cause__ or e
        at = re.search(r"node=%(\w+)", str(e))
        node = next((n for n in gm.graph.nodes if at and n.name == at.group(1)), None)
        where = f" at {node.name}{_where(node)}" if node is not None else ""
        first = str(cause).strip().splitlines()[0] if str(cause).strip() else ""
        raise WorkloadError(f"the example input ({shapes}) does not run through {title}"
                            f"{where}: {type(cause).__name__}: {first}") from None
    modules = dict(gm.named_modules())
    ops: list[Op] = []
    bad: list[str] = []
    gemm_outputs: set[str] = set()   # nodes a GEMM produces (a ReLU after one is fused)

    def shape(node: Any) -> tuple[int, ...]:
        meta = node.meta.get("tensor_meta") if isinstance(node, fx.Node) else None
        if isinstance(meta, (tuple, list)) and not hasattr(meta, "shape"):
            meta = meta[0] if meta else None   # a module returning several tensors
        return tuple(meta.shape) if meta is not None and hasattr(meta, "shape") else ()

    def numel(node: Any) -> int:
        return math.prod(shape(node)) if shape(node) else 0

    def add(op: Op, node: Any, gemm: bool = False) -> None:
        ops.append(op)
        if gemm:
            gemm_outputs.add(node.name)

    def matmul(label: str, node: Any, a: tuple[int, ...], b: tuple[int, ...]) -> None:
        if len(a) < 2 or len(b) < 2:
            bad.append(f"{label} (matmul of {len(a)}-d by {len(b)}-d tensors){_where(node)}")
            return
        batch = math.prod(torch.broadcast_shapes(a[:-2], b[:-2]))
        add(Op(label, "matmul", m=a[-2], k=a[-1], n=b[-1], count=batch), node, gemm=True)

    def attention(label: str, node: Any, batch: int, lq: int, lk: int, d: int, dv: int) -> None:
        """QK^T, softmax and (softmax)V, for ``batch`` heads x inputs."""
        add(Op(f"{label}.qk", "matmul", m=lq, k=d, n=lk, count=batch), node, gemm=True)
        add(Op(f"{label}.softmax", "softmax", elements=lq * lk, count=batch), node)
        add(Op(f"{label}.av", "matmul", m=lq, k=lk, n=dv, count=batch), node, gemm=True)

    def multihead(label: str, node: Any, mod: Any) -> None:
        q, k, v = (node.args + (None, None, None))[:3]
        q = q if q is not None else node.kwargs.get("query")
        k = k if k is not None else node.kwargs.get("key", q)
        v = v if v is not None else node.kwargs.get("value", k)
        sq, sk = shape(q), shape(k)
        if len(sq) != 3 or len(sk) != 3:
            bad.append(f"{label} (MultiheadAttention on {len(sq)}-d input: give it batched "
                       f"(L, N, E) or (N, L, E) tensors){_where(node)}")
            return
        n, lq, lk = (sq[0], sq[1], sk[1]) if mod.batch_first else (sq[1], sq[0], sk[0])
        e, h = mod.embed_dim, mod.num_heads
        kdim, vdim = mod.kdim, mod.vdim
        if q is k and k is v:   # self-attention: the packed in-projection
            add(Op(f"{label}.in_proj", "linear", m=n * lq, k=e, n=3 * e), node, gemm=True)
        else:
            add(Op(f"{label}.q_proj", "linear", m=n * lq, k=e, n=e), node, gemm=True)
            add(Op(f"{label}.k_proj", "linear", m=n * lk, k=kdim, n=e), node, gemm=True)
            add(Op(f"{label}.v_proj", "linear", m=n * lk, k=vdim, n=e), node, gemm=True)
        attention(label, node, n * h, lq, lk, e // h, e // h)
        add(Op(f"{label}.out_proj", "linear", m=n * lq, k=e, n=e), node, gemm=True)

    def relu(label: str, node: Any) -> None:
        source = node.args[0] if node.args else None
        if isinstance(source, fx.Node) and source.name in gemm_outputs:
            return   # the requantizer's ReLU, on the GEMM's way out
        add(Op(label, "relu", elements=numel(node)), node)

    for node in gm.graph.nodes:
        label = node.name
        if node.op in ("placeholder", "output", "get_attr"):
            continue
        if node.op == "call_module":
            mod = modules[node.target]
            if isinstance(mod, torch.nn.Linear):
                rows = numel(node) // mod.out_features
                add(Op(label, "linear", m=rows, k=mod.in_features, n=mod.out_features,
                       bias=numel(node) if mod.bias is not None else 0), node, gemm=True)
            elif isinstance(mod, torch.nn.Conv2d):
                out = shape(node)
                kh, kw = mod.kernel_size
                if len(out) != 4:
                    bad.append(f"{label} (Conv2d on an unbatched input){_where(node)}")
                elif mod.groups == 1:
                    add(Op(label, "conv", m=out[0] * out[2] * out[3],
                           k=mod.in_channels * kh * kw, n=mod.out_channels,
                           bias=numel(node) if mod.bias is not None else 0), node, gemm=True)
                elif mod.groups == mod.in_channels == mod.out_channels:
                    add(Op(label, "dwconv", elements=numel(node), taps=kh * kw,
                           bias=numel(node) if mod.bias is not None else 0), node)
                else:
                    bad.append(f"{label} (grouped Conv2d, groups={mod.groups}){_where(node)}")
            elif isinstance(mod, torch.nn.MultiheadAttention):
                multihead(label, node, mod)
            elif isinstance(mod, torch.nn.LayerNorm):
                add(Op(label, "layernorm", elements=numel(node)), node)
            elif isinstance(mod, torch.nn.GELU):
                add(Op(label, "gelu", elements=numel(node)), node)
            elif isinstance(mod, torch.nn.Softmax):
                add(Op(label, "softmax", elements=numel(node)), node)
            elif isinstance(mod, torch.nn.ReLU):
                relu(label, node)
            elif isinstance(mod, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
                source = node.args[0] if node.args else None
                if isinstance(source, fx.Node) and source.name in gemm_outputs:
                    gemm_outputs.add(node.name)   # folded into that GEMM's weights and bias
                else:
                    add(Op(label, "scale", elements=numel(node)), node)
            elif isinstance(mod, torch.nn.Embedding):
                add(Op(label, "gather", elements=numel(node)), node)
            elif isinstance(mod, (torch.nn.Dropout, torch.nn.Identity, torch.nn.Flatten)):
                if node.args and isinstance(node.args[0], fx.Node) \
                        and node.args[0].name in gemm_outputs:
                    gemm_outputs.add(node.name)
                continue
            else:
                bad.append(f"{label} ({type(mod).__name__}){_where(node)}")
        elif node.op in ("call_function", "call_method") and not shape(node) and not any(
                shape(a) for a in node.args if isinstance(a, fx.Node)):
            continue   # arithmetic on shapes, assertions: nothing runs on the engine
        elif node.op == "call_function":
            f = node.target
            tensor_args = [a for a in node.args if isinstance(a, fx.Node)]
            if f in (torch.matmul, operator.matmul, torch.bmm):
                matmul(label, node, shape(tensor_args[0]), shape(tensor_args[1]))
            elif f is F.linear:
                w = shape(tensor_args[1])
                add(Op(label, "linear", m=numel(node) // w[0], k=w[1], n=w[0]), node, gemm=True)
            elif f is F.scaled_dot_product_attention:
                q, k, v = (shape(a) for a in node.args[:3])
                attention(label, node, math.prod(q[:-2]), q[-2], k[-2], q[-1], v[-1])
            elif f is F.gelu:
                add(Op(label, "gelu", elements=numel(node)), node)
            elif f in (F.softmax, torch.softmax):
                add(Op(label, "softmax", elements=numel(node)), node)
            elif f is F.layer_norm:
                add(Op(label, "layernorm", elements=numel(node)), node)
            elif f in (F.relu, torch.relu):
                relu(label, node)
            elif f in (operator.add, torch.add, operator.iadd):
                if len(tensor_args) == 0 or numel(node) == 0:
                    continue
                add(Op(label, "add", elements=numel(node)), node)
            elif f in (operator.mul, operator.truediv, torch.mul, torch.div):
                if len(tensor_args) == 0 or numel(node) == 0:
                    continue
                add(Op(label, "scale", elements=numel(node)), node)
            elif f is operator.sub:
                if tensor_args and numel(node):   # (a tensor's; a shape's is free)
                    add(Op(label, "add", elements=numel(node)), node)
            elif f is torch.mean:
                add(Op(label, "reduce", elements=numel(tensor_args[0])), node)
            elif f in (F.dropout, operator.getitem, torch.flatten, torch.reshape,
                       torch.transpose, torch.permute, getattr, torch.cat, torch.stack,
                       torch.unbind, torch.split, torch.chunk, torch.squeeze, torch.unsqueeze,
                       operator.floordiv):
                if f is operator.getitem and tensor_args and tensor_args[0].name in gemm_outputs:
                    gemm_outputs.add(node.name)
                continue
            else:
                bad.append(f"{label} ({getattr(f, '__name__', f)}){_where(node)}")
        elif node.op == "call_method":
            target = node.target
            if target == "softmax":
                add(Op(label, "softmax", elements=numel(node)), node)
            elif target in ("matmul", "bmm"):
                matmul(label, node, shape(node.args[0]), shape(node.args[1]))
            elif target in ("add", "add_"):
                add(Op(label, "add", elements=numel(node)), node)
            elif target in ("mul", "mul_", "div", "div_"):
                add(Op(label, "scale", elements=numel(node)), node)
            elif target == "mean":
                add(Op(label, "reduce", elements=numel(node.args[0])), node)
            elif target in ("relu", "relu_"):
                relu(label, node)
            elif target in _FREE_METHODS:
                continue
            else:
                bad.append(f"{label} (Tensor.{target}){_where(node)}")
    if bad:
        raise WorkloadError(f"{title}: cannot map {len(bad)} op(s): " + "; ".join(bad))
    if not ops:
        raise WorkloadError(f"{title}: no ops to map")
    return Workload(title, ops, {"source": "torch.fx", "input": shapes})


# -- what the user types ----------------------------------------------------------------------

def parse_shapes(text: str) -> list[tuple[int, ...]]:
    """``1,197,192`` -> [(1, 197, 192)]; several inputs separated by ``;``."""
    shapes = []
    for part in text.split(";"):
        try:
            dims = tuple(int(x) for x in part.replace("x", ",").split(",") if x.strip())
        except ValueError:
            raise WorkloadError(f"an input shape is integers separated by commas (1,197,192), "
                                f"not {part!r}") from None
        if not dims or any(d < 1 for d in dims):
            raise WorkloadError(f"an input shape has positive dimensions, not {part!r}")
        shapes.append(dims)
    return shapes


def load_module(spec: str) -> Any:
    """The ``torch.nn.Module`` a spec names: ``path/to/file.py:Name`` or ``package.module:Name``
    (a class made with no arguments, or a function that returns a module), or
    ``timm:model_name`` (timm's definition, built without weights: nothing is downloaded)."""
    import torch

    source, sep, attr = spec.rpartition(":")
    if not sep or not source or not attr:
        raise WorkloadError(f"a module is named FILE.py:Name, package.module:Name or "
                            f"timm:model_name, not {spec!r}")
    if source == "timm":
        return _timm_model(attr)
    path = Path(source)
    if source.endswith(".py") or path.is_file():
        if not path.is_file():
            raise WorkloadError(f"module file {source!r} does not exist")
        name = f"_tessera_user_{path.stem}"
        loader_spec = importlib.util.spec_from_file_location(name, path)
        mod = importlib.util.module_from_spec(loader_spec)
        sys.modules[name] = mod
        sys.path.insert(0, str(path.resolve().parent))
        try:
            loader_spec.loader.exec_module(mod)
        except Exception as e:
            raise WorkloadError(f"{source} fails to import: {type(e).__name__}: {e}") from None
        finally:
            sys.path.remove(str(path.resolve().parent))
    else:
        try:
            mod = importlib.import_module(source)
        except Exception as e:
            raise WorkloadError(f"cannot import {source!r}: {type(e).__name__}: {e}") from None
    obj = getattr(mod, attr, None)
    if obj is None:
        names = [n for n, v in vars(mod).items() if isinstance(v, type)
                 and issubclass(v, torch.nn.Module) and v.__module__ == mod.__name__]
        raise WorkloadError(f"{source} has no {attr!r}" + (f"; its modules: "
                                                           f"{', '.join(names)}" if names else ""))
    try:
        made = obj() if callable(obj) and not isinstance(obj, torch.nn.Module) else obj
    except TypeError as e:
        raise WorkloadError(f"{spec}: cannot make it with no arguments ({e}); give a function "
                            f"that returns the module instead") from None
    if not isinstance(made, torch.nn.Module):
        raise WorkloadError(f"{spec} gives a {type(made).__name__}, not a torch.nn.Module")
    return made


def _timm_model(name: str) -> Any:
    """timm's ``name`` without weights. timm imports torchvision, which PyPI cannot install
    beside the CPU build of torch this project uses; its model code needs only a few names of
    it, so a stand-in that has them (and fails if anything is called) is put in its place when
    torchvision itself does not import."""
    try:
        import torchvision  # noqa: F401
    except Exception:   # absent, or a build for another torch that fails to load
        for mod in [m for m in sys.modules if m.split(".")[0] == "torchvision"]:
            del sys.modules[mod]
        _stand_in_torchvision()
    try:
        import timm
    except ModuleNotFoundError as e:
        if e.name == "timm":
            raise WorkloadError("timm is not installed (pip install timm --no-deps: its models "
                                "need none of its dependencies but torch)") from None
        raise
    try:
        return timm.create_model(name, pretrained=False)
    except RuntimeError as e:
        raise WorkloadError(f"timm has no model {name!r}: {e}") from None


def _stand_in_torchvision() -> None:
    """A ``torchvision`` whose every name is a placeholder class (importable, usable as a base
    class or a dictionary key, failing when called): enough for timm's imports."""

    class _Anything(type):
        # any attribute of a placeholder (an enum member, a method) is a placeholder too
        def __getattr__(cls, attr: str) -> Any:
            if attr.startswith("__"):
                raise AttributeError(attr)
            value = _Anything(attr, (_Missing,), {"__module__": cls.__module__})
            setattr(cls, attr, value)
            return value

    class _Missing(metaclass=_Anything):
        def __init__(self, *args: Any, **kwargs: Any):
            raise RuntimeError("torchvision is not installed (a stand-in let timm import)")

        def __class_getitem__(cls, item: Any) -> type:
            return cls

    class _Module(types.ModuleType):
        def __getattr__(self, attr: str) -> Any:
            if attr.startswith("__"):
                raise AttributeError(attr)
            value = _Anything(attr, (_Missing,), {"__module__": self.__name__})
            setattr(self, attr, value)
            return value

    class _Finder:
        def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
            if fullname == "torchvision" or fullname.startswith("torchvision."):
                return importlib.util.spec_from_loader(fullname, self, is_package=True)
            return None

        def create_module(self, spec: Any) -> Any:
            module = _Module(spec.name)
            module.__path__ = []
            return module

        def exec_module(self, module: Any) -> None:
            pass

    sys.meta_path.insert(0, _Finder())
