"""vLLM's API server in front of one replica's engine: one process, one event loop, one FIFO server.

    fe = Frontend(env, request_ms=10.0, output_token_ms=0.02)   # sim.frontend (lab/config_sim.FrontendSpec)
    ready = fe.admit()          # a request arrives now: the time its front-end work ends and the engine sees it
    seen = fe.deliver(n)        # the engine emitted n tokens now: the time the client has them (now if no
                                # per-token work is configured)

`vllm serve` runs the HTTP server, the chat template, tokenising and the hand-off to the engine core on one
asyncio event loop in one process, and that same loop detokenises every step's output and streams it (SSE).
The engine core runs beside it in its own process and never waits for it. Modelled as a single server that
serves its work in the order it arrives (first come, first served), without preemption:
  - each request needs `request_ms` of it before the engine sees the request: N requests that arrive at once
    reach the engine request_ms apart (the k-th after k x request_ms), so the server admits at most
    1000 / request_ms requests a second whatever the GPU could do;
  - each engine step's emitted tokens (all of the step's requests together, one job) need
    `output_token_ms` per token, and reach the client when that job ends: a request's first token, its
    last token (its finish) and, in a closed loop, the next request of its user follow the client's clock.
    With output_token_ms = 0 no output work is modelled and tokens reach the client when emitted.
Jobs come in simulated-time order (SimPy processes events in time order), so the server is exact arithmetic
on the time it next falls free; no SimPy process or event is spent on it here (the cluster schedules the
hand-off and the client's finish, sim/cluster.py). TTFT, TPOT and E2E are then measured at the client, as
vLLM's benchmark measures them. The engine-side token count of a synthetic workload's measurement window
(sim/cluster.Cluster.count_tokens) stays at emission time.
"""
from __future__ import annotations


class Frontend:
    """One replica's API server: a single FIFO server with no preemption."""

    __slots__ = ("busy_s", "env", "free_at", "in_flight", "request_s", "token_s")

    def __init__(self, env, request_ms: float, output_token_ms: float):
        self.env = env
        self.request_s = request_ms / 1e3
        self.token_s = output_token_ms / 1e3
        self.free_at = 0.0  # when the server has served every job given to it so far
        self.busy_s = 0.0  # work served in all (seconds)
        self.in_flight = 0  # requests whose front-end work has not ended (a least_loaded router counts them)

    def serve(self, work_s: float) -> float:
        """Queue `work_s` seconds of work now, behind every earlier job; the time it ends."""
        now = self.env.now
        start = max(now, self.free_at)
        self.free_at = start + work_s
        self.busy_s += work_s
        return self.free_at

    def admit(self) -> float:
        """A request arrived now: when its front-end work ends (the engine sees it then)."""
        return self.serve(self.request_s)

    @property
    def streams(self) -> bool:
        """True when emitted tokens cost front-end work (output_token_ms > 0)."""
        return self.token_s > 0

    def deliver(self, n_tokens: int) -> float:
        """The engine emitted `n_tokens` now (one step's output): when the client has them."""
        if not self.streams:
            return self.env.now
        return self.serve(n_tokens * self.token_s)
