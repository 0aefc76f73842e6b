"""Training: loss goes down, exact checkpoint resume, schedule, draft vocab, the whole train stage on a
tiny target (prepare -> train -> from_spec -> decode), and a 2-process gloo DDP run."""
import contextlib
import csv
import json
import os

import pytest
import torch
import torch.multiprocessing as mp

from lab.config import config_from_dict
from lab.config_train import DrafterSpec, TrainSection
from lab.errors import LabError
from lab.runs import open_run
from real.decode import autoregressive_decode, speculative_decode
from real.drafters import build_drafter
from real.prepare import Sequence, target_features
from real.train import Dist, DrafterTrainer, draft_vocab, lr_lambda, sample_anchors

METHODS = {
    "dspark": {"method": "dspark", "block_size": 4, "markov_rank": 8, "draft_vocab_size": 512},
    "dflash": {"method": "dflash", "block_size": 4, "draft_vocab_size": 512},
    "eagle3": {"method": "eagle3", "block_size": 4, "draft_vocab_size": 512},
    "mtp": {"method": "mtp", "block_size": 1, "draft_vocab_size": 512},
}


pytestmark = pytest.mark.usefixtures("one_thread")


def sequences(target, n=2, n_new=40):
    out = []
    for i in range(n):
        prompt = torch.randint(100, 5000, (10,), generator=torch.Generator().manual_seed(i)).tolist()
        ids = torch.tensor(prompt + autoregressive_decode(target, prompt, n_new, stop_at_eos=False).tokens)
        out.append(Sequence(ids, 10, *target_features(target, ids)))
    return out


def counts_of(target, seqs):
    counts = torch.zeros(target.vocab_size)
    for s in seqs:
        counts += torch.bincount(s.ids, minlength=target.vocab_size)[: target.vocab_size]
    return counts


def make_trainer(target, name, seqs, directory=None, steps=20, dist=None):
    spec = DrafterSpec(name=name, **METHODS[name])
    section = TrainSection(steps=steps, batch_size=len(seqs), num_anchors=12, lr=3e-3)
    return DrafterTrainer(spec, target, draft_vocab(counts_of(target, seqs), spec.draft_vocab_size),
                          section, directory, dist, seed=7)


def run_steps(trainer, seqs, gen, n):
    out = []
    for _ in range(n):
        anchors = [sample_anchors(s.ids.numel(), s.prompt_len, 12, gen) for s in seqs]
        out.append(trainer.train_step(seqs, anchors))
    return out


@pytest.mark.parametrize("name", list(METHODS))
def test_a_few_steps_lower_the_loss(tiny_qwen3, name):
    seqs = sequences(tiny_qwen3)
    trainer = make_trainer(tiny_qwen3, name, seqs)
    gen = torch.Generator().manual_seed(0)
    fixed = [sample_anchors(s.ids.numel(), s.prompt_len, 12, torch.Generator().manual_seed(9)) for s in seqs]
    first = trainer.train_step(seqs, fixed)["loss"]
    run_steps(trainer, seqs, gen, 12)
    trainer.optimizer.zero_grad()
    last = trainer.train_step(seqs, fixed)["loss"]
    assert last < first, (name, first, last)
    assert trainer.last_metrics["tau"] >= 1.0


@pytest.mark.parametrize("name", ["dspark", "eagle3"])
def test_checkpoint_resume_is_exact(tiny_qwen3, tmp_path, name):
    seqs = sequences(tiny_qwen3)
    a = make_trainer(tiny_qwen3, name, seqs, tmp_path / name)
    gen = torch.Generator().manual_seed(0)
    run_steps(a, seqs, gen, 3)
    a.save(gen.get_state())
    b = make_trainer(tiny_qwen3, name, seqs, tmp_path / name)
    gen_b = torch.Generator().manual_seed(123)
    gen_b.set_state(b.resume())
    assert b.step == a.step == 3
    for (ka, va), (kb, vb) in zip(a.model.state_dict().items(), b.model.state_dict().items()):
        assert ka == kb and torch.equal(va, vb)
    sa, sb = a.optimizer.state_dict(), b.optimizer.state_dict()
    for pid in sa["state"]:
        for key in sa["state"][pid]:
            assert torch.equal(sa["state"][pid][key], sb["state"][pid][key])
    assert sa["param_groups"] == sb["param_groups"]
    assert a.scheduler.get_last_lr() == b.scheduler.get_last_lr()
    # continuing both gives identical weights
    run_steps(a, seqs, gen, 2)
    run_steps(b, seqs, gen_b, 2)
    for va, vb in zip(a.model.state_dict().values(), b.model.state_dict().values()):
        assert torch.equal(va, vb)


