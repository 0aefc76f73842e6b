"""The train stage: every trained drafter of an experiment, on the same data with the same budget.

    lab run experiments/quickstart.yaml --stages train
    torchrun --nproc_per_node 8 -m lab.cli run experiments/qwen3_4b.yaml --stages train    # DDP

Drafters train in lockstep: each optimizer step draws one global batch of sequences (seeded epoch
permutations) and anchors (the run's torch.Generator), computes the target features once (cache or
online) and updates every drafter on exactly those sequences and anchors — a fair comparison by
construction. Per drafter: AdamW (lr 6e-4, wd 0), linear warmup (4%) + cosine, gradient clipping 1.0,
optional bf16 autocast, losses from real/losses.py. Outputs under <run>/drafters/<name>/:
  model.safetensors + drafter.json     the trained weights (what from_spec loads)
  state-<step>/{model,optimizer,rng}.safetensors + train_state.json   exact resume
  train_log.csv                        per step: lr, losses, analytic accept@k and tau, timings
Under torchrun (WORLD_SIZE > 1) each rank takes every world-th sequence of the global batch and the
models are wrapped in DistributedDataParallel (gloo on CPU, nccl on GPU); rank 0 writes.
"""
from __future__ import annotations

import contextlib
import csv
import json
import math
import os
import shutil
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as tdist
from safetensors.torch import save_file
from tqdm import tqdm

from lab.errors import LabError
from lab.io import DIR_MODE, TMP_SUFFIX, atomic_path, replace_dir, write_json_atomic
from lab.runs import RunContext
from real.drafters import drafter_class
from real.drafters.layers import init_weights
from real.drafters.trained import read_safetensors, save_model
from real.losses import block_loss, loss_weights
from real.prepare import PreparedData, Sequence, load_prepared
from real.rng import device_generator
from real.timing import now_ms

STAGE = "train"
STATE_FILE = "train_state.json"
LOG_FILE = "train_log.csv"


# ---------------------------------------------------------------- data helpers

def draft_vocab(counts: torch.Tensor, size: int | None) -> torch.Tensor:
    """[Vd] target ids of the draft vocabulary: the `size` most frequent tokens (ties: lower id), sorted."""
    vocab = counts.numel()
    if size is None or size >= vocab:
        return torch.arange(vocab)
    order = torch.argsort(-counts.double() + torch.arange(vocab).double() / (2 * vocab), stable=True)
    return torch.sort(order[:size]).values


def anchor_candidates(length: int, prompt_len: int) -> tuple[int, int]:
    """Anchor positions P lie on response tokens with >= 1 context feature and >= 1 label: [lo, hi)."""
    return max(1, prompt_len), length - 1


def sample_anchors(length: int, prompt_len: int, num: int, generator: torch.Generator) -> torch.Tensor:
    lo, hi = anchor_candidates(length, prompt_len)
    perm = torch.randperm(hi - lo, generator=generator)[:num]
    return torch.sort(perm).values + lo  # [A]


def slot_targets(io, seq: Sequence, anchors: torch.Tensor, k: int):
    """Labels and target distributions of the k slots of each anchor: slot j predicts ids[P+1+j] and is
    scored against p_t = softmax(target logits at P+j). -> labels [A, k] draft ids, logp [A, k, Vd],
    valid [A, k]."""
    t = seq.ids.numel()
    dev = seq.features.device
    label_pos = anchors[:, None].to(dev) + 1 + torch.arange(k, device=dev)[None]  # [A, k]
    valid = label_pos < t
    label_pos = label_pos.clamp(max=t - 1)
    ids = seq.ids.to(dev)
    labels = io.to_draft(ids[label_pos])  # [A, k]
    with torch.no_grad():
        logp = io.head(seq.last_hidden[label_pos - 1]) - seq.lse[label_pos - 1][..., None].float()  # [A, k, Vd]
    return labels, logp, valid


