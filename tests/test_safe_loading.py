"""No unsafe deserialisation: a static (AST) check of the project's code, and the weight-loading routes of
open_clip that clipbench relies on.

Rules of :func:`unsafe_calls` (each shown to fire on a small bad snippet below):

* importing ``pickle``/``cPickle``/``_pickle``/``cloudpickle``/``dill``/``joblib``/``shelve``/``marshal``;
* ``torch.load`` without ``weights_only=True`` written out (the default changed across torch versions, and
  ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD`` flips it where the call site does not set it), ``torch.jit.load``,
  ``torch.hub.load`` (runs a repository's ``hubconf.py``);
* ``numpy.load`` with ``allow_pickle`` set to anything but literal ``False`` (numpy's default is ``False``,
  so a call without the argument is allowed);
* ``read_pickle``/``to_pickle`` (pandas), called on anything;
* any ``yaml`` loader other than ``safe_load``/``safe_load_all``: ``load``, ``load_all``, ``full_load``,
  ``unsafe_load`` and the ``Loader``/``FullLoader``/``UnsafeLoader`` classes (and their C variants);
* the ``eval``/``exec``/``compile`` builtins (``model.eval()`` is a method and is not matched).

Names are resolved through import aliases (``import numpy as np``, ``from torch import load``).
"""

from __future__ import annotations

import ast
import os
import pickle  # only to check open_clip refuses a hostile file; tests/ is not scanned
from pathlib import Path

import open_clip
import pytest
import torch

from clipbench.backbones import get_backbone, import_open_clip, load_backbone
from clipbench.backbones.spec import CHECKPOINT, save_prepared

ROOT = Path(__file__).resolve().parents[1]
SCANNED = ("clipbench", "stages", "scripts")
UNSAFE_MODULES = {"pickle", "cPickle", "_pickle", "cloudpickle", "dill", "joblib", "shelve", "marshal"}
UNSAFE_YAML = {
    "load",
    "load_all",
    "full_load",
    "full_load_all",
    "unsafe_load",
    "unsafe_load_all",
    "Loader",
    "FullLoader",
    "UnsafeLoader",
    "CLoader",
    "CFullLoader",
    "CUnsafeLoader",
}
UNSAFE_BUILTINS = {"eval", "exec", "compile"}
FORBIDDEN_CALLS = {"torch.jit.load": "torch.jit.load", "torch.hub.load": "torch.hub.load"}


def _aliases(tree: ast.AST) -> dict[str, str]:
    """Local name -> dotted origin for every import in ``tree``."""
    names: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                names[a.asname or a.name.split(".")[0]] = a.name if a.asname else a.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            for a in node.names:
                names[a.asname or a.name] = f"{node.module}.{a.name}"
    return names