def test_schedule_and_draft_vocab():
    f = lr_lambda(100, 0.04, 0.0)
    assert f(0) == pytest.approx(0.25) and f(3) == pytest.approx(1.0)
    assert f(99) < 0.01 and f(50) < 1.0
    counts = torch.tensor([5, 0, 9, 9, 1, 7])
    assert draft_vocab(counts, 3).tolist() == [2, 3, 5]
    assert draft_vocab(counts, None).tolist() == list(range(6))


def write_prompts(path, n=10):
    topics = ["the sea", "a cat", "prime numbers", "tea", "rain", "chess", "bread", "stars", "music", "trains",
              "snow", "paper"]
    path.write_text("".join(json.dumps({"turns": [f"Tell me about {topics[i % len(topics)]}."]}) + "\n"
                            for i in range(n)))


def experiment(tmp_path, drafters, prepare=None, train=None, name="t"):
    tmp_path.mkdir(parents=True, exist_ok=True)
    jsonl = tmp_path / "train.jsonl"
    write_prompts(jsonl)
    data = {"name": name, "output_dir": str(tmp_path / "runs"), "seed": 1,
            "target": {"name": "tiny-qwen3", "dtype": "float32"},
            "prompts": {"datasets": [{"name": "x", "path": str(jsonl)}]},
            "drafters": drafters,
            "prepare": {"datasets": [{"name": "x", "path": str(jsonl)}], "max_new_tokens": 24,
                        "gen_batch_size": 4, **(prepare or {})},
            "train": {"steps": 4, "batch_size": 2, "num_anchors": 8, "save_every": 2, **(train or {})}}
    return open_run(config_from_dict(data), show_progress=False)


def test_train_stage_end_to_end(tiny_qwen3, tmp_path):
    from real import prepare, train

    drafters = [{"name": n, **{k: v for k, v in m.items()}} for n, m in METHODS.items()] + \
               [{"name": "ngram", "method": "ngram"}]
    ctx = experiment(tmp_path, drafters)
    with pytest.raises(LabError, match="run the train stage first"):
        build_drafter(ctx.cfg.drafters[0], tiny_qwen3, ctx.path("drafters", "dspark"))
    prepare.run_stage(ctx, target=tiny_qwen3)
    train.run_stage(ctx, target=tiny_qwen3)
    assert ctx.stage_done("train")
    for name in METHODS:
        directory = ctx.path("drafters", name)
        state = json.loads((directory / "train_state.json").read_text())
        assert state["step"] == 4 and state["finished"]
        rows = list(csv.DictReader((directory / "train_log.csv").open()))
        assert [int(r["step"]) for r in rows] == [1, 2, 3, 4]
        assert len(list(directory.glob("state-*"))) == 1
    assert not ctx.path("drafters", "ngram").exists()
    prompt = [1000, 2000, 3000, 4000]
    ref = autoregressive_decode(tiny_qwen3, prompt, 16).tokens
    for spec in ctx.cfg.drafters:
        drafter = build_drafter(spec, tiny_qwen3, ctx.path("drafters", spec.name))
        assert speculative_decode(tiny_qwen3, drafter, prompt, 16).tokens == ref


@contextlib.contextmanager
def crash_after_step(step, monkeypatch):
    """Within the block, training raises KeyboardInterrupt right after logging `step` (a kill at that point)."""
    from real import train

    original_log = train.DrafterTrainer.log

    def crash(self, metrics):
        original_log(self, metrics)
        if metrics["step"] == step:
            raise KeyboardInterrupt

    monkeypatch.setattr(train.DrafterTrainer, "log", crash)
    try:
        yield
    finally:
        monkeypatch.setattr(train.DrafterTrainer, "log", original_log)


