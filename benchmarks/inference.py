"""Packed (xnor-popcount) inference against float32, side by side, on N CPU threads (2 by default).

    python benchmarks/inference.py [--threads 2] [--reps 15] [--batches 1 8] [--isa avx2] [--rounds 3]
                                   [--layers 64:64:56:1:3 ...] [--skip-int8] [--skip-model] [--clock cpu]
                                   [--preset relu_friendly] [--float-isa match|best]

0. This CPU's ceilings (benchmarks/hw_ceiling.py): xor+popcount throughput of each method
   it has, and float32 matmul and 1x1 conv throughput.
1. Every binary conv shape of ResNet-18 at ImageNet 224 (the 3x3 convs and the 1x1
   stride-2 downsamples): a packed layer (sign + bit packing of the input, xnor-popcount,
   per-channel scale) against torch's float conv of the same shape (the faster of NCHW and
   channels-last input, oneDNN), batch 1 and 8: times, speed-up, and the packed layer's
   rate in binary MAC/s as a share of the xor+popcount ceiling of the ISA in use (``--isa avx2`` on an
   AVX-512 CPU: the best AVX2 method), and the kernel tiles it runs. "packed ms" is the packed call
   right after the float ones (its weights and input cold, as the float conv evicted them); "warm
   ms" the call right after it (weights in cache, as in a loop over one layer). The same shapes with 8-bit
   inputs (``KBitActivationQuantizer``) and 1-bit weights: the int8 kernel against float.
2. The whole torchvision ResNet-18 (first conv and fc float, the rest packed by
   ``bnn.pack_binary_model``) against the float model under torch eager (NCHW and
   channels-last) and ONNX Runtime (when ``onnxruntime`` is installed: ``pip install
   bnn[bench]``). The binary model is sign inputs and XNOR weights, or ``--preset NAME``
   of :mod:`bnn.presets` (``relu_friendly``: each packed conv also adds its real shortcut).
   Each engine runs in its own process (an ONNX Runtime session in the same
   process was seen to slow the packed model's OpenMP threads), the processes alternate for
   ``--rounds`` rounds, and each figure is the median over the rounds of per-process medians.

Layer timings are medians of interleaved repetitions (float, packed, float, ...). The packed
layer's input is channels-last, as it is inside a packed network.

``--isa avx2`` on a CPU with AVX-512 stands in for an AVX2-only CPU: with ``--float-isa match``
(the default) the benchmark restarts itself with torch's float kernels limited to AVX2 as well
(``ONEDNN_MAX_CPU_ISA=AVX2``, ``ATEN_CPU_CAPABILITY=avx2``, ``MKL_ENABLE_INSTRUCTIONS=AVX2``), so
that both sides of each ratio use the same vector width; ONNX Runtime has no such switch and keeps
its best ISA. ``--float-isa best`` keeps torch's float at its best ISA.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings

import torch
import torch.nn as nn

import bnn
from bnn import ops
from bnn.deploy import available_isas, kernel_available, pack_binary_model, set_isa

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from hw_ceiling import float_ceilings, popcount_ceilings  # noqa: E402

# (in, out, input size, stride, kernel) of ResNet-18's binarized convs at 224x224
SHAPES = [
    (64, 64, 56, 1, 3),
    (64, 128, 56, 2, 3),
    (128, 128, 28, 1, 3),
    (128, 256, 28, 2, 3),
    (256, 256, 14, 1, 3),
    (256, 512, 14, 2, 3),
    (512, 512, 7, 1, 3),
    (64, 128, 56, 2, 1),
    (128, 256, 28, 2, 1),
    (256, 512, 14, 2, 1),
]
# the goals this benchmark reports against
TARGET_LAYER_SPEEDUP = {"avx2": 6.0, "avx512": 8.0}
TARGET_CEILING_SHARE = 0.60
TARGET_VS_ORT = 2.5
TARGET_VS_EAGER = {1: 4.0, 8: 3.5}
# torch's float kernels limited to AVX2 (oneDNN, ATen's vectorized ops, MKL): read once, at their first use
AVX2_FLOAT_ENV = {"ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"}


def _bconfig():
    return bnn.BConfig(activation_pre_process=ops.BasicInputBinarizer, weight_pre_process=ops.XNORWeightBinarizer)


CLOCK = {"wall": time.perf_counter, "cpu": time.process_time}
_clock = time.perf_counter


def interleaved(fns, reps, warmup=2):
    """Median seconds of each function, the functions run in turn ``reps`` times."""
    for _ in range(warmup):
        for fn in fns:
            fn()
    times = [[] for _ in fns]
    for _ in range(reps):
        for i, fn in enumerate(fns):
            t0 = _clock()
            fn()
            times[i].append(_clock() - t0)
    return [statistics.median(t) for t in times]


def isa_in_use() -> str:
    """The kernel code path the packed layers run (the best available unless ``set_isa`` chose one)."""
    from bnn.deploy.kernel import get_isa

    if not kernel_available():
        return "none (pure torch)"
    code = get_isa()
    names = {0: "scalar", 1: "avx2", 2: "avx512"}
    return names[code] if code >= 0 else available_isas()[-1]


def path_ceiling(ceilings) -> float:
    """The xor+popcount ceiling of the code path in use: the best method of its ISA and of the ISAs below it."""
    usable = {"scalar": ("scalar",), "avx2": ("scalar", "avx2"), "avx512": ("scalar", "avx2", "avx512")}
    ranked = [rate for name, rate in ceilings.items() if name.split("-")[0] in usable.get(isa_in_use(), ())]
    return max(ranked) if ranked else 0.0


def _tiles(packed, x) -> str:
    """The kernel tiles a packed conv runs on ``x`` (bnn.deploy.kernel.conv_tiles), or the pure-torch path."""
    from bnn.deploy import functional as BF
    from bnn.deploy.kernel import conv_tiles

    if not kernel_available():
        return "torch"
    plan = BF.native_plan(tuple(x.shape), packed.packed_weight.shape[3], packed.out_channels, packed.kernel_size,
                          packed.stride, packed.padding, packed.dilation, packed.groups)
    return conv_tiles(plan.ints)


@torch.no_grad()
def bench_layers(batches, reps, ceiling, shapes=SHAPES):
    isa = isa_in_use()
    target = TARGET_LAYER_SPEEDUP.get(isa)
    print(f"{'layer (in->out, HxW, stride, k)':<32} {'batch':>5} {'float ms':>9} {'packed ms':>9} {'speedup':>8} "
          f"{'G bMAC/s':>9} {'% ceiling':>9} {'warm ms':>8} {'% ceiling':>9}  tiles")
    rows3, warm3 = [], []
    for n in batches:
        for cin, cout, hw, s, k in shapes:
            conv = nn.Conv2d(cin, cout, k, stride=s, padding=k // 2, bias=False).eval()
            packed = pack_binary_model(bnn.prepare_binary_model(conv, _bconfig()).eval())
            x = torch.randn(n, cin, hw, hw)
            x_cl = x.contiguous(memory_format=torch.channels_last)
            t_nchw, t_cl, t_bin, t_warm = interleaved(
                [lambda: conv(x), lambda: conv(x_cl), lambda: packed(x_cl), lambda: packed(x_cl)], reps)
            t_float = min(t_nchw, t_cl)
            oh = (hw + 2 * (k // 2) - k) // s + 1
            macs = n * cout * cin * k * k * oh * oh / 1e9
            share = macs / t_bin / ceiling if ceiling else float("nan")
            warm = macs / t_warm / ceiling if ceiling else float("nan")
            ratio = t_float / t_bin
            if k == 3:
                rows3.append((ratio, share))
                warm3.append(warm)
            name = f"{cin}->{cout}, {hw}x{hw}, s{s}, {k}x{k}"
            print(f"{name:<32} {n:>5} {t_float * 1e3:>9.3f} {t_bin * 1e3:>9.3f} {ratio:>7.1f}x {macs / t_bin:>9.0f} "
                  f"{100 * share:>8.0f}% {t_warm * 1e3:>8.3f} {100 * warm:>8.0f}%  {_tiles(packed, x_cl)}")
    ratios, shares = [r for r, _ in rows3], [s for _, s in rows3]
    if not rows3:
        return
    print(f"3x3 binary convs: speedup min {min(ratios):.1f}x, median {statistics.median(ratios):.1f}x; "
          f"share of the xor+popcount ceiling min {100 * min(shares):.0f}%, "
          f"median {100 * statistics.median(shares):.0f}% "
          f"(warm: min {100 * min(warm3):.0f}%, median {100 * statistics.median(warm3):.0f}%)")
    if target:
        print(f"  goal >= {target:.0f}x float on {isa} for every 3x3 layer: "
              f"{'met' if min(ratios) >= target else 'NOT met'}; goal >= {100 * TARGET_CEILING_SHARE:.0f}% of the "
              f"ceiling: {'met' if min(shares) >= TARGET_CEILING_SHARE else 'NOT met'} "
              f"(warm: {'met' if min(warm3) >= TARGET_CEILING_SHARE else 'NOT met'})")


@torch.no_grad()
def bench_int8_layers(batches, reps, shapes=SHAPES):
    """Layers with 8-bit inputs and 1-bit weights (the gradual-binarization recipe's target) against float."""
    bc = bnn.BConfig(activation_pre_process=ops.KBitActivationQuantizer.with_args(bits=8),
                     weight_pre_process=ops.XNORWeightBinarizer)
    print(f"{'int8-input layer (in->out, HxW, s, k)':<38} {'batch':>5} {'float ms':>9} {'int8 ms':>9} {'speedup':>8}")
    ratios = []
    for n in batches:
        for cin, cout, hw, s, k in shapes:
            conv = nn.Conv2d(cin, cout, k, stride=s, padding=k // 2, bias=False).eval()
            fake = bnn.prepare_binary_model(conv, bc).train()
            fake(torch.randn(2, cin, hw, hw))  # calibrates the input quantizer's range
            packed = pack_binary_model(fake.eval())
            x = torch.randn(n, cin, hw, hw)
            x_cl = x.contiguous(memory_format=torch.channels_last)
            t_nchw, t_cl, t_q = interleaved([lambda: conv(x), lambda: conv(x_cl), lambda: packed(x_cl)], reps)
            t_float = min(t_nchw, t_cl)
            ratios.append(t_float / t_q)
            name = f"{cin}->{cout}, {hw}x{hw}, s{s}, {k}x{k}"
            print(f"{name:<38} {n:>5} {t_float * 1e3:>9.3f} {t_q * 1e3:>9.3f} {t_float / t_q:>7.1f}x")
    if not ratios:
        return
    print(f"int8-input layers: speedup min {min(ratios):.1f}x, median {statistics.median(ratios):.1f}x "
          f"(goal >= 2x: {'met' if min(ratios) >= 2 else 'NOT met'})")


# -- whole network: one engine per process --------------------------------------------------------
ENGINES = ["packed", "torch", "torch-cl", "ort"]


def _resnet18_models(preset=None):
    import torchvision

    torch.manual_seed(0)
    float_model = torchvision.models.resnet18().eval()
    torch.manual_seed(0)
    bconfig = bnn.presets.get_preset(preset) if preset else _bconfig()
    fake = bnn.prepare_binary_model(torchvision.models.resnet18(), bconfig, ignore_layers_name=["_first_", "_last_"])
    with torch.no_grad():
        fake.train()(torch.randn(2, 3, 64, 64))  # data-started binarizers (relu_friendly's thresholds) start here
    return float_model, fake.eval()


def _export_onnx(path):
    float_model, _ = _resnet18_models()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(float_model, (torch.randn(1, 3, 224, 224),), path, input_names=["x"], output_names=["y"],
                          dynamic_axes={"x": {0: "n"}, "y": {0: "n"}}, dynamo=False)


@torch.no_grad()
def run_engine(engine, batch, reps, threads, onnx_path=None, preset=None):
    """Median seconds of one forward of ResNet-18 with ``engine`` (runs in its own process)."""
    torch.set_num_threads(threads)
    x = torch.randn(batch, 3, 224, 224)
    if engine == "ort":
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        sess = ort.InferenceSession(onnx_path, opts, providers=["CPUExecutionProvider"])
        xn = x.numpy()
        fn = lambda: sess.run(None, {"x": xn})  # noqa: E731
    else:
        float_model, fake = _resnet18_models(preset)
        if engine == "packed":
            model = pack_binary_model(fake)
        elif engine == "torch-cl":
            model = float_model.to(memory_format=torch.channels_last)
            x = x.contiguous(memory_format=torch.channels_last)
        else:
            model = float_model
        fn = lambda: model(x)  # noqa: E731
    for _ in range(3):
        fn()
    times = []
    for _ in range(reps):
        t0 = _clock()
        fn()
        times.append(_clock() - t0)
    return statistics.median(times)


def bench_resnet18(batches, reps, threads, rounds, isa, clock, preset=None):
    engines = [e for e in ENGINES if e != "ort"]
    try:
        import onnxruntime  # noqa: F401

        engines.append("ort")
    except ImportError:
        print("onnxruntime not installed (pip install bnn[bench]): no ONNX Runtime comparison")
    with tempfile.TemporaryDirectory() as tmp:
        onnx_path = os.path.join(tmp, "resnet18.onnx")
        if "ort" in engines:
            _export_onnx(onnx_path)
        for n in batches:
            results = {e: [] for e in engines}
            for r in range(rounds):
                order = engines[r % len(engines):] + engines[:r % len(engines)]  # alternate who goes first
                for e in order:
                    cmd = [sys.executable, os.path.abspath(__file__), "--engine", e, "--batches", str(n), "--reps",
                           str(reps), "--threads", str(threads), "--onnx", onnx_path, "--isa", isa or "best", "--clock", clock]
                    cmd += ["--preset", preset] if preset else []
                    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
                    results[e].append(json.loads(out.strip().splitlines()[-1])["seconds"])
            med = {e: statistics.median(v) for e, v in results.items()}
            per = f" ({n} images; per image /{n})" if n > 1 else ""
            print(f"ResNet-18 224x224{f' ({preset})' if preset else ''}, batch {n}{per}: " + ", ".join(
                f"{e} {med[e] * 1e3:.1f} ms" for e in engines))
            p = med["packed"]
            eager = min(med["torch"], med["torch-cl"])
            goal = TARGET_VS_EAGER.get(n, 3.5)
            line = f"  packed vs torch eager float {eager / p:.2f}x (goal {goal}x: {'met' if eager / p >= goal else 'NOT met'})"
            if "ort" in med:
                line += (f", vs ONNX Runtime float {med['ort'] / p:.2f}x (goal {TARGET_VS_ORT}x: "
                         f"{'met' if med['ort'] / p >= TARGET_VS_ORT else 'NOT met'})")
            print(line)


def _parse_shape(text, parser):
    try:
        cin, cout, hw, s, k = (int(v) for v in text.split(":"))
    except ValueError:
        parser.error(f"--layers: {text!r} is not IN:OUT:HW:STRIDE:KERNEL (e.g. 64:64:56:1:3)")
    return cin, cout, hw, s, k


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--reps", type=int, default=15)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--rounds", type=int, default=3, help="alternated rounds of the whole-network engines")
    parser.add_argument("--isa", default="best", help="kernel code path: best, scalar, avx2, avx512")
    parser.add_argument("--clock", choices=sorted(CLOCK), default="wall",
                        help="wall time (default) or process CPU time (steadier on a shared machine, with --threads 1)")
    parser.add_argument("--skip-model", action="store_true", help="only the ceilings and the per-layer table")
    parser.add_argument("--skip-layers", action="store_true", help="only the ceilings and the whole network")
    parser.add_argument("--skip-int8", action="store_true", help="leave out the int8-input layer table")
    parser.add_argument("--layers", nargs="+", metavar="IN:OUT:HW:S:K",
                        help="only these layer shapes (e.g. 64:64:56:1:3), default: every binary conv of ResNet-18")
    parser.add_argument("--preset", choices=bnn.presets.preset_names(),
                        help="the whole network's binarizers: a preset (default: sign inputs, XNOR weights)")
    parser.add_argument("--float-isa", choices=["match", "best"], default="match",
                        help="match (default): with --isa avx2 on an AVX-512 CPU, limit torch's float kernels to AVX2 "
                             "too; best: leave torch's float at its best ISA")
    parser.add_argument("--engine", choices=ENGINES, help=argparse.SUPPRESS)  # child process: one engine
    parser.add_argument("--onnx", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if (args.isa == "avx2" and args.float_isa == "match" and "avx512" in available_isas()
            and any(os.environ.get(k) != v for k, v in AVX2_FLOAT_ENV.items())):
        # restart before torch's first float kernel, which reads these once; the engines' processes inherit them
        os.environ.update(AVX2_FLOAT_ENV)
        args_again = list(sys.argv[1:] if argv is None else argv)
        os.execv(sys.executable, [sys.executable, os.path.abspath(__file__)] + args_again)
    global _clock
    _clock = CLOCK[args.clock]
    torch.set_num_threads(args.threads)
    if args.isa != "best":
        set_isa(args.isa)
    if args.engine:
        secs = run_engine(args.engine, args.batches[0], args.reps, args.threads, args.onnx, args.preset)
        print(json.dumps({"seconds": secs}))
        return
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.clock} clock, native kernel: "
          f"{kernel_available()} (ISAs {available_isas()}); ISA used: {isa_in_use()}; torch float ISA: "
          f"{torch.backends.cpu.get_cpu_capability()}"
          + (f" (oneDNN limited to {os.environ['ONEDNN_MAX_CPU_ISA']})"
             if os.environ.get("ONEDNN_MAX_CPU_ISA") else ""))
    ceilings = popcount_ceilings(args.threads)
    for name, rate in ceilings.items():
        print(f"ceiling: xor+popcount {name:<17} {rate:6.0f} G binary MAC/s")
    for name, rate in float_ceilings(args.threads).items():
        print(f"ceiling: float32 {name:<16} {rate:6.1f} G MAC/s")
    ceiling = path_ceiling(ceilings)
    print(f"ceiling of the {isa_in_use()} code path: {ceiling:.0f} G binary MAC/s")
    shapes = SHAPES if not args.layers else [_parse_shape(v, parser) for v in args.layers]
    if not args.skip_layers:
        bench_layers(args.batches, args.reps, ceiling, shapes)
        if not args.skip_int8:
            bench_int8_layers(args.batches, args.reps, shapes)
    if not args.skip_model:
        bench_resnet18(args.batches, max(3, args.reps // 2), args.threads, args.rounds,
                       None if args.isa == "best" else args.isa, args.clock, args.preset)


if __name__ == "__main__":
    main()
