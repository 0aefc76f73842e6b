"""The EAGLE-3 export to vLLM's layout (real/export_vllm.py), without vLLM: names, shapes, config, refusals,
and the function itself -- the exported weights run through vLLM's EAGLE-3 math (re-implemented below from
vllm/model_executor/models/qwen3_eagle3.py and qwen3.py of vLLM 0.32) give the lab drafter's logits.
"""
import json

import pytest
import torch

from lab.config_train import DrafterSpec
from lab.errors import LabError
from real.drafters.chain import ChainDraftModel
from real.drafters.layers import FrozenIO, draft_dims
from real.export_vllm import EAGLE3_ARCHITECTURE, eagle3_checkpoint, export_drafter, main, write_checkpoint
from real.targets import Target, tiny_target

# What Eagle3Qwen3ForCausalLM.load_weights (vllm/model_executor/models/qwen3_eagle3.py) reads from a checkpoint:
# names without the "model." prefix it adds; q/k/v and gate/up are stacked into qkv_proj / gate_up_proj by its
# hf_to_vllm_mapper; embed_tokens and lm_head absent = shared with the target; d2t = offsets, [draft_vocab].
D, D_T, HEADS, KV, HD, INTER = 64, 64, 4, 2, 16, 128


def expected_shapes(n_aux: int, vocab: int | None) -> dict[str, tuple]:
    shapes = {
        "fc.weight": (D, n_aux * D_T),
        "layers.0.input_layernorm.weight": (D,),
        "layers.0.hidden_norm.weight": (D,),
        "layers.0.self_attn.q_proj.weight": (HEADS * HD, 2 * D),  # first layer: [embeds; hidden] input
        "layers.0.self_attn.k_proj.weight": (KV * HD, 2 * D),
        "layers.0.self_attn.v_proj.weight": (KV * HD, 2 * D),
        "layers.0.self_attn.o_proj.weight": (D, HEADS * HD),
        "layers.0.self_attn.q_norm.weight": (HD,),
        "layers.0.self_attn.k_norm.weight": (HD,),
        "layers.0.post_attention_layernorm.weight": (D,),
        "layers.0.mlp.gate_proj.weight": (INTER, D),
        "layers.0.mlp.up_proj.weight": (INTER, D),
        "layers.0.mlp.down_proj.weight": (D, INTER),
        "norm.weight": (D,),
    }
    if vocab is not None:
        shapes.update({"d2t": (vocab,), "lm_head.weight": (vocab, D)})
    return shapes


@pytest.fixture(scope="module")
def target(one_thread):
    base = tiny_target("qwen3")
    return Target(base.model, base.tokenizer, base.name, tap_layers=[3, 0, 2])  # unsorted on purpose


def drafter_model(target, d2t: torch.Tensor, seed: int = 0, **spec) -> ChainDraftModel:
    spec = DrafterSpec(name="e3", method="eagle3", block_size=3, **spec)
    torch.manual_seed(seed)
    model = ChainDraftModel(draft_dims(target, spec, d2t.numel(), layers=1), FrozenIO(target, d2t), "eagle3")
    with torch.no_grad():  # norms away from 1, so that a norm exported under the wrong name shows
        for name, p in model.named_parameters():
            if p.dim() == 1:
                p.uniform_(0.5, 1.5)
            elif "fc" in name:
                p.mul_(4.0)
    return model.eval()


# ---- vLLM's EAGLE-3 forward, from the exported checkpoint only -----------------------------------------------
def rms(x, w, eps):
    return w * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))


def rope_neox(x, pos, theta):
    """x: [N, H, hd]; vLLM get_rope(is_neox_style=True): rotate the two halves."""
    hd = x.shape[-1]
    inv = 1.0 / theta ** (torch.arange(0, hd, 2, dtype=torch.float32) / hd)
    ang = pos.float()[:, None] * inv  # [N, hd/2]
    cos, sin = ang.cos()[:, None], ang.sin()[:, None]
    x1, x2 = x[..., : hd // 2], x[..., hd // 2:]
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], -1)


