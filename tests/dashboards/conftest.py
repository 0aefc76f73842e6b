"""Run directories built in tmp_path from lab.trace.write_shard records, tau.csv, calibration.json, a decode
file and a tiny real sim sweep, with numbers chosen so that the pages' tables can be checked by hand.

    demo/demo-0001   the newest run: dspark, mtp and ngram traces, tau.csv, calibration.json, decode/, sim/
    zzz/zzz-0001     an older run (alphabetically last): dspark traces only, a lower tau

`python -m tests.dashboards.conftest <dir>` writes the same runs root (for a manual `streamlit run`).
"""

import json
import sys
from pathlib import Path

import pandas as pd
import pytest

from lab.trace import StepRecord, shard_name, write_shard

# dspark on gsm8k: k = 3, accepted 0..3 -> tau 2.5; on humaneval: always 3 accepted -> tau 4.0
ACCEPTED = {"gsm8k": [0, 1, 2, 3], "humaneval": [3, 3, 3, 3]}
OLD_ACCEPTED = {"gsm8k": [0, 0, 1, 1], "humaneval": [1, 1, 1, 1]}
TEMPS = [1.5, 1.2, 1.0]
# ngram at T=0 on gsm8k: short and empty proposals -- the conditioned "survival" rose to 1.0 at j = 4
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


if __name__ == "__main__":
    print(build_root(Path(sys.argv[1]))["root"])
