"""A tiny stand-in for `vllm serve`: /health, Prometheus /metrics and streaming /v1/completions (SSE).

In process (loadgen tests):      with FakeEngine(step_s=0.01) as engine: engine.base_url ...
As the server command (lifecycle): python fake_engine.py --model M --port N [--health-after S]
                                  [--never-healthy] [--models-after S] [--exit-after S] [--step-s S]
                                  [--count-decode-steps] [--bunch-first-batches N]

Each completion streams `max_tokens` tokens, one chunk per simulated engine step of `step_s` seconds
(`tokens_per_step` tokens per chunk with speculation on), with vLLM's continuous usage stats, then a usage
chunk and [DONE]. With speculation on, every step is one draft of `k` tokens of which tokens_per_step - 1
are accepted, counted in the same counters vLLM exports.

With `prefill_s_per_token` set, one-token requests (max_tokens 1: a prefill and its first token) go through
one engine loop as vLLM's engine core runs them: the front end hands requests over one at a time, each after
`admit_s` (what vLLM's API server spends on a request before the engine sees it); an idle engine steps as
soon as a request is there and takes what is queued at that moment; a step lasts step_s +
prefill_s_per_token x its prompt tokens; the steps are counted in vllm:iteration_tokens_total_count and
`steps` holds each step's request count.

With `count_decode_steps`, requests of more than one token decode on one engine clock, as vLLM's engine core
runs them: a step every step_s of every request waiting for one, counted in vllm:iteration_tokens_total_count.
With `bunch_first_batches` N, the first N decode batches (the requests of more than one token in flight
together, from one with none in flight until there is none again) hold their chunks back and stream them all
at once at the end, as a loaded API server delivered a whole batch's chunks within 0.5 ms.
"""
from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import sys
import threading
import time

from typing_extensions import Self


