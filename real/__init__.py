"""Real runs: targets, prompts, drafters, verification, the decode loop, training and evaluation.

Imports torch and transformers; imports lab and sim's pure-numpy policies (DESIGN.md rule 1).
"""
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
