"""The serving cluster as SimPy processes: a router and replicas running continuous batching.

    cl = Cluster(env, cost, policy_factory, source, n_replicas, engine, rng, kv_capacity=...)
    cl.submit(prompt_len, output_len)      # route a request now
    env.run(until=...) ; cl.requests_frame()   # per-request log (sim/serving_metrics.py LOG_COLUMNS + extras)

One SimPy event per engine step (never per token); per-step work is numpy over the batch's slot arrays.
A replica step, as vLLM V1's scheduler builds it (engine settings: lab/config_sim.EngineSpec):
  plan    running decode requests first: each grows its KV to the sequence + the policy's most drafts
          (paged: when the blocks run out, the most recently admitted running request is preempted, its
          blocks freed, and it goes back to the front of the queue; on readmission its prompt + generated
          tokens are recomputed as prefill, less the blocks the prefix cache still holds: with
          engine.prefix_caching a freed request's full blocks stay cached until evicted, least recently freed
          first, sim/prefix_cache.py). The policy picks verify lengths l_r (token budget
          max_num_batched_tokens - R), maximising tau x the SPS of the step this plan then builds at each
          verify length (CostModel.step_sps_curve over _prefill_outlook). Running prefills get chunks FCFS in
          the budget left (growing their
          KV, preempting newer prefills when short), then - unless this step preempted - queued requests
          are admitted while a sequence slot, budget and the blocks of their first chunk are free.
  prefill the step lasts cost.step_time(...); chunks advance; the step that completes a prompt's prefill
          emits its first token (TTFT), as in vLLM.
  apply   the acceptance source says what each verify accepted; finished requests free their KV.
A run can start with its requests' blocks already in the prefix cache (workload.warm_prefix_cache: the same prompts
          ran before on this server, an earlier point of a benchmark sweep at one --seed; Cluster.warm_prefix_cache).
A Gated DeltaNet hybrid's first step holding a prefill lasts engine.linear_attn_autotune_s longer, once per replica (a
fresh server's Triton autotuning of FLA's kernels, sim.linear_attn.first_prefill_autotune_s; not in LockstepGroup).
V0 without chunked prefill (engine.vllm_version before 0.8, sim.vllm_versions.v0_prefill_steps) runs a step of
          whole prompts alone while waiting requests fit, its running decodes paused (Replica._prefill_step), else
          a step of decodes that admits nothing.
kv_policy 'reserve' (the old model) instead reserves prompt + output at admission and never preempts.
Models with sliding-window layers (engine.hybrid_kv, default on) hold group-blocks of vLLM's hybrid manager
(sim/kv_cache.HybridKV): a sliding group frees the blocks before its window as a request grows, so a decode
row's CAP also stops where its window drops the next block, and growth there may give blocks back.
With a front end (sim.frontend, sim/frontend.py) each replica has vLLM's API server before its engine: a request
reaches the queue when the server has done its work (after latency_ms, a delay beside the server), and its
tokens reach the client (first_token_s, finish_s: the client's clock, as vLLM's benchmark measures) when the
server has streamed them. Its `intake` says how the requests' work shares the server: fifo (Frontend, one after
another) or shared (SharedFrontend, processor sharing: a burst reaches the engine together).
Data + expert parallelism (a MoE model with hardware.ep > tp over several replicas): the ep / tp replicas of one
expert-parallel group step together (LockstepGroup, engine.dp_lockstep): each plans and applies its own step,
the step lasts the group's longest, and an idle rank runs vLLM's one-token dummy batch. While every rank's step
fits a CUDA graph, vLLM pads every rank to the group's most tokens (DP padding), and so does the group; past it, each
rank's experts still run on all of the group's tokens (the all-gather dispatch). Router least_loaded is vLLM's DP
load balancer (Cluster._least_loaded).
"""
from __future__ import annotations

from collections import deque

import numpy as np
import pandas as pd
import simpy

from lab.errors import LabError
from sim.frontend import Frontend, SharedFrontend
from sim.hardware import engine_with_defaults
from sim.kv_cache import HybridKV, blocks_for, kv_groups, make_kv_cache
from sim.linear_attn import prefill_chunk_tokens, state_copies
from sim.prefill_outlook import chunk_tokens
from sim.profile_coverage import ProfileCoverage
from sim.vllm_versions import v0_prefill_steps


def chain_of(rid: int) -> tuple:
    """A request's blocks as prefix-cache segments (sim/prefix_cache.py): its own, unshared. A workload with
    shared prefixes would lead with (prefix key, blocks) segments here."""
    return ((rid, None),)


class CountingEnvironment(simpy.Environment):
    """simpy.Environment that counts processed events (for the speed benchmark)."""

    def __init__(self):
        super().__init__()
        self.n_events = 0

    def step(self):
        self.n_events += 1
        super().step()


class RequestTable:
    """Per-request records in growable numpy arrays (index = request id)."""

    FIELDS = ("arrival", "first_token", "finish", "prompt_len", "output_len", "replica", "steps", "preemptions",
              "client_wait")
    # frame() columns (field, name): the per-request log format (sim/serving_metrics.LOG_COLUMNS), then extras.
    # arrival is the send; client_wait the time before it that the request waited in the benchmark client for a
    # --max-concurrency slot (vLLM's queue_times: send - the arrival clock's tick), not part of TTFT or E2E
    COLUMNS = (("arrival", "arrival_s"), ("prompt_len", "input_tokens"), ("output_len", "output_tokens"),
               ("first_token", "first_token_s"), ("finish", "finish_s"), ("replica", "replica"),
               ("steps", "steps"), ("preemptions", "preemptions"), ("client_wait", "client_wait_s"))

    def __init__(self, capacity: int = 1024):
        self.n = 0
        self.arrival = np.full(capacity, np.nan)
        self.first_token = np.full(capacity, np.nan)
        self.finish = np.full(capacity, np.nan)
        self.prompt_len = np.zeros(capacity, np.int64)
        self.output_len = np.zeros(capacity, np.int64)
        self.replica = np.full(capacity, -1, np.int64)
        self.steps = np.zeros(capacity, np.int64)
        self.preemptions = np.zeros(capacity, np.int64)
        self.client_wait = np.zeros(capacity)

    def add(self, t: float, prompt: int, output: int, client_wait: float = 0.0) -> int:
        if self.n == len(self.arrival):
            for f in self.FIELDS:
                old = getattr(self, f)
                new = np.full(2 * len(old), np.nan) if old.dtype.kind == "f" else np.zeros(2 * len(old), old.dtype)
                new[: len(old)] = old
                setattr(self, f, new)
        i = self.n
        self.arrival[i], self.prompt_len[i], self.output_len[i] = t, prompt, output
        self.client_wait[i] = client_wait
        self.n += 1
        return i

    def frame(self) -> pd.DataFrame:
        cols = {"request_id": np.arange(self.n).astype(str)}
        for field, name in self.COLUMNS:
            cols[name] = getattr(self, field)[: self.n]
        return pd.DataFrame(cols)


