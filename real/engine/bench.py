"""vLLM's batched throughput against the lab's own decode loop, on the same target, dtype and lengths.

    python -m real.engine.bench runs/fidelity_vllm/<id> [--load high] [--variant nospec] [--prompts 4]

Reads the engine run's measured throughput (engine/<variant>/<load>/summary.json: output tokens / (last
finish - first arrival), vLLM benchmark definition) and its prompt/output lengths, then decodes
`--prompts` prompts of those lengths with real.decode.autoregressive_decode (batch 1, the lab's loop;
EOS ignored so every output has the same length) and prints both throughputs, their ratio, wall and
process CPU time and the machine's load average (the box is shared; BENCHMARKS.md quotes this output).
"""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import torch

from lab.arguments import ArgumentParser, positive_int
from lab.config import load_config
from lab.errors import LabError
from real.decode import autoregressive_decode
from real.rng import device_generator
from real.targets import load_target


def _engine_run(run: Path, variant: str, load_name: str):
    """The engine run's config, its load `load_name`, that load's summary.json and the engine's worker threads;
    LabError naming the file or flag a finished engine stage would have given."""
    cfg = load_config(run / "config.yaml")
    if cfg.engine is None:
        raise LabError(f"{run / 'config.yaml'}: no engine section (the run of an experiment with an engine stage)")
    load = next((x for x in cfg.engine.loads if x.name == load_name), None)
    if load is None:
        raise LabError(f"--load: {load_name!r} is not one of the run's loads {[x.name for x in cfg.engine.loads]}")
    files = [run / "engine" / variant / load_name / "summary.json", run / "engine" / "step_profile.json"]
    data = []
    for path in files:
        try:
            data.append(json.loads(path.read_text()))
        except FileNotFoundError:
            raise LabError(f"{path}: not found (did the engine stage finish, and is --variant {variant!r} one of "
                           "its variants?)") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise LabError(f"{path}: unreadable JSON ({exc})") from None
        if not isinstance(data[-1], dict):
            raise LabError(f"{path}: a JSON object expected")
    summary, profile = data
    for key in ("throughput_tok_s", "completed"):
        if not isinstance(summary.get(key), (int, float)) or isinstance(summary[key], bool) or not summary[key] > 0:
            raise LabError(f"{files[0]}: {key}: a positive number expected")
    return cfg, load, summary, profile.get("threads")


def main(argv: list[str] | None = None) -> dict:
    parser = ArgumentParser(prog="python -m real.engine.bench", description=__doc__.split("\n")[0])
    parser.add_argument("run", help="run directory of an experiment with an engine stage")
    parser.add_argument("--variant", default="nospec")
    parser.add_argument("--load", default="high")
    parser.add_argument("--prompts", type=positive_int, default=4)
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads of the lab's loop (default: the engine's worker threads)")
    args = parser.parse_args(argv)
    try:
        cfg, load, summary, engine_threads = _engine_run(Path(args.run), args.variant, args.load)
    except LabError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    torch.set_num_threads(args.threads or engine_threads or torch.get_num_threads())
    target = load_target(cfg.target.model_copy(update={"dtype": cfg.engine.dtype}))
    vocab = target.config.vocab_size
    gen = device_generator("cpu", 0)  # host-side token ids
    autoregressive_decode(target, torch.randint(1000, vocab, (16,), generator=gen).tolist(), 4)  # warm-up
    tokens, wall, cpu = 0, time.perf_counter(), time.process_time()
    for _ in range(args.prompts):
        prompt = torch.randint(1000, vocab, (load.prompt_tokens,), generator=gen).tolist()
        tokens += len(autoregressive_decode(target, prompt, load.output_tokens, stop_at_eos=False).tokens)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    lab_tok_s = tokens / wall
    out = {"vllm_tok_s": summary["throughput_tok_s"], "vllm_load": f"{args.variant}/{args.load}",
           "vllm_requests": summary["completed"], "lab_tok_s": lab_tok_s, "lab_wall_s": wall, "lab_cpu_s": cpu,
           "ratio": summary["throughput_tok_s"] / lab_tok_s, "dtype": cfg.engine.dtype,
           "prompt_tokens": load.prompt_tokens, "output_tokens": load.output_tokens,
           "torch_threads": torch.get_num_threads(), "loadavg": os.getloadavg()}
    print(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
