"""Check an exported drafter inside vLLM against the lab: same greedy output, same per-position acceptance.

    lab run experiments/vllm_drafters.yaml                                # train the drafter first
    python -m real.engine.drafter_check runs/vllm_drafters/<id> [--prompts 6] [--max-new-tokens 48]

For the run's prompts (greedy, fp32, EOS ignored, one request at a time) it compares
  1. the lab's autoregressive greedy output with vLLM's plain greedy output (the target's parity),
  2. vLLM's output with each `speculative.drafter` variant against its plain output (lossless),
  3. vLLM's spec-decode counters (drafts, draft tokens, accepted per position, from /metrics) with the
     same counters computed from the lab's own speculative decode of that drafter at the same k
     (lab.metrics.vllm_counters) -- equal up to float rounding when the export computes the lab's function.
The engine settings (port, threads, dtype, extra args) and the variants come from the run's `engine:`
section: its first plain variant and every variant naming a `drafter`. One server at a time.
Writes <run>/engine/drafter_check.json and prints a table.
"""
from __future__ import annotations

import json
import sys
import time
import urllib.request
from pathlib import Path

from lab.arguments import ArgumentParser, positive_int
from lab.errors import LabError
from lab.io import write_json_atomic
from lab.metrics import vllm_counters
from real.embedded import log

SERVED_NAME = "target"


