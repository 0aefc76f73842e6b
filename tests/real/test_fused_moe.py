"""real/fused_moe.py and real/bench_moe.py on a CPU: the token sort vLLM's kernel relies on, the blocked
algorithm (emulated in torch from the sort's output) against the fp32 reference, expert-parallel ranks adding up
to the whole layer, the Triton kernel itself in Triton's interpreter where Triton is installed, and the bench's
bad input (exit 2, one line)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from real import bench_moe
from real.fused_moe import (
    KernelConfig,
    align_tokens,
    default_config,
    local_ids,
    max_padded_slots,
    reference_moe,
    route_uniform,
)

ROOT = Path(__file__).resolve().parents[2]
QWEN3_MOE = ROOT / "sim" / "validation" / "configs" / "qwen3-30b-a3b.json"


def _layer(tokens=13, experts=8, top_k=2, hidden=24, inter=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids, weights = route_uniform(tokens, experts, top_k, g)  # [M, k]
    x = torch.randn(tokens, hidden, generator=g)  # [M, H]
    w13 = torch.randn(experts, 2 * inter, hidden, generator=g) * 0.2  # [E, 2I, H]
    w2 = torch.randn(experts, hidden, inter, generator=g) * 0.2  # [E, H, I]
    return x, w13, w2, ids, weights


def _blocked(x, w13, w2, ids, weights, block_m, rank=0):
    """The kernel's algorithm in torch: per BLOCK_M block of the sorted slots, the block's expert's GEMMs."""
    experts_local, inter2, _ = w13.shape
    tokens, top_k = ids.shape
    sorted_slots, block_experts, total = align_tokens(local_ids(ids, experts_local, rank), experts_local, block_m)
    gate_up = torch.zeros(tokens * top_k, inter2)  # [M k, 2I]
    down = torch.zeros(tokens * top_k, w2.shape[1])  # [M k, H]
    for b, expert in enumerate(block_experts.tolist()):
        if b * block_m >= int(total) or expert == experts_local:
            continue
        slots = sorted_slots[b * block_m:(b + 1) * block_m].long()
        slots = slots[slots < tokens * top_k]
        gate_up[slots] = x[slots // top_k] @ w13[expert].T
    act = torch.nn.functional.silu(gate_up[:, :inter2 // 2]) * gate_up[:, inter2 // 2:]  # [M k, I]
    for b, expert in enumerate(block_experts.tolist()):
        if b * block_m >= int(total) or expert == experts_local:
            continue
        slots = sorted_slots[b * block_m:(b + 1) * block_m].long()
        slots = slots[slots < tokens * top_k]
        down[slots] = (act[slots] @ w2[expert].T) * weights.reshape(-1)[slots, None]
    return down.view(tokens, top_k, -1).sum(dim=1)


@pytest.mark.parametrize("block_m", [1, 4, 16])
def test_the_sort_puts_every_slot_once_in_blocks_of_one_expert(block_m):
    _, _, _, ids, _ = _layer(tokens=29, experts=8, top_k=3)
    experts_local = 4  # rank 1 of 2: experts 4..7
    local = local_ids(ids, experts_local, rank=1)
    sorted_slots, block_experts, total = align_tokens(local, experts_local, block_m)
    slots = 29 * 3
    assert sorted_slots.numel() == max_padded_slots(slots, experts_local, block_m)
    real = sorted_slots[sorted_slots < slots].long()
    assert sorted(real.tolist()) == list(range(slots))  # every slot exactly once
    flat = local.reshape(-1)
    for b, expert in enumerate(block_experts.tolist()):
        block = sorted_slots[b * block_m:(b + 1) * block_m].long()
        block = block[block < slots]
        assert (flat[block] == expert).all()  # one expert per block
    on_rank = int((flat < experts_local).sum())
    counts = torch.bincount(flat, minlength=experts_local + 1)[:experts_local]
    assert int(total) == int(((counts + block_m - 1) // block_m * block_m).sum()) >= on_rank
    assert (block_experts[int(total) // block_m:] == experts_local).all()  # past this rank's experts: skipped


@pytest.mark.parametrize("block_m", [1, 3, 16])
def test_the_blocked_algorithm_equals_the_reference(block_m):
    x, w13, w2, ids, weights = _layer()
    ref = reference_moe(x, w13, w2, ids, weights)
    assert ref.abs().max() > 0.1
    torch.testing.assert_close(_blocked(x, w13, w2, ids, weights, block_m), ref, rtol=1e-5, atol=1e-5)


def test_expert_parallel_ranks_add_up_to_the_whole_layer():
    x, w13, w2, ids, weights = _layer(tokens=17, experts=8, top_k=2)
    whole = reference_moe(x, w13, w2, ids, weights)
    parts = [_blocked(x, w13[r * 4:(r + 1) * 4], w2[r * 4:(r + 1) * 4], ids, weights, 4, rank=r) for r in (0, 1)]
    torch.testing.assert_close(parts[0] + parts[1], whole, rtol=1e-5, atol=1e-5)
    assert parts[0].abs().max() > 0 and parts[1].abs().max() > 0


def test_default_tiles_follow_vllms_rule():
    assert default_config(8, 128) == KernelConfig(16, 32, 64, 1)
    assert default_config(512, 128) == KernelConfig(64, 64, 32, 8)


def test_moe_shape_reads_qwen3_moe_and_splits_it():
    config = json.loads(QWEN3_MOE.read_text())
    assert bench_moe.moe_shape(config, tp=1, ep=2) == {"experts": 128, "experts_local": 64,
                                                       "shard_intermediate": 768, "hidden": 2048, "top_k": 8}
    assert bench_moe.moe_shape(config, tp=4, ep=1)["shard_intermediate"] == 192


def test_bench_bad_input_is_one_line_and_exit_2(tmp_path, capsys):
    dense = tmp_path / "dense.json"
    dense.write_text(json.dumps({"hidden_size": 64, "intermediate_size": 128, "num_attention_heads": 4}))
    out = tmp_path / "moe.yaml"
    assert bench_moe.main(["--config", str(QWEN3_MOE), "--device", "cpu", "--out", str(out)]) == 2
    assert "--device cpu" in capsys.readouterr().err
    out.write_text("runs: [1, 2]\nnot: yaml: at all")
    assert bench_moe.main(["--config", str(QWEN3_MOE), "--out", str(out)]) == 2
    assert "not overwritten" in capsys.readouterr().err
    assert out.read_text().startswith("runs: [1, 2]")  # nothing damaged
    assert bench_moe.main(["--config", str(dense), "--out", str(tmp_path / "d.yaml")]) == 2
    assert "num_experts" in capsys.readouterr().err  # the device check comes later: no GPU needed to say this


TRITON_CHECK = """
import torch
from real.fused_moe import KernelConfig, fused_moe, reference_moe, route_uniform
g = torch.Generator().manual_seed(3)
for tokens, experts, top_k, cfg, rank, local in [(13, 8, 2, KernelConfig(16, 32, 16, 1), 0, 8),
                                                  (40, 8, 2, KernelConfig(16, 16, 16, 8), 1, 4)]:
    ids, w = route_uniform(tokens, experts, top_k, g)
    x = torch.randn(tokens, 48, generator=g)
    w13 = torch.randn(local, 64, 48, generator=g) * 0.2
    w2 = torch.randn(local, 48, 32, generator=g) * 0.2
    ref = reference_moe(x, w13, w2, ids, w, rank)
    out = fused_moe(x, w13, w2, ids, w, cfg, rank)
    assert ref.abs().max() > 0.1
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)
print("ok")
"""


def test_the_triton_kernel_in_the_interpreter_equals_the_reference():
    """The kernel's own pointer arithmetic and masks, run by Triton's CPU interpreter (skipped where Triton is not
    installed: the lab's CPU environment; on a GPU machine real.bench_moe checks it against the reference)."""
    pytest.importorskip("triton")
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": os.pathsep.join(
        [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
    done = subprocess.run([sys.executable, "-c", TRITON_CHECK], env=env, capture_output=True, text=True,
                          timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "ok"
