"""Trained drafters (dspark, dflash, eagle3, mtp) on tiny random targets: shapes, Markov rank 0 == DFlash,
confidences in (0, 1), greedy identity with the target's own decoding, lossless sampling with their q."""
import numpy as np
import pytest
import torch
from scipy.stats import chisquare

from lab.config_train import DrafterSpec, TrainSection
from real.decode import autoregressive_decode, speculative_decode
from real.drafters import drafter_class
from real.drafters.markov import MarkovHead
from real.prepare import Sequence, target_features
from real.train import DrafterTrainer, draft_vocab, sample_anchors, slot_targets
from real.verify import verify_sampling

pytestmark = pytest.mark.usefixtures("one_thread")


SPECS = {
    "dspark": {"method": "dspark", "block_size": 4, "markov_rank": 8},
    "dspark-gated": {"method": "dspark", "block_size": 4, "markov_rank": 8, "markov_variant": "gated"},
    "dspark-rnn-narrow": {"method": "dspark", "block_size": 4, "markov_rank": 8, "markov_variant": "rnn",
                              "hidden_size": 32, "intermediate_size": 64, "num_heads": 2, "num_kv_heads": 1, "head_dim": 16},
    "dspark-vocab": {"method": "dspark", "block_size": 4, "markov_rank": 8, "draft_vocab_size": 256},
    "dflash": {"method": "dflash", "block_size": 4},
    "dflash-vllm": {"method": "dflash", "block_size": 4, "block_layout": "vllm"},
    "eagle3": {"method": "eagle3", "block_size": 4},
    "eagle3-vocab": {"method": "eagle3", "block_size": 3, "draft_vocab_size": 256},
    "mtp": {"method": "mtp", "block_size": 1},
}


def make_spec(name: str, **over) -> DrafterSpec:
    return DrafterSpec(name=name, **{**SPECS[name], **over})


def build(target, spec: DrafterSpec, counts: torch.Tensor | None = None, seed: int = 0):
    cls = drafter_class(spec.method)
    counts = counts if counts is not None else torch.arange(target.vocab_size).flip(0)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = cls.build_model(spec, target, draft_vocab(counts, spec.draft_vocab_size))
    return cls, model


def a_sequence(target, n_prompt: int = 12, n_new: int = 36) -> Sequence:
    prompt = torch.randint(100, 5000, (n_prompt,), generator=torch.Generator().manual_seed(1)).tolist()
    out = autoregressive_decode(target, prompt, n_new, stop_at_eos=False).tokens
    ids = torch.tensor(prompt + out)
    feats, last, lse = target_features(target, ids)
    return Sequence(ids, n_prompt, feats, last, lse)


@pytest.mark.parametrize("name", list(SPECS))
def test_shapes_and_confidence(tiny_qwen3, name):
    target = tiny_qwen3
    spec = make_spec(name)
    cls, model = build(target, spec)
    seq = a_sequence(target)
    anchors = sample_anchors(seq.ids.numel(), seq.prompt_len, 6, torch.Generator().manual_seed(0))
    feats = cls.select_features(seq.features, seq.last_hidden)  # [T, F]: tapped, or MTP's final hidden
    logits, conf = model(feats, seq.ids, anchors)
    vd = spec.draft_vocab_size or target.vocab_size
    assert logits.shape == (6, spec.block_size, vd)
    if spec.method == "dspark":
        assert conf.shape == (6, spec.block_size)
        c = torch.sigmoid(conf)
        assert bool(((c > 0) & (c < 1)).all())
    else:
        assert conf is None
    labels, logp, valid = slot_targets(model.io, seq, anchors, spec.block_size)
    assert labels.shape == valid.shape == (6, spec.block_size) and logp.shape == logits.shape
    assert float(logp.exp().sum(-1).max()) <= 1.0 + 1e-4  # p_t over the draft vocab, normalised over V

    drafter = cls(name, spec.block_size, model.eval())
    state = drafter.start(seq.ids[:20].tolist(), feats[:20])
    greedy = drafter.propose(state, int(seq.ids[20]), spec.block_size, 0.0, None)
    assert greedy.tokens.shape == (spec.block_size,) and greedy.probs is None
    sampled = drafter.propose(state, int(seq.ids[20]), spec.block_size, 1.0, torch.Generator().manual_seed(0))
    assert sampled.probs.shape == (spec.block_size, target.vocab_size)
    assert torch.allclose(sampled.probs.sum(-1), torch.ones(spec.block_size), atol=1e-4)
    picked = sampled.probs.gather(1, sampled.tokens[:, None]).squeeze(1)
    assert bool((picked > 0).all())  # every drafted token has mass under its own q
    for conf_k in (greedy.confidence, sampled.confidence):
        assert conf_k.shape == (spec.block_size,) and bool(((conf_k > 0) & (conf_k <= 1)).all())
    if spec.draft_vocab_size:
        assert set(sampled.tokens.tolist()) <= set(model.io.d2t.tolist())
        outside = torch.ones(target.vocab_size, dtype=torch.bool)
        outside[model.io.d2t] = False
        assert float(sampled.probs[:, outside].sum()) == 0.0