def vllm_layer(cfg, w, embeds, hidden, pos):
    """Qwen3Eagle3DecoderLayer (layer 0, norm_before_residual false) + the model's final norm, causal over the
    N entries. embeds, hidden: [N, d] -> (normed output [N, d], pre-norm output fed back as hidden)."""
    eps, hd = cfg["rms_norm_eps"], cfg["head_dim"]
    n, theta = embeds.shape[0], cfg["rope_parameters"]["rope_theta"]
    p = "layers.0."
    x = torch.cat([rms(embeds, w[p + "input_layernorm.weight"], eps), rms(hidden, w[p + "hidden_norm.weight"], eps)], -1)
    residual = hidden
    q = (x @ w[p + "self_attn.q_proj.weight"].T).view(n, cfg["num_attention_heads"], hd)
    k = (x @ w[p + "self_attn.k_proj.weight"].T).view(n, cfg["num_key_value_heads"], hd)
    v = (x @ w[p + "self_attn.v_proj.weight"].T).view(n, cfg["num_key_value_heads"], hd)
    q = rope_neox(rms(q, w[p + "self_attn.q_norm.weight"], eps), pos, theta)
    k = rope_neox(rms(k, w[p + "self_attn.k_norm.weight"], eps), pos, theta)
    rep = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(rep, 1), v.repeat_interleave(rep, 1)
    scores = torch.einsum("qhd,khd->hqk", q, k) * hd ** -0.5
    scores = scores.masked_fill(~torch.ones(n, n, dtype=torch.bool).tril(), float("-inf"))
    attn = torch.einsum("hqk,khd->qhd", scores.softmax(-1), v).reshape(n, -1) @ w[p + "self_attn.o_proj.weight"].T
    residual = attn + residual
    h = rms(residual, w[p + "post_attention_layernorm.weight"], eps)
    mlp = (torch.nn.functional.silu(h @ w[p + "mlp.gate_proj.weight"].T) * (h @ w[p + "mlp.up_proj.weight"].T))
    prenorm = mlp @ w[p + "mlp.down_proj.weight"].T + residual
    return rms(prenorm, w["norm.weight"], eps), prenorm


def vllm_logits(cfg, w, target, normed):
    """compute_logits: the draft head (own lm_head, else the target's) and d2t offsets -> [N, V], -inf outside."""
    head = w.get("lm_head.weight", target.lm_head.weight.detach())
    logits = normed @ head.T
    if "d2t" not in w:
        return logits
    full = logits.new_full((logits.shape[0], cfg["vocab_size"]), float("-inf"))
    full[:, torch.arange(cfg["draft_vocab_size"]) + w["d2t"]] = logits
    return full


def vllm_chain(cfg, w, target, ids: torch.Tensor, anchor: int, steps: int) -> torch.Tensor:
    """vLLM's EAGLE-3 proposer for one request whose verified tokens are ids[:anchor+1]: entries pair the aux
    hidden state at t with token t+1 (positions t), drafting step i feeds its pre-norm output back with the
    true token ids[anchor+i] (teacher forcing, like the lab's training unroll) -> logits [steps, V]."""
    out = target.model(input_ids=ids[None], output_hidden_states=True)
    aux = torch.cat([out.hidden_states[i][0] for i in cfg["eagle_aux_hidden_state_layer_ids"]], -1)  # vLLM order
    embed = target.embed_tokens
    hidden = aux[:anchor] @ w["fc.weight"].T  # combine_hidden_states: [P, d]
    tokens, pos = ids[1:anchor + 1], torch.arange(anchor)
    logits = []
    for i in range(steps):
        normed, prenorm = vllm_layer(cfg, w, embed(tokens).float(), hidden, pos)
        logits.append(vllm_logits(cfg, w, target, normed[-1:]))
        hidden = torch.cat([hidden, prenorm[-1:]])
        tokens = torch.cat([tokens, ids[anchor + i + 1: anchor + i + 2]])
        pos = torch.arange(anchor + i + 1)
    return torch.cat(logits)


def lab_logits(model, target, ids, anchor, steps):
    out = target.forward(ids[None], with_features=True)
    hidden = model.forward_unrolled(out.features[0], ids, torch.tensor([anchor]), steps)  # [1, steps, d]
    logits = model.logits(hidden)[0]  # [steps, Vd]
    if model.io.full_vocab:
        return logits
    full = logits.new_full((steps, target.vocab_size), float("-inf"))
    full[:, model.io.d2t] = logits
    return full


