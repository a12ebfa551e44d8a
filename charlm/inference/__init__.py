"""Putting a trained model to work: writing text and scoring it.

draws.py       the sampling options and the Gumbel-max draws from one NumPy generator (no torch)
sample.py      the prime, the NumPy path, streaming, and choosing where the steps run
gru_numpy.py   one GRU stream stepped in NumPy, without loading torch
torch_step.py  the torch paths: a fused GRU step (int8 for many samples), GPUs, and the other cells
threads.py     many rows cut into shares, each run on one thread
evaluate.py    whole-text scoring in parallel segments, and per-line scoring
scores.py      Score: what scoring a whole text gives (no torch)
"""
