"""A real serving engine beside the lab: vLLM in an environment of its own, driven over loopback HTTP.

    lab engine setup vllm                 # setup.py: vLLM's own virtual environment (minutes, ~3.5 GB)
    lab run experiments/fidelity_vllm.yaml --stages engine

setup.py builds the environment, server.py starts/stops `vllm serve` (health-checked, process group),
loadgen.py drives it (Poisson, trace replay, closed loop) and writes the per-request log, metrics.py
scrapes its Prometheus counters, step_profile.py measures its step times, stage.py wires the `engine`
stage. Nothing here imports vLLM: the lab's environment stays free of vLLM's pins.
"""