# columns of a replica's dense decode-state matrix (one row per request in the decode phase):
# request id, replay start row and length, replay position, output tokens still to emit, decode-step
# counter value when the request started decoding (steps taken = counter now - this), prompt + output
# tokens (so the sequence so far, whose KV the next step reads, is TOT - REM), KV units held (blocks, or
# reserved tokens), admission order (the newest running request is preempted first), and the longest
# sequence its blocks hold with this step's draft slots (HELD x block_size - lookahead: beyond it, grow;
# hybrid KV: also no further than where its sliding window drops a block, kv.row_cap)
RID, PSTART, PLEN, POS, REM, ENTRY, TOT, HELD, ADM, CAP = range(10)
NCOL = 10
SMALL_BATCH = 8  # up to this many decode rows, per-row plain Python beats numpy's per-call overhead


class Prefill:
    """A running request in its prefill (or, after a preemption, its recompute) phase."""

    __slots__ = ("adm", "done", "held", "left", "plen", "pstart", "resume", "rid")

    def __init__(self, rid, left, pstart, plen, held, adm, resume, done=0):
        self.rid, self.left, self.done, self.pstart, self.plen = rid, left, done, pstart, plen
        self.held, self.adm = held, adm
        self.resume = resume  # None, or (pos, rem, entry, generated) of a preempted decode