def test_train_stage_resumes_after_interruption(tiny_qwen3, tmp_path, monkeypatch):
    """Killed after step 3 (checkpoint at 2), then resumed to 4: the same weights and log as an
    uninterrupted run."""
    from safetensors.torch import load_file

    from real import prepare, train

    drafters = [{"name": "dspark", **METHODS["dspark"]}, {"name": "eagle3", **METHODS["eagle3"]}]
    full = experiment(tmp_path / "a", drafters)
    prepare.run_stage(full, target=tiny_qwen3)
    train.train(full, tiny_qwen3)

    part = experiment(tmp_path / "b", drafters)
    prepare.run_stage(part, target=tiny_qwen3)
    with crash_after_step(3, monkeypatch), pytest.raises(KeyboardInterrupt):
        train.train(part, tiny_qwen3)
    assert json.loads(part.path("drafters", "dspark", "train_state.json").read_text())["step"] == 2
    train.train(part, tiny_qwen3)
    for name in ("dspark", "eagle3"):
        wa = load_file(str(full.path("drafters", name, "model.safetensors")))
        wb = load_file(str(part.path("drafters", name, "model.safetensors")))
        assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
        rows_a = list(csv.DictReader(full.path("drafters", name, "train_log.csv").open()))
        rows_b = list(csv.DictReader(part.path("drafters", name, "train_log.csv").open()))
        assert [r["loss"] for r in rows_a] == [r["loss"] for r in rows_b]


def test_force_retrains_from_scratch(tiny_qwen3, tmp_path):
    """`lab run --force` reruns train from step 0 (not a no-op resume of the finished checkpoint)."""
    from real import prepare, train

    ctx = experiment(tmp_path, [{"name": "dflash", **METHODS["dflash"]}])
    prepare.run_stage(ctx, target=tiny_qwen3)
    train.run_stage(ctx, target=tiny_qwen3)
    log = ctx.path("drafters", "dflash", "train_log.csv")
    (ctx.path("drafters", "dflash") / "stale.txt").write_text("from the first run")
    train.run_stage(ctx, target=tiny_qwen3)  # done: a plain rerun keeps everything
    assert (ctx.path("drafters", "dflash") / "stale.txt").exists()
    ctx.redo("train")
    train.run_stage(ctx, target=tiny_qwen3)
    assert ctx.stage_done("train")
    assert not (ctx.path("drafters", "dflash") / "stale.txt").exists()
    assert [int(r["step"]) for r in csv.DictReader(log.open())] == [1, 2, 3, 4]


def test_failed_force_keeps_the_old_drafter_and_marker(tiny_qwen3, tmp_path, monkeypatch):
    """--force used to rmtree drafters/<name> before retraining: a retrain that then failed lost the old
    weights. Now the retrain writes beside them and replaces them only once it has finished."""
    from real import prepare, train

    ctx = experiment(tmp_path, [{"name": "dflash", **METHODS["dflash"]}])
    prepare.run_stage(ctx, target=tiny_qwen3)
    train.run_stage(ctx, target=tiny_qwen3)
    directory = ctx.path("drafters", "dflash")
    before = {p.name: p.read_bytes() for p in directory.rglob("*") if p.is_file()}
    ctx.redo("train")
    with crash_after_step(3, monkeypatch), pytest.raises(KeyboardInterrupt):
        train.run_stage(ctx, target=tiny_qwen3)
    assert {p.name: p.read_bytes() for p in directory.rglob("*") if p.is_file()} == before
    assert (ctx.root / ".stages" / "train.done").exists()
    train.run_stage(ctx, target=tiny_qwen3)  # still forced: retrains from scratch and swaps in
    assert ctx.stage_done("train") and not list(ctx.path("drafters").glob(".*"))
    assert [int(r["step"]) for r in csv.DictReader((directory / "train_log.csv").open())] == [1, 2, 3, 4]
    assert json.loads((directory / "train_state.json").read_text())["finished"]


def test_a_step_is_never_logged_twice(tiny_qwen3, tmp_path):
    seqs = sequences(tiny_qwen3, n=1, n_new=8)
    trainer = make_trainer(tiny_qwen3, "dspark", seqs, directory=tmp_path)
    for step in (1, 2, 2, 1, 3):  # e.g. a second writer replaying steps the log already holds
        trainer.log({"step": step, "loss": 0.5})
    assert [int(r["step"]) for r in csv.DictReader((tmp_path / "train_log.csv").open())] == [1, 2, 3]