@pytest.mark.parametrize("vocab", [None, 300])
@torch.inference_mode()
def test_exported_weights_compute_the_lab_drafter_through_vllms_eagle3_math(target, vocab):
    d2t = torch.arange(target.vocab_size) if vocab is None else torch.randperm(target.vocab_size)[:vocab].sort().values
    model = drafter_model(target, d2t)
    cfg, state = eagle3_checkpoint(model, target)
    assert {k: tuple(v.shape) for k, v in state.items()} == expected_shapes(3, vocab)
    ids = torch.randint(0, 5000, (14,))
    if vocab is not None:  # the drafted tokens then lie in the draft vocabulary more often than not
        ids[6:] = d2t[torch.randint(0, vocab, (8,))]
    for anchor in (3, 9):
        ours = lab_logits(model, target, ids, anchor, steps=3)
        theirs = vllm_chain(cfg, state, target, ids, anchor, steps=3)
        finite = torch.isfinite(ours)
        assert torch.equal(finite, torch.isfinite(theirs))
        torch.testing.assert_close(theirs[finite], ours[finite], rtol=1e-4, atol=1e-4)
        assert torch.equal(theirs.argmax(-1), ours.argmax(-1))


def test_the_config_names_vllms_class_and_the_aux_layers_one_past_the_lab_taps(target):
    cfg, state = eagle3_checkpoint(drafter_model(target, torch.arange(500)), target)
    assert cfg["architectures"] == [EAGLE3_ARCHITECTURE] and cfg["model_type"] == "qwen3"
    # lab tap l = transformers' hidden_states[l + 1] = vLLM's residual stream after l + 1 layers; vLLM sorts
    assert cfg["eagle_aux_hidden_state_layer_ids"] == [1, 3, 4]
    assert (cfg["vocab_size"], cfg["draft_vocab_size"], cfg["target_hidden_size"]) == (target.vocab_size, 500, D_T)
    assert cfg["num_hidden_layers"] == 1 and cfg["norm_before_residual"] is False and cfg["norm_before_fc"] is False
    assert (cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["head_dim"]) == (HEADS, KV, HD)
    assert torch.equal(state["d2t"], torch.zeros(500, dtype=torch.long))  # identity rows 0..499 -> offsets 0


def test_fc_columns_follow_vllms_sorted_aux_order(target):
    model = drafter_model(target, torch.arange(target.vocab_size))
    _, state = eagle3_checkpoint(model, target)
    lab_blocks = model.fc.weight.detach().split(D_T, 1)  # taps [3, 0, 2]
    assert [torch.equal(b, lab_blocks[i]) for b, i in zip(state["fc.weight"].split(D_T, 1), (1, 2, 0))] == [True] * 3


@pytest.mark.parametrize("change, fragment", [
    ({"hidden_size": 32, "num_heads": 2, "num_kv_heads": 2, "head_dim": 16},
     "draft width 32 != target width 64"),
])
def test_a_drafter_vllm_cannot_express_is_refused_with_the_mismatch(target, change, fragment):
    with pytest.raises(LabError, match=fragment):
        eagle3_checkpoint(drafter_model(target, torch.arange(100), **change), target)


def test_a_non_qwen3_target_is_refused(one_thread):
    gemma = tiny_target("gemma3")
    with pytest.raises(LabError, match="only Qwen3 targets"):
        eagle3_checkpoint(drafter_model(gemma, torch.arange(100)), gemma)


