"""Verification: greedy rule on literal cases; rejection sampling preserves the target distribution."""
import numpy as np
import pytest
import torch
from scipy.stats import chisquare

from real.verify import NO_TOKEN, verify, verify_greedy


def one_hot_logits(rows):
    # rows: list of lists of argmax ids -> logits [B, K+1, V=6]
    logits = torch.full((len(rows), len(rows[0]), 6), -5.0)
    for b, row in enumerate(rows):
        for j, tok in enumerate(row):
            logits[b, j, tok] = 5.0
    return logits


def test_greedy_accepts_matching_prefix_and_recovers_argmax():
    logits = one_hot_logits([[1, 2, 3, 4], [1, 2, 3, 4]])  # target argmax per position
    drafts = torch.tensor([[1, 2, 5], [5, 2, 3]])
    result = verify_greedy(logits, drafts, torch.tensor([3, 3]))
    assert result.accepted.tolist() == [2, 0]
    assert result.next_tokens.tolist() == [3, 1]
    assert result.accept_prob.tolist() == [[1, 1, 0], [0, 1, 1]]


def test_greedy_respects_draft_lengths_and_gives_bonus():
    logits = one_hot_logits([[1, 2, 3, 4], [1, 2, 3, 4]])
    drafts = torch.tensor([[1, 2, 3], [1, 2, 3]])
    result = verify_greedy(logits, drafts, torch.tensor([3, 1]))
    assert result.accepted.tolist() == [3, 1]
    assert result.next_tokens.tolist() == [4, 2]  # bonus after a full accept; argmax after a short one


def test_accepted_eos_ends_round_without_bonus():
    logits = one_hot_logits([[1, 0, 3, 4]])
    result = verify_greedy(logits, torch.tensor([[1, 0, 3]]), torch.tensor([3]), eos_ids={0})
    assert result.accepted.tolist() == [2]
    assert result.next_tokens.tolist() == [NO_TOKEN]
    assert result.eos_hit.tolist() == [True]


def _emitted_by_position(result, drafts, positions):
    """Per emitted position i: the tokens of the rows whose round reached position i."""
    accepted = result.accepted.numpy()
    nxt = result.next_tokens.numpy()
    drafts = drafts.numpy()
    out = []
    for i in range(positions):
        reached_draft = accepted > i  # position i is an accepted draft token
        is_next = (accepted == i) & (nxt != NO_TOKEN)  # position i is the recovered/bonus token
        from_drafts = drafts[reached_draft, i] if i < drafts.shape[1] else np.array([], dtype=nxt.dtype)
        tokens = np.concatenate([from_drafts, nxt[is_next]])
        out.append(tokens)
    return out


@pytest.mark.parametrize("q_kind", ["dense", "one_hot"])
def test_rejection_sampling_preserves_target_distribution(q_kind):
    """Context-free target p_j and independent drafts x_j ~ q_j: every emitted position must be ~ p_j,
    bonus position included; token 0 is EOS, so the accepted-EOS path is exercised too. 2e5 draws."""
    gen = torch.Generator().manual_seed(1234)
    n, k, vocab = 200_000, 2, 6
    p = torch.softmax(torch.randn(k + 1, vocab, generator=gen) * 1.2, dim=-1)  # [K+1, V]
    q = torch.softmax(torch.randn(k, vocab, generator=gen) * 1.2, dim=-1)  # [K, V]
    drafts = torch.stack([torch.multinomial(q[j], n, replacement=True, generator=gen) for j in range(k)], 1)
    if q_kind == "one_hot":  # a deterministic drafter: q is a point mass on its token
        second = torch.where(torch.arange(n) % 2 == 0, 0, 3)  # every other row drafts EOS second
        drafts = torch.stack([torch.full((n,), 2), second], 1)
        probs = None
    else:
        probs = q[None].expand(n, k, vocab)
    logits = torch.log(p)[None].expand(n, k + 1, vocab)  # [N, K+1, V]
    result = verify(logits, drafts, torch.full((n,), k), 1.0, probs, generator=gen, eos_ids={0})
    assert result.eos_hit.any() and (result.accepted == k).any() and (result.accepted == 0).any()
    for j, tokens in enumerate(_emitted_by_position(result, drafts, k + 1)):
        observed = np.bincount(tokens, minlength=vocab)
        expected = p[j].double().numpy() / p[j].double().sum().item() * observed.sum()
        _stat, pvalue = chisquare(observed, expected)
        assert pvalue > 1e-3, f"position {j}: chi-square p={pvalue:.2e}, observed {observed}, expected {expected}"


def test_rejection_sampling_detects_a_wrong_rule():
    """The chi-square check has power: sampling the correction from p instead of norm(max(0, p - q)) is caught."""
    gen = torch.Generator().manual_seed(7)
    n, vocab = 200_000, 6
    p = torch.softmax(torch.randn(2, vocab, generator=gen), -1)
    q = torch.softmax(torch.randn(1, vocab, generator=gen) * 2, -1)
    drafts = torch.multinomial(q[0], n, replacement=True, generator=gen)[:, None]
    accept = torch.rand(n, generator=gen) < (p[0, drafts[:, 0]] / q[0, drafts[:, 0]]).clamp(max=1)
    wrong = torch.where(accept, drafts[:, 0], torch.multinomial(p[0], n, replacement=True, generator=gen))
    observed = np.bincount(wrong.numpy(), minlength=vocab)
    assert chisquare(observed, p[0].double().numpy() * n).pvalue < 1e-6
