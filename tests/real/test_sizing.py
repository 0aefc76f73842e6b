"""Weights-free sizing targets: the shipped presets have the public models' shapes and parameter counts
(checked on the meta device, no memory), and a random-init target runs on CPU with the real tokenizer."""
import json

import pytest
import torch

from lab.config import PRESET_TARGETS, TargetSection, config_from_dict
from lab.errors import LabError
from lab.report import build_report
from lab.runs import open_run
from real.sizing import PRESET_DIR, build_preset_model, preset_config, preset_tokenizer
from real.targets import load_target

pytestmark = pytest.mark.usefixtures("one_thread")

# Parameter counts from the model cards (billions; Qwen3 "non-embedding" excludes the input embedding and
# an untied LM head). Gemma3 4B+ are the text decoder only (the cards' totals include the vision tower).
PUBLIC = {
    "qwen3-0.6b": (0.6, 0.44), "qwen3-1.7b": (1.7, 1.4), "qwen3-4b": (4.0, 3.6), "qwen3-8b": (8.2, 6.95),
    "qwen3-14b": (14.8, 13.2), "qwen3-32b": (32.8, 31.2),
    "gemma3-270m": (0.268, 0.100), "gemma3-1b": (1.0, None), "gemma3-4b": (3.88, None),
    "gemma3-12b": (11.77, None), "gemma3-27b": (27.0, None),
}


def test_every_preset_name_has_a_config_and_vice_versa():
    assert sorted(p.stem for p in PRESET_DIR.glob("*.json")) == sorted(PRESET_TARGETS) == sorted(PUBLIC)


@pytest.mark.parametrize("name", PRESET_TARGETS)
def test_preset_parameter_count_matches_the_public_model(name):
    model = build_preset_model(preset_config(name), "meta", torch.bfloat16)
    total = sum(p.numel() for p in model.parameters()) / 1e9
    embed = model.get_input_embeddings().weight.numel() / 1e9
    head = 0.0 if model.config.tie_word_embeddings else embed
    card_total, card_non_embedding = PUBLIC[name]
    assert total == pytest.approx(card_total, rel=0.04)
    if card_non_embedding is not None:
        assert total - embed - head == pytest.approx(card_non_embedding, rel=0.04)


def test_qwen3_4b_shapes_are_those_of_the_gpu_check():
    config = preset_config("qwen3-4b")
    facts = (config.hidden_size, config.num_hidden_layers, config.intermediate_size, config.num_attention_heads,
             config.num_key_value_heads, config.head_dim, config.vocab_size, config.tie_word_embeddings)
    assert facts == (2560, 36, 9728, 32, 8, 128, 151936, True)


def test_gemma3_preset_keeps_the_embedded_models_layer_pattern():
    data = json.loads((PRESET_DIR / "gemma3-27b.json").read_text())
    assert data["layer_types"][5] == "full_attention" and data["layer_types"].count("full_attention") == 62 // 6
    cut = preset_config("gemma3-27b", num_layers=7)
    assert cut.num_hidden_layers == 7 and len(cut.layer_types) == 7


def test_a_random_qwen3_preset_decodes_with_the_real_tokenizer():
    model = build_preset_model(preset_config("qwen3-0.6b", num_layers=1), "cpu", torch.float32, seed=1)
    tokenizer = preset_tokenizer("qwen3-0.6b")
    ids = torch.tensor([tokenizer.encode("def fib(n):")])  # [1, T]
    with torch.inference_mode():
        logits = model(input_ids=ids).logits  # [1, T, V]
    assert logits.shape == (1, ids.shape[1], 151936) and torch.isfinite(logits).all()
    again = build_preset_model(preset_config("qwen3-0.6b", num_layers=1), "cpu", torch.float32, seed=1)
    assert torch.equal(again.model.layers[0].mlp.up_proj.weight, model.model.layers[0].mlp.up_proj.weight)


def test_load_target_builds_a_random_init_target():
    section = TargetSection(name="qwen3-0.6b", init="random", dtype="bfloat16")
    target = load_target(section)
    assert target.name == "qwen3-0.6b" and target.dtype == torch.bfloat16 and target.num_layers == 28
    assert target.tokenizer.eos_token_id is not None


@pytest.mark.parametrize("target, fragment", [
    ({"name": "qwen3-5b", "init": "random"}, "no preset for init: random"),
    ({"name": "qwen3-4b", "init": "random", "path": "/x"}, "drop path"),
    ({"name": "qwen3-4b"}, "init: random for a weights-free preset"),
])
def test_bad_random_init_targets_fail_validation(target, fragment):
    with pytest.raises(LabError, match=fragment):
        config_from_dict({"name": "t", "stages": ["report"], "target": target})


def test_report_of_a_random_init_run_says_timing_only(tmp_path):
    cfg = config_from_dict({"name": "t", "output_dir": str(tmp_path), "stages": ["report"],
                            "target": {"name": "qwen3-4b", "init": "random"}})
    assert "Timing only: acceptance meaningless" in build_report(open_run(cfg, show_progress=False))