class Replica:
    """One engine: a FCFS queue, prefilling requests, and a dense [R, NCOL] int matrix of decoding ones.

    Keeping decode state dense (rows removed when a request finishes, appended when its prefill ends)
    makes each step a handful of whole-array numpy operations instead of gathers and scatters.
    """

    def __init__(self, idx: int, cluster: Cluster, policy, start: bool = True):
        e = cluster.engine
        self.idx = idx
        self.cl = cluster
        self.policy = policy
        self.queue: deque = deque()
        self.max_seqs = e.max_num_seqs
        self.max_tokens = e.max_num_batched_tokens
        self.chunked = e.enable_chunked_prefill
        # V0 without chunked prefill (before vLLM 0.8): a step runs whole prompts or decodes, never both (plan)
        self.prefill_steps = v0_prefill_steps(e)
        self._decodes_wait = False  # this step is prefill-only: the running decodes wait it out (apply)
        # a hybrid linear-attention model's mixed steps copy recurrent states (sim/linear_attn.py); None: no such layers
        self.linear_mixed = e.linear_attn_mixed if cluster.cost.model.linear_layers else None
        # a fresh server's first prefill autotunes FLA's kernels once (sim.linear_attn.first_prefill_autotune_s)
        self.autotune_s = e.linear_attn_autotune_s if cluster.cost.model.linear_layers else 0.0
        self.lookahead = policy.max_verify()  # KV slots a decode step reserves for drafts
        self.kv = make_kv_cache(e, cluster.kv_capacity, cluster.kv_groups, cluster.kv_blocks, self.lookahead)
        self._hybrid = isinstance(self.kv, HybridKV)  # rows carry their CAP (kv.row_cap), growth may free
        self.dec = np.zeros((0, NCOL), np.int64)
        self.kv_dec = 0  # KV tokens held by decoding requests (sum of their sequences, TOT - REM)
        self._headroom = 0  # a lower bound on min(CAP - sequence) over decode rows: >= 0 means none must grow
        self.prefilling: list[Prefill] = []
        self.resume: dict[int, tuple] = {}  # preempted request -> (pstart, plen, pos, rem, entry, generated)
        self.n_active = 0
        self._adm = 0
        self._preempted = False  # this step preempted: no admissions (vLLM)
        self._joining: list[tuple] = []  # decode rows admitted during planning, joining from the next step
        self.wake: simpy.Event | None = None
        self._track_pos = cluster.source.kind == "trace"
        fe = cluster.frontend
        self.fe = ((SharedFrontend if fe.intake == "shared" else Frontend)(
                       cluster.env, fe.request_ms, fe.output_token_ms,
                       handoff=lambda rid: cluster._dispatch(self, rid), latency_ms=fe.latency_ms)
                   if fe is not None and fe.enabled else None)
        self._streams = self.fe is not None and self.fe.streams  # tokens reach the client through the server
        # step statistics
        self.busy_time = 0.0
        self.n_steps = 0
        self.decode_steps = 0
        self.sum_r = 0  # sum over steps of decode requests R
        self.sum_l = 0  # sum over steps of verify (draft) tokens
        self.sum_emit = 0  # decode tokens emitted
        self.sum_batch_tokens = 0
        self.sum_running = 0  # sum over steps of running requests
        self.peak_running = 0
        self.n_preemptions = 0
        # with cluster.record_steps: one (seconds, decoding requests, prefill chunks, chunk tokens) per step, in order
        self.step_log: list[tuple[float, int, int, int]] | None = [] if cluster.record_steps else None
        # a measured step profile prices the steps: which of them it read outside its grid (sim/profile_coverage.py)
        profile = cluster.cost.profile
        self.coverage = ProfileCoverage(profile.axes) if profile is not None else None
        self.group: LockstepGroup | None = None  # set by the cluster; a grouped replica steps with its group
        self.process = cluster.env.process(self.run()) if start else None

    def load(self) -> int:
        if self.fe is not None:  # requests still in the API server count as this replica's too
            return self.n_active + len(self.queue) + self.fe.in_flight
        return self.n_active + len(self.queue)

    def enqueue(self, rid: int):
        self.queue.append(rid)
        sleeper = self.group or self
        if sleeper.wake is not None and not sleeper.wake.triggered:
            sleeper.wake.succeed()

    # ---- the engine loop -------------------------------------------------------------------------------
    def run(self):
        env = self.cl.env
        step_time = self.cl.cost.step_time
        while True:
            step = self.plan()
            if step is None:
                if self.n_active:
                    continue  # admitted work that starts next iteration (disaggregated KV arrivals)
                self.wake = env.event()
                yield self.wake
                self.wake = None
                continue
            tokens, kv_read, n_req, spec, _lengths, _state, n_spec, _chunks, attn, copies = step
            dt = step_time(tokens, kv_read, n_req, spec, n_spec, attn, state_copies=copies, **_chunk_kw(_chunks))
            if self.autotune_s and any(c > 1 for _, c in _chunks):  # the first chunked GDN call: its autotuning
                dt, self.autotune_s = dt + self.autotune_s, 0.0
            yield env.timeout(dt)
            self.finish_step(step, dt)

    def finish_step(self, step, dt: float):
        """The step `plan` built has run for dt seconds: statistics, then its outcome (apply)."""
        tokens, kv_sum, n_req, _spec, lengths, state, n_spec, chunks, _attn, _copies = step
        self.busy_time += dt
        self.n_steps += 1
        self.sum_batch_tokens += tokens
        if self.step_log is not None:  # a decode row emits a token this step; a chunk's request at most its first
            self.step_log.append((dt, n_req - len(chunks), len(chunks), sum(c for _, c in chunks)))
        if self.coverage is not None:  # the point its own shape reads (a DP-padded lockstep step: its unpadded one)
            self.coverage.add(*self.cl.cost.profile_point(tokens, kv_sum, n_req, n_spec), dt)
        self.apply(self.cl.env.now, lengths, state, n_spec, chunks)

    def plan(self):
        """Build one step: (tokens, kv read, requests, spec, lengths, state, drafts, chunks, attended, state
        copies), or None when idle; attended = the cached tokens the step's query tokens attend to, summed over
        them (a decoding request's tokens its sequence, as if each of its drafts did too; a prefill chunk of c
        tokens after `done` ones: c x (done + (c + 1) / 2), causal); state copies = the requests whose
        linear-attention states the step gathers and scatters back (sim/linear_attn.state_copies; 0 on other
        models)."""
        self._preempted = False
        self._decodes_wait = False
        if self.prefill_steps and self.queue:
            step = self._prefill_step()
            if step is not None:
                return step
        if self._joining:  # admitted with their KV (disaggregated) while the last step ran
            rows = np.array(self._joining, np.int64)
            rows[:, ENTRY] = self.decode_steps
            self._joining = []
            self.kv_dec += int((rows[:, TOT] - rows[:, REM]).sum())
            self._add_rows(rows)
        if self._headroom < 0 and self.kv.paged and len(self.dec):  # some request's blocks must grow
            self._grow_decodes()
        dec = self.dec
        r = len(dec)
        lengths = state = None
        n_spec = 0
        spec = self.policy.spec and r > 0
        if spec:
            lengths, state = self._choose(dec, r)
            n_spec = sum(lengths.tolist()) if r <= SMALL_BATCH else int(lengths.sum())
        chunks = self._schedule_prefill(self.max_tokens - r - n_spec, r) \
            if (self.prefilling or self.queue) and not self.prefill_steps else ()
        if r == 0 and not chunks:
            return None
        return self._step(r, n_spec, spec, lengths, state, chunks)

    def _step(self, r: int, n_spec: int, spec: bool, lengths, state, chunks):
        """plan's step tuple for r decode rows (n_spec drafts) and the prefill chunks [(Prefill, tokens)]."""
        kv_pf = n_pf = 0
        attn = self.kv_dec * (r + n_spec) / r if r else 0.0
        for item, c in chunks:
            kv_pf += item.done + c
            n_pf += c
            attn += c * (item.done + (c + 1) / 2)
        n_active = self.n_active
        self.sum_running += n_active
        self.peak_running = max(self.peak_running, n_active)
        copies = state_copies(r, [c for _, c in chunks], spec, self.linear_mixed) if self.linear_mixed and chunks \
            else 0
        kv_read = (0 if self._decodes_wait else self.kv_dec) + kv_pf  # waiting decodes read nothing
        return r + n_spec + n_pf, kv_read, r + len(chunks), spec, lengths, state, n_spec, chunks, attn, copies

    def _prefill_step(self):
        """V0's step when chunked prefill is off (vllm/core/scheduler.py: Scheduler._schedule at v0.4.0.post1,
        _schedule_default at v0.6.0): while no request is swapped out, waiting requests are admitted FCFS, each a
        whole prompt (a preempted one's prompt + output so far, recomputed), while max_num_batched_tokens, a
        sequence slot (the running requests hold theirs) and its blocks are free; if any was, the step is those
        prefills alone ("Don't schedule decodes if prefills are scheduled") and the running decodes wait. Else
        None: a decode step (blocks grown, the newest preempted for recompute when short), admitting nothing.
        Not modelled: the block manager's 1% watermark; a prompt over the budget runs alone (V0 ignores it)."""
        chunks = []
        self._admit(self.max_tokens, 0, chunks)
        if not chunks:
            return None
        self._decodes_wait = len(self.dec) > 0
        return self._step(0, 0, False, None, None, chunks)

    def _choose(self, dec, r):
        """The policy's verify lengths [r] from the drafters' confidences, and the acceptance state."""
        cl = self.cl
        if self._track_pos:  # a replay source reads each request's replay row
            conf, state, kcap = cl.source.draw(r, dec[:, PSTART], dec[:, POS], dec[:, PLEN], cl.rng)
        else:
            conf, state, kcap = cl.source.draw(r, None, None, None, cl.rng)
        budget = self.max_tokens - r
        # the SPS curve of the step plan builds at each verify length b: these decodes, and the prefill chunks the
        # budget then leaves room for, priced as run() prices the step (CostModel.step_sps_curve)
        if self.prefilling or self.queue:
            sps = cl.cost.step_sps_curve(r, self.kv_dec, self._prefill_outlook(r), self.max_tokens, self.chunked,
                                         self.linear_mixed, self.autotune_s)
        else:  # the decodes alone (step_sps_curve's own answer, without its calls: most steps of a light load)
            sps = cl.cost.sps_curve(0, self.kv_dec, r, r)
        lengths = self.policy.choose(conf, r, budget, sps)
        if kcap is not None:
            lengths = np.minimum(lengths, kcap)
        return lengths, state

    def _prefill_outlook(self, r: int) -> list[tuple[int, int, bool]]:
        """What _schedule_prefill may hand chunks to beside r decodes and their drafts, in its order, as (tokens to
        compute, tokens cached before, stops: a queued request that does not fit whole stops the admissions):
        the running prefills FCFS, then -- unless this step preempted -- the queue's requests _admit would take
        while a sequence slot is free and the KV of their first chunk at the largest prefill budget (no drafts,
        max_num_batched_tokens - r) fits (their prompt's cached prefix found without counting a query), up to that
        budget. Not foreseen: a running prefill's growth running out of blocks (it preempts newer prefills), the
        blocks running prefills take before admissions. Empty under V0's prefill-only steps (decodes never share a
        step with a prefill there)."""
        if self.prefill_steps:
            return []
        room = self.max_tokens - r
        left = room  # at the largest budget, as the scheduler hands it out
        items = []
        for item in self.prefilling:
            c = chunk_tokens(item.left, left, self.chunked)
            if c == 0 and not self.chunked and item.left > room:
                continue  # never fits whole beside these decodes
            left -= c  # chunked: a cut chunk takes the rest (and the outlook ends)
            items.append((item.left, item.done, False))
            if left <= 0 and self.chunked:
                return items
        if self._preempted or not self.queue or left <= 0:
            return items
        cl, kv, req = self.cl, self.kv, self.cl.req
        free = kv.free
        slots = self.max_seqs - self.n_active
        look = self.lookahead if kv.paged else 0
        for rid in self.queue:
            if slots <= 0:
                break
            prompt, output = int(req.prompt_len[rid]), int(req.output_len[rid])
            if not kv.fits_ever(prompt + output + look):
                continue  # rejected at admission
            slot = self.resume.get(rid)
            if slot is None and cl.disaggregated:  # joins with its KV: a slot, no chunk
                slots -= 1
                continue
            todo = prompt + (slot[5] if slot is not None and slot[2] is not None else 0)
            hit = kv.lookup(chain_of(rid), todo, count=False)
            need = todo - hit
            c = chunk_tokens(need, left, self.chunked)
            if c <= 0:
                break
            units = kv.admit_units(prompt, output, hit + c, hit)
            if units > free:
                break
            free -= units
            slots -= 1
            items.append((need, hit, True))
            left -= c
            if left <= 0:
                break
        return items

    # ---- KV: growth, preemption, admission -----------------------------------------------------------
    def _grow_decodes(self):
        """Paged: every decode request's blocks cover its sequence + this step's drafts; else preempt."""
        if self._headroom >= 0:
            return
        dec, kv = self.dec, self.kv
        if len(dec) <= 8 and self._grow_few(dec, kv):
            return
        seq = dec[:, TOT] - dec[:, REM]
        gap = dec[:, CAP] - seq
        rows = np.flatnonzero(gap < 0)
        bs, look = kv.block_size, self.lookahead
        if self._hybrid:  # net of the blocks the windows give back; fine in any order when the growth fits
            slots, computed = seq[rows] + look, seq[rows] - 1
            need = kv.units(slots, computed)
            delta = need - dec[rows, HELD]
            fits = int(np.maximum(delta, 0).sum()) <= kv.free
            total = int(delta.sum())
        else:
            need = blocks_for(seq[rows] + look, bs)
            total = int((need - dec[rows, HELD]).sum())
            fits = total <= kv.free
        if fits:
            kv.take(total)
            dec[rows, HELD] = need
            dec[rows, CAP] = kv.row_cap(need, slots, computed, look) if self._hybrid else need * bs - look
            gap[rows] = dec[rows, CAP] - seq[rows]
            self._headroom = int(gap.min()) if len(gap) else 0
            return
        # short of blocks: in admission order, each request grows; while it cannot, preempt the newest
        alive = np.ones(len(dec), bool)
        for i in np.argsort(dec[:, ADM], kind="stable"):
            if not alive[i]:
                continue
            if dec[i, CAP] >= seq[i]:
                continue  # its blocks hold this step (hybrid: and its window drops none)
            while True:
                grown = kv.grow_decode(int(dec[i, HELD]), int(seq[i]), look)
                if grown is not None:
                    dec[i, HELD], dec[i, CAP] = grown
                    break
                victim = self._newest_running(dec, alive)
                if victim is None or victim == ("dec", i):
                    self._preempt_decode(dec[i])
                    alive[i] = False
                    break
                if victim[0] == "dec":
                    self._preempt_decode(dec[victim[1]])
                    alive[victim[1]] = False
                else:
                    self._preempt_prefill(victim[1])
        self.dec = dec = dec[alive]
        self._headroom = int((dec[:, CAP] - dec[:, TOT] + dec[:, REM]).min()) if len(dec) else 0

    def _grow_few(self, dec, kv) -> bool:
        """_grow_decodes for a handful of rows in plain Python (numpy calls cost more there); False when the
        blocks run out (the caller then preempts)."""
        look = self.lookahead
        head = 1 << 62
        for i, row in enumerate(dec.tolist()):
            seq = row[TOT] - row[REM]
            gap = row[CAP] - seq
            if gap < 0:
                grown = kv.grow_decode(row[HELD], seq, look)
                if grown is None:
                    return False
                dec[i, HELD], cap = grown
                dec[i, CAP] = cap
                gap = cap - seq
            head = min(head, gap)
        self._headroom = head
        return True

    def _newest_running(self, dec, alive):
        best, best_adm = None, -1
        if self.prefilling:
            best, best_adm = ("pf", self.prefilling[-1]), self.prefilling[-1].adm
        live = np.flatnonzero(alive)
        if len(live):
            j = live[np.argmax(dec[live, ADM])]
            if dec[j, ADM] > best_adm:
                best = ("dec", int(j))
        return best

    def _preempt_decode(self, row):
        rid = int(row[RID])
        seq = int(row[TOT]) - int(row[REM])
        gen = seq - int(self.cl.req.prompt_len[rid])
        self.resume[rid] = (int(row[PSTART]), int(row[PLEN]), int(row[POS]), int(row[REM]), int(row[ENTRY]), gen)
        self.kv.release(int(row[HELD]), chain_of(rid), seq - 1)  # its last token's KV is not computed yet
        self.kv_dec -= seq
        self._requeue(rid)

    def _preempt_prefill(self, item: Prefill):
        self.prefilling.remove(item)
        if item.resume is not None:
            self.resume[item.rid] = (item.pstart, item.plen, *item.resume)
        else:  # not decoded yet: its acceptance slot is kept for the restart
            self.resume[item.rid] = (item.pstart, item.plen, None)
        self.kv.release(item.held, chain_of(item.rid), item.done)
        self._requeue(item.rid)

    def _requeue(self, rid: int):
        self.n_active -= 1
        self.n_preemptions += 1
        self.cl.req.preemptions[rid] += 1
        self.queue.appendleft(rid)
        self._preempted = True

    def _schedule_prefill(self, left: int, r: int) -> list:
        """Prefill chunks for this step: running prefills FCFS, then admissions; [(Prefill, tokens)]."""
        chunks = []
        kv = self.kv
        i = 0
        while i < len(self.prefilling) and left > 0:
            item = self.prefilling[i]
            c = self._chunk(item.left, left, r, chunks)
            if c <= 0:
                i += 1
                continue
            held = kv.grow(item.held, item.done + c, item.done)
            while held is None:  # paged and short: preempt newer prefills, or this one
                victim = self.prefilling[-1]
                self._preempt_prefill(victim)
                if victim is item:
                    break
                held = kv.grow(item.held, item.done + c, item.done)
            if held is None:
                break
            item.held = held
            chunks.append((item, c))
            left -= c
            i += 1
        if not self._preempted and self.queue:
            self._admit(left, r, chunks)
        return chunks

    def _chunk(self, need: int, left: int, r: int, chunks) -> int:
        """The tokens an item gets (sim.prefill_outlook.chunk_tokens), but for V0's unchunkable prompt larger than
        the budget, which runs alone."""
        c = chunk_tokens(need, left, self.chunked)
        return need if (c == 0 and not self.chunked and r == 0 and not chunks) else c

    def _admit(self, left: int, r: int, chunks: list):
        """Admit queued requests FCFS while a sequence slot, token budget and first-chunk KV are free."""
        cl, kv, req = self.cl, self.kv, self.cl.req
        while self.queue and self.n_active < self.max_seqs:
            rid = self.queue[0]
            prompt, output = int(req.prompt_len[rid]), int(req.output_len[rid])
            if not kv.fits_ever(prompt + output + (self.lookahead if kv.paged else 0)):
                self.queue.popleft()  # can never fit: left unfinished, reported as rejected
                cl.reject(rid)
                continue
            slot = self.resume.get(rid)
            if slot is None and cl.disaggregated:  # arrives with its prompt's KV: decodes from the next step
                held = kv.admit(prompt, output, prompt + 1, prompt)
                if held is None:
                    break
                self.queue.popleft()
                start, length, _ = cl.acceptance_slot(rid)
                req.replica[rid] = self.idx
                self.n_active += 1
                if output <= 1:
                    self._release(rid, cl.env.now, held, prompt)
                    continue
                row = (rid, start, length, 0, output - 1, -1, prompt + output, held, self._next_adm())
                if self._hybrid:  # its allocation: prompt + 1 slots, the prompt cached
                    row += (kv.row_cap(held, prompt + 1, prompt, self.lookahead),)
                self._joining.append(row)
                continue
            if left <= 0:
                break
            resume = slot[2:] if slot is not None and slot[2] is not None else None
            todo = prompt + (resume[3] if resume else 0)  # a preempted request recomputes its output too
            chain = chain_of(rid)
            hit = kv.lookup(chain, todo)  # tokens still in the prefix cache: not computed again
            c = self._chunk(todo - hit, left, r, chunks)
            if c <= 0:
                break
            held = kv.admit(prompt, output, hit + c, hit, chain)
            if held is None:
                break
            self.queue.popleft()
            if slot is not None:
                del self.resume[rid]
                start, length = slot[0], slot[1]
            else:
                start, length, _ = cl.acceptance_slot(rid)
                req.replica[rid] = self.idx
            item = Prefill(rid, todo - hit, start, length, held, self._next_adm(), resume, hit)
            self.prefilling.append(item)
            self.n_active += 1
            chunks.append((item, c))
            left -= c

    def _next_adm(self) -> int:
        self._adm += 1
        return self._adm

    def _add_rows(self, rows):
        """Append decode rows: all columns (hybrid KV), or all but CAP, which then follows from HELD."""
        add = np.asarray(rows, np.int64)
        if add.shape[1] == NCOL:
            cap = add[:, CAP]
        else:
            if self.kv.paged:
                cap = add[:, HELD] * self.kv.block_size - self.lookahead
            else:  # a reservation covers the whole output
                cap = np.full(len(add), 1 << 62)
            add = np.column_stack([add, cap])
        head = int((cap - add[:, TOT] + add[:, REM]).min())
        self._headroom = min(self._headroom, head) if len(self.dec) else head
        self.dec = np.concatenate([self.dec, add]) if len(self.dec) else add

    def _release(self, rid: int, now: float, held: int, computed: int, client: float | None = None):
        """A finished request frees its blocks (`computed` tokens of KV in them: cached, with prefix caching);
        `client`: when its last token reaches the client (a front end that streams), else now."""
        self.kv.release(held, chain_of(rid), computed)
        self.n_active -= 1
        if client is None or client == now:
            self.cl.req.finish[rid] = now
            self.cl.on_finish(rid, now)
        else:
            self.cl.req.finish[rid] = client
            self.cl.finish_at(rid, client)

    # ---- after the step ------------------------------------------------------------------------------
    def apply(self, now: float, lengths, state, n_spec: int, chunks):
        """What the step did: accepted drafts, emitted tokens, finished requests, completed prefills."""
        cl = self.cl
        dec = self.dec
        r = 0 if self._decodes_wait else len(dec)  # a V0 prefill-only step: the decodes did not run
        client = None  # when this step's tokens reach the client, where a front end streams them
        if r:
            accepted = None
            if lengths is not None:
                accepted = cl.source.accept(state, lengths, cl.rng)
                self.policy.observe(lengths, accepted)
                if self._track_pos:  # parametric sources have no replay position
                    dec[:, POS] += accepted + 1 if cl.source.advance_by_tokens else 1
                self.sum_l += n_spec
            if r <= SMALL_BATCH:
                n_out, any_done = self._emit_few(dec, accepted)
            else:
                emitted = 1 if accepted is None else accepted + 1
                rem = dec[:, REM]
                out = np.minimum(emitted, rem)
                rem -= out
                n_out = int(out.sum())
                any_done = rem.min() == 0
            self._headroom -= n_out  # no sequence grew by more than all of them together
            self.kv_dec += n_out
            self.decode_steps += 1
            self.sum_r += r
            self.sum_emit += n_out
            cl.count_tokens(now, n_out)
            if self._streams:  # the step's tokens, decodes' and completed prefills', are one job of the server
                client = self.fe.deliver(n_out + self._completing(chunks))
            if any_done:
                finished = dec[:, REM] == 0
                req = cl.req
                for row in dec[finished]:
                    rid = int(row[RID])
                    req.steps[rid] = self.decode_steps - row[ENTRY]
                    self.kv_dec -= int(row[TOT]) - int(row[REM])
                    self._release(rid, now, int(row[HELD]), int(row[TOT]) - 1, client)
                self.dec = dec[~finished]
        elif self._streams and chunks:
            first = self._completing(chunks)
            if first:
                client = self.fe.deliver(first)
        if cl.token_log is not None:
            self._log_tokens(now if client is None else client, dec[:, RID] if r else None, chunks)
        if chunks:
            self._finish_chunks(now, chunks, client)

    def _log_tokens(self, client: float, rows, chunks):
        """Cluster.token_log's entry for this step: the requests one of whose later tokens (not a first) reached the
        client at `client` -- every decoding row (`rows`, request ids; None: none decoded), the finished ones too,
        and each preempted request whose recompute completed (it emits its next token)."""
        resumed = [item.rid for item, c in chunks if item.left == c and item.resume is not None]
        if rows is None and not resumed:
            return
        ids = rows.copy() if rows is not None else np.zeros(0, np.int64)
        if resumed:
            ids = np.concatenate([ids, np.array(resumed, np.int64)])
        self.cl.token_log.append((client, ids))

    @staticmethod
    def _completing(chunks) -> int:
        """Prefills (or recomputes) this step's chunks complete: each emits one token."""
        n = 0
        for item, c in chunks:
            if item.left == c:
                n += 1
        return n

    @staticmethod
    def _emit_few(dec, accepted):
        """apply's token accounting for a few rows in plain Python: each row emits min(accepted + 1, REM)
        tokens; (tokens emitted in all, whether a row finished). `accepted`: int array [R], None: no drafts."""
        acc = accepted.tolist() if accepted is not None else [0] * len(dec)
        n_out, done = 0, False
        for i, a in enumerate(acc):
            e = a + 1
            rem = dec.item(i, REM)
            if e >= rem:
                e, done = rem, True
            dec[i, REM] = rem - e
            n_out += e
        return n_out, done

    def _finish_chunks(self, now: float, chunks, client: float | None = None):
        cl, req = self.cl, self.cl.req
        rows = []
        for item, c in chunks:
            item.left -= c
            item.done += c
            if item.left:
                continue
            rid = item.rid
            cl.count_tokens(now, 1)
            if item.resume is None:  # the prompt's prefill emits the first token
                req.first_token[rid] = now if client is None else client
                pos, rem, entry = 0, int(req.output_len[rid]) - 1, self.decode_steps
            else:  # a recompute emits the next token
                pos, rem, entry, _ = item.resume
                rem -= 1
            if rem <= 0:
                self._release(rid, now, item.held, item.done, client)
            else:
                tot = int(req.prompt_len[rid] + req.output_len[rid])
                row = (rid, item.pstart, item.plen, pos, rem, entry, tot, item.held, item.adm)
                if self._hybrid:  # its last chunk's allocation: item.done slots, item.done - c cached
                    row += (self.kv.row_cap(item.held, item.done, item.done - c, self.lookahead),)
                rows.append(row)
                self.kv_dec += item.done + 1
        self.prefilling = [item for item in self.prefilling if item.left > 0]
        if rows:
            self._add_rows(rows)