@pytest.mark.parametrize("variant", ["none", "conf"])
def test_markov_rank_zero_reproduces_dflash(tiny_qwen3, variant):
    target = tiny_qwen3
    seq = a_sequence(target)
    _, dflash = build(target, make_spec("dflash"), seed=3)
    spec = DrafterSpec(name="dspark0", method="dspark", block_size=4, markov_rank=0,
                       confidence_head=variant == "conf")
    cls, dspark = build(target, spec, seed=4)
    missing, unexpected = dspark.load_state_dict(dflash.state_dict(), strict=False)
    assert not unexpected and all(m.startswith("confidence.") for m in missing)
    anchors = torch.tensor([12, 20, 30])
    a, _ = dflash(seq.features, seq.ids, anchors)
    b, _ = dspark(seq.features, seq.ids, anchors)
    assert torch.equal(a, b)
    d1 = drafter_class("dflash")("f", 4, dflash.eval())
    d2 = cls("s", 4, dspark.eval())
    for temp in (0.0, 1.0):
        p1 = d1.propose(d1.start(seq.ids[:25].tolist(), seq.features[:25]), 7, 4, temp, torch.Generator().manual_seed(5))
        p2 = d2.propose(d2.start(seq.ids[:25].tolist(), seq.features[:25]), 7, 4, temp, torch.Generator().manual_seed(5))
        assert torch.equal(p1.tokens, p2.tokens)
        if temp > 0:
            assert torch.equal(p1.probs, p2.probs)


def test_parallel_inference_matches_training_forward(tiny_qwen3):
    """The cached one-block inference path gives the same slot logits as the batched training path."""
    target = tiny_qwen3
    seq = a_sequence(target)
    spec = make_spec("dspark")
    cls, model = build(target, spec)
    model.eval()
    anchor_pos = 25
    with torch.no_grad():
        hidden = model.forward_anchors(seq.features, seq.ids, torch.tensor([anchor_pos]))[0]  # [k, d]
    drafter = cls("d", 4, model)
    state = drafter.start(seq.ids[:10].tolist(), seq.features[:10])
    drafter.commit(state, seq.ids[10:anchor_pos].tolist(), seq.features[10:anchor_pos])  # cache grows in pieces
    drafter.propose(state, int(seq.ids[17]), 4, 0.0, None)  # an earlier round extends the cache first
    cache = state.extra["cache"]
    block = model.block_input(seq.ids[anchor_pos:anchor_pos + 1])
    pos = torch.arange(anchor_pos, anchor_pos + 4)[None]
    with torch.no_grad():
        inf = model.run_layers(block, pos, cache.kv, None)[0]
    assert torch.allclose(hidden, inf, atol=1e-5)


