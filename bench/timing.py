"""Wall-clock timing shared by the benchmarks: CUDA is synchronised on both sides so GPU work is counted."""

import time

import torch


def timed(fn):
    """(fn(), seconds)."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    start = time.perf_counter()
    out = fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return out, time.perf_counter() - start