def lr_lambda(total: int, warmup_fraction: float, min_ratio: float):
    warmup = max(1, math.ceil(total * warmup_fraction)) if warmup_fraction > 0 else 0

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
    return factor


# ---------------------------------------------------------------- distributed

@dataclass
class Dist:
    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world > 1:
            tdist.barrier()


def init_distributed(device_type: str) -> Dist:
    """torchrun sets WORLD_SIZE / RANK / MASTER_ADDR; one process per device. Under torchrun even one
    process joins a process group (and wraps DDP), so `--nproc_per_node 1` exercises the DDP path."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1 and "TORCHELASTIC_RUN_ID" not in os.environ:
        return Dist()
    if not tdist.is_initialized():
        tdist.init_process_group("nccl" if device_type == "cuda" else "gloo")
    return Dist(rank=tdist.get_rank(), world=tdist.get_world_size())


def use_autocast(setting: str, device_type: str) -> bool:
    # measured on 2 CPU cores (docs_parts/BENCHMARKS_drafters.md): bf16 autocast is slower there
    return setting == "bf16" or (setting == "auto" and device_type == "cuda")


# ---------------------------------------------------------------- optimizer state <-> safetensors

def optimizer_tensors(opt: torch.optim.Optimizer) -> tuple[dict, list]:
    sd = opt.state_dict()
    tensors = {f"{pid}.{key}": v.detach().contiguous().cpu() for pid, st in sd["state"].items()
               for key, v in st.items() if torch.is_tensor(v)}
    return tensors, sd["param_groups"]


def load_optimizer(opt: torch.optim.Optimizer, tensors: dict, groups: list) -> None:
    state: dict[int, dict] = {}
    for name, value in tensors.items():
        pid, key = name.split(".", 1)
        state.setdefault(int(pid), {})[key] = value
    groups = [{**g, "betas": tuple(g["betas"])} if "betas" in g else g for g in groups]  # JSON made it a list
    opt.load_state_dict({"state": state, "param_groups": groups})


# ---------------------------------------------------------------- one drafter

class DrafterTrainer:
    """Model, optimizer, schedule and checkpoints of one drafter. The constructor does no I/O."""

    def __init__(self, spec, target, d2t: torch.Tensor, section, directory: Path | None, dist: Dist | None = None,
                 seed: int = 0):
        self.spec, self.section, self.dist = spec, section, dist or Dist()
        self.directory = Path(directory) if directory is not None else None
        self.drafter_cls = drafter_class(spec.method)  # select_features: tapped, or MTP's final hidden
        self.model = self.drafter_cls.build_model(spec, target, d2t)
        init_weights(self.model, generator=device_generator(self.model, seed))  # same init on every rank
        self.model.train()
        self.weights = loss_weights(spec)
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(self.params, lr=section.lr, weight_decay=section.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lr_lambda(section.steps, section.warmup_fraction, section.min_lr_ratio))
        self.net = self.model
        if self.dist.world > 1 or tdist.is_initialized():
            dev = target.device
            self.net = torch.nn.parallel.DistributedDataParallel(
                self.model, device_ids=[dev.index] if dev.type == "cuda" else None, broadcast_buffers=False)
        self.step = 0
        self.finished = False
        self.autocast = use_autocast(section.autocast, target.device.type)
        self.device_type = target.device.type
        self.last_metrics: dict = {}
        self.logged_through = 0  # the last step in train_log.csv: a step is never logged twice

    # -- training
    def train_step(self, seqs: list[Sequence], anchors: list[torch.Tensor]) -> dict:
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        k = self.spec.block_size
        t0 = now_ms(self.device_type)
        sums: dict[str, float] = {}
        for i, (seq, anc) in enumerate(zip(seqs, anchors)):
            last = i == len(seqs) - 1
            sync = contextlib.nullcontext() if last or self.dist.world == 1 else self.net.no_sync()
            with sync:
                anc = anc.to(seq.features.device)
                features = self.drafter_cls.select_features(seq.features, seq.last_hidden)  # [T, F]
                with torch.autocast(self.device_type, dtype=torch.bfloat16, enabled=self.autocast):
                    logits, conf = self.net(features, seq.ids.to(seq.features.device), anc)
                labels, logp, valid = slot_targets(self.model.io, seq, anc, k)
                loss, metrics = block_loss(logits, conf, labels, logp, valid, self.weights)
                (loss / len(seqs)).backward()
            for name, v in metrics.items():
                sums[name] = sums.get(name, 0.0) + v / len(seqs)
        grad_norm = torch.nn.utils.clip_grad_norm_(self.params, self.section.grad_clip)
        self.optimizer.step()
        lr = self.scheduler.get_last_lr()[0]
        self.scheduler.step()
        self.step += 1
        seconds = (now_ms(self.device_type) - t0) / 1000.0
        tokens = sum(int(s.ids.numel()) for s in seqs)
        self.last_metrics = {"step": self.step, "lr": lr, **sums, "grad_norm": float(grad_norm),
                             "seconds": seconds, "sequences": len(seqs), "tokens": tokens,
                             "anchor_slots": sum(int(a.numel()) for a in anchors) * k}
        return self.last_metrics

    # -- checkpoints
    def state_dir(self, step: int) -> Path:
        return self.directory / f"state-{step:07d}"

    def save(self, rng_state: torch.Tensor) -> None:
        """Write state-<step>/ then train_state.json (atomic) pointing at it; older states are removed."""
        if not self.dist.main:
            return
        tag = self.state_dir(self.step)
        self.directory.mkdir(parents=True, exist_ok=True)
        # a name of this process's own: a leftover of a killed run is swept up by lab.runs.open_run
        tmp = Path(tempfile.mkdtemp(prefix=f".{tag.name}.", suffix=TMP_SUFFIX, dir=self.directory))
        os.chmod(tmp, DIR_MODE)
        model_state = {k: v.detach().contiguous().cpu() for k, v in self.model.state_dict().items()}
        save_file(model_state, str(tmp / "model.safetensors"))
        opt_tensors, groups = optimizer_tensors(self.optimizer)
        save_file(opt_tensors, str(tmp / "optimizer.safetensors"))
        save_file({"run_generator": rng_state.clone(), "torch_cpu": torch.get_rng_state()}, str(tmp / "rng.safetensors"))
        shutil.rmtree(tag, ignore_errors=True)
        os.replace(tmp, tag)
        finished = self.step >= self.section.steps
        save_model(self.model, self.spec, self.directory, extra={
            "step": self.step, "finished": finished,
            "feature_source": self.drafter_cls.feature_source})
        write_json_atomic(self.directory / STATE_FILE, {
            "step": self.step, "state_dir": tag.name, "finished": finished,
            "spec": self.spec.model_dump(mode="json"), "train": self.section.model_dump(mode="json"),
            "scheduler": self.scheduler.state_dict(), "param_groups": groups, "metrics": self.last_metrics})
        for old in self.directory.glob("state-*"):
            if old != tag:
                shutil.rmtree(old, ignore_errors=True)
        self.finished = finished

    def resume(self) -> torch.Tensor | None:
        """Load the latest checkpoint if any; returns the run generator state saved with it."""
        path = self.directory / STATE_FILE
        if not path.is_file():
            return None
        state = json.loads(path.read_text())
        if state["spec"] != self.spec.model_dump(mode="json"):
            raise LabError(f"drafters/{self.spec.name}: checkpoint was trained from a different spec; "
                           f"delete {self.directory} or rename the drafter")
        saved_train = {k: v for k, v in state["train"].items() if k not in ("save_every", "drafters")}
        now_train = {k: v for k, v in self.section.model_dump(mode="json").items() if k not in ("save_every", "drafters")}
        if saved_train != now_train:
            raise LabError(f"drafters/{self.spec.name}: checkpoint was trained with a different train section; "
                           f"delete {self.directory} to retrain")
        tag = self.directory / state["state_dir"]
        what = f"drafter {self.spec.name!r} training state"
        model_state = read_safetensors(tag / "model.safetensors", what)
        self.model.load_state_dict(model_state, strict=False)
        load_optimizer(self.optimizer, read_safetensors(tag / "optimizer.safetensors", what), state["param_groups"])
        self.scheduler.load_state_dict(state["scheduler"])
        rng = read_safetensors(tag / "rng.safetensors", what)
        torch.set_rng_state(rng["torch_cpu"])
        self.step, self.finished = int(state["step"]), bool(state["finished"])
        self.last_metrics = state.get("metrics", {})
        return rng["run_generator"]

    # -- log
    def log(self, metrics: dict) -> None:
        if not self.dist.main or metrics["step"] <= self.logged_through:
            return
        path = self.directory / LOG_FILE
        k = self.spec.block_size
        fields = ["step", "lr", "loss", "ce", "soft_ce", "l1", "conf", "tau"] + [f"accept@{j + 1}" for j in range(k)] \
            + ["grad_norm", "seconds", "feature_seconds", "sequences", "tokens", "anchor_slots"]
        new = not path.is_file()
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=fields, extrasaction="ignore")
            if new:
                writer.writeheader()
            writer.writerow({f: metrics.get(f, "") for f in fields})
        self.logged_through = metrics["step"]

    def truncate_log(self) -> None:
        """Drop log rows past the resumed step (written after the last checkpoint)."""
        path = self.directory / LOG_FILE
        if not self.dist.main or not path.is_file():
            return
        with path.open() as fh:
            rows = list(csv.DictReader(fh))
            fields = rows[0].keys() if rows else []
        kept = [r for r in rows if int(r["step"]) <= self.step]
        self.logged_through = max((int(r["step"]) for r in kept), default=0)
        with atomic_path(path) as tmp, tmp.open("w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(fields))
            writer.writeheader()
            writer.writerows(kept)


# ---------------------------------------------------------------- the loop

class BatchPlan:
    """Which sequences and anchors each step trains on: seeded epoch permutations + the run generator."""

    def __init__(self, data: PreparedData, section, seed: int):
        self.section, self.seed = section, seed
        recs = data.records["train"]
        self.lengths = [min(len(r["ids"]), section.max_length) for r in recs]
        self.prompt_lens = [r["prompt_len"] for r in recs]
        self.usable = [i for i, (n, p) in enumerate(zip(self.lengths, self.prompt_lens))
                       if anchor_candidates(n, p)[1] > anchor_candidates(n, p)[0]]
        if not self.usable:
            raise LabError("train: no training sequence has a response inside train.max_length; "
                           "raise train.max_length or prepare.max_new_tokens")
        self._perms: dict[int, list[int]] = {}

    def record(self, slot: int) -> int:
        n = len(self.usable)
        epoch, offset = divmod(slot, n)
        if epoch not in self._perms:
            g = device_generator("cpu", self.seed * 7919 + epoch)
            self._perms = {epoch: torch.randperm(n, generator=g).tolist()}
        return self.usable[self._perms[epoch][offset]]

    def step(self, step: int, generator: torch.Generator) -> list[tuple[int, torch.Tensor]]:
        """The global batch of `step`: (record index, anchors [A]) per sequence; consumes `generator`."""
        batch = []
        for b in range(self.section.batch_size):
            idx = self.record(step * self.section.batch_size + b)
            batch.append((idx, sample_anchors(self.lengths[idx], self.prompt_lens[idx],
                                              self.section.num_anchors, generator)))
        return batch


def train(ctx: RunContext, target, specs=None) -> dict:
    cfg, section = ctx.cfg, ctx.cfg.train
    specs = [s for s in (specs or cfg.drafters) if s.trained
             and (section.drafters is None or s.name in section.drafters)]
    if not specs:
        return {}
    from real.targets import require_context

    # a training sequence past the target's context: its features come from positions the target never saw
    require_context(target, section.max_length, "train.max_length")
    dist = init_distributed(target.device.type)
    if section.batch_size % dist.world:
        raise LabError(f"train.batch_size {section.batch_size} must be a multiple of the {dist.world} ranks")
    data = load_prepared(ctx.path("data"))
    forced = STAGE in ctx.forced  # --force or stale inputs: train from scratch beside the old drafters
    directories = {s.name: retrain_dir(ctx, s.name) if forced else ctx.path("drafters", s.name) for s in specs}
    if forced and dist.main:
        for directory in directories.values():
            shutil.rmtree(directory, ignore_errors=True)
    dist.barrier()
    trainers = [DrafterTrainer(s, target, draft_vocab(data.token_counts, s.draft_vocab_size), section,
                               directories[s.name], dist, seed=cfg.seed * 1_000_003 + zlib.crc32(s.name.encode()))
                for s in specs]
    generator = device_generator("cpu", cfg.seed)  # host-side: anchors and batch plan
    states = [(t.resume(), t) for t in trainers]
    for _, t in states:
        t.truncate_log()
    active = [t for t in trainers if not t.finished]
    if not active:
        return {t.spec.name: t.last_metrics for t in trainers}
    start = min(t.step for t in active)
    saved = [rng for rng, t in states if t.step == start and rng is not None]
    if saved:
        generator.set_state(saved[0])
    elif start > 0:
        raise LabError(f"train: cannot resume at step {start}: the run generator state is missing")
    plan = BatchPlan(data, section, cfg.seed)
    bar = tqdm(range(start, section.steps), initial=start, total=section.steps, desc="train", unit="step",
               disable=not (ctx.show_progress and dist.main))
    for step in bar:
        batch = plan.step(step, generator)[dist.rank::dist.world]
        t0 = now_ms(target.device)
        seqs = [data.sequence("train", idx, target, section.max_length) for idx, _ in batch]
        feature_s = (now_ms(target.device) - t0) / 1000.0
        anchors = [a for _, a in batch]
        postfix = {}
        for t in active:
            if t.step != step:
                continue  # ahead after an interrupted save; catches up by skipping
            metrics = t.train_step(seqs, anchors)
            metrics["feature_seconds"] = feature_s
            t.log(metrics)
            postfix[t.spec.name] = f"{metrics['loss']:.3f} tau {metrics['tau']:.2f}"
            if t.step % section.save_every == 0 or t.step == section.steps:
                t.save(generator.get_state())
        bar.set_postfix(postfix)
        dist.barrier()
    if forced and dist.main:
        for t in trainers:
            replace_dir(t.directory, ctx.path("drafters", t.spec.name))
    dist.barrier()
    return {t.spec.name: t.last_metrics for t in trainers}


def retrain_dir(ctx: RunContext, name: str) -> Path:
    """Where a forced retrain of drafter `name` writes until it has finished (swept up if it never does)."""
    return ctx.path("drafters", f".{name}.retrain{TMP_SUFFIX}")


def run_stage(ctx: RunContext, target=None) -> None:
    if ctx.stage_done(STAGE):
        print(f"train: done already ({ctx.path('drafters')})")
        return
    if target is None:
        from real.targets import load_run_target

        if ctx.cfg.target.device.startswith("cuda") and int(os.environ.get("WORLD_SIZE", "1")) > 1:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        target = load_run_target(ctx)
    results = train(ctx, target)
    dist = Dist(tdist.get_rank(), tdist.get_world_size()) if tdist.is_initialized() else Dist()
    if dist.main:
        summary = {name: {k: m.get(k) for k in ("step", "loss", "tau")} for name, m in results.items()}
        ctx.mark_done(STAGE, {"drafters": summary})
        for name, m in summary.items():
            print(f"train: {name}: step {m['step']} loss {m['loss']:.4f} analytic tau {m['tau']:.3f}")