def vllm_greedy(base_url: str, prompts: list[list[int]], max_tokens: int) -> list[list[int]]:
    """Each prompt alone (no batching effects), temperature 0, EOS ignored -> the generated token ids."""
    outputs = []
    for ids in prompts:
        body = {"model": SERVED_NAME, "prompt": ids, "max_tokens": max_tokens, "temperature": 0.0,
                "ignore_eos": True, "return_token_ids": True}
        request = urllib.request.Request(f"{base_url}/v1/completions", json.dumps(body).encode(),
                                         {"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=600) as resp:
                answer = json.loads(resp.read())
        except OSError as exc:
            raise LabError(f"engine: {base_url}/v1/completions failed: {exc}") from None
        outputs.append([int(t) for t in answer["choices"][0]["token_ids"]])
    return outputs


def lab_greedy(target, drafter, prompts: list[list[int]], max_new: int, k: int):
    """The lab's greedy outputs (autoregressive, speculative with `drafter` at k) and the speculative
    rounds as one frame (columns k, accepted)."""
    import pandas as pd

    from real.decode import autoregressive_decode, speculative_decode

    plain, spec, rows = [], [], []
    for ids in prompts:
        plain.append(autoregressive_decode(target, ids, max_new, 0.0, None, stop_at_eos=False).tokens)
        result = speculative_decode(target, drafter, ids, max_new, 0.0, None, stop_at_eos=False, block_size=k)
        spec.append(result.tokens)
        rows += [{"k": s.k, "accepted": s.accepted} for s in result.steps]
    return plain, spec, pd.DataFrame(rows, columns=["k", "accepted"])


def matches(a: list[list[int]], b: list[list[int]]) -> dict:
    """How many output sequences are equal, and the first differing position of each that is not."""
    first = []
    for x, y in zip(a, b):
        diff = next((i for i, (p, q) in enumerate(zip(x, y)) if p != q), None)
        if diff is None and len(x) != len(y):
            diff = min(len(x), len(y))
        first.append(diff)
    return {"identical": sum(d is None for d in first), "of": len(first), "first_difference": first}


def _serve(cfg, run_dir: Path, variant, model_dir: Path, venv: Path, drafter_dir: Path | None,
           prompts: list[list[int]], max_new: int):
    from real.engine.metrics import counter_table, scrape_spec_counters
    from real.engine.server import EngineServer, vllm_command

    section = cfg.engine
    argv, env = vllm_command(section, variant.speculative, model_dir, venv, SERVED_NAME, drafter_dir)
    log_path = run_dir / "engine" / "drafter_check" / f"{variant.name}.server.log"
    with EngineServer(argv, env, log_path, section.port, section.startup_timeout_s,
                      label=f"vllm {variant.name}") as server:
        before = scrape_spec_counters(server.base_url)
        start = time.perf_counter()
        outputs = vllm_greedy(server.base_url, prompts, max_new)
        wall = time.perf_counter() - start
        table = counter_table(before, scrape_spec_counters(server.base_url))
    return outputs, table, {"startup_s": round(server.startup_s or 0, 1), "requests_wall_s": round(wall, 2)}


def run_check(run_dir: Path, n_prompts: int | None, max_new: int | None) -> dict:
    from lab.runs import RunContext
    from lab.threads import apply_thread_policy
    from real.drafters import build_drafter
    from real.engine.served import exported_drafter, served_model_dir
    from real.engine.setup import require_engine
    from real.export_vllm import run_config
    from real.prompts import encode_prompt, load_prompt_sets
    from real.targets import load_target

    cfg = run_config(run_dir)
    apply_thread_policy(cfg.threads)  # the lab side's torch threads: the cores other processes leave free
    section = cfg.engine
    if section is None:
        raise LabError(f"{run_dir}/config.yaml: no engine section (the variants to check)")
    plain_variant = next((v for v in section.variants if v.speculative.method == "none"), None)
    checked = [v for v in section.variants if v.speculative.drafter is not None]
    if plain_variant is None or not checked:
        raise LabError(f"{run_dir}/config.yaml: engine.variants needs a plain variant and one with speculative.drafter")
    if cfg.prompts is None:
        raise LabError(f"{run_dir}/config.yaml: no prompts section (the prompts both sides decode)")
    venv = require_engine(section.venv, section.kind)
    ctx = RunContext(cfg=cfg, root=run_dir)
    target = load_target(cfg.target)
    model_dir = served_model_dir(cfg, ctx)
    max_new = max_new or cfg.decode.max_new_tokens
    prompts = [encode_prompt(target.tokenizer, p, cfg.prompts.chat_template, cfg.prompts.max_prompt_tokens)
               for prompt_set in load_prompt_sets(cfg.prompts).values() for p in prompt_set][:n_prompts]
    report: dict = {"run": str(run_dir), "target": cfg.target.name, "model_dir": str(model_dir),
                    "prompts": len(prompts), "max_new_tokens": max_new, "variants": {}}
    log(f"drafter check: lab side ({len(prompts)} prompts x {max_new} tokens)")
    lab_plain = None
    for variant in checked:
        spec = next(s for s in cfg.drafters if s.name == variant.speculative.drafter)
        drafter = build_drafter(spec, target, run_dir / "drafters" / spec.name)
        k = variant.speculative.num_speculative_tokens
        lab_plain, lab_spec, rounds = lab_greedy(target, drafter, prompts, max_new, k)
        report["variants"][variant.name] = {"drafter": spec.name, "k": k, "lab_counters": vllm_counters(rounds),
                                            "lab_spec_vs_lab_plain": matches(lab_spec, lab_plain),
                                            "export": str(exported_drafter(ctx, spec.name, target))}
    vllm_plain, _, info = _serve(cfg, run_dir, plain_variant, model_dir, venv, None, prompts, max_new)
    report["vllm_plain_vs_lab_plain"] = matches(vllm_plain, lab_plain)
    report["plain_server"] = info
    for variant in checked:
        entry = report["variants"][variant.name]
        outputs, table, info = _serve(cfg, run_dir, variant, model_dir, venv, Path(entry["export"]), prompts, max_new)
        entry.update(vllm_counters=table["delta"], vllm_derived=table["derived"], server=info,
                     vllm_spec_vs_vllm_plain=matches(outputs, vllm_plain))
    write_json_atomic(run_dir / "engine" / "drafter_check.json", report)
    return report


def format_report(report: dict) -> str:
    lines = [f"target {report['target']}: {report['prompts']} prompts x {report['max_new_tokens']} tokens, greedy",
             "vLLM plain == lab plain: {identical}/{of}".format(**report["vllm_plain_vs_lab_plain"])]
    for name, entry in report["variants"].items():
        lab, vllm = entry["lab_counters"], entry["vllm_counters"]
        lines += [f"variant {name} (drafter {entry['drafter']}, k {entry['k']}):",
                  "  vLLM spec == vLLM plain: {identical}/{of}".format(**entry["vllm_spec_vs_vllm_plain"]),
                  "  lab spec == lab plain:   {identical}/{of}".format(**entry["lab_spec_vs_lab_plain"]),
                  f"  {'counter':<28}{'lab':>10}{'vLLM':>10}"]
        for key in ("num_drafts", "num_draft_tokens", "num_accepted_tokens"):
            lines.append(f"  {key:<28}{lab[key]:>10}{vllm[key]:>10}")
        for j in range(max(len(lab['num_accepted_tokens_per_pos']), len(vllm['num_accepted_tokens_per_pos']))):
            a = lab["num_accepted_tokens_per_pos"][j] if j < len(lab["num_accepted_tokens_per_pos"]) else 0
            b = vllm["num_accepted_tokens_per_pos"][j] if j < len(vllm["num_accepted_tokens_per_pos"]) else 0
            lines.append(f"  {f'accepted at position {j}':<28}{a:>10}{b:>10}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="python -m real.engine.drafter_check", description=__doc__.split("\n")[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--prompts", type=positive_int, default=None,
                        help="first N prompts of the run's sets (default all)")
    parser.add_argument("--max-new-tokens", type=positive_int, default=None,
                        help="default: the run's decode.max_new_tokens")
    args = parser.parse_args(argv)
    try:
        report = run_check(args.run_dir, args.prompts, args.max_new_tokens)
    except LabError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(format_report(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
