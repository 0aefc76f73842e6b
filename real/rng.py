"""The one place a torch.Generator is made: on the device of the tensors it draws for, from the run's seed.

    g = device_generator(target.device, seed)        # sampling in decode / verify on the target's device
    g = device_generator(model, seed)                # init of a module's parameters, on their device
    g = device_generator("cpu", seed)                # host-side plans (permutations, anchors)

A CUDA tensor drawn with a CPU generator fails at run time ("Expected a 'cuda' device type for
generator but found 'cpu'"), so every generator in real/ comes from here (tests/real/test_rng.py
checks it over the source).
"""
from __future__ import annotations

import torch


def _device_of(where) -> torch.device:
    if isinstance(where, torch.nn.Module):
        first = next(where.parameters(), None)
        return first.device if first is not None else torch.device("cpu")
    if isinstance(where, torch.Tensor):
        return where.device
    return torch.device(where)


def device_generator(where, seed: int) -> torch.Generator:
    """A generator seeded with `seed` on the device of `where` (a device, its name, a tensor or a module)."""
    return torch.Generator(device=_device_of(where)).manual_seed(int(seed))
