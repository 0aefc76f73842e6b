"""vLLM's API server in front of one replica's engine: one event loop, two kinds of work, taken in turn.

    fe = Frontend(env, request_ms=10.0, output_token_ms=0.02, handoff=fn, latency_ms=30.0)
                                # sim.frontend (lab/config_sim.FrontendSpec)
    fe.admit(rid)               # request `rid` arrived now: fn(rid) is called when its front-end work ends (the
                                # engine sees it then: latency_ms + its wait + request_ms later; at once when both
                                # are 0)
    seen = fe.deliver(n)        # the engine emitted n tokens now: the time the client has them (now if no
                                # per-token work is configured)

`vllm serve` runs the HTTP server, the chat template, tokenising and the hand-off to the engine core on one
asyncio event loop in one process; the engine core runs beside it in its own process and never waits for it.
On that loop two kinds of task share one CPU (vllm/v1/engine/async_llm.py, vllm/entrypoints/openai/):
  - the request handlers, one task per request: `request_ms` of work each before the engine sees the request;
  - the output handler, one task for all requests (AsyncLLM.output_handler): it awaits the engine core's
    outputs and turns each engine step's tokens into every request's output (detokenising), yielding to the
    loop between steps (and between chunks of VLLM_V1_OUTPUT_PROC_CHUNK_SIZE = 128 requests), not after every
    queued request's handler has run; each request's task then writes its SSE chunk. Both are one step's
    output work here (`output_token_ms` per token).
So a step's streamed tokens do not wait for the whole backlog of requests queued for admission, and a long
output backlog does not shut admissions out either. Modelled as one server, non-preemptive, with two queues
taken in turn (round-robin between the output handler and the request handlers):
  - request jobs (`request_ms` each) are served first come first served among themselves; with no output work
    N requests that arrive at once reach the engine request_ms apart (the k-th after k x request_ms), so the
    server admits at most 1000 / request_ms requests a second whatever the GPU could do;
  - output jobs (one per engine step: all of the step's emitted tokens together, `output_token_ms` per token)
    are served first come first served among themselves, and wait only for the job in service, the output
    jobs before them and, between two output jobs, one request job (the turn of the request handlers) that
    was already queued when the later output job arrived: never for the admission backlog. A step's tokens
    reach the client when its job ends: a request's first token, its last token (its finish) and, in a closed
    loop, the next request of its user follow the client's clock. With output_token_ms = 0 no output work is
    modelled and tokens reach the client when emitted.
A request's front-end delay is not all work on that loop: the client, the HTTP stack, a tokeniser thread, the
hand-off to the engine core process (ZMQ) and its input processing take time that does not hold the loop, so
many requests can be in it at once. `latency_ms` is that part: a pure delay on every request's path to the
engine that occupies nothing (a request joins the request jobs' queue latency_ms after it arrives; N that arrive
at once reach the engine latency_ms + k x request_ms later, not k x (latency_ms + request_ms)). Only request_ms
caps the admission rate. It sits before the request's work because (1) a constant delay and a first come first
served server commute -- a request stream shifted by L and then served leaves exactly L later than the stream
served and then shifted -- so among requests alone the place does not change when any of them reaches the
engine, and before is one event per request with no second queue; (2) beside output work the only difference is
which output work committed during the delay the request waits for (it joins the queue behind it), and a request
the loop has not yet received (client, connection) cannot hold the request handlers' turn. A latency on the
return path (the SSE bytes' way to the client) would move TTFT and E2E by the same amount and leave TPOT alone,
as this one does, and in a closed loop both delay the user's next request by it. Requests in the delay count in
`in_flight` (a least_loaded router adds them to the replica's load, as it adds those queued for the loop).
The one approximation beside the work sizes: a request handler's work is one job (here; SharedFrontend below,
`intake: shared`, interleaves the pieces instead), where vLLM's is several pieces between awaits (so a real output job may wait for a piece of several handlers, or less than one
whole request). An output job's end is fixed when it arrives (a request arriving later never goes before
it), so deliver() is exact arithmetic on when the server next falls free; request jobs start lazily (an
event when the server falls free: an output job that arrived meanwhile may take its turn first) and end with
one event each, the hand-off. TTFT, TPOT and E2E are then measured at the client, as vLLM's benchmark
measures them. The engine-side token count of a synthetic workload's measurement window
(sim/cluster.Cluster.count_tokens) stays at emission time.
"""
from __future__ import annotations

