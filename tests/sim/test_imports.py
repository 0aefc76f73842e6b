"""House rule 1: sim/ and lab/ never import torch or transformers."""
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_no_torch_in_sources():
    pattern = re.compile(r"^\s*(import|from)\s+(torch|transformers)\b", re.MULTILINE)
    offenders = [str(p) for pkg in ("sim", "lab") for p in (ROOT / pkg).rglob("*.py") if pattern.search(p.read_text())]
    assert offenders == []


def test_no_torch_after_import():
    mods = [p.relative_to(ROOT).with_suffix("").as_posix().replace("/", ".")
            for pkg in ("sim", "lab") for p in (ROOT / pkg).rglob("*.py") if p.name != "__main__.py"]
    mods = [m.removesuffix(".__init__") for m in mods]
    code = ("import importlib, sys\n"
            f"for m in {mods!r}:\n"
            "    try:\n        importlib.import_module(m)\n"
            "    except ModuleNotFoundError as e:\n"
            "        if e.name and e.name.split('.')[0] in ('torch', 'transformers'): raise\n"
            "print(sorted(k for k in sys.modules if k.split('.')[0] in ('torch', 'transformers')))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
