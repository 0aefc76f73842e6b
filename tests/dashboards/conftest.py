"""A run directory built in tmp_path from lab.trace.write_shard records, tau.csv, calibration.json and a
tiny real sim sweep, with numbers chosen so that the pages' tables can be checked by hand."""

import json

import pandas as pd
import pytest

from lab.trace import StepRecord, shard_name, write_shard

# dspark on gsm8k: k = 3, accepted 0..3 -> tau 2.5; on humaneval: always 3 accepted -> tau 4.0
ACCEPTED = {"gsm8k": [0, 1, 2, 3], "humaneval": [3, 3, 3, 3]}
TEMPS = [1.5, 1.2, 1.0]


def _records(dataset: str, table: str) -> list[StepRecord]:
    out = []
    for i, acc in enumerate(ACCEPTED[dataset]):
        out.append(
            StepRecord(
                run_id="demo-0001",
                method="dspark",
                target="tiny",
                dataset=dataset,
                prompt_id=f"p{i % 2}",
                table=table,
                temperature=0.0,
                step=i,
                context_len=10 + i,
                k=3,
                accepted=acc,
                accept_prob=[1.0 if j < acc else 0.0 for j in range(3)],
                confidence=[0.5, 0.5, 0.5],
                draft_ms=1.0,
                verify_ms=2.0,
            )
        )
    return out


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


@pytest.fixture(scope="session")
def runs_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    run = root / "demo" / "demo-0001"
    for dataset in ACCEPTED:
        for table in ("rounds", "anchors"):
            write_shard(_records(dataset, table), run / "traces" / shard_name("dspark", dataset, table, 0.0))
    (run / "manifest.json").write_text(
        json.dumps(
            {
                "run_id": "demo-0001",
                "name": "demo",
                "seed": 7,
                "config_hash": "abc123",
                "git_sha": "0123456789abcdef",
                "hardware": {"cpus": 2},
                "packages": {},
                "opened_at": 1.7e9,
            }
        )
    )
    (run / "config.yaml").write_text("name: demo\nseed: 7\n")
    (run / "REPORT.md").write_text(
        "# demo — run demo-0001\n\nReport body marker 4242.\n\n![acc](acceptance_T0.png)\n"
    )
    pd.DataFrame(
        [
            {
                "method": "dspark",
                "dataset": "gsm8k",
                "temperature": 0.0,
                "tau": 2.5,
                "rounds": 4,
                "prompts": 2,
                "tokens_per_s": 20.0,
                "ar_tokens_per_s": 10.0,
                "speedup": 2.0,
                "identical_to_ar": 1.0,
            },
            {
                "method": "dspark",
                "dataset": "humaneval",
                "temperature": 0.0,
                "tau": 4.0,
                "rounds": 4,
                "prompts": 2,
                "tokens_per_s": 30.0,
                "ar_tokens_per_s": 10.0,
                "speedup": 3.0,
                "identical_to_ar": 1.0,
            },
        ]
    ).to_csv(run / "tau.csv", index=False)
    (run / "calibration.json").write_text(
        json.dumps(
            {
                "bins": 10,
                "methods": {
                    "dspark": {
                        "temperatures": TEMPS,
                        "table": "rounds",
                        "ece_before": [0.3, 0.2, 0.1],
                        "ece_after": [0.03, 0.02, 0.01],
                        "n_fit_rows": 4,
                        "n_eval_rows": 4,
                        "n_fit_prompts": 1,
                        "n_eval_prompts": 1,
                    }
                },
            }
        )
    )
    results, sla = _sim_outputs(run / "sim")
    return {"root": root, "run": run, "results": results, "sla": sla}