from collections import deque


class Frontend:
    """One replica's API server: one non-preemptive server taking request jobs and output jobs in turn."""

    __slots__ = ("_last_out", "_wake_at", "busy_s", "env", "free_at", "handoff", "in_flight", "latency_s",
                 "request_s", "token_s", "waiting")

    def __init__(self, env, request_ms: float, output_token_ms: float, handoff=None, latency_ms: float = 0.0):
        self.env = env
        self.request_s = request_ms / 1e3
        self.token_s = output_token_ms / 1e3
        self.latency_s = latency_ms / 1e3  # a delay before the request's work that occupies nothing
        self.handoff = handoff  # fn(rid): the request reaches the engine now
        self.free_at = 0.0  # when the server has served every job committed to it so far
        self.busy_s = 0.0  # work served in all (seconds)
        self.in_flight = 0  # requests in the delay or whose work has not ended (a least_loaded router counts them)
        self.waiting: deque[int] = deque()  # requests queued, their work not yet begun
        self._last_out = False  # the last job committed is an output job
        self._wake_at: float | None = None  # a check is due when the server falls free at this time

    # ---- request jobs --------------------------------------------------------------------------------
    def admit(self, rid: int):
        """Request `rid` arrived now: queue its work (latency_ms from now); handoff(rid) is called when it ends."""
        if self.latency_s > 0:  # many requests may be in the delay at once: one event each, no server time
            self.in_flight += 1
            ev = self.env.timeout(self.latency_s)
            ev.callbacks.append(lambda _e, rid=rid: self._join(rid, counted=True))
            return
        self._join(rid, counted=False)

    def _join(self, rid: int, counted: bool):
        """`rid` reaches the request handlers now; `counted`: it is in in_flight already (it was in the delay)."""
        if self.request_s <= 0:  # no work per request: the engine sees it at once
            if counted:
                self.in_flight -= 1
            self.handoff(rid)
            return
        if not counted:
            self.in_flight += 1
        self.waiting.append(rid)
        if self._wake_at is None:
            if self.free_at <= self.env.now:  # the server is idle: begin now
                self._commit_request(self.env.now)
            self._arm()

    def _commit_request(self, start: float):
        """The next queued request's work runs from `start` (the server is free then)."""
        rid = self.waiting.popleft()
        end = start + self.request_s
        self.free_at = end
        self.busy_s += self.request_s
        self._last_out = False
        ev = self.env.timeout(max(0.0, end - self.env.now))
        ev.callbacks.append(lambda _e, rid=rid: self._handed(rid))

    def _handed(self, rid: int):
        self.in_flight -= 1
        self.handoff(rid)

    def _arm(self):
        """Requests wait: look again when the server falls free (work committed meanwhile may go first)."""
        if not self.waiting:
            self._wake_at = None
            return
        self._wake_at = at = self.free_at
        ev = self.env.timeout(max(0.0, at - self.env.now))
        ev.callbacks.append(self._wake)

    def _wake(self, _e):
        at, self._wake_at = self._wake_at, None
        if self.waiting and self.free_at == at:  # nothing was committed since: the next request begins
            self._commit_request(at)
        self._arm()

    # ---- output jobs ---------------------------------------------------------------------------------
    @property
    def streams(self) -> bool:
        """True when emitted tokens cost front-end work (output_token_ms > 0)."""
        return self.token_s > 0

    def deliver(self, n_tokens: int) -> float:
        """The engine emitted `n_tokens` now (one step's output): when the client has them."""
        now = self.env.now
        if not self.streams:
            return now
        if self._last_out and self.waiting:  # the request handlers' turn comes first: one queued request
            self._commit_request(max(now, self.free_at))
        work = n_tokens * self.token_s
        self.free_at = max(now, self.free_at) + work
        self.busy_s += work
        self._last_out = True
        return self.free_at


