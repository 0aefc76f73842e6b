"""The prepare stage's fast sampler: same filter as transformers' warper chain, same distribution."""
import pytest
import torch
from scipy.stats import chisquare
from transformers.generation.logits_process import TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

from real.sampling import TopKTopPSampler, top_k_top_p


def _hf_chain(scores, temperature, top_k, top_p):
    out = TemperatureLogitsWarper(temperature)(None, scores)
    if top_k > 0:
        out = TopKLogitsWarper(top_k)(None, out)
    if top_p < 1:
        out = TopPLogitsWarper(top_p)(None, out)
    return out


@pytest.mark.parametrize("temperature,top_k,top_p", [(0.7, 20, 0.8), (1.0, 0, 0.9), (0.5, 50, 1.0), (1.3, 5, 0.3)])
def test_filter_equals_transformers_chain(temperature, top_k, top_p):
    scores = torch.randn(8, 3000, generator=torch.Generator().manual_seed(1)) * 3  # [B, V]
    reference = _hf_chain(scores, temperature, top_k, top_p).softmax(-1)
    values, index = top_k_top_p(scores, temperature, top_k, top_p)
    ours = torch.zeros_like(reference).scatter_(-1, index, values.softmax(-1))
    assert torch.allclose(ours, reference, atol=1e-6)


def test_sampler_draws_from_the_filtered_distribution():
    scores = torch.randn(1, 400, generator=torch.Generator().manual_seed(2)) * 2  # [1, V]
    expected = _hf_chain(scores, 0.7, 20, 0.8).double().softmax(-1)[0]
    sampler = TopKTopPSampler(0.7, 20, 0.8, seed=3)
    n = 20000
    picks = torch.stack([sampler(None, scores.expand(50, -1)).argmax(-1) for _ in range(n // 50)]).flatten()
    counts = torch.bincount(picks, minlength=400).double()
    support = expected > 0
    assert counts[~support].sum() == 0
    assert chisquare(counts[support].numpy(), (expected[support] / expected[support].sum()).numpy() * n).pvalue > 1e-3
    wrong = expected[support].flip(0)  # the same probabilities on the wrong tokens must be rejected
    assert chisquare(counts[support].numpy(), (wrong / wrong.sum()).numpy() * n).pvalue < 1e-6
