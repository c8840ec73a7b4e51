"""Where the time of a packed ResNet-18 forward goes, at 224x224 batch 1, on N CPU threads (2 by default).

    python benchmarks/packed_overhead.py [--threads 2] [--reps 20] [--batch 1] [--compile] [--isa avx2]

``--isa`` picks the kernel's code path (``bnn.deploy.set_isa``); to limit torch's float ops to AVX2 as well,
set ``ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 MKL_ENABLE_INSTRUCTIONS=AVX2`` in the environment (what
``benchmarks/inference.py --isa avx2`` does for itself).

1. Python work per packed layer: a packed layer's call against the bare C
   kernel call with the same arguments (and the cost of a fresh output buffer
   against a reused one), for a small and a large ResNet-18 layer; the same calls of the 512-channel
   layer right after torch's float conv (the cold column of benchmarks/inference.py) and right after
   themselves; and what a real shortcut adds to a layer, in the kernel's epilogue and as a torch op.
2. A per-op breakdown of the packed torchvision ResNet-18 forward at ``--batch`` (first conv
   and fc float, every BatchNorm folded, channels-last end to end), timed with
   forward hooks on the leaf modules; "block glue" is the rest (residual adds,
   flatten, Python of the blocks). Then each packed conv in the network: its time per call
   there (the layer's Python included), in binary MAC/s and as a share of this CPU's
   xor+popcount ceiling (benchmarks/hw_ceiling.py) for the ISA in use: the per-layer
   table of benchmarks/inference.py, but with the caches as the network leaves them. And the memory
   the packed model takes: its tensors and the kernel constants its layers make at their first call.
3. The residual add at batch 8: channels-last + channels-last (the packed
   model's layout) against the NCHW + channels-last mix a packed model must avoid.
4. With ``--compile``: ``torch.compile`` (inductor) of the packed model against
   eager (compiling takes a minute or more on a small CPU).
5. The packer's graph rewrites: the packed model against itself packed with ``chain_signs=False``
   (sign-bit chaining) and with ``pool_first=False`` (max pool first), at batch 1 and 8, alternated
   call by call in one process.

Timings are medians of interleaved repetitions.
"""
from __future__ import annotations

import argparse
import collections
import copy
import statistics
import time

import torch
import torch.nn as nn

import bnn
from bnn import ops
from bnn.deploy import PackedConv2d, PackedLayer, kernel_available, pack_binary_model, set_isa
from bnn.deploy import functional as BF
from bnn.deploy import kernel as K
from hw_ceiling import popcount_ceilings
from inference import interleaved, isa_in_use, path_ceiling  # benchmarks/inference.py: the same medians, ceiling


def packed_resnet18():
    """The float ResNet-18 and the fake-binarized one, packed (first conv and fc float)."""
    import torchvision

    model = torchvision.models.resnet18(num_classes=1000)
    bc = bnn.BConfig(activation_pre_process=ops.BasicInputBinarizer, weight_pre_process=ops.XNORWeightBinarizer)
    fake = bnn.prepare_binary_model(model, bc, ignore_layers_name=["_first_", "_last_"]).eval()
    return model.eval(), fake, pack_binary_model(fake)


def fastest(fns, reps, inner=4):
    """Fastest seconds per call of each function (interleaved; the minimum filters a busy machine's noise)."""
    best = [float("inf")] * len(fns)
    for _ in range(reps):
        for i, fn in enumerate(fns):
            t0 = time.perf_counter()
            for _ in range(inner):
                fn()
            best[i] = min(best[i], (time.perf_counter() - t0) / inner)
    return best


def _layer_calls(cin, cout, hw):
    """A packed 3x3 layer on a batch-1 channels-last input, and two bare C calls of it with the same arguments (the
    layer constants and the scratch reused): into one reused output, and into a freshly allocated one (as the layer
    does). Returns (layer, x, bare, fresh)."""
    bc = bnn.BConfig(activation_pre_process=ops.BasicInputBinarizer, weight_pre_process=ops.XNORWeightBinarizer)
    layer = pack_binary_model(bnn.prepare_binary_model(nn.Conv2d(cin, cout, 3, padding=1, bias=False), bc).eval())
    x = torch.randn(1, cin, hw, hw).contiguous(memory_format=torch.channels_last)
    layer(x)
    plan = BF.native_plan(tuple(x.shape), layer.packed_weight.shape[3], cout, (3, 3), (1, 1), (1, 1), (1, 1), 1)
    consts = BF.layer_constants(layer.packed_weight, plan)
    out = torch.empty(plan.buffer_shape, memory_format=torch.channels_last)
    scratch = torch.empty(plan.scratch_words, dtype=torch.int64)
    mod, w, s = K.native(), layer.packed_weight, layer.scale

    def bare(out=out):  # the C call alone, buffers and layer constants reused (the closure keeps them alive)
        mod.bconv(plan.geometry, x.data_ptr(), 0, scratch.data_ptr(), plan.scratch_words, w.data_ptr(), s.data_ptr(),
                  0, out.data_ptr(), consts.data_ptr(), 0, 0, 0, 0, 0, K.get_isa(), torch.get_num_threads())

    def fresh():  # the C call into a freshly allocated output, as the layer does
        bare(torch.empty(plan.buffer_shape, memory_format=torch.channels_last))

    return layer, x, bare, fresh


