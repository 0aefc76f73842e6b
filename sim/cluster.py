"""The serving cluster as SimPy processes: a router and replicas running continuous batching.

    cl = Cluster(env, cost, policy_factory, source, n_replicas, batching, rng, ...)
    cl.submit(prompt_len, output_len)      # route a request now
    env.run(until=...) ; cl.requests_frame()

One SimPy event per engine step (never per token); per-step work is numpy over the batch's slot arrays.
A replica step: admit queued requests (free slot and KV reservation of prompt + output, no preemption);
decode requests get 1 + l_r tokens with l_r from the policy (token budget max_batched_tokens - R);
prefill chunks fill what remains (chunked prefill); the step lasts cost.step_time(...); then the
acceptance source says what each verify accepted. The step that completes a prompt's prefill emits its
first token (TTFT), as in vLLM.
"""
from __future__ import annotations

from collections import deque

import numpy as np
import pandas as pd
import simpy


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

    FIELDS = ("arrival", "first_token", "finish", "prompt_len", "output_len", "replica", "steps")

    def __init__(self, capacity: int = 1024):
        self.n = 0
        self.arrival = np.full(capacity, np.nan)
        self.first_token = np.full(capacity, np.nan)
        self.finish = np.full(capacity, np.nan)
        self.prompt_len = np.zeros(capacity, np.int64)
        self.output_len = np.zeros(capacity, np.int64)
        self.replica = np.full(capacity, -1, np.int64)
        self.steps = np.zeros(capacity, np.int64)

    def add(self, t: float, prompt: int, output: int) -> int:
        if self.n == len(self.arrival):
            for f in self.FIELDS:
                old = getattr(self, f)
                new = np.full(2 * len(old), np.nan) if old.dtype.kind == "f" else np.zeros(2 * len(old), old.dtype)
                new[: len(old)] = old
                setattr(self, f, new)
        i = self.n
        self.arrival[i], self.prompt_len[i], self.output_len[i] = t, prompt, output
        self.n += 1
        return i

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame({f: getattr(self, f)[: self.n] for f in self.FIELDS})


# columns of a replica's dense decode-state matrix (one row per request in the decode phase):
# request id, replay start row and length, replay position, output tokens still to emit, decode-step
# counter value when the request started decoding (steps taken = counter now - this)
RID, PSTART, PLEN, POS, REM, ENTRY = range(6)
NCOL = 6