def _dotted(node: ast.AST, aliases: dict[str, str]) -> str | None:
    """``np.load`` -> ``numpy.load`` (``None`` for anything that is not a chain of names)."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    return ".".join([aliases.get(node.id, node.id), *reversed(parts)])


def _keyword_is(call: ast.Call, name: str, value: object) -> bool:
    kw = next((k for k in call.keywords if k.arg == name), None)
    return kw is not None and isinstance(kw.value, ast.Constant) and kw.value.value is value


def _call_rule(call: ast.Call, name: str, shadowed: set[str]) -> str | None:
    if isinstance(call.func, ast.Name) and call.func.id in UNSAFE_BUILTINS and call.func.id not in shadowed:
        return f"{call.func.id}() builtin"
    if name in ("torch.load", "torch.serialization.load") and not _keyword_is(call, "weights_only", True):
        return "torch.load without weights_only=True"
    if name in FORBIDDEN_CALLS:
        return FORBIDDEN_CALLS[name]
    if (
        name == "numpy.load"
        and any(k.arg == "allow_pickle" for k in call.keywords)
        and not _keyword_is(call, "allow_pickle", False)
    ):
        return "numpy.load with allow_pickle"
    if isinstance(call.func, ast.Attribute) and call.func.attr in ("read_pickle", "to_pickle"):
        return f"{call.func.attr} (pickle)"
    return None


def unsafe_calls(source: str, filename: str = "<snippet>") -> list[tuple[int, str]]:
    """``(line, rule)`` for every unsafe import, call or loader reference in ``source``."""
    tree = ast.parse(source, filename)
    aliases = _aliases(tree)
    shadowed = {n.name for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, f"import {a.name}") for a in node.names if a.name.split(".")[0] in UNSAFE_MODULES]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in UNSAFE_MODULES:
            found.append((node.lineno, f"import {node.module}"))
        elif isinstance(node, ast.ImportFrom) and node.module == "yaml":
            found += [(node.lineno, f"yaml.{a.name}") for a in node.names if a.name in UNSAFE_YAML]
        elif isinstance(node, ast.Attribute) and _dotted(node, aliases) in {f"yaml.{n}" for n in UNSAFE_YAML}:
            found.append((node.lineno, _dotted(node, aliases)))
        elif isinstance(node, ast.Call):
            rule = _call_rule(node, _dotted(node.func, aliases) or "", shadowed)
            if rule:
                found.append((node.lineno, rule))
    return sorted(set(found))


def _project_files() -> list[Path]:
    return sorted(p for d in SCANNED for p in (ROOT / d).rglob("*.py"))


def test_project_code_has_no_unsafe_deserialisation():
    files = _project_files()
    assert len(files) > 20 and any(p.parent.name == "backbones" for p in files)
    bad = [f"{p.relative_to(ROOT)}:{line}: {rule}" for p in files for line, rule in unsafe_calls(p.read_text(), str(p))]
    assert not bad, "unsafe deserialisation (use safetensors / JSON / yaml.safe_load):\n" + "\n".join(bad)


BAD = {
    "import pickle": "import pickle",
    "import cPickle": "import cPickle",
    "import _pickle as p": "import _pickle",
    "from dill import loads": "import dill",
    "import joblib": "import joblib",
    "import shelve": "import shelve",
    "import marshal": "import marshal",
    "from pickle import load": "import pickle",
    "import torch\ntorch.load('m.pt')": "torch.load without weights_only=True",
    "import torch\ntorch.load('m.pt', weights_only=False)": "torch.load without weights_only=True",
    "from torch import load\nload('m.pt', map_location='cpu')": "torch.load without weights_only=True",
    "import torch as T\nT.serialization.load('m.pt')": "torch.load without weights_only=True",
    "import torch\ntorch.jit.load('m.pt')": "torch.jit.load",
    "import torch\ntorch.hub.load('repo', 'model')": "torch.hub.load",
    "import numpy as np\nnp.load('a.npy', allow_pickle=True)": "numpy.load with allow_pickle",
    "import numpy\nflag = True\nnumpy.load('a.npy', allow_pickle=flag)": "numpy.load with allow_pickle",
    "import pandas as pd\npd.read_pickle('f.pkl')": "read_pickle (pickle)",
    "frame.to_pickle('f.pkl')": "to_pickle (pickle)",
    "import yaml\nyaml.load(text)": "yaml.load",
    "import yaml\nyaml.unsafe_load(text)": "yaml.unsafe_load",
    "import yaml\nyaml.full_load(text)": "yaml.full_load",
    "import yaml\nyaml.load(text, Loader=yaml.SafeLoader)": "yaml.load",
    "import yaml\nyaml.safe_load(text, Loader=yaml.Loader)": "yaml.Loader",
    "from yaml import unsafe_load": "yaml.unsafe_load",
    "eval('1 + 1')": "eval() builtin",
    "exec('x = 1')": "exec() builtin",
    "compile('x', 'f', 'exec')": "compile() builtin",
}
GOOD = [
    "model.eval()",
    "import torch\ntorch.load('m.pt', weights_only=True, map_location='cpu')",
    "import numpy as np\nnp.load('a.npy')\nnp.load('a.npy', allow_pickle=False)",
    "import yaml\nyaml.safe_load(text)\nyaml.safe_dump(data)",
    "from safetensors.torch import load_file\nload_file('m.safetensors')",
    "import json\njson.load(fh)",
    "def eval(x):\n    return x\neval(1)",
    "import re\nre.compile('x')",
]


@pytest.mark.parametrize("snippet", sorted(BAD))
def test_each_rule_fires_on_a_bad_snippet(snippet):
    assert BAD[snippet] in [rule for _, rule in unsafe_calls(snippet)]


@pytest.mark.parametrize("snippet", GOOD)
def test_safe_code_is_not_flagged(snippet):
    assert unsafe_calls(snippet) == []


# --- open_clip's weight loading (installed package) -------------------------------------------------------


class _Payload:
    """Unpickling this runs ``os.mkdir(marker)``: a stand-in for code in a hostile checkpoint."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.mkdir, (str(self.marker),)


def _refuse(*_args, **_kwargs):
    raise AssertionError("a pickle-based loader was called")


def test_our_checkpoint_is_loaded_through_safetensors_only(tmp_path, monkeypatch):
    """``pretrained=<path>.safetensors`` -> open_clip ``load_checkpoint`` -> ``safetensors.torch.load_file``."""
    import safetensors.torch

    torch.manual_seed(0)
    spec = get_backbone("toy_vit")
    import_open_clip()  # registers the shipped model configs (toy_vit's architecture)
    save_prepared(spec, open_clip.create_model(spec.model), tmp_path, {"note": "test"})
    seen = []
    real = safetensors.torch.load_file
    monkeypatch.setattr(safetensors.torch, "load_file", lambda path, *a, **k: seen.append(path) or real(path, *a, **k))
    monkeypatch.setattr(torch, "load", _refuse)
    monkeypatch.setattr(torch.jit, "load", _refuse)
    monkeypatch.setattr(pickle, "load", _refuse)
    monkeypatch.setattr(pickle, "loads", _refuse)
    backbone = load_backbone("toy_vit", tmp_path)
    assert [Path(p).name for p in seen] == [CHECKPOINT]
    assert backbone.model is not None


def test_open_clip_loads_other_checkpoints_with_weights_only(tmp_path):
    """A ``.bin``/``.pt`` checkpoint (hub weights without a safetensors file) goes through ``torch.load`` with
    ``weights_only=True``, which refuses a pickled object that would run code."""
    marker = tmp_path / "code_ran"
    for suffix in (".bin", ".pt"):
        path = tmp_path / f"hostile{suffix}"
        torch.save({"weight": torch.zeros(1), "payload": _Payload(marker)}, path)
        with pytest.raises(pickle.UnpicklingError):
            open_clip.factory.load_state_dict(str(path))
        assert not marker.exists()
    plain = tmp_path / "plain.bin"
    torch.save({"weight": torch.ones(2)}, plain)
    assert torch.equal(open_clip.factory.load_state_dict(str(plain))["weight"], torch.ones(2))