@torch.no_grad()
def layer_overhead(reps):
    print("1. Python work per packed layer call, batch 1 (fastest of interleaved calls, us)")
    print(f"   {'layer':<22} {'layer()':>9} {'C call':>9} {'fresh output':>12}")
    python_us = None
    for cin, cout, hw in ((64, 64, 2), (512, 512, 7), (64, 64, 56)):
        layer, x, bare, fresh = _layer_calls(cin, cout, hw)
        t_layer, t_bare, t_fresh = fastest([lambda: layer(x), bare, fresh], reps * 50)
        python_us = (t_layer - t_bare) * 1e6 if python_us is None else python_us
        name = f"{cin}->{cout} 3x3 @{hw}x{hw}"
        print(f"   {name:<22} {t_layer * 1e6:9.1f} {t_bare * 1e6:9.1f} {(t_fresh - t_bare) * 1e6:12.1f}")
    print(f"   Python work per packed layer call: {python_us:.1f} us (layer() - C call on the smallest layer, where the")
    print("   kernel time is short and steady: input checks, fresh output, scratch pool, Module.__call__);")
    print("   fresh output = allocating (and first touching) a new output tensor instead of reusing one")
    after_float_conv(reps)
    real_shortcut(reps)


def median_after(pre, fn, reps):
    """Median seconds of ``fn`` called right after ``pre`` (untimed), ``reps`` times."""
    times = []
    for _ in range(reps):
        pre()
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


@torch.no_grad()
def after_float_conv(reps, c=512, hw=7):
    """The cold column of benchmarks/inference.py taken apart: the packed layer's call right after torch's float conv
    of the same shape (as in that column), against right after itself, for the layer and for its bare C call into a
    fresh and into a reused output. The rows show what the float conv's pass over its 9.4 MB of weights costs the
    kernel itself (reused output), the first writes to a fresh output, and the Python of the call."""
    layer, x, bare, fresh = _layer_calls(c, c, hw)
    conv = nn.Conv2d(c, c, 3, padding=1, bias=False).eval()
    print(f"   right after the float conv (inference.py's \"packed ms\") / right after itself (\"warm ms\"), "
          f"{c}->{c} 3x3 @{hw}x{hw}, median us:")
    n = reps * 5
    for name, fn in (("layer()", lambda: layer(x)), ("C call, fresh output", fresh), ("C call, reused output", bare)):
        cold, warm = median_after(lambda: conv(x), fn, n), median_after(fn, fn, n)
        print(f"     {name:<22} {cold * 1e6:7.1f} / {warm * 1e6:5.1f}  (+{(cold - warm) * 1e6:.1f})")


@torch.no_grad()
def real_shortcut(reps, c=64, hw=56):
    """Bi-Real Net's real shortcut (y + gain_c * x, BatchNorm folded into the gain) added by the kernel's epilogue,
    against the same layer without a shortcut, and the torch op that would add it after the layer."""
    layers = []
    for post in (ops.RealShortcut, None):
        bc = bnn.BConfig(activation_pre_process=ops.BasicInputBinarizer, weight_pre_process=ops.XNORWeightBinarizer,
                         activation_post_process=post)
        net = nn.Sequential(nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c))
        layers.append(pack_binary_model(bnn.prepare_binary_model(net, bc).eval()))
    x = torch.randn(1, c, hw, hw).contiguous(memory_format=torch.channels_last)
    y, gain = layers[1](x), layers[0][0].post_process.gain.view(1, -1, 1, 1)
    t_fused, t_plain, t_op = fastest([lambda: layers[0](x), lambda: layers[1](x), lambda: y + x * gain], reps * 20)
    print(f"   real shortcut (Bi-Real Net), {c}->{c} 3x3 @{hw}x{hw}: the layer with it {t_fused * 1e6:.1f} us, without "
          f"{t_plain * 1e6:.1f} us:\n   +{(t_fused - t_plain) * 1e6:.1f} us added by the kernel's epilogue, "
          f"against +{t_op * 1e6:.1f} us as a torch op after the layer (y + x * gain)")


