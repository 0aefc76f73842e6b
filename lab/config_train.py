"""Experiment-schema sections for drafters, data preparation and training (issue 3).

Each drafter in an experiment is one DrafterSpec; `method` picks the file in real/drafters/.

    drafters:
      - {name: dspark, method: dspark, block_size: 7, num_layers: 2, markov_rank: 64, draft_vocab_size: 8192}
      - {name: dflash, method: dflash, block_size: 7, num_layers: 2, draft_vocab_size: 8192}
    prepare: {datasets: [{name: sharegpt, cap: 200}], max_new_tokens: 128, feature_mode: online}
    train: {steps: 200, batch_size: 4, num_anchors: 32}

Unset architecture sizes (hidden_size, heads, ...) come from the target's own layer config, as
DeepSpec's build_draft_config does; unset loss weights come from the method (dspark_spec.md §1.3).
"""
from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from lab.config_base import DatasetSpec, Seed, StrictModel, YamlSwitch
from lab.slug import ShardPart, Slug

DrafterMethod = Literal["ngram", "dspark", "dflash", "eagle3", "mtp"]
TRAINED_METHODS = ("dspark", "dflash", "eagle3", "mtp")


class DrafterSpec(StrictModel):
    name: ShardPart = Field(description="label used in traces and reports and as a directory, e.g. dspark-r64 "
                                        "(no '__': it separates the parts of a trace file's name)")
    method: DrafterMethod
    block_size: int = Field(7, ge=1, le=32, description="draft tokens per round (k at full block)")
    block_layout: Literal["lab", "vllm"] = Field(
        "lab", description="dflash draft block: lab = [anchor, mask x (k-1)], every slot drafts (the anchor "
                           "slot the next token); vllm = [anchor, mask x k], the k mask slots draft and the "
                           "anchor slot's output is unused -- vLLM's DFlash layout, which real/export_vllm.py "
                           "exports")
    # n-gram / prompt-lookup drafting (training-free)
    ngram_max: int = Field(4, ge=1, le=16, description="longest suffix n-gram to look up")
    ngram_min: int = Field(1, ge=1, le=16, description="shortest suffix n-gram to look up")
    # architecture of trained drafters (None = the target's value)
    num_layers: int = Field(1, ge=1, le=16,
                            description="draft decoder layers (dspark/dflash; paper: 5). eagle3 and mtp use 1")
    hidden_size: int | None = Field(None, ge=8, description="draft width d; != target's adds in/out projections")
    intermediate_size: int | None = Field(None, ge=8, description="MLP width; default: target's (scaled with d)")
    num_heads: int | None = Field(None, ge=1)
    num_kv_heads: int | None = Field(None, ge=1)
    head_dim: int | None = Field(None, ge=4)
    markov_rank: int = Field(256, ge=0, description="dspark Markov head rank r (0 = pure DFlash backbone)")
    markov_variant: Literal["vanilla", "gated", "rnn"] = "vanilla"
    confidence_head: bool = Field(True, description="dspark: c_k = sigmoid(w.[h_k; W1[x_(k-1)]] + b)")
    draft_vocab_size: int | None = Field(None, ge=16,
                                         description="reduced draft vocab: most frequent target tokens "
                                                     "in the training data (None = full vocab)")
    # losses (None = the method's default, see real/losses.py)
    ce_weight: float | None = Field(None, ge=0)
    l1_weight: float | None = Field(None, ge=0)
    conf_weight: float | None = Field(None, ge=0)
    gamma_decay: float = Field(4.0, gt=0, description="position weights exp(-k/gamma); DeepSpec code: 4.0")
    step_decay: float = Field(0.8, gt=0, description="eagle3 training-time-test step weights step_decay^i")

    @model_validator(mode="after")
    def _ngram_order(self):
        if self.ngram_min > self.ngram_max:
            raise ValueError(f"ngram_min {self.ngram_min} > ngram_max {self.ngram_max}")
        return self

    @model_validator(mode="after")
    def _block_layout_is_dflash(self):
        if self.block_layout != "lab" and self.method != "dflash":
            raise ValueError(f"block_layout {self.block_layout!r}: only dflash drafters have a vllm block layout, "
                             f"not {self.method}")
        return self

    @property
    def trained(self) -> bool:
        return self.method in TRAINED_METHODS


class TrainDataset(DatasetSpec):
    name: Slug = Field("sharegpt", description="dataset label; also the PyPI set name when `path` is unset")


class PrepareSection(StrictModel):
    datasets: list[TrainDataset] = Field(default_factory=lambda: [TrainDataset()], min_length=1)
    shuffle_seed: Seed = 980406
    chat_template: bool = True
    max_prompt_tokens: int = Field(256, ge=8, description="longer prompts are left-truncated")
    max_new_tokens: int = Field(256, ge=1, description="regenerated response length cap (DeepSpec: 4096)")
    temperature: float = Field(0.7, ge=0, description="regeneration sampling (DeepSpec: 0.7 / 0.8 / 20)")
    top_p: float = Field(0.8, gt=0, le=1)
    top_k: int = Field(20, ge=0)
    gen_batch_size: int = Field(8, ge=1, description="prompts per batched model.generate call")
    heldout_fraction: float = Field(0.05, ge=0, lt=1)
    feature_mode: Literal["cache", "online"] = Field(
        "online", description="cache: sharded safetensors of target features; online: computed in training")
    shard_tokens: int = Field(65536, ge=64, description="tokens per feature shard")
    cache_dtype: Literal["target", "float32", "bfloat16"] = "target"
    disk_margin_gb: float = Field(1.0, ge=0, description="free space kept after the cache is written")


class TrainSection(StrictModel):
    steps: int = Field(200, ge=1, description="optimizer steps, the same for every drafter")
    batch_size: int = Field(4, ge=1, description="sequences per optimizer step (global, over all ranks)")
    num_anchors: int = Field(32, ge=1, description="anchors sampled per sequence on response tokens "
                                                    "(DeepSpec: 512)")
    max_length: int = Field(512, ge=16, description="sequences are cut to this many tokens")
    lr: float = Field(6e-4, gt=0)
    warmup_fraction: float = Field(0.04, ge=0, lt=1)
    min_lr_ratio: float = Field(0.0, ge=0, le=1, description="cosine floor as a fraction of lr")
    weight_decay: float = Field(0.0, ge=0)
    grad_clip: float = Field(1.0, gt=0)
    autocast: Annotated[Literal["off", "bf16", "auto"], YamlSwitch] = Field(
        "auto", description="bf16 autocast: auto = on for CUDA, off for CPU (measured slower there)")
    save_every: int = Field(50, ge=1, description="checkpoint every N steps (and at the end)")
    drafters: list[str] | None = Field(None, description="train only these drafter names (default: all)")
