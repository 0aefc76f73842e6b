"""Data preparation on a tiny target: regeneration, heldout split, feature cache == online features,
disk-space refusal, resumability."""
import json

import pytest
import torch

from lab.config import config_from_dict
from lab.errors import LabError
from lab.runs import open_run
from real import prepare
from real.prepare import cache_size_bytes, load_prepared, split_heldout

pytestmark = pytest.mark.usefixtures("one_thread")


def experiment(tmp_path, n_prompts=12, **prep):
    tmp_path.mkdir(parents=True, exist_ok=True)
    jsonl = tmp_path / "p.jsonl"
    jsonl.write_text("".join(json.dumps({"turns": [f"Question number {i}: why is the sky blue?"]}) + "\n"
                             for i in range(n_prompts)))
    data = {"name": "prep", "output_dir": str(tmp_path / "runs"), "seed": 3,
            "target": {"name": "tiny-qwen3", "dtype": "float32"},
            "prompts": {"datasets": [{"name": "x", "path": str(jsonl)}]},
            "drafters": [{"name": "ngram", "method": "ngram"}],
            "prepare": {"datasets": [{"name": "x", "path": str(jsonl)}], "max_new_tokens": 12,
                        "gen_batch_size": 5, "shard_tokens": 64, **prep},
            "train": {"max_length": 48}}
    return open_run(config_from_dict(data), show_progress=False)


def test_split_heldout_is_seeded_and_disjoint():
    train, held = split_heldout(100, 0.05, seed=1)
    assert len(held) == 5 and not set(train) & set(held) and len(train) + len(held) == 100
    assert split_heldout(100, 0.05, seed=1) == (train, held)
    assert len(split_heldout(10, 0.05, seed=1)[1]) == 1  # at least one heldout prompt


def test_cache_matches_online_and_resumes(tiny_qwen3, tmp_path):
    ctx = experiment(tmp_path / "c", feature_mode="cache", temperature=0.7)
    prepare.run_stage(ctx, target=tiny_qwen3)
    data = load_prepared(ctx.path("data"))
    assert data.mode == "cache"
    assert len(data.records["train"]) == 11 and len(data.records["heldout"]) == 1
    shards = sorted(ctx.path("data", "features").glob("shard-*.safetensors"))
    assert len(shards) > 1  # shard_tokens 64 splits the cache
    for rec in data.records["train"]:
        assert len(rec["ids"]) > rec["prompt_len"]  # every prompt got a response
    assert int(data.token_counts.sum()) == sum(len(r["ids"]) - r["prompt_len"] for r in data.records["train"])
    online = experiment(tmp_path / "o", feature_mode="online", temperature=0.7)
    prepare.run_stage(online, target=tiny_qwen3)
    data_online = load_prepared(online.path("data"))
    assert data_online.records == data.records  # regeneration is seeded
    for i in (0, 5, 10):
        a = data.sequence("train", i, tiny_qwen3, 48)
        b = data_online.sequence("train", i, tiny_qwen3, 48)
        assert torch.equal(a.ids, b.ids) and a.prompt_len == b.prompt_len
        for x, y in ((a.features, b.features), (a.last_hidden, b.last_hidden), (a.lse, b.lse)):
            assert torch.allclose(x, y, atol=1e-5, equal_nan=True)
        # the log-normaliser exists where training reads it (response positions) and only there
        assert a.lse[a.prompt_len:].isfinite().all() and a.lse[:a.prompt_len].isnan().all()
    # a lost shard is rebuilt identically; a finished stage is skipped
    before = shards[1].read_bytes()
    shards[1].unlink()
    ctx.path(".stages", "prepare.done").unlink()
    prepare.run_stage(ctx, target=tiny_qwen3)
    assert shards[1].read_bytes() == before
    prepare.run_stage(ctx, target=tiny_qwen3)


def test_cache_refused_when_disk_is_short(tiny_qwen3, tmp_path, monkeypatch, capsys):
    ctx = experiment(tmp_path, n_prompts=4, feature_mode="cache")

    class Usage:
        free = 1024

    monkeypatch.setattr(prepare.shutil, "disk_usage", lambda path: Usage())
    with pytest.raises(LabError, match="feature_mode: online"):
        prepare.run_stage(ctx, target=tiny_qwen3)
    assert "GiB needed" in capsys.readouterr().out
    assert not ctx.stage_done("prepare")


def test_size_estimate():
    assert cache_size_bytes(10, 5, 64, torch.bfloat16) == 10 * (6 * 64 * 2 + 4)


def test_greedy_regeneration_follows_the_target(tiny_qwen3, tmp_path):
    from real.decode import autoregressive_decode

    ctx = experiment(tmp_path, n_prompts=3, temperature=0.0, heldout_fraction=0.0)
    prepare.run_stage(ctx, target=tiny_qwen3)
    for rec in load_prepared(ctx.path("data")).records["train"]:
        prompt = rec["ids"][: rec["prompt_len"]]
        assert rec["ids"][rec["prompt_len"]:] == autoregressive_decode(tiny_qwen3, prompt, 12).tokens


def test_force_keeps_the_old_data_until_the_new_is_complete(tiny_qwen3, tmp_path, monkeypatch):
    ctx = experiment(tmp_path, n_prompts=4, feature_mode="online")
    prepare.run_stage(ctx, target=tiny_qwen3)
    before = {p.relative_to(ctx.path("data")): p.read_bytes() for p in ctx.path("data").rglob("*") if p.is_file()}
    ctx.redo("prepare")

    def crash(*args, **kwargs):
        raise KeyboardInterrupt  # the user stops the forced rerun halfway

    monkeypatch.setattr(prepare, "regenerate", crash)
    with pytest.raises(KeyboardInterrupt):
        prepare.run_stage(ctx, target=tiny_qwen3)
    after = {p.relative_to(ctx.path("data")): p.read_bytes() for p in ctx.path("data").rglob("*") if p.is_file()}
    assert after == before and ctx._marker("prepare").exists()
    monkeypatch.undo()
    prepare.run_stage(ctx, target=tiny_qwen3)  # the rerun completes and swaps in
    assert ctx.stage_done("prepare") and not list(ctx.root.glob(".data.redo*"))


def test_features_skip_the_lm_head_over_the_prompt_but_keep_its_values(tiny_gemma3):
    """lse_from: the LM head runs over response positions only; what it returns there equals the full pass
    (a misaligned logits_to_keep would shift every value by a position)."""
    from real.prepare import target_features

    ids = torch.arange(100, 140)  # [40]
    feats, last, lse = target_features(tiny_gemma3, ids)
    feats_r, last_r, lse_r = target_features(tiny_gemma3, ids, lse_from=25)
    assert torch.equal(feats, feats_r) and torch.equal(last, last_r)
    assert lse_r[:25].isnan().all()
    torch.testing.assert_close(lse_r[25:], lse[25:], rtol=1e-5, atol=1e-5)
    assert target_features(tiny_gemma3, ids, lse_from=40)[2][-1].isfinite()  # at least the last position