def test_vllm_block_layout_drafts_from_the_mask_slots(tiny_qwen3):
    """block_layout vllm: the block is [anchor, mask x k] at positions P..P+k; the k mask slots are the k
    drafts (the same weights in the lab layout compute another function), and the cached inference path
    gives the training path's slot hiddens."""
    target = tiny_qwen3
    seq = a_sequence(target)
    _, lab = build(target, make_spec("dflash"), seed=3)
    cls, vllm = build(target, make_spec("dflash-vllm"), seed=3)
    vllm.load_state_dict(lab.state_dict())
    lab.eval(), vllm.eval()
    assert (lab.block_len, lab.first_draft_slot, vllm.block_len, vllm.first_draft_slot) == (4, 0, 5, 1)
    anchor_pos = 25
    block = vllm.block_input(seq.ids[anchor_pos:anchor_pos + 1])  # [1, k + 1]
    assert block[0, 0] == seq.ids[anchor_pos] and bool((block[0, 1:] == target.mask_token_id).all())
    with torch.no_grad():
        hidden = vllm.forward_anchors(seq.features, seq.ids, torch.tensor([anchor_pos]))[0]  # [k, d]
        other = lab.forward_anchors(seq.features, seq.ids, torch.tensor([anchor_pos]))[0]  # [k, d]
        # by hand: the full k + 1 block over the context < P; drop the anchor slot
        ctx = vllm.context_kv(seq.features[None, :anchor_pos], torch.arange(anchor_pos)[None])
        pos = torch.arange(anchor_pos, anchor_pos + 5)[None]  # [1, k + 1]
        full = vllm.run_layers(block, pos, ctx, None)[0]  # [k + 1, d]
    assert hidden.shape == other.shape == (4, target.hidden_size)
    torch.testing.assert_close(hidden, full[1:], atol=1e-5, rtol=1e-5)
    assert not torch.allclose(hidden, other, atol=1e-3)
    drafter = cls("d", 4, vllm)
    state = drafter.start(seq.ids[:10].tolist(), seq.features[:10])
    drafter.commit(state, seq.ids[10:anchor_pos].tolist(), seq.features[10:anchor_pos])
    proposal = drafter.propose(state, int(seq.ids[anchor_pos]), 4, 0.0, None)
    expect = vllm.io.to_target(vllm.io.head(hidden).argmax(-1))  # [k] target ids
    assert torch.equal(proposal.tokens, expect)


def test_a_checkpoint_loads_only_in_the_block_layout_it_was_trained_in(tiny_qwen3, tmp_path):
    from lab.errors import LabError
    from real.drafters.trained import save_model

    target = tiny_qwen3
    spec = make_spec("dflash-vllm")
    _, model = build(target, spec)
    save_model(model, spec, tmp_path / "d")
    drafter_class("dflash").from_spec(spec, target, tmp_path / "d")
    with pytest.raises(LabError, match="trained in block_layout 'vllm', the spec says 'lab'"):
        drafter_class("dflash").from_spec(make_spec("dflash"), target, tmp_path / "d")


def train_briefly(target, spec, seqs, steps):
    section = TrainSection(steps=steps, batch_size=len(seqs), num_anchors=16, lr=3e-3, warmup_fraction=0.0)
    counts = torch.zeros(target.vocab_size)
    for s in seqs:
        counts += torch.bincount(s.ids, minlength=target.vocab_size)[: target.vocab_size]
    trainer = DrafterTrainer(spec, target, draft_vocab(counts, spec.draft_vocab_size), section, directory=None)
    gen = torch.Generator().manual_seed(0)
    for _ in range(steps):
        anchors = [sample_anchors(s.ids.numel(), s.prompt_len, 16, gen) for s in seqs]
        trainer.train_step(seqs, anchors)
    return trainer.model


@pytest.mark.parametrize("kind", ["qwen3", "gemma3"])
def test_greedy_identity_every_drafter(request, kind):
    """Spec decoding with each drafter equals the target's greedy decoding token for token (fp32)."""
    target = request.getfixturevalue(f"tiny_{kind}")
    gen = torch.Generator().manual_seed(11)
    prompts = [torch.randint(100, 20000, (int(n),), generator=gen).tolist()
               for n in torch.randint(4, 20, (10,), generator=gen)]
    seq = a_sequence(target)
    refs = [autoregressive_decode(target, prompt, 24).tokens for prompt in prompts]
    for name in ("dspark", "dspark-vocab", "dflash", "dflash-vllm", "eagle3", "mtp"):
        spec = make_spec(name)
        model = train_briefly(target, spec, [seq], steps=3)
        drafter = drafter_class(spec.method)(name, spec.block_size, model.eval())
        accepted = 0
        for prompt, ref in zip(prompts, refs):
            out = speculative_decode(target, drafter, prompt, 24)
            assert out.tokens == ref, (kind, name, prompt)
            accepted += sum(s.accepted for s in out.steps)
        assert accepted >= 0