class Replica:
    """One engine: a FCFS queue, prefilling requests, and a dense [R, NCOL] int matrix of decoding ones.

    Keeping decode state dense (rows removed when a request finishes, appended when its prefill ends)
    makes each step a handful of whole-array numpy operations instead of gathers and scatters.
    """

    def __init__(self, idx: int, cluster: Cluster, policy):
        b = cluster.batching
        self.idx = idx
        self.cl = cluster
        self.policy = policy
        self.queue: deque = deque()
        self.max_seqs = b.max_num_seqs
        self.max_tokens = b.max_batched_tokens
        self.chunked = b.chunked_prefill
        self.kv_cap = cluster.kv_capacity
        self.kv_reserved = 0
        self.dec = np.zeros((0, NCOL), np.int64)
        self.kv_dec = 0  # KV tokens held by decoding requests (prompt + emitted)
        self.prefilling: list[list[int]] = []  # [rid, tokens left, tokens done, pstart, plen]
        self.n_active = 0
        self.wake: simpy.Event | None = None
        # step statistics
        self.busy_time = 0.0
        self.n_steps = 0
        self.decode_steps = 0
        self.sum_r = 0  # sum over steps of decode requests R
        self.sum_l = 0  # sum over steps of verify (draft) tokens
        self.sum_emit = 0  # decode tokens emitted
        self.sum_batch_tokens = 0
        self.process = cluster.env.process(self.run())

    def load(self) -> int:
        return self.n_active + len(self.queue)

    def enqueue(self, rid: int):
        self.queue.append(rid)
        if self.wake is not None and not self.wake.triggered:
            self.wake.succeed()

    def _admit(self):
        cl = self.cl
        req = cl.req
        while self.queue and self.n_active < self.max_seqs:
            rid = self.queue[0]
            need = int(req.prompt_len[rid] + req.output_len[rid])
            if need > self.kv_cap:  # can never fit: left unfinished, reported as rejected
                self.queue.popleft()
                cl.rejected.append(rid)
                continue
            if self.kv_reserved + need > self.kv_cap:
                break
            self.queue.popleft()
            self.kv_reserved += need
            start, length, _ = cl.acceptance_slot(rid)
            req.replica[rid] = self.idx
            self.n_active += 1
            if cl.disaggregated:  # KV arrives from a prefill node: decode right away
                row = np.array([[rid, start, length, 0, int(req.output_len[rid]) - 1, self.decode_steps]], np.int64)
                self.dec = np.concatenate([self.dec, row]) if len(self.dec) else row
                self.kv_dec += int(req.prompt_len[rid]) + 1
                if row[0, REM] <= 0:
                    self.dec = self.dec[:-1]
                    self.kv_dec -= int(req.prompt_len[rid]) + 1
                    self._release(rid, self.cl.env.now)
            else:
                self.prefilling.append([rid, int(req.prompt_len[rid]), 0, start, length])

    def _release(self, rid: int, now: float):
        cl = self.cl
        cl.req.finish[rid] = now
        self.kv_reserved -= int(cl.req.prompt_len[rid] + cl.req.output_len[rid])
        self.n_active -= 1
        cl.on_finish(rid, now)

    def run(self):
        cl = self.cl
        env = cl.env
        cost = cl.cost
        src = cl.source
        rng = cl.rng
        policy = self.policy
        spec = policy.spec
        max_tokens = self.max_tokens
        req = cl.req
        advance_tokens = src.advance_by_tokens
        track_pos = src.kind == "trace"  # parametric sources have no replay position
        while True:
            if self.queue:
                self._admit()
            if self.n_active == 0:
                self.wake = env.event()
                yield self.wake
                self.wake = None
                continue
            dec = self.dec
            r = len(dec)
            pending = 0
            for item in self.prefilling:
                pending += item[1]
            lengths = None
            n_spec = 0
            kv_dec = self.kv_dec
            if r and spec:
                conf, state, kcap = src.draw(r, dec[:, PSTART], dec[:, POS], dec[:, PLEN], rng)
                p0 = min(pending, max_tokens - r)
                n_req = r + len(self.prefilling)
                sps = cost.sps_curve(p0, kv_dec + p0, n_req)
                lengths = policy.choose(conf, r, max_tokens - r, sps)
                if kcap is not None:
                    lengths = np.minimum(lengths, kcap)
                n_spec = int(lengths.sum())
            # prefill chunks, FCFS, in the budget left
            left = max_tokens - r - n_spec
            chunks = []
            kv_pf = 0
            n_pf_tok = 0
            for item in self.prefilling:
                if left <= 0:
                    break
                need = item[1]
                c = need if need <= left else (left if self.chunked else 0)
                if c == 0 and r == 0 and not chunks:
                    c = need  # an unchunkable prompt larger than the budget runs alone
                if c <= 0:
                    continue
                chunks.append((item, c))
                kv_pf += item[2] + c
                n_pf_tok += c
                left -= c
            tokens = r + n_spec + n_pf_tok
            dt = cost.step_time(tokens, kv_dec + kv_pf, r + len(chunks), spec and r > 0)
            yield env.timeout(dt)
            now = env.now
            self.busy_time += dt
            self.n_steps += 1
            self.sum_batch_tokens += tokens
            # ---- apply the step's outcome ----
            if r:
                if lengths is not None:
                    accepted = src.accept(state, lengths, rng)
                    policy.observe(lengths, accepted)
                    emitted = accepted + 1
                    if track_pos:
                        dec[:, POS] += emitted if advance_tokens else 1
                else:
                    emitted = 1
                rem = dec[:, REM]
                out = np.minimum(emitted, rem)
                rem -= out
                n_out = int(out.sum())
                self.kv_dec += n_out
                self.decode_steps += 1
                self.sum_r += r
                self.sum_l += n_spec
                self.sum_emit += n_out
                cl.count_tokens(now, n_out)
                if rem.min() == 0:
                    finished = rem == 0
                    for row in dec[finished]:
                        rid = int(row[RID])
                        req.steps[rid] = self.decode_steps - row[ENTRY]
                        self.kv_dec -= int(req.prompt_len[rid] + req.output_len[rid])
                        self._release(rid, now)
                    self.dec = dec = dec[~finished]
            if chunks:
                new_rows = []
                for item, c in chunks:
                    item[1] -= c
                    item[2] += c
                    if item[1] == 0:
                        rid = item[0]
                        req.first_token[rid] = now
                        cl.count_tokens(now, 1)
                        target = int(req.output_len[rid])
                        if target <= 1:
                            self._release(rid, now)
                        else:
                            new_rows.append((rid, item[3], item[4], 0, target - 1, self.decode_steps))
                            self.kv_dec += item[2] + 1
                self.prefilling = [item for item in self.prefilling if item[1] > 0]
                if new_rows:
                    add = np.array(new_rows, np.int64)
                    self.dec = np.concatenate([self.dec, add]) if len(self.dec) else add


