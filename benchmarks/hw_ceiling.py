"""This CPU's ceilings: xor+popcount throughput (binary MAC/s) and float multiply-add throughput.

    python benchmarks/hw_ceiling.py [--threads 2]

* xor+popcount: the native kernel's throughput loops (``bnn/deploy/csrc/ceiling.h``) sum
  popcount(a XOR b) over two L1-resident arrays on every thread at once, with each method
  this CPU has: scalar 64-bit ``popcnt``, the AVX2 nibble lookup (``vpshufb``, byte
  accumulators summed by ``vpsadbw`` every 31 vectors) and the AVX2 Harley-Seal
  carry-save adder (both from Mula, Kurz and Lemire 2018, "Faster Population Counts Using
  AVX2 Instructions"), and AVX-512 ``vpopcntq``. One binary MAC = one bit. The ceiling is
  the fastest method: a binary conv cannot beat it without avoiding work.
* float: a large square float32 matmul through torch (oneDNN / MKL), in GMAC/s (1 MAC = 2 FLOP).

Each figure is the best of several runs and counts CPU time (the time the threads ran), so that
other processes sharing the cores do not lower it: a ceiling, not a wall-clock expectation.
"""
from __future__ import annotations

import argparse
import time
from typing import Dict

import torch

from bnn.deploy import available_isas
from bnn.deploy import kernel as K

POPCOUNT_METHODS = {"scalar-popcnt": (0, "avx2"), "avx2-lookup": (1, "avx2"), "avx2-harley-seal": (2, "avx2"),
                    "avx512-vpopcntq": (3, "avx512")}


def popcount_ceilings(threads: int, nwords: int = 1024, seconds: float = 0.05, runs: int = 7) -> Dict[str, float]:
    """G binary MAC/s of each xor+popcount method this CPU has, on ``threads`` threads at once."""
    mod = K.native()
    if mod is None or not hasattr(mod, "popcount_ceiling"):
        return {}
    isas = available_isas()
    out = {}
    for name, (code, isa) in POPCOUNT_METHODS.items():
        if isa not in isas:
            continue
        secs, _ = mod.popcount_ceiling(code, nwords, 10, threads)
        reps = max(10, int(seconds / max(secs, 1e-6) * 10))
        best = 0.0
        for _ in range(runs):
            secs, _ = mod.popcount_ceiling(code, nwords, reps, threads)
            best = max(best, threads * nwords * 64 * reps / secs / 1e9)
        out[name] = best
    return out


def fma_ceiling(threads: int, n: int = 2048, runs: int = 7) -> float:
    """G float32 MAC/s of an ``n x n`` by ``n x n`` matmul (torch, ``threads`` threads)."""
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        a, b = torch.randn(n, n), torch.randn(n, n)
        c = torch.empty(n, n)
        torch.mm(a, b, out=c)
        best = float("inf")
        for _ in range(runs):
            t0 = time.process_time()
            torch.mm(a, b, out=c)
            best = min(best, (time.process_time() - t0) / threads)
        return n ** 3 / best / 1e9
    finally:
        torch.set_num_threads(old)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    for name, rate in popcount_ceilings(args.threads).items():
        print(f"xor+popcount {name:<17} {rate:8.0f} G binary MAC/s ({args.threads} threads)")
    print(f"float32 matmul {'':<17} {fma_ceiling(args.threads):6.1f} G MAC/s ({args.threads} threads)")


if __name__ == "__main__":
    main()
