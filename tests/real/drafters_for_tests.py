"""A test-only drafter that knows the target's greedy continuation and corrupts it at random positions,
so that every round mixes long accepted prefixes with rejections (the rollback paths get exercised)."""
import torch

from real.drafters.base import Drafter, Proposal


class NoisyOracleDrafter(Drafter):
    method = "noisy-oracle"

    def __init__(self, reference: list[int], prompt_len: int, block_size: int = 5, error_rate: float = 0.3,
                 seed: int = 0, vocab: int = 1000):
        super().__init__("noisy-oracle", block_size)
        self.reference, self.prompt_len, self.error_rate, self.vocab = reference, prompt_len, error_rate, vocab
        self.rng = torch.Generator().manual_seed(seed)

    def propose(self, state, anchor, k, temperature, generator):
        start = len(state.tokens) - self.prompt_len + 1  # index of the token after the anchor
        truth = self.reference[start: start + k]
        draft = torch.tensor(truth, dtype=torch.long)
        if len(truth):
            corrupt = torch.rand(len(truth), generator=self.rng) < self.error_rate
            noise = torch.randint(0, self.vocab, (len(truth),), generator=self.rng)
            draft = torch.where(corrupt, noise, draft)
        return Proposal(tokens=draft, probs=None, confidence=torch.full((len(draft),), 0.7))