def test_trained_dspark_gets_drafts_accepted(tiny_qwen3):
    """A few dozen steps on the target's own output make greedy drafts agree with it (accept path exercised)."""
    target = tiny_qwen3
    seq = a_sequence(target, n_new=60)
    spec = make_spec("dspark", draft_vocab_size=512)
    model = train_briefly(target, spec, [seq], steps=40)
    drafter = drafter_class("dspark")("d", 4, model.eval())
    prompt = seq.ids[:12].tolist()
    out = speculative_decode(target, drafter, prompt, 48)
    assert out.tokens == autoregressive_decode(target, prompt, 48).tokens
    assert sum(s.accepted for s in out.steps) > 0


def test_rejection_sampling_with_drafter_q_is_lossless():
    """Markov-corrected q over a reduced vocab (zero mass outside it), as the drafters send it: the first
    emitted token is distributed as p (chi-square, 2e5 draws), for two positions of a chain."""
    torch.manual_seed(0)
    vocab, vd, n = 12, 8, 200_000
    d2t = torch.tensor([0, 1, 2, 4, 5, 7, 9, 11])
    head = MarkovHead(d=6, vocab=vd, rank=3)
    h = torch.randn(2, 6)
    u = torch.randn(2, vd) * 1.5
    with torch.no_grad():
        bias, _ = head.step(h, torch.tensor([vd, 3]), None)  # anchor outside the draft vocab, then a draft
        q_draft = torch.softmax(u + bias, -1)  # [2, Vd]
    q = torch.zeros(2, vocab)
    q[:, d2t] = q_draft
    p_logits = torch.randn(3, vocab)  # target logits at the anchor and after each draft
    gen = torch.Generator().manual_seed(1)
    drafts = torch.stack([torch.multinomial(q[j], n, replacement=True, generator=gen) for j in range(2)], 1)  # [n, 2]
    result = verify_sampling(p_logits[None].expand(n, 3, vocab), drafts, torch.full((n,), 2), 1.0,
                             q[None].expand(n, 2, vocab), generator=gen)
    first = torch.where(result.accepted >= 1, drafts[:, 0], result.next_tokens)
    observed = np.bincount(first.numpy(), minlength=vocab)
    assert chisquare(observed, expected(p_logits[0], observed)).pvalue > 1e-3
    # second position, given the first was accepted and equals token x: distributed as p (same logits row 1)
    mask = result.accepted >= 1
    second = torch.where(result.accepted[mask] >= 2, drafts[mask, 1], result.next_tokens[mask])
    observed = np.bincount(second.numpy(), minlength=vocab)
    assert chisquare(observed, expected(p_logits[1], observed)).pvalue > 1e-3


def expected(logits: torch.Tensor, observed: np.ndarray) -> np.ndarray:
    p = torch.softmax(logits.double(), -1).numpy()
    return p / p.sum() * observed.sum()


@pytest.mark.parametrize("name", ["dspark", "dflash", "dflash-vllm", "eagle3", "mtp"])
def test_teacher_forced_drafts_give_exact_accept_lengths(tiny_qwen3, name):
    """One batched pass over a known greedy output gives the same accepted length as propose() at every anchor."""
    target = tiny_qwen3
    seq = a_sequence(target, n_new=40)
    spec = make_spec(name, draft_vocab_size=512)
    model = train_briefly(target, spec, [seq], steps=25)
    drafter = drafter_class(spec.method)(name, spec.block_size, model.eval())
    k = spec.block_size
    anchors = torch.arange(seq.prompt_len, seq.ids.numel() - k - 1)
    feats = drafter.select_features(seq.features, seq.last_hidden)  # [T, F]
    drafts, conf = drafter.teacher_forced_drafts(feats, seq.ids, anchors)
    assert drafts.shape == conf.shape == (anchors.numel(), k)
    total = 0
    for row, p in enumerate(anchors.tolist()):
        state = drafter.start(seq.ids[:p].tolist(), feats[:p])
        proposal = drafter.propose(state, int(seq.ids[p]), k, 0.0, None)
        truth = seq.ids[p + 1:p + 1 + k]
        acc_prop = int(torch.cumprod((proposal.tokens == truth).long(), 0).sum())
        acc_tf = int(torch.cumprod((drafts[row] == truth).long(), 0).sum())
        assert acc_prop == acc_tf, (p, proposal.tokens, drafts[row], truth)
        assert torch.equal(proposal.tokens[: acc_prop + 1], drafts[row, : acc_prop + 1])
        total += acc_prop
    assert total > 0  # trained on this very sequence: some drafts are accepted