def _op_name(mod: nn.Module) -> str:
    if isinstance(mod, PackedConv2d):
        k, s = mod.kernel_size[0], mod.stride[0]
        return f"packed conv {k}x{k}" + (" stride 2" if s > 1 else "")
    if type(mod) is nn.Conv2d:
        return "float conv (first)"
    return type(mod).__name__


@torch.no_grad()
def breakdown(packed, reps, batch=1):
    print(f"\n2. Packed ResNet-18 forward, 224x224 batch {batch}, per op (forward hooks on leaf modules)")
    x = torch.randn(batch, 3, 224, 224)
    totals = collections.defaultdict(list)
    start = {}

    per_layer = collections.defaultdict(list)  # packed conv -> seconds of each call
    macs, in_hw = {}, {}

    def pre(mod, inputs):
        start[id(mod)] = time.perf_counter()

    def post(mod, inputs, output):
        dt = time.perf_counter() - start.pop(id(mod))
        acc[_op_name(mod)] += dt
        if isinstance(mod, PackedConv2d) and not warmup:
            per_layer[mod].append(dt)
            if output.dtype == torch.int64:  # sign words [N, H, W, words] (sign-bit chaining, bnn.deploy.chain)
                (n, oh, ow), cout = output.shape[:3], mod.out_channels
            else:
                n, cout, oh, ow = output.shape
            x_in = inputs[0]
            in_hw[mod] = x_in.shape[2] if x_in.dtype == torch.int64 else x_in.shape[-1]
            macs[mod] = n * cout * (mod.in_channels // mod.groups) * mod.kernel_size[0] * mod.kernel_size[1] * oh * ow

    leaves = [m for m in packed.modules()
              if (isinstance(m, PackedLayer) or not list(m.children())) and not isinstance(m, nn.Identity)
              and not any(m in p.modules() for p in packed.modules() if isinstance(p, PackedLayer) and p is not m)]
    handles = [h for m in leaves for h in (m.register_forward_pre_hook(pre), m.register_forward_hook(post))]
    try:
        for i in range(reps + 3):
            warmup = i < 3
            acc = collections.defaultdict(float)
            t0 = time.perf_counter()
            packed(x)
            whole = time.perf_counter() - t0
            if i >= 3:
                acc["block glue (adds, flatten, Python)"] = whole - sum(acc.values())
                acc["total (with hooks)"] = whole
                for k, v in acc.items():
                    totals[k].append(v)
    finally:
        for h in handles:
            h.remove()
    med = {k: statistics.median(v) for k, v in totals.items()}
    total = med.pop("total (with hooks)")
    for k, v in sorted(med.items(), key=lambda kv: -kv[1]):
        print(f"   {k:<36} {v * 1e3:7.2f} ms {100 * v / total:5.1f} %")
    print(f"   {'total (with hooks)':<36} {total * 1e3:7.2f} ms")
    if not kernel_available():
        return
    ceiling = path_ceiling(popcount_ceilings(torch.get_num_threads()))
    print(f"   packed convs in the network (median per call; ceiling of the {isa_in_use()} path: "
          f"{ceiling:.0f} G binary MAC/s)")
    print(f"   {'layer':<22} {'in->out, HxW, stride, k':<28} {'us':>7} {'G bMAC/s':>9} {'% ceiling':>9}")
    names = {m: n for n, m in packed.named_modules()}
    shares = []
    for mod, times in per_layer.items():
        t = statistics.median(times)
        rate = macs[mod] / t / 1e9
        hw = in_hw[mod]
        k = "x".join(map(str, mod.kernel_size))
        shape = f"{mod.in_channels}->{mod.out_channels}, {hw}x{hw}, s{mod.stride[0]}, {k}"
        print(f"   {names[mod]:<22} {shape:<28} {t * 1e6:7.1f} {rate:9.0f} {100 * rate / ceiling:8.0f}%")
        if mod.kernel_size[0] == 3:
            shares.append(rate / ceiling)
    if shares:
        print(f"   3x3 packed convs in the network: share of the ceiling min {100 * min(shares):.0f}%, "
              f"median {100 * statistics.median(shares):.0f}%")
    layers = [m for m in packed.modules() if isinstance(m, PackedLayer)]
    state = sum(t.numel() * t.element_size() for t in packed.state_dict().values() if isinstance(t, torch.Tensor))
    print(f"   memory: the packed model's tensors {state / 1e6:.2f} MB (packed layers "
          f"{sum(m.packed_nbytes() for m in layers) / 1e6:.2f} MB), "
          f"plus {sum(m.constants_nbytes() for m in layers) / 1e6:.2f} MB of kernel constants made at the first call "
          f"for the {isa_in_use()} path")


@torch.no_grad()
def residual_add(reps):
    print("\n3. Memory layout. Residual add at batch 8, [8, 64, 56, 56]")
    a = torch.randn(8, 64, 56, 56)
    b = torch.randn(8, 64, 56, 56)
    a_cl, b_cl = (t.contiguous(memory_format=torch.channels_last) for t in (a, b))
    t_cl, t_mix, t_nchw = interleaved([lambda: a_cl + b_cl, lambda: a + b_cl, lambda: a + b], reps)
    print(f"   channels-last + channels-last (packed model) {t_cl * 1e3:6.2f} ms")
    print(f"   NCHW + channels-last (mixed layouts)         {t_mix * 1e3:6.2f} ms  ({t_mix / t_cl:.1f}x)")
    print(f"   NCHW + NCHW (float model)                    {t_nchw * 1e3:6.2f} ms")
    print("   Float stem (7x7/2 conv with folded BN, ReLU, 3x3/2 max pool) at batch 1, 224x224")
    stem = nn.Sequential(nn.Conv2d(3, 64, 7, 2, 3), nn.ReLU(), nn.MaxPool2d(3, 2, 1)).eval()
    stem_cl = copy.deepcopy(stem).to(memory_format=torch.channels_last)
    x = torch.randn(1, 3, 224, 224)
    t_nchw, t_cl = interleaved([lambda: stem(x), lambda: stem_cl(x)], reps)
    print(f"   NCHW weights {t_nchw * 1e3:6.2f} ms, channels-last weights (packed model) {t_cl * 1e3:6.2f} ms")


@torch.no_grad()
def whole_model(float_model, packed, reps, compile_too):
    print("\n4. Whole model, 224x224 batch 1")
    x = torch.randn(1, 3, 224, 224)
    fns, names = [lambda: float_model(x), lambda: packed(x)], ["float eager (NCHW)", "packed eager"]
    if compile_too:
        compiled = torch.compile(packed)
        t0 = time.perf_counter()
        torch.testing.assert_close(compiled(x), packed(x), rtol=1e-4, atol=1e-4 * packed(x).abs().max().item())
        print(f"   torch.compile (inductor) of the packed model: compiled in {time.perf_counter() - t0:.0f} s, "
              f"same outputs")
        fns.append(lambda: compiled(x))
        names.append("packed torch.compile")
    times = interleaved(fns, reps)
    for name, t in zip(names, times):
        print(f"   {name:<24} {t * 1e3:7.2f} ms   float / this = {times[0] / t:5.2f}x")
    if compile_too:
        print(f"   torch.compile / eager (packed): {times[1] / times[2]:.2f}x faster")


@torch.no_grad()
def graph_rewrites(fake, reps, batches=(1, 8)):
    """The packed model against itself packed without one of the packer's graph rewrites, alternated call by call
    in one process (the order swapped every call), so that a difference of a few per cent shows above the noise."""
    print("\n5. Graph rewrites of the packer, whole model, 224x224: with / without each one")
    for what, off in (("sign-bit chaining (each block's conv1 hands conv2 its sign words)", "chain_signs"),
                      ("max pool first (the stem's ReLU after its max pool)", "pool_first")):
        print(f"   {what}, {off}=False:")
        with_it, without = pack_binary_model(fake), pack_binary_model(fake, **{off: False})
        for n in batches:
            x = torch.randn(n, 3, 224, 224)
            assert torch.equal(with_it(x), without(x))
            times = {with_it: [], without: []}
            calls = reps * (15 if n == 1 else 3)
            for i in range(calls + 4):
                for m in ((with_it, without) if i % 2 else (without, with_it)):
                    t0 = time.perf_counter()
                    m(x)
                    if i >= 4:
                        times[m].append(time.perf_counter() - t0)
            t_w, t_o = statistics.median(times[with_it]), statistics.median(times[without])
            print(f"     batch {n}: with {t_w * 1e3:.3f} ms, without {t_o * 1e3:.3f} ms: {t_o / t_w:.3f}x "
                  f"(medians of {calls} calls each)")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--reps", type=int, default=20)
    parser.add_argument("--batch", type=int, default=1, help="batch of the per-op breakdown")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile of the packed model")
    parser.add_argument("--isa", default="best", help="kernel code path: best, scalar, avx2, avx512")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.isa != "best":
        set_isa(args.isa)
    kernel = f"built, ISA {isa_in_use()}" if kernel_available() else "NOT built"
    print(f"threads {args.threads}, native kernel {kernel}, torch {torch.__version__}, "
          f"torch float ISA {torch.backends.cpu.get_cpu_capability()}\n")
    if kernel_available():
        layer_overhead(args.reps)
    float_model, fake, packed = packed_resnet18()
    breakdown(packed, args.reps, args.batch)
    residual_add(args.reps)
    whole_model(float_model, packed, args.reps, args.compile)
    graph_rewrites(fake, args.reps)


if __name__ == "__main__":
    main()