def _chunk_kw(chunks) -> dict:
    """step_time's chunk_max / chunk_sum / chunk_kv / chunk_reqs keywords for a step's prefill chunks [(Prefill,
    tokens)]: the longest chunk, their tokens, the cached tokens their requests hold after the step (done + chunk:
    what the step's kv read counts for them) and how many; none when it has none (a step function without them,
    as tests pass, still works on decode steps)."""
    if not chunks:
        return {}
    longest, total = prefill_chunk_tokens([c for _, c in chunks])
    return {"chunk_max": longest, "chunk_sum": total, "chunk_kv": float(sum(item.done + c for item, c in chunks)),
            "chunk_reqs": len(chunks)}


class LockstepGroup:
    """The data-parallel replicas of one expert-parallel group, stepping together as vLLM's DP ranks do.

    Every MoE layer's dispatch / combine all-to-all waits for all ranks, so each step lasts as long as the
    group's longest: a rank's decodes wait out another rank's prefill chunk. A rank with nothing to run while
    the others step runs a dummy batch (vLLM's execute_dummy_batch: one token, no context). Each rank plans and
    applies its own step (its scheduler); only the clock is shared.

    DP padding: each step the ranks all-reduce their token counts (vllm/v1/worker/dp_utils.py
    coordinate_batch_across_dp) and, when every rank runs a CUDA graph, each pads its batch to the largest
    count of the group, so each rank's step is priced at the group's most tokens over its own requests and KV.
    `pad_limit`: the most tokens a step may have for that (the largest captured graph); 0: never padded.
    Unpadded (a step past the largest graph: a prefill chunk), each rank runs its own tokens through attention, but
    its experts run on every rank's tokens: the default all2all backend's dispatch is an all_gatherv of the ranks'
    hidden states sized by num_tokens_across_dp, its combine a reduce_scatterv (AgRsAll2AllManager,
    vllm/distributed/device_communicators/all2all.py, vLLM 0.32.0), so each rank's MoE layers are priced on the
    group's total tokens (CostModel.step_time moe_tokens), not dp x its own. The step function must take that keyword.
    """

    def __init__(self, env, members: list[Replica], step_time, pad_limit: int = 0):
        self.members = members
        self.step_time = step_time
        self.pad_limit = pad_limit
        self.wake: simpy.Event | None = None
        for r in members:
            r.group = self
            r.autotune_s = 0.0  # the group's clock charges no first-prefill autotune (module docstring): nor its SPS
        self.process = env.process(self.run())

    def run(self):
        env = self.members[0].cl.env
        step_time = self.step_time
        while True:
            steps = [r.plan() for r in self.members]
            if all(s is None for s in steps):
                if any(r.n_active for r in self.members):
                    continue  # admitted work that starts next iteration (disaggregated KV arrivals)
                self.wake = env.event()
                yield self.wake
                self.wake = None
                continue
            top = max(s[0] for s in steps if s is not None)
            if top <= self.pad_limit:  # every rank runs `top` tokens (the idle one a dummy batch of that many)
                dt = max(step_time(top, 1.0, 1, False, 0, None) if s is None
                         else step_time(top, s[1], s[2], s[3], s[6], s[8], state_copies=s[9],
                                        **_chunk_kw(s[7])) for s in steps)
            else:  # each rank its own tokens; every rank's experts run on all of the group's tokens, gathered
                moe = sum(1 if s is None else s[0] for s in steps) / len(steps)
                dt = max(step_time(1, 1.0, 1, False, 0, None, moe_tokens=moe) if s is None
                         else step_time(s[0], s[1], s[2], s[3], s[6], s[8], moe_tokens=moe, state_copies=s[9],
                                        **_chunk_kw(s[7]))
                         for s in steps)
            yield env.timeout(dt)
            for r, s in zip(self.members, steps):
                if s is not None:
                    r.finish_step(s, dt)


