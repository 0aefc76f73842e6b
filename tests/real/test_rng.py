"""Device-correct randomness: every torch.Generator in real/ is made by real/rng.py on the device of the
tensors it draws for. A CUDA tensor drawn with a CPU generator raises on a GPU only, so on a CPU-only
machine two checks stand in: the source (only the helper constructs generators) and a fake accelerator
("meta" tensors, generators recorded with the device they were asked for) under a guard that fails on
any draw whose generator was made for another device."""
import ast
import types
from pathlib import Path

import pytest
import torch
from torch.overrides import TorchFunctionMode

import real
from lab.config import load_config
from lab.config_train import DrafterSpec, TrainSection
from real import evaluate
from real.decode import DecodeResult
from real.rng import device_generator
from real.targets import tiny_target
from real.train import DrafterTrainer
from real.verify import sample_token

REAL = Path(real.__file__).parent
HELPER = REAL / "rng.py"


def generator_calls(path: Path) -> list[int]:
    """Line numbers of torch.Generator(...) / Generator(...) calls in one file."""
    lines = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
            if name == "Generator":
                lines.append(node.lineno)
    return lines


def test_only_the_helper_constructs_generators():
    offenders = {str(p.relative_to(REAL.parent)): generator_calls(p) for p in REAL.rglob("*.py") if p != HELPER}
    offenders = {p: lines for p, lines in offenders.items() if lines}
    assert not offenders, f"torch.Generator made outside real/rng.py (use device_generator): {offenders}"
    assert generator_calls(HELPER), "the helper itself makes the generator"


def test_helper_places_the_generator_on_the_device_of_what_it_is_given():
    model = torch.nn.Linear(2, 2)
    for where in ("cpu", torch.device("cpu"), torch.zeros(1), model):
        g = device_generator(where, 5)
        assert g.device == torch.device("cpu") and g.initial_seed() == 5
    a, b = device_generator("cpu", 3), device_generator("cpu", 3)
    assert torch.equal(torch.rand(4, generator=a), torch.rand(4, generator=b))


class FakeAccelerator(TorchFunctionMode):
    """Records the device each torch.Generator was asked for (a "meta" request gets a CPU generator,
    since torch has none for meta) and fails any draw whose generator was made for another device than
    the tensor it draws for -- what CUDA does for real."""

    def __init__(self, monkeypatch):
        super().__init__()
        self.asked: dict[int, torch.device] = {}
        self.draws = 0
        real_generator = torch.Generator

        def recording_generator(device="cpu"):
            device = torch.device(device)
            g = real_generator(device="cpu" if device.type == "meta" else device)
            self.asked[id(g)] = device
            return g

        monkeypatch.setattr(torch, "Generator", recording_generator)

    def device_of(self, generator) -> torch.device:
        return self.asked.get(id(generator), generator.device)

    def __torch_function__(self, func, types_, args=(), kwargs=None):
        kwargs = kwargs or {}
        gen = kwargs.get("generator")
        if gen is not None:
            tensors = [a for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor)]
            where = tensors[0].device if tensors else torch.device(kwargs.get("device") or "cpu")
            if self.device_of(gen).type != where.type:
                raise RuntimeError(f"Expected a '{where.type}' device type for generator but found "
                                   f"'{self.device_of(gen).type}' ({getattr(func, '__name__', func)})")
            self.draws += 1
        return func(*args, **kwargs)


@pytest.fixture
def accelerator(monkeypatch):
    mode = FakeAccelerator(monkeypatch)
    with mode:
        yield mode


@pytest.fixture(scope="module")
def meta_target():
    target = tiny_target("qwen3", num_layers=3, hidden_size=32)
    target.model.to("meta")
    return target


def test_trainer_init_draws_on_the_parameters_device(meta_target, accelerator):
    spec = DrafterSpec(name="dflash", method="dflash", block_size=4, draft_vocab_size=64)
    DrafterTrainer(spec, meta_target, torch.arange(64), TrainSection(steps=2, batch_size=1), None, seed=3)
    assert accelerator.draws > 0


def test_target_sampling_draws_on_the_logits_device(accelerator):
    logits = torch.zeros(2, 50, device="meta")
    token = sample_token(logits, 1.0, device_generator(logits, 0))
    assert token.device.type == "meta" and accelerator.draws == 1
    with pytest.raises(RuntimeError, match="generator"):
        sample_token(logits, 1.0, device_generator("cpu", 0))  # the guard does catch a mismatch


def test_evaluate_hands_decoding_a_generator_on_the_targets_device(tmp_path, monkeypatch, accelerator):
    cfg = load_config(Path(__file__).parents[2] / "experiments" / "smoke.yaml",
                      overrides=["decode.anchors=false"])
    tokenizer = types.SimpleNamespace(batch_decode=lambda rows: [str(r[0]) for r in rows])
    target = types.SimpleNamespace(device=torch.device("meta"), name="meta-target", tokenizer=tokenizer)
    seen = []

    def fake_decode(target_, prompt_ids, max_new, temperature, generator, stop_at_eos):
        seen.append(accelerator.device_of(generator))
        return DecodeResult(tokens=[1, 2], prefill_ms=1.0, decode_ms=1.0)

    monkeypatch.setattr(evaluate, "autoregressive_decode", fake_decode)
    ctx = types.SimpleNamespace(cfg=cfg, run_id="r", show_progress=False,
                                path=lambda *parts: tmp_path.joinpath(*parts))
    prompts = [types.SimpleNamespace(prompt_id="p0", turns=["a prompt"])]
    evaluate.evaluate_group(ctx, target, [], "d", prompts, [[5, 6, 7]], temperature=1.0)
    assert seen == [torch.device("meta")]