class Cluster:
    """Router + replicas + bookkeeping. `policy_factory()` makes one policy object per replica."""

    def __init__(self, env, cost, policy_factory, source, n_replicas: int, batching, rng: np.random.Generator,
                 kv_capacity: int, router: str = "round_robin", window: tuple[float, float] = (0.0, float("inf")),
                 closed_loop: dict | None = None):
        self.env = env
        self.cost = cost
        self.source = source
        self.batching = batching
        self.rng = rng
        self.kv_capacity = kv_capacity
        self.router = router
        self.window = window
        self.closed_loop = closed_loop  # {"think": s, "stop_at": s, "lengths": LengthSampler}
        self.req = RequestTable()
        self.rejected: list[int] = []
        self._slots: dict[int, tuple[int, int, int]] = {}
        self._rr = 0
        self.tokens_in_window = 0
        self.in_system = 0
        self._area = 0.0
        self._last_t = 0.0
        self.disaggregated = bool(getattr(batching, "disaggregated_prefill", False))
        self.replicas = [Replica(i, self, policy_factory()) for i in range(n_replicas)]

    # ---- arrivals ----------------------------------------------------------------------------------
    def submit(self, prompt_len: int, output_len: int) -> int:
        """A request arrives now; output_len -1 takes the replayed prompt's recorded output length."""
        now = self.env.now
        start, length, rec_out = self.source.new_request(self.rng)
        if output_len < 0:
            output_len = rec_out
        rid = self.req.add(now, prompt_len, max(int(output_len), 1))
        self._slots[rid] = (start, length, rec_out)
        self._track(now, +1)
        if self.router == "least_loaded":
            rep = min(self.replicas, key=Replica.load)
        else:
            rep = self.replicas[self._rr % len(self.replicas)]
            self._rr += 1
        if self.disaggregated:
            # one prefill pass on a prefill node emits the first token, then the KV moves to `rep`
            t_pf = self.cost.step_time(int(prompt_len), int(prompt_len), 1, False)
            self.req.first_token[rid] = now + t_pf
            self.count_tokens(now + t_pf, 1)
            ev = self.env.timeout(t_pf)
            ev.callbacks.append(lambda _e, rep=rep, rid=rid: rep.enqueue(rid))
        else:
            rep.enqueue(rid)
        return rid

    def acceptance_slot(self, rid: int):
        return self._slots.pop(rid)

    def open_loop(self, times: np.ndarray, prompts: np.ndarray, outputs: np.ndarray):
        env = self.env
        for t, p, o in zip(times.tolist(), prompts.tolist(), outputs.tolist()):
            if t > env.now:
                yield env.timeout(t - env.now)
            self.submit(p, o)

    def start_closed_loop(self, users: int):
        lengths = self.closed_loop["lengths"]
        p, o = lengths.sample(users, self.rng)
        for i in range(users):
            self.submit(int(p[i]), int(o[i]))

    def on_finish(self, rid: int, now: float):
        self._track(now, -1)
        cl = self.closed_loop
        if cl is None or now >= cl["stop_at"]:
            return
        p, o = cl["lengths"].sample(1, self.rng)
        if cl["think"] > 0:
            ev = self.env.timeout(cl["think"])
            ev.callbacks.append(lambda _e, p=int(p[0]), o=int(o[0]): self._late_submit(p, o))
        else:
            self.submit(int(p[0]), int(o[0]))

    def _late_submit(self, p, o):
        if self.env.now < self.closed_loop["stop_at"]:
            self.submit(p, o)

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
        return self.in_system - len(self.rejected) <= 0

    def requests_frame(self) -> pd.DataFrame:
        return self.req.frame()

    def step_stats(self) -> dict:
        reps = self.replicas
        sum_r = sum(r.sum_r for r in reps)
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
        }
