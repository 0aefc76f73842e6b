"""The SimPy serving-cluster simulator: speculative decoding under load, on recorded traces.

Imports lab, numpy, scipy, simpy, pandas and matplotlib only -- never torch (DESIGN.md rule 1).
Entry points: `lab run experiments/fig7_sla.yaml` (stages calibrate, sim) and `python -m sim.bench`.
"""