class Cluster:
    """Router + replicas + bookkeeping. `policy_factory()` makes one policy object per replica; with
    `lockstep` > 1 replicas step in groups of that many (LockstepGroup: vLLM's DP ranks of one EP group)."""

    def __init__(self, env, cost, policy_factory, source, n_replicas: int, engine, rng: np.random.Generator,
                 kv_capacity: int, router: str = "round_robin", window: tuple[float, float] = (0.0, float("inf")),
                 closed_loop: dict | None = None, kv_blocks: int | None = None, frontend=None, lockstep: int = 1,
                 record_steps: bool = False):
        self.env = env
        self.record_steps = record_steps  # each replica keeps its steps' shapes (Replica.step_log)
        self.cost = cost
        self.source = source
        engine = engine_with_defaults(engine, cost.hw, cost.model)  # null limits: what `vllm serve` picks
        self.engine = engine
        self.rng = rng
        self.kv_capacity = kv_capacity  # tokens per replica, as vLLM logs its KV cache size
        self.kv_groups = kv_groups(cost.model, engine.hybrid_kv, cost.tp, engine.block_size)
        self.kv_blocks = kv_blocks  # the exact pool in blocks (from memory); None: from kv_capacity
        self.router = router
        self.window = window
        # {"think": s, "stop_at": s, "lengths": LengthSampler, "max_requests": int | None}
        self.closed_loop = closed_loop
        self.req = RequestTable()
        self.rejected: list[int] = []
        # vLLM's OpenAI server answers 400 to a request whose prompt + max_tokens pass max_model_len (--max-model-len,
        # else the length the config.json states; 0: none stated, a preset's): such requests are never scheduled
        self.max_model_len = engine.max_model_len or cost.model.stated_max_model_len
        self.too_long: list[int] = []
        self._slots: dict[int, tuple[int, int, int]] = {}
        self._rr = 0
        self._lb_start = 0  # least_loaded: the engine its next scan starts at (vLLM's eng_start_index)
        self.tokens_in_window = 0
        self.in_system = 0
        self._slot_free = None  # open_loop's client limit: triggered when a request finishes
        self._area = 0.0
        self._last_t = 0.0
        self.disaggregated = bool(engine.disaggregated_prefill)
        self.frontend = frontend  # lab/config_sim.FrontendSpec or None: each replica's API server
        # when recorded (simulate's record_tokens; sim.client_cadence): one (client time, request ids [R]) per step
        # that decoded, the time its decoding requests' tokens reached the client (one streamed chunk each)
        self.token_log: list | None = None
        grouped = lockstep > 1
        self.replicas = [Replica(i, self, policy_factory(), start=not grouped) for i in range(n_replicas)]
        # DP padding up to: vLLM's largest captured CUDA graph -- the configured buckets' last, else its default
        # min(2 x max_num_seqs, 512) (vllm/config/vllm.py; 1,024 on Blackwell, not modelled) -- or every step
        pad_limit = {"none": 0, "always": float("inf")}.get(
            engine.dp_padding, cost.buckets[-1] if cost.buckets else min(2 * engine.max_num_seqs, 512))
        self.groups = [LockstepGroup(env, self.replicas[i:i + lockstep], cost.step_time, pad_limit)
                       for i in range(0, n_replicas, lockstep)] if grouped else []

    def warm_prefix_cache(self, prompts, outputs) -> None:
        """Before any request: the run's requests (`prompts`, `outputs` [n] token counts, in send order; an output
        below 1 counts as 1) ran once before on these replicas and finished in send order, so each replica's prefix
        cache holds their full blocks (sim/kv_cache.PagedKV.warm) and request i, sent again with the same prompt,
        finds its prompt's blocks while they were not evicted. That is one `vllm serve` answering a sweep of vLLM's
        benchmark client at one --seed: every point samples the same prompts (benchmark_serving.py / `vllm bench
        serve` seed their dataset sampler with it), and V1 caches freed blocks by their tokens' hashes
        (vllm/v1/core/block_pool.py), so a prompt sent again reuses all of its full blocks but the one holding its
        last token. Request i ran on replica i mod n: round_robin (least_loaded's choice depends on the load: a
        LabError with more than one replica). Finishing in send order stands in for the earlier run's own order,
        which only matters where the pool holds part of the run."""
        reps = self.replicas
        if len(reps) > 1 and self.router != "round_robin":
            raise LabError(f"sim.workload.warm_prefix_cache: which of {len(reps)} replicas served each request before "
                           f"depends on router {self.router!r}'s load: use router round_robin or one replica")
        for rid, (prompt, output) in enumerate(zip(np.asarray(prompts).tolist(), np.asarray(outputs).tolist())):
            kv = reps[rid % len(reps)].kv
            if kv.prefix_cache is not None:  # the request's own chain: it is rid again in this run
                kv.warm(chain_of(rid), int(prompt) + max(int(output), 1) - 1)  # its last token's KV never computed

    # ---- arrivals ----------------------------------------------------------------------------------
    def submit(self, prompt_len: int, output_len: int, offered: float | None = None) -> int:
        """A request is sent now; output_len -1 takes the replayed prompt's recorded output length. `offered`: when
        the client's arrival clock released it (it waited for a --max-concurrency slot since; None: now)."""
        now = self.env.now
        start, length, rec_out = self.source.new_request(self.rng)
        if output_len < 0:
            output_len = rec_out
        rid = self.req.add(now, prompt_len, max(int(output_len), 1), 0.0 if offered is None else now - offered)
        self._track(now, +1)
        if self.max_model_len and prompt_len + max(int(output_len), 1) > self.max_model_len:
            # vLLM's server refuses it at once (serving_engine.py: prompt + max_tokens > max_model_len, an error per
            # request): unfinished, never on a replica; its client slot (a closed loop's user) is free again
            self.too_long.append(rid)
            self._answer_error(rid)
            return rid
        self._slots[rid] = (start, length, rec_out)
        if self.router == "least_loaded":
            rep = self._least_loaded()
        else:
            rep = self.replicas[self._rr % len(self.replicas)]
            self._rr += 1
        if rep.fe is not None:  # the replica's API server first: it hands the request to the engine when done
            rep.fe.admit(rid)
        else:
            self._dispatch(rep, rid)
        return rid

    def reject(self, rid: int):
        """A request that can never fit in its replica's KV cache: unfinished, counted, and answered with an error
        (its client slot, a closed loop's user, free again: vLLM's benchmark client then sends its next request;
        the user was out of the loop for good before, and the request counted in the system to the end)."""
        self.rejected.append(rid)
        self._answer_error(rid)

    def _answer_error(self, rid: int):
        """The client gets an error reply for `rid` now: the request leaves the system unfinished (on_finish
        without a finish time), so its slot or closed-loop user sends on."""
        self.env.timeout(0).callbacks.append(lambda _e, rid=rid: self.on_finish(rid, self.env.now))

    def _least_loaded(self) -> Replica:
        """vLLM's DP load balancer (DPLBAsyncMPClient.get_core_engine_for_request, vllm/v1/engine/core_client.py,
        vLLM 0.32.0 lines 1642-1697): the engine with the lowest score, score = its unfinished requests (the
        client's exact in-flight count; Replica.load) + waiting x 6 x max(0, KV usage - 0.5) (a queue on a
        KV-bound engine drains slowly); the scan starts one engine further on at every request, so that ties
        (idle engines) go round robin instead of always to engine 0."""
        reps = self.replicas
        n = len(reps)
        start = self._lb_start
        self._lb_start = (start + 1) % n
        best, best_score = None, float("inf")
        for i in range(n):
            rep = reps[(start + i) % n]
            score = float(rep.load())
            if rep.queue and rep.kv.paged:
                score += len(rep.queue) * 6.0 * max(0.0, 1.0 - rep.kv.free / rep.kv.total - 0.5)
            if score < best_score:
                best, best_score = rep, score
        return best

    def _dispatch(self, rep: Replica, rid: int):
        """The request reaches replica `rep`'s engine now."""
        now = self.env.now
        prompt_len = int(self.req.prompt_len[rid])
        if self.disaggregated:
            # one prefill pass on a prefill node emits the first token, then the KV moves to `rep`
            copies = 1 if self.cost.model.linear_layers and prompt_len > 1 else 0  # its state: gathered, scattered
            t_pf = self.cost.step_time(int(prompt_len), int(prompt_len), 1, False,
                                       attn_ctx=prompt_len * (prompt_len + 1) / 2, state_copies=copies,
                                       chunk_max=prompt_len, chunk_sum=prompt_len)
            self.req.first_token[rid] = now + t_pf
            self.count_tokens(now + t_pf, 1)
            ev = self.env.timeout(t_pf)
            ev.callbacks.append(lambda _e, rep=rep, rid=rid: rep.enqueue(rid))
        else:
            rep.enqueue(rid)

    def acceptance_slot(self, rid: int):
        return self._slots.pop(rid)

    def open_loop(self, times: np.ndarray, prompts: np.ndarray, outputs: np.ndarray, limit: int | None = None):
        """Submit each request at its time; with `limit` (a benchmark client's --max-concurrency) a request
        waits, first come first served, while `limit` are in flight, as vLLM's client semaphore holds it: its
        arrival clock ticks on regardless (each request a task created at its time, waiting on the semaphore), the
        request is sent when it holds a slot and timed from then (vllm/benchmarks/serve.py limited_request_func).
        An interrupt (the end of a steady-state window) stops it: requests still waiting for a slot are never sent."""
        env = self.env
        try:
            for t, p, o in zip(times.tolist(), prompts.tolist(), outputs.tolist()):
                if t > env.now:
                    yield env.timeout(t - env.now)
                while limit and self.in_system >= limit:
                    self._slot_free = env.event()
                    yield self._slot_free
                self.submit(p, o, offered=t)
        except simpy.Interrupt:
            return

    def start_closed_loop(self, users: int):
        lengths = self.closed_loop["lengths"]
        cap = self.closed_loop.get("max_requests")
        users = min(users, cap) if cap else users
        p, o = lengths.sample(users, self.rng)
        for i in range(users):
            self.submit(int(p[i]), int(o[i]), self._closed_loop_offer())

    def _closed_loop_offer(self) -> float | None:
        """When a closed loop's next request was created: a bounded loop without think time is vLLM's client at
        --request-rate inf with --max-concurrency, every request a task created at 0 (so its client wait is its
        send time, as vLLM's queue_times); None (sent when created) for users that think or never stop."""
        cl = self.closed_loop
        return 0.0 if cl.get("max_requests") and not cl["think"] else None

    def finish_at(self, rid: int, t: float):
        """The request's last token reaches the client at t (later than now): it finishes then."""
        ev = self.env.timeout(t - self.env.now)
        ev.callbacks.append(lambda _e, rid=rid, t=t: self.on_finish(rid, t))

    def on_finish(self, rid: int, now: float):
        self._track(now, -1)
        if self._slot_free is not None and not self._slot_free.triggered:
            self._slot_free.succeed()  # a client slot is free (open_loop's limit)
        cl = self.closed_loop
        if cl is None or now >= cl["stop_at"] or self._closed_loop_full():
            return
        p, o = cl["lengths"].sample(1, self.rng)
        if cl["think"] > 0:
            ev = self.env.timeout(cl["think"])
            ev.callbacks.append(lambda _e, p=int(p[0]), o=int(o[0]): self._late_submit(p, o))
        else:
            self.submit(int(p[0]), int(o[0]), self._closed_loop_offer())

    def _late_submit(self, p, o):
        if self.env.now < self.closed_loop["stop_at"] and not self._closed_loop_full():
            self.submit(p, o)

    def _closed_loop_full(self) -> bool:
        """True once a closed loop with max_requests has sent them all (vLLM's --num-prompts)."""
        cap = self.closed_loop.get("max_requests")
        return bool(cap) and self.req.n >= cap

    def closed_loop_sent_all(self) -> bool:
        """True once a bounded closed loop has sent its max_requests, or its users stopped sending at stop_at."""
        return self._closed_loop_full() or self.env.now >= self.closed_loop["stop_at"]

    # ---- bookkeeping -------------------------------------------------------------------------------
    def _track(self, now: float, delta: int):
        self._area += self.in_system * (now - self._last_t)
        self._last_t = now
        self.in_system += delta

    def time_average_in_system(self, until: float) -> float:
        return (self._area + self.in_system * (until - self._last_t)) / until

    def count_tokens(self, now: float, n: int):
        if self.window[0] <= now <= self.window[1]:
            self.tokens_in_window += n

    def all_done(self) -> bool:
        return self.in_system <= 0

    def requests_frame(self) -> pd.DataFrame:
        return self.req.frame()

    def step_stats(self) -> dict:
        reps = self.replicas
        sum_r = sum(r.sum_r for r in reps)
        caches = [r.kv.prefix_cache for r in reps if r.kv.prefix_cache is not None]
        return {
            "steps": sum(r.n_steps for r in reps),
            "decode_steps": sum(r.decode_steps for r in reps),
            "busy_time_s": sum(r.busy_time for r in reps),
            # tokens verified per request per step, the request's own token included (MTP-1: 2)
            "verify_per_req_step": 1 + sum(r.sum_l for r in reps) / sum_r if sum_r else float("nan"),
            "draft_per_req_step": sum(r.sum_l for r in reps) / sum_r if sum_r else float("nan"),
            "tau": sum(r.sum_emit for r in reps) / sum_r if sum_r else float("nan"),
            "mean_decode_batch": sum_r / max(sum(r.decode_steps for r in reps), 1),
            "mean_step_tokens": sum(r.sum_batch_tokens for r in reps) / max(sum(r.n_steps for r in reps), 1),
            "decode_tokens": sum(r.sum_emit for r in reps),
            # running requests (decoding + prefilling) per replica: mean over steps and peak
            "mean_running": sum(r.sum_running for r in reps) / max(sum(r.n_steps for r in reps), 1),
            "peak_running": max(r.peak_running for r in reps),
            "preemptions": sum(r.n_preemptions for r in reps),
            # vLLM's vllm:prefix_cache_queries / _hits: tokens looked up at admissions, tokens found cached
            "prefix_cache_queries": sum(c.queries for c in caches),
            "prefix_cache_hits": sum(c.hits for c in caches),
            "kv_capacity_tokens": reps[0].kv.capacity_tokens,
        }