def test_mtp_reads_the_final_hidden_state(tiny_qwen3, tmp_path):
    """MTP trains and drafts on the target's final hidden state; a checkpoint trained on tapped features
    (before this was so) is refused with a clear error instead of drafting garbage."""
    from real import prepare, train

    ctx = experiment(tmp_path, [{"name": "mtp", **METHODS["mtp"]}])
    prepare.run_stage(ctx, target=tiny_qwen3)
    train.run_stage(ctx, target=tiny_qwen3)
    spec, directory = ctx.cfg.drafters[0], ctx.path("drafters", "mtp")
    meta_path = directory / "drafter.json"
    meta = json.loads(meta_path.read_text())
    assert meta["feature_source"] == "final"
    drafter = build_drafter(spec, tiny_qwen3, directory)
    tapped = torch.randn(5, len(tiny_qwen3.tap_layers) * tiny_qwen3.hidden_size)
    final = torch.randn(5, tiny_qwen3.hidden_size)
    assert drafter.select_features(tapped, final) is final
    meta_path.write_text(json.dumps({**meta, "feature_source": "tapped"}))
    with pytest.raises(LabError, match="trained on tapped target features"):
        build_drafter(spec, tiny_qwen3, directory)


def _ddp_worker(rank, world, port, out_path):
    import torch.distributed as tdist
    from safetensors.torch import save_file

    from real.targets import tiny_target

    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    tdist.init_process_group("gloo", rank=rank, world_size=world)
    target = tiny_target("qwen3")
    seqs = sequences(target)
    trainer = make_trainer(target, "dspark", seqs, dist=Dist(rank, world))
    gen = torch.Generator().manual_seed(0)
    for _ in range(2):
        anchors = [sample_anchors(s.ids.numel(), s.prompt_len, 12, gen) for s in seqs]
        trainer.train_step(seqs[rank::world], anchors[rank::world])
    if rank == 0:
        save_file({k: v.contiguous() for k, v in trainer.model.state_dict().items()}, out_path)
    tdist.destroy_process_group()


def test_ddp_two_gloo_ranks_match_one_process(tiny_qwen3, tmp_path):
    """2 ranks x 1 sequence under DistributedDataParallel == 1 process x 2 sequences."""
    import socket

    from safetensors.torch import load_file

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    out = str(tmp_path / "ddp.safetensors")
    # fork, not spawn: a spawned child re-runs __main__, which Streamlit's AppTest (tests/dashboards) may
    # have left pointing at a dashboard page when the whole suite runs in one process.
    mp.start_processes(_ddp_worker, args=(2, port, out), nprocs=2, join=True, start_method="fork")
    seqs = sequences(tiny_qwen3)
    single = make_trainer(tiny_qwen3, "dspark", seqs)
    run_steps(single, seqs, torch.Generator().manual_seed(0), 2)
    ddp = load_file(out)
    for key, value in single.model.state_dict().items():
        assert torch.allclose(value, ddp[key], atol=1e-6), key


def test_block_loss_on_literal_distributions():
    from real.losses import LossWeights, block_loss

    w = LossWeights(ce=0.1, l1=0.9, conf=1.0, soft_ce=0.0, gamma_decay=4.0, step_decay=None)
    p_d = torch.tensor([[[0.5, 0.5], [0.9, 0.1]]])  # [N=1, k=2, Vd=2]
    logits = p_d.log()
    labels = torch.tensor([[0, 0]])
    valid = torch.ones(1, 2, dtype=torch.bool)
    _, same = block_loss(logits, torch.zeros(1, 2), labels, p_d.log(), valid, w)
    assert same["l1"] == pytest.approx(0.0, abs=1e-6) and same["tau"] == pytest.approx(3.0)
    # target puts 0.8 inside the draft vocab, 0.2 outside: TV adds the outside mass
    p_t = torch.tensor([[[0.8, 0.0], [0.8, 0.0]]]).clamp_min(1e-12)
    _, m = block_loss(logits, torch.zeros(1, 2), labels, p_t.log(), valid, w)
    tv = torch.tensor([0.5 * (0.3 + 0.5 + 0.2), 0.5 * (0.1 + 0.1 + 0.2)])
    assert m["accept@1"] == pytest.approx(1 - float(tv[0]), abs=1e-5)
    assert m["tau"] == pytest.approx(1 + (1 - float(tv[0])) * (1 + (1 - float(tv[1]))), abs=1e-5)
    weights = torch.exp(-torch.arange(2) / 4.0)
    assert m["l1"] == pytest.approx(float((2 * tv * weights).sum() / weights.sum()), abs=1e-5)
    ce = -torch.log(torch.tensor([0.5, 0.9]))
    assert m["ce"] == pytest.approx(float((ce * weights).sum() / weights.sum()), abs=1e-5)