class FakeEngine:
    def __init__(self, step_s: float = 0.005, tokens_per_step: int = 1, k: int = 0, health_after_s: float = 0.0,
                 never_healthy: bool = False, port: int = 0, models_after_s: float = 0.0,
                 prefix_cache: bool = True, prefill_s_per_token: float | None = None, admit_s: float = 0.0,
                 draft_on_repeats: bool = False, count_decode_steps: bool = False, bunch_first_batches: int = 0):
        self.step_s, self.tokens_per_step, self.k = step_s, tokens_per_step, k
        # like vLLM's n-gram proposer: a request drafts only where its prompt (token ids) repeats a bigram
        self.draft_on_repeats = draft_on_repeats
        self.prefill_s_per_token, self.admit_s = prefill_s_per_token, admit_s
        self.count_decode_steps, self.bunch_first_batches = count_decode_steps, bunch_first_batches
        self.decode_steps = 0  # engine clock: decode steps run
        self._tick: asyncio.Future | None = None  # engine clock: the step now running
        self.decode_batches = 0  # decode batches begun
        self._decoding = 0  # requests of more than one token in flight
        self.steps: list[int] = []  # engine loop: requests per step
        self._waiting: list = []  # engine loop: (prompt tokens, future) admitted, not yet stepped
        self._arrived: asyncio.Event | None = None
        self._front: asyncio.Lock | None = None
        self._loop_task: asyncio.Task | None = None
        self.health_after_s, self.never_healthy, self.port = health_after_s, never_healthy, port
        self.models_after_s = max(models_after_s, health_after_s)
        self.started = time.monotonic()
        self.in_flight = 0
        self.max_in_flight = 0
        self.completions = 0
        self.prompts: list = []
        self.counters = {"num_drafts": 0, "num_draft_tokens": 0, "num_accepted_tokens": 0}
        self.per_pos = [0] * k
        # a prefix cache in whole 16-token blocks, counted like vLLM's vllm:prefix_cache_hits / _queries
        self.prefix_cache, self.cached_blocks = prefix_cache, set()
        self.prefix_hits = self.prefix_queries = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # --- HTTP -------------------------------------------------------------------------------------
    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request_line = (await reader.readline()).decode()
            if len(request_line.split(" ", 2)) < 3:  # a client that connected and left (a poll at shutdown)
                return
            headers = {}
            while True:
                line = (await reader.readline()).decode().strip()
                if not line:
                    break
                key, _, value = line.partition(":")
                headers[key.strip().lower()] = value.strip()
            body = await reader.readexactly(int(headers.get("content-length", 0)))
            method, path, _ = request_line.split(" ", 2)
            if path == "/health":
                healthy = not self.never_healthy and time.monotonic() - self.started >= self.health_after_s
                await self._reply(writer, 200 if healthy else 503, "text/plain", b"")
            elif path == "/v1/models":  # like vLLM: the OpenAI routes come up after /health
                up = not self.never_healthy and time.monotonic() - self.started >= self.models_after_s
                await self._reply(writer, 200 if up else 404, "application/json",
                                  b'{"object": "list", "data": [{"id": "target"}]}' if up else b"")
            elif path == "/metrics":
                await self._reply(writer, 200, "text/plain; version=0.0.4", self.metrics_text().encode())
            elif path == "/v1/completions" and method == "POST":
                await self._complete(writer, json.loads(body))
            else:
                await self._reply(writer, 404, "text/plain", b"not found")
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    @staticmethod
    async def _reply(writer, status: int, ctype: str, payload: bytes) -> None:
        writer.write(f"HTTP/1.1 {status} X\r\ncontent-type: {ctype}\r\ncontent-length: {len(payload)}\r\n"
                     f"connection: close\r\n\r\n".encode() + payload)
        await writer.drain()

    async def _complete(self, writer, body: dict) -> None:
        prompt, max_tokens = body["prompt"], int(body["max_tokens"])
        self.prompts.append(prompt)
        n_in = len(prompt) if isinstance(prompt, list) else len(prompt.split())
        if isinstance(prompt, list):
            self._count_prefix(prompt)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n")
        done = 0
        stepped = self.prefill_s_per_token is not None and max_tokens == 1
        decoding = max_tokens > 1
        held = self._join_batch() if decoding else None  # a bunched batch's chunks, sent at the end
        drafts = self.k and not (self.draft_on_repeats and isinstance(prompt, list)
                                 and len(set(itertools.pairwise(prompt))) == len(prompt) - 1)
        per_step = self.tokens_per_step if drafts else 1
        try:
            while done < max_tokens:
                if stepped:
                    await self._engine_step(n_in)
                elif decoding and self.count_decode_steps:
                    await self._decode_step()
                else:
                    await asyncio.sleep(self.step_s)
                step = min(per_step, max_tokens - done)
                done += step
                if drafts:
                    accepted = per_step - 1
                    self.counters["num_drafts"] += 1
                    self.counters["num_draft_tokens"] += self.k
                    self.counters["num_accepted_tokens"] += accepted
                    for j in range(accepted):
                        self.per_pos[j] += 1
                chunk = {"choices": [{"index": 0, "text": "x" * step}],
                         "usage": {"prompt_tokens": n_in, "completion_tokens": done, "total_tokens": n_in + done}}
                data = f"data: {json.dumps(chunk)}\n\n".encode()
                if held is not None:
                    held.append(data)
                    continue
                writer.write(data)
                await writer.drain()
            usage = {"prompt_tokens": n_in, "completion_tokens": done, "total_tokens": n_in + done}
            # counted before the last bytes go out: a client that has read [DONE] always sees its completion
            # counted (counting after the drain raced the test thread on a busy box)
            self.completions += 1
            writer.write(b"".join(held or [])
                         + f"data: {json.dumps({'choices': [], 'usage': usage})}\n\ndata: [DONE]\n\n".encode())
            await writer.drain()
        finally:
            self.in_flight -= 1
            self._decoding -= decoding

    def _join_batch(self) -> list | None:
        """A request of more than one token joins the decode batch in flight, or begins the next: a list to
        hold its chunks in where that batch is one of the first bunch_first_batches, else None."""
        if not self._decoding:
            self.decode_batches += 1
        self._decoding += 1
        return [] if self.decode_batches <= self.bunch_first_batches else None

    async def _decode_step(self) -> None:
        """Wait for the engine clock's next decode step (one every step_s while any request waits for one)."""
        if self._tick is None:
            self._tick = asyncio.get_running_loop().create_future()
            asyncio.get_running_loop().call_later(self.step_s, self._end_decode_step)
        await asyncio.shield(self._tick)

    def _end_decode_step(self) -> None:
        tick, self._tick = self._tick, None
        self.decode_steps += 1
        tick.set_result(None)

    async def _engine_step(self, n_in: int) -> None:
        """Hand the request to the engine loop (after the front end's admit_s, one request at a time) and
        wait for the step that prefills it."""
        async with self._front:
            await asyncio.sleep(self.admit_s)
        done = asyncio.get_running_loop().create_future()
        self._waiting.append((n_in, done))
        self._arrived.set()
        await done

    async def _engine_loop(self) -> None:
        """vLLM's engine core, prefills only: idle until a request is queued, then a step of all queued ones."""
        while True:
            await self._arrived.wait()
            batch, self._waiting = self._waiting, []
            self._arrived.clear()
            await asyncio.sleep(self.step_s + self.prefill_s_per_token * sum(n for n, _ in batch))
            self.steps.append(len(batch))
            for _, done in batch:
                done.set_result(None)

    def _count_prefix(self, prompt: list) -> None:
        blocks = [tuple(prompt[:end]) for end in range(16, len(prompt) + 1, 16)]
        hit = 0
        for block in blocks:
            if block not in self.cached_blocks:
                break
            hit += 16
        self.prefix_queries += len(prompt)
        self.prefix_hits += hit
        if self.prefix_cache:
            self.cached_blocks.update(blocks)

    def metrics_text(self) -> str:
        lines = ["# HELP vllm:spec_decode_num_drafts Number of spec decoding drafts.",
                 "# TYPE vllm:spec_decode_num_drafts counter"]
        labels = 'engine="0",model_name="target"'
        for name, value in self.counters.items():
            lines.append(f"vllm:spec_decode_{name}_total{{{labels}}} {float(value)}")
            lines.append(f"vllm:spec_decode_{name}_created{{{labels}}} 1.7e9")
        for pos, value in enumerate(self.per_pos):
            lines.append(f'vllm:spec_decode_num_accepted_tokens_per_pos_total{{{labels},position="{pos}"}} '
                         f"{float(value)}")
        lines.append(f"vllm:num_requests_running{{{labels}}} {float(self.in_flight)}")
        if self.prefill_s_per_token is not None or self.count_decode_steps:
            lines.append(f"vllm:iteration_tokens_total_count{{{labels}}} {float(len(self.steps) + self.decode_steps)}")
        lines.append(f"vllm:prefix_cache_hits_total{{{labels}}} {float(self.prefix_hits)}")
        lines.append(f"vllm:prefix_cache_queries_total{{{labels}}} {float(self.prefix_queries)}")
        return "\n".join(lines) + "\n"

    # --- in-process lifecycle ---------------------------------------------------------------------
    async def _start(self) -> None:
        self._arrived, self._front = asyncio.Event(), asyncio.Lock()
        if self.prefill_s_per_token is not None:
            self._loop_task = asyncio.get_running_loop().create_task(self._engine_loop())
        self._server = await asyncio.start_server(self.handle, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    def __enter__(self) -> Self:
        ready = threading.Event()

        def serve() -> None:
            self._loop = asyncio.new_event_loop()
            self._loop.run_until_complete(self._start())
            ready.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=serve, daemon=True)
        self._thread.start()
        ready.wait(10)
        return self

    def __exit__(self, *exc) -> None:
        async def close() -> None:
            self._server.close()
            handlers = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in handlers:  # streams still open (a load cut at its timeout)
                task.cancel()
            await asyncio.gather(*handlers, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(close(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="model")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--step-s", type=float, default=0.002)
    parser.add_argument("--health-after", type=float, default=0.0)
    parser.add_argument("--never-healthy", action="store_true")
    parser.add_argument("--models-after", type=float, default=0.0)
    parser.add_argument("--exit-after", type=float, default=None)
    parser.add_argument("--speculative-config", default=None)
    parser.add_argument("--draft-on-repeats", action="store_true")
    parser.add_argument("--count-decode-steps", action="store_true")
    parser.add_argument("--bunch-first-batches", type=int, default=0)
    args, _unknown = parser.parse_known_args(argv)  # vllm serve flags this fake does not model
    k = json.loads(args.speculative_config)["num_speculative_tokens"] if args.speculative_config else 0
    engine = FakeEngine(step_s=args.step_s, tokens_per_step=2 if k else 1, k=k, health_after_s=args.health_after,
                        never_healthy=args.never_healthy, port=args.port, models_after_s=args.models_after,
                        draft_on_repeats=args.draft_on_repeats, count_decode_steps=args.count_decode_steps,
                        bunch_first_batches=args.bunch_first_batches)
    print(f"fake engine: serving {args.model} on 127.0.0.1:{args.port} (k={k})", flush=True)

    async def run() -> None:
        await engine._start()
        if args.exit_after is not None:
            await asyncio.sleep(args.exit_after)
            print("fake engine: exiting on purpose", flush=True)
            sys.exit(3)
        await asyncio.Event().wait()

    asyncio.run(run())


if __name__ == "__main__":
    main(sys.argv[1:])
