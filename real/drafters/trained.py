"""What every trained drafter shares: checkpoint files, loading, the draft vocabulary, in-block sampling.

    drafter = DSparkDrafter.from_spec(spec, target, run.path("drafters", spec.name))
    save_model(model, spec, directory)        # model.safetensors + drafter.json (used by real/train.py)

A checkpoint directory holds model.safetensors (the drafter's own weights and its d2t map; the frozen
target embedding and LM head are never saved) and drafter.json (the spec it was trained from and the
resolved sizes). real/train.py adds optimizer.safetensors and train_state.json for exact resume.
"""
from __future__ import annotations

import json
from abc import abstractmethod
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from lab.errors import LabError
from lab.io import atomic_path, write_json_atomic
from real.drafters.base import Drafter, DraftState, Proposal
from real.verify import GREEDY_EPS

MODEL_FILE = "model.safetensors"
META_FILE = "drafter.json"


def save_model(model: torch.nn.Module, spec, directory: Path, extra: dict | None = None) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    with atomic_path(directory / MODEL_FILE) as tmp:
        save_file(state, str(tmp))
    write_json_atomic(directory / META_FILE, {"spec": spec.model_dump(mode="json"),
                                              "dims": model.dims.to_dict(), **(extra or {})})


def load_model_state(directory: Path | None, spec, feature_source: str = "tapped") -> dict[str, torch.Tensor]:
    if directory is None or not (Path(directory) / MODEL_FILE).is_file():
        raise LabError(f"drafter {spec.name!r}: no trained weights at {directory}/{MODEL_FILE}; "
                       "run the train stage first")
    meta_path = Path(directory) / META_FILE
    if meta_path.is_file():
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, ValueError) as exc:
            raise LabError(f"{meta_path}: unreadable drafter metadata ({exc}); retrain it (lab run --force)") from None
        saved = meta.get("spec", {})
        if saved.get("method") not in (None, spec.method):
            raise LabError(f"drafter {spec.name!r}: checkpoint {directory} holds a {saved.get('method')} "
                           f"drafter, the spec says {spec.method}")
        layout = getattr(spec, "block_layout", "lab")
        if saved.get("block_layout", "lab") != layout:  # same weights, another function: never load silently
            raise LabError(f"drafter {spec.name!r}: checkpoint {directory} was trained in block_layout "
                           f"{saved.get('block_layout', 'lab')!r}, the spec says {layout!r}; retrain it "
                           "(lab run --force) or fix the YAML")
        trained_on = meta.get("feature_source", "tapped")
        if trained_on != feature_source:  # e.g. an MTP trained before it read the final hidden state
            raise LabError(f"drafter {spec.name!r}: checkpoint {directory} was trained on {trained_on} target "
                           f"features, this code feeds it {feature_source} ones; retrain it (lab run --force)")
    return read_safetensors(Path(directory) / MODEL_FILE, f"drafter {spec.name!r}")


def read_safetensors(path: Path, what: str) -> dict[str, torch.Tensor]:
    """load_file, with a truncated or corrupt file reported as one LabError line instead of a traceback."""
    try:
        return load_file(str(path))
    except Exception as exc:  # noqa: BLE001 -- safetensors raises its own error type, OSError, ValueError
        raise LabError(f"{path}: {what}: unreadable checkpoint ({type(exc).__name__}: {exc}); "
                       "retrain it (lab run --stages train --force)") from None


def sample_slot(logits: torch.Tensor, temperature: float, generator: torch.Generator | None):
    """logits: [Vd] -> (draft id, q [Vd] at the run's temperature or None when greedy, prob of the pick at T=1)."""
    if temperature < GREEDY_EPS:
        idx = int(logits.argmax())
        return idx, None, float(torch.softmax(logits.float(), -1)[idx])
    q = torch.softmax(logits.float() / temperature, dim=-1)
    gen_device = generator.device if generator is not None else q.device
    idx = int(torch.multinomial(q.to(gen_device), 1, generator=generator)[0])
    return idx, q, float(q[idx])


class TrainedDrafter(Drafter):
    """Base of the neural drafters: holds the model (with its FrozenIO) and the shared Proposal logic."""

    needs_features = True

    def __init__(self, name: str, block_size: int, model: torch.nn.Module):
        super().__init__(name, block_size)
        self.model = model.eval()

    @classmethod
    @abstractmethod
    def build_model(cls, spec, target, d2t: torch.Tensor) -> torch.nn.Module:
        """The method's nn.Module for this target and draft vocabulary (d2t: draft id -> target id)."""

    @classmethod
    def from_spec(cls, spec, target, checkpoint_dir: Path | None = None):
        state = load_model_state(checkpoint_dir, spec, cls.feature_source)
        model = cls.build_model(spec, target, state["io.d2t"])
        missing, unexpected = model.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise LabError(f"drafter {spec.name!r}: checkpoint {checkpoint_dir} does not match the spec "
                           f"(missing {missing[:3]}, unexpected {unexpected[:3]}); retrain or fix the YAML")
        model.to(target.device)
        for p in model.parameters():
            p.requires_grad_(False)
        return cls(spec.name, spec.block_size, model)

    def start(self, prompt_ids: list[int], prompt_features: torch.Tensor | None) -> DraftState:
        if prompt_features is None:
            raise ValueError(f"{self.name}: needs target features (needs_features=True)")
        return DraftState(tokens=list(prompt_ids), features=prompt_features)

    @torch.inference_mode()
    def teacher_forced_drafts(self, features: torch.Tensor, ids: torch.Tensor, anchors: torch.Tensor):
        """Greedy drafts at many anchors of one known sequence in one batched pass (dense anchor traces).

        features: [T, n_tap*d]; ids: [T] (prompt + the target's greedy output); anchors: [A] positions P >= 1.
        Returns drafts [A, k] target ids and confidences [A, k]. Slot j is conditioned on the true tokens
        before it, so drafts agree with propose() up to and including the first mismatch: the accepted
        length (longest prefix equal to ids[P+1:]) is exact; later slots may differ.
        """
        dev = self.model.io.d2t.device
        logits, conf = self.model(features.to(dev), ids.to(dev), anchors.to(dev))  # [A, k, Vd], [A, k]
        picks = logits.argmax(-1)  # [A, k] draft ids
        if conf is not None:
            confidence = torch.sigmoid(conf.float())
        else:
            confidence = torch.softmax(logits.float(), -1).gather(-1, picks[..., None]).squeeze(-1)
        return self.model.io.to_target(picks), confidence

    def make_proposal(self, picks: list[int], qs: list[torch.Tensor | None], conf: list[float]) -> Proposal:
        io = self.model.io
        ids = torch.tensor(picks, dtype=torch.long, device=io.d2t.device)
        tokens = io.to_target(ids).cpu()  # [k] target ids
        probs = None
        if qs and qs[0] is not None:
            q = torch.stack(qs)  # [k, Vd]
            if io.full_vocab:
                probs = q
            else:  # q has no mass outside the draft vocab; rejection sampling stays lossless
                probs = q.new_zeros(len(picks), io.t2d.numel())
                probs[:, io.d2t] = q
        return Proposal(tokens=tokens, probs=probs, confidence=torch.tensor(conf, dtype=torch.float32))