@pytest.mark.parametrize("method", ["dflash", "dspark", "mtp"])
def test_methods_without_a_faithful_vllm_class_are_refused(target, tmp_path, method):
    spec = DrafterSpec(name="x", method=method, block_size=3)
    with pytest.raises(LabError, match=f"method {method} has no vLLM export"):
        export_drafter(spec, target, tmp_path / "none", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_written_checkpoint_round_trips(target, tmp_path):
    from safetensors.torch import load_file

    cfg, state = eagle3_checkpoint(drafter_model(target, torch.arange(256)), target)
    out = write_checkpoint(tmp_path / "e3", cfg, state)
    assert json.loads((out / "config.json").read_text())["draft_vocab_size"] == 256
    loaded = load_file(str(out / "model.safetensors"))
    assert loaded.keys() == state.keys() and all(torch.equal(loaded[k], state[k]) for k in state)


def test_cli_bad_run_dir_is_one_line(tmp_path, capsys):
    assert main([str(tmp_path), "--drafter", "e3", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "no config.yaml" in err[0]


# ---- the engine stage's side: what it serves from a run ------------------------------------------------------
def engine_run(tmp_path):
    from lab.config import config_from_dict
    from lab.runs import RunContext

    cfg = config_from_dict({
        "name": "x", "target": {"name": "tiny-qwen3-hd32", "dtype": "float32"},
        "prompts": {"datasets": [{"name": "humaneval", "cap": 1}]},
        "drafters": [{"name": "e3", "method": "eagle3", "block_size": 3, "draft_vocab_size": 128}],
        "engine": {"variants": [{"name": "plain"},
                                {"name": "spec", "speculative": {"method": "eagle3", "drafter": "e3"}}]}})
    return RunContext(cfg=cfg, root=tmp_path / "run", show_progress=False)


def test_engine_stage_saves_the_tiny_target_and_exports_the_named_drafter(tmp_path, one_thread):
    import os

    from transformers import AutoModelForCausalLM

    from lab.config_engine import EngineSection
    from real.drafters.trained import save_model
    from real.engine.served import exported_drafter, served_model_dir
    from real.engine.server import vllm_command
    from real.targets import load_target

    ctx = engine_run(tmp_path)
    target = load_target(ctx.cfg.target)
    spec = ctx.cfg.drafters[0]
    with pytest.raises(LabError, match="no trained weights"):
        exported_drafter(ctx, "e3", target)
    save_model(drafter_model(target, torch.arange(128)), spec, ctx.path("drafters", "e3"))
    out = exported_drafter(ctx, "e3", target)
    assert out == ctx.path("engine", "export", "e3")
    assert json.loads((out / "config.json").read_text())["draft_vocab_size"] == 128
    # retrained weights (newer) are exported again; unchanged ones are not
    first = (out / "config.json").stat().st_mtime_ns
    assert exported_drafter(ctx, "e3", target) == out and (out / "config.json").stat().st_mtime_ns == first
    save_model(drafter_model(target, torch.arange(128), seed=1), spec, ctx.path("drafters", "e3"))
    later = (ctx.path("drafters", "e3", "model.safetensors").stat().st_mtime_ns + 10**9) / 1e9
    os.utime(ctx.path("drafters", "e3", "model.safetensors"), (later, later))
    exported_drafter(ctx, "e3", target)
    assert (out / "config.json").stat().st_mtime_ns > first

    model_dir = served_model_dir(ctx.cfg, ctx)
    assert model_dir == ctx.path("engine", "export", "target") and (model_dir / "tokenizer.json").is_file()
    saved = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    assert saved.config.head_dim == 32
    ids = torch.tensor([[9707, 11, 1879, 0, 576]])
    with torch.inference_mode():
        torch.testing.assert_close(saved(ids).logits, target.model(ids).logits)
    argv, _ = vllm_command(EngineSection(), ctx.cfg.engine.variants[1].speculative, model_dir, tmp_path, "target", out)
    assert json.loads(argv[argv.index("--speculative-config") + 1]) == {
        "method": "eagle3", "num_speculative_tokens": 4, "model": str(out)}


def test_a_drafter_variant_without_its_export_is_not_started():
    from lab.config_engine import SpeculativeSpec

    with pytest.raises(ValueError, match="not exported yet"):
        SpeculativeSpec(method="eagle3", drafter="e3").vllm_config()


def test_drafter_check_compares_outputs_and_needs_a_run_with_the_variants(tmp_path, capsys):
    import yaml

    from real.engine.drafter_check import main as check_main
    from real.engine.drafter_check import matches

    assert matches([[1, 2, 3], [1, 2], [4]], [[1, 2, 3], [1, 5], [4, 4]]) == {
        "identical": 1, "of": 3, "first_difference": [None, 1, 1]}
    assert check_main([str(tmp_path)]) == 2
    assert "no config.yaml" in capsys.readouterr().err
    run = tmp_path / "run"
    run.mkdir()
    cfg = engine_run(tmp_path).cfg.model_dump(mode="json")
    (run / "config.yaml").write_text(yaml.safe_dump({**cfg, "engine": None}))
    assert check_main([str(run)]) == 2
    assert "no engine section" in capsys.readouterr().err
    cfg["engine"]["variants"] = cfg["engine"]["variants"][:1]
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    assert check_main([str(run)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "needs a plain variant and one with speculative.drafter" in err[0]
