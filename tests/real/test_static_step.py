"""target.engine static: a preallocated KV cache rolled back by counters gives, in fp32, the very tokens
of the eager DynamicCache path -- plain and speculative decoding, with rejections, across Gemma3's sliding
window -- and its one cache is reused across requests. (CUDA graphs: tests/real/test_gpu.py.)"""
import pytest
import torch

from lab.config import TargetSection
from real.decode import autoregressive_decode, speculative_decode
from real.rng import device_generator
from real.static_step import StaticKV, resolve_engine
from real.targets import load_target, tiny_target
from tests.real.drafters_for_tests import NoisyOracleDrafter

pytestmark = pytest.mark.usefixtures("one_thread")


def prompt(n=30, seed=0):
    return torch.randint(100, 5000, (n,), generator=device_generator("cpu", seed)).tolist()


@pytest.mark.parametrize("kind", ["qwen3", "gemma3"])
def test_static_engine_decodes_the_eager_tokens(kind):
    target = tiny_target(kind)  # gemma3: sliding window 16, far below the 30 + 40 tokens decoded
    ids = prompt()
    eager = autoregressive_decode(target, ids, 40, stop_at_eos=False)
    eager_spec = speculative_decode(target, NoisyOracleDrafter(eager.tokens, len(ids)), ids, 40, stop_at_eos=False)
    target.engine = "static"
    static = autoregressive_decode(target, ids, 40, stop_at_eos=False)
    static_spec = speculative_decode(target, NoisyOracleDrafter(eager.tokens, len(ids)), ids, 40,
                                     stop_at_eos=False)
    assert static.tokens == eager.tokens
    assert static_spec.tokens == eager_spec.tokens == eager.tokens
    accepted = [s.accepted for s in static_spec.steps]
    assert min(accepted) < max(accepted) and any(0 < a < 5 for a in accepted)  # partial rollbacks
    assert [s.accepted for s in eager_spec.steps] == accepted


def test_static_cache_is_one_buffer_reused_and_grown_on_demand():
    target = tiny_target("qwen3")
    target.engine = "static"
    first = target.new_cache(max_len=100)
    assert isinstance(first, StaticKV) and target.new_cache(max_len=50) is first
    bigger = target.new_cache(max_len=1000)
    assert bigger is not first and bigger.max_len >= 1000
    target.forward(torch.tensor([prompt(12)]), bigger)
    assert bigger.length() == 12
    target.crop(bigger, 5)
    assert bigger.length() == 7
    assert target.new_cache(max_len=10).length() == 0
    target.engine = "eager"
    assert not isinstance(target.new_cache(max_len=100), StaticKV)


def test_engine_auto_is_eager_on_cpu_and_graphs_on_cuda():
    assert resolve_engine("auto", "cpu") == "eager" and resolve_engine("auto", "cuda:0") == "graphs"
    assert resolve_engine("static", "cpu") == "static"
    assert load_target(TargetSection(name="tiny-qwen3", dtype="float32", engine="static")).engine == "static"


def test_counters_made_inside_inference_mode_roll_back_outside_it():
    """On CUDA, StaticLayer's lazy init moves its counter with .to(device) inside the target's inference_mode
    forward, making it an inference tensor; a crop / rewind from ordinary code (bench_step, the decode loops'
    callers) must still work. CPU's .to() is a no-op, so the CUDA situation is recreated here: this crashed
    the first H200 run ("Inplace update to inference tensor outside InferenceMode")."""
    target = tiny_target("qwen3")
    target.engine = "static"
    cache = target.new_cache(max_len=64)
    target.forward(torch.tensor([prompt(12)]), cache)
    with torch.inference_mode():
        for layer in cache.layers:
            layer.cumulative_length = layer.cumulative_length.clone()  # what .to("cuda") gives there
    assert cache.layers[0].cumulative_length.is_inference()
    target.crop(cache, 4)
    assert cache.length() == 8
    cache.rewind()
    assert cache.length() == 0