class SharedFrontend(Frontend):
    """The API server with the request handlers' work shared among them (`intake: shared`): processor sharing.

        fe = SharedFrontend(env, request_ms=10.0, output_token_ms=0.2, handoff=fn, latency_ms=5.0)

    A vLLM request handler is several pieces of work between awaits (parse and validate, chat template, the
    tokeniser's future, process_inputs and the hand-off to the engine core), and asyncio runs every ready
    task's next piece in turn (one pass over the ready queue per loop iteration). With many handlers queued
    their pieces interleave, so they progress together: the loop's time is shared equally among the requests
    whose work has not ended (egalitarian processor sharing), and N requests that reach it at once all reach
    the engine about N x request_ms later, together, instead of request_ms apart (FIFO, Frontend). Alone, a
    request takes request_ms either way. Output jobs (one per engine step, output_token_ms per token) are
    served first come first served among themselves and go before the requests' shared work (a piece of a
    request is short beside a step's output job): deliver() stays exact arithmetic, and the requests' work
    progresses only while no output job is in service. Equal work per request means the requests finish in
    the order they reached the loop, so one event (the head's end) is pending at a time.
    """

    __slots__ = ("_gen", "_jobs", "_t", "_v")

    def __init__(self, env, request_ms: float, output_token_ms: float, handoff=None, latency_ms: float = 0.0):
        super().__init__(env, request_ms, output_token_ms, handoff=handoff, latency_ms=latency_ms)
        self._v = 0.0  # service each request in the shared work has had since the start (virtual time, s)
        self._t = 0.0  # the time _v was brought up to
        self._jobs: deque[tuple[int, float]] = deque()  # (rid, _v at which its work ends), in arrival order
        self._gen = 0  # the pending head-end event's number (a later schedule makes it stale)

    def _join(self, rid: int, counted: bool):
        if self.request_s <= 0:
            super()._join(rid, counted)
            return
        if not counted:
            self.in_flight += 1
        self._advance(self.env.now)
        self._jobs.append((rid, self._v + self.request_s))
        self._schedule()

    def _advance(self, t: float):
        """Bring the shared work up to time t: the time since _t that no output job held is split among the
        requests in it (output jobs committed so far end at free_at)."""
        free = t - max(self._t, self.free_at)
        if free > 0 and self._jobs:
            self._v += free / len(self._jobs)
            self.busy_s += free
        self._t = t

    def _schedule(self):
        """One event at the end of the head request's work, as things stand now (output jobs first)."""
        self._gen += 1
        if not self._jobs:
            return
        now = self.env.now
        left = (self._jobs[0][1] - self._v) * len(self._jobs)  # real time of shared work until the head ends
        at = max(now, self.free_at) + max(0.0, left)
        gen = self._gen
        ev = self.env.timeout(at - now)
        ev.callbacks.append(lambda _e, gen=gen: self._head_ends(gen))

    def _head_ends(self, gen: int):
        if gen != self._gen:  # an arrival or an output job moved the head's end: a later event stands
            return
        self._advance(self.env.now)
        # this event is the head's end by construction: snap to it (float sums may fall a hair short, and a clock
        # of many seconds cannot resolve the remainder), so every such event hands at least the head over
        self._v = max(self._v, self._jobs[0][1])
        done = []
        tol = 1e-9 * self.request_s  # requests that reached the loop together end together
        while self._jobs and self._jobs[0][1] <= self._v + tol:
            done.append(self._jobs.popleft()[0])
        self._schedule()
        for rid in done:
            self._handed(rid)

    def deliver(self, n_tokens: int) -> float:
        """The engine emitted `n_tokens` now: when the client has them (the requests' shared work waits)."""
        now = self.env.now
        if not self.streams:
            return now
        self._advance(now)
        work = n_tokens * self.token_s
        self.free_at = max(now, self.free_at) + work
        self.busy_s += work
        if self._jobs:
            self._schedule()
        return self.free_at
