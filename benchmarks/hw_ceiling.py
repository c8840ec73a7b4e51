"""This CPU's ceilings: xor+popcount throughput (binary MAC/s) and float multiply-add throughput.

    python benchmarks/hw_ceiling.py [--threads 2]

* xor+popcount: the native kernel's throughput loops (``bnn/deploy/csrc/ceiling.h``) sum
  popcount(a XOR b) over two L1-resident arrays on every thread at once, with each method
  this CPU has: scalar 64-bit ``popcnt``, the AVX2 nibble lookup (``vpshufb``, byte
  accumulators summed by ``vpsadbw`` every 31 vectors) and the AVX2 Harley-Seal
  carry-save adder (both from Mula, Kurz and Lemire 2018, "Faster Population Counts Using
  AVX2 Instructions"), and AVX-512 ``vpopcntq``. One binary MAC = one bit. The ceiling is
  the fastest method: a binary conv cannot beat it without avoiding work.
* float: a large square float32 matmul (``torch.mm``: MKL or oneDNN) and a large channels-last
  1x1 conv (oneDNN), in GMAC/s (1 MAC = 2 FLOP). Both are printed: a BLAS may choose a narrower
  code path than the CPU has (MKL runs its AVX2 code on AMD CPUs), so the matmul alone can
  understate what torch's float convs reach.

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


def float_ceilings(threads: int, runs: int = 7) -> Dict[str, float]:
    """G float32 MAC/s of torch on ``threads`` threads: a 2048^3 matmul and a 512->512 1x1 conv at 56x56."""
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    n = 2048
    a, b, c = torch.randn(n, n), torch.randn(n, n), torch.empty(n, n)
    conv = torch.nn.Conv2d(512, 512, 1, bias=False).eval()
    x = torch.randn(1, 512, 56, 56).contiguous(memory_format=torch.channels_last)
    jobs = {"matmul": (lambda: torch.mm(a, b, out=c), n ** 3),
            "conv1x1": (lambda: conv(x), 512 * 512 * 56 * 56)}
    out = {}
    try:
        with torch.no_grad():
            for name, (fn, macs) in jobs.items():
                fn()
                best = float("inf")
                for _ in range(runs):
                    t0 = time.process_time()
                    fn()
                    best = min(best, (time.process_time() - t0) / threads)
                out[name] = macs / best / 1e9
    finally:
        torch.set_num_threads(old)
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    for name, rate in popcount_ceilings(args.threads).items():
        print(f"xor+popcount {name:<17} {rate:8.0f} G binary MAC/s ({args.threads} threads)")
    for name, rate in float_ceilings(args.threads).items():
        print(f"float32 {name:<22} {rate:8.1f} G MAC/s ({args.threads} threads, "
              f"torch {torch.backends.cpu.get_cpu_capability()})")


if __name__ == "__main__":
    main()
