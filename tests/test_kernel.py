"""The native xnor-popcount kernel: every ISA path bit-identical to the pure-torch path on edge shapes,
the per-layer constants, and the xor+popcount throughput loops of the benchmark."""
import copy

import pytest
import torch
import torch.nn as nn

import bnn
from bnn import ops
from bnn.deploy import available_isas, kernel_available, pack_binary_model, set_isa
from bnn.deploy import functional as BF
from bnn.deploy import kernel as K

pytestmark = pytest.mark.skipif(not kernel_available(), reason="native kernel not built")

ISAS = available_isas() or ["scalar"]

# N, C, H, W, Cout, k, stride, pad: channels that are not multiples of 64 (inputs) or 32 (outputs), odd and
# tiny images, stride 2, padding 0-2, 1x1 strided, batch 1 and 8, and K over 31 words (byte accumulators
# summed more than once per output; the AVX2 tiles then run the reduction in chunks of whole taps, over rows
# longer than a tile, or in parts of one tap when a tap has more than 31 words: 2100 channels); weights larger
# than the bit image (the 256-, 512- and 2100-channel rows: AVX-512 runs those panel-major) and smaller; on 1 and
# 2 threads
SHAPES = [
    (2, 512, 2, 11, 33, 3, 1, 1), (1, 2100, 3, 3, 40, 3, 1, 1),
    (1, 1, 5, 5, 1, 3, 1, 1), (8, 63, 7, 9, 31, 3, 1, 1), (1, 65, 9, 7, 33, 3, 2, 1), (8, 100, 5, 6, 70, 3, 2, 0),
    (1, 130, 11, 11, 64, 3, 1, 2), (8, 64, 3, 3, 96, 3, 2, 1), (1, 200, 7, 7, 40, 1, 2, 0),
    (8, 96, 6, 6, 48, 1, 1, 0), (1, 64, 2, 2, 32, 3, 1, 1), (1, 256, 5, 5, 33, 5, 1, 2), (1, 512, 3, 4, 5, 3, 1, 1),
]


def _args(n, c, h, w, cout, k, s, p, with_affine, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, c, h, w, generator=g)
    x.view(-1)[::7] = 0.0  # sign(0) = +1 in both paths
    neg = torch.rand(cout, c, k, k, generator=g) < 0.5
    words = BF.pack_weight_bits(neg)
    mul = torch.rand(cout, generator=g) + 0.5
    add = torch.randn(cout, generator=g) if with_affine else None
    thr = torch.randn(c, generator=g) * 0.3 if with_affine else None
    return x, words, mul, add, thr


def _run(x, words, mul, add, thr, cout, k, s, p, consts, d=1):
    """The native kernel with (or without) precomputed layer constants."""
    plan = BF.native_plan(tuple(x.shape), words.shape[3], cout, (k, k), (s, s), (p, p), (d, d), 1)
    xc = x.contiguous(memory_format=torch.channels_last)
    out = torch.empty(plan.buffer_shape, memory_format=torch.channels_last)
    a = torch.empty(plan.scratch_words, dtype=torch.int64)
    c = K.conv_constants(words, plan.ints) if consts else None
    K.native().bconv(plan.geometry, xc.data_ptr(), 0 if thr is None else thr.data_ptr(), a.data_ptr(),
                     plan.scratch_words, words.data_ptr(), mul.data_ptr(), 0 if add is None else add.data_ptr(),
                     out.data_ptr(), 0 if c is None else c.data_ptr(), 0, 0, 0, 0, 0, K.get_isa(),
                     torch.get_num_threads())
    return out


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("isa", ISAS)
def test_every_isa_equals_torch_path_on_edge_shapes(isa, threads):
    set_isa(isa)
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        for i, (n, c, h, w, cout, k, s, p) in enumerate(SHAPES):
            for with_affine in (False, True):
                x, words, mul, add, thr = _args(n, c, h, w, cout, k, s, p, with_affine, seed=i)
                ref = BF.binary_conv(x, words, mul, add, thr, cout, (k, k), (s, s), (p, p), (1, 1), 1,
                                     use_native=False)
                # the integer dot products, against a float conv of the +-1 tensors
                xb = torch.where(x < (0 if thr is None else thr.view(1, -1, 1, 1)), -1.0, 1.0)
                wb = BF.unpack_weight_signs(words, cout, c, (k, k))
                dot = nn.functional.conv2d(xb, wb, None, s, p)
                assert torch.equal(ref, dot * mul.view(1, -1, 1, 1) + (0 if add is None else add.view(1, -1, 1, 1)))
                for consts in (False, True):
                    out = _run(x, words, mul, add, thr, cout, k, s, p, consts)
                    assert torch.equal(out, ref), (isa, consts, n, c, h, w, cout, k, s, p, with_affine)
    finally:
        set_isa(None)
        torch.set_num_threads(old)


# shapes of the AVX2 nibble-table path (groups 1; run with BNN_NIBBLE_TABLES=1, the default takes it for stride 1
# and few table bytes per output position only): strides 1 to 3 on odd sizes, dilation, input channels not a multiple of 4, outputs not a multiple of 8, 1x1 strided, batch > 1, more
# output positions than one work item holds (256), and taps of more than 63 nibbles (256 and 512 channels: the
# byte sums then run over parts of a tap)
TABLE_SHAPES = [  # N, C, H, W, Cout, k, stride, pad, dilation
    (2, 36, 9, 13, 20, 3, 2, 1, 1), (3, 128, 19, 17, 40, 3, 1, 1, 1), (1, 5, 26, 25, 9, 3, 3, 1, 1),
    (2, 64, 11, 10, 32, 3, 1, 2, 2), (1, 16, 20, 70, 33, 3, 1, 1, 1), (8, 96, 9, 9, 64, 1, 2, 0, 1),
    (1, 47, 21, 23, 8, 5, 2, 2, 1), (2, 64, 15, 15, 64, 3, 2, 1, 1), (2, 256, 14, 13, 40, 3, 1, 1, 1),
    (1, 510, 24, 24, 32, 1, 1, 0, 1),
]


def _tiles(x_shape, c, cout, k, s, p, d):
    plan = BF.native_plan(x_shape, -(-c // 64), cout, (k, k), (s, s), (p, p), (d, d), 1)
    return K.conv_tiles(plan.ints)


@pytest.mark.skipif("avx2" not in ISAS, reason="no AVX2")
@pytest.mark.parametrize("threads", [1, 2])
def test_avx2_nibble_tables_and_xor_path_equal_torch_path(threads, monkeypatch):
    """The AVX2 kernel's two tiles (nibble tables, nibble-split xor: BNN_NIBBLE_TABLES=1 / 0 when the constants
    are made) give the torch path's numbers on the table path's edge shapes."""
    set_isa("avx2")
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        for i, (n, c, h, w, cout, k, s, p, d) in enumerate(TABLE_SHAPES):
            for with_affine in (False, True):
                x, words, mul, add, thr = _args(n, c, h, w, cout, k, s, p, with_affine, seed=100 + i)
                ref = BF.binary_conv(x, words, mul, add, thr, cout, (k, k), (s, s), (p, p), (d, d), 1,
                                     use_native=False)
                monkeypatch.setenv("BNN_NIBBLE_TABLES", "1")
                assert _tiles(tuple(x.shape), c, cout, k, s, p, d) == "avx2-nibble-table"
                tables = _run(x, words, mul, add, thr, cout, k, s, p, True, d)
                monkeypatch.setenv("BNN_NIBBLE_TABLES", "0")
                assert _tiles(tuple(x.shape), c, cout, k, s, p, d) == "avx2-nibble-xor"
                xor = _run(x, words, mul, add, thr, cout, k, s, p, True, d)
                assert torch.equal(tables, ref), (n, c, h, w, cout, k, s, p, d, with_affine)
                assert torch.equal(xor, ref), (n, c, h, w, cout, k, s, p, d, with_affine)
    finally:
        torch.set_num_threads(old)
        set_isa(None)


def test_scratch_smaller_than_the_kernel_needs_is_refused():
    x, words, mul, add, thr = _args(1, 64, 8, 8, 32, 3, 2, 1, False, seed=0)
    plan = BF.native_plan(tuple(x.shape), words.shape[3], 32, (3, 3), (2, 2), (1, 1), (1, 1), 1)
    out = torch.empty(plan.buffer_shape, memory_format=torch.channels_last)
    a = torch.empty(plan.scratch_words - 1, dtype=torch.int64)
    xc = x.contiguous(memory_format=torch.channels_last)
    with pytest.raises(ValueError, match="scratch"):
        K.native().bconv(plan.geometry, xc.data_ptr(), 0, a.data_ptr(), a.numel(), words.data_ptr(), mul.data_ptr(),
                         0, out.data_ptr(), 0, 0, 0, 0, 0, 0, -1, 1)


@pytest.mark.parametrize("threads", [1, 2])
def test_thread_counts_give_the_same_result(threads):
    x, words, mul, add, thr = _args(8, 70, 9, 9, 40, 3, 1, 1, True, seed=3)
    ref = BF.binary_conv(x, words, mul, add, thr, 40, (3, 3), (1, 1), (1, 1), (1, 1), 1, use_native=False)
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        assert torch.equal(_run(x, words, mul, add, thr, 40, 3, 1, 1, True), ref)
        x, words, mul, add, thr = _args(2, 64, 24, 24, 40, 3, 1, 1, True, seed=4)  # nibble tables on AVX2
        ref = BF.binary_conv(x, words, mul, add, thr, 40, (3, 3), (1, 1), (1, 1), (1, 1), 1, use_native=False)
        assert torch.equal(_run(x, words, mul, add, thr, 40, 3, 1, 1, True), ref)
    finally:
        torch.set_num_threads(old)


def test_constants_of_another_geometry_are_refused():
    x, words, mul, add, thr = _args(1, 64, 8, 8, 32, 3, 1, 1, False, seed=0)
    other = BF.native_plan((1, 64, 9, 8), words.shape[3], 32, (3, 3), (1, 1), (1, 1), (1, 1), 1)
    c = K.conv_constants(words, other.ints)
    plan = BF.native_plan(tuple(x.shape), words.shape[3], 32, (3, 3), (1, 1), (1, 1), (1, 1), 1)
    out = torch.empty(plan.buffer_shape, memory_format=torch.channels_last)
    a = torch.empty(plan.scratch_words, dtype=torch.int64)
    xc = x.contiguous(memory_format=torch.channels_last)
    with pytest.raises(ValueError, match="another input shape"):
        K.native().bconv(plan.geometry, xc.data_ptr(), 0, a.data_ptr(), a.numel(), words.data_ptr(), mul.data_ptr(),
                         0, out.data_ptr(), c.data_ptr(), 0, 0, 0, 0, 0, -1, 1)


def test_constants_of_another_isa_are_refused():
    """The constants are made for one code path (AVX2's carry its rearranged weights, the others' do not): a call
    on another path refuses them, naming both."""
    if len(ISAS) < 2:
        pytest.skip("one ISA")
    x, words, mul, add, thr = _args(1, 64, 8, 8, 32, 3, 1, 1, False, seed=0)
    plan = BF.native_plan(tuple(x.shape), words.shape[3], 32, (3, 3), (1, 1), (1, 1), (1, 1), 1)
    c = K.conv_constants(words, plan.ints, isa=0)
    out = torch.empty(plan.buffer_shape, memory_format=torch.channels_last)
    a = torch.empty(plan.scratch_words, dtype=torch.int64)
    xc = x.contiguous(memory_format=torch.channels_last)
    with pytest.raises(ValueError, match=f"made for the scalar path, this call runs {ISAS[1]}"):
        K.native().bconv(plan.geometry, xc.data_ptr(), 0, a.data_ptr(), a.numel(), words.data_ptr(), mul.data_ptr(),
                         0, out.data_ptr(), c.data_ptr(), 0, 0, 0, 0, 0, 1, 1)


@pytest.mark.parametrize("isa", ISAS)
def test_constants_hold_a_weight_copy_only_on_avx2(isa, monkeypatch):
    """The scalar and AVX-512 tiles read the packed weight itself: their constants are a small fraction of it. The
    AVX2 xor tiles read the nibble-split copy (twice the words), the AVX2 table tiles their tables instead."""
    monkeypatch.setenv("BNN_NIBBLE_TABLES", "0")
    words = BF.pack_weight_bits(torch.rand(256, 256, 3, 3) < 0.5)
    plan = BF.native_plan((1, 256, 14, 14), words.shape[3], 256, (3, 3), (1, 1), (1, 1), (1, 1), 1)
    code = {"scalar": 0, "avx2": 1, "avx512": 2}[isa]
    consts = K.conv_constants(words, plan.ints, isa=code)
    if isa == "avx2":
        assert 2 * words.numel() <= consts.numel() < 2 * words.numel() + words.numel() // 4
    else:
        assert consts.numel() < words.numel() // 4  # the bias table: 1 / (2 Wg) of the words, Wg = 4 here


def test_packed_layer_follows_set_isa_between_calls():
    """A packed layer caches constants for the code path in use; a later set_isa gives it the new path's constants
    (the same outputs), and the cached ones are replaced, not kept beside them."""
    if len(ISAS) < 2:
        pytest.skip("one ISA")
    bc = bnn.BConfig(activation_pre_process=ops.BasicInputBinarizer, weight_pre_process=ops.XNORWeightBinarizer)
    packed = pack_binary_model(bnn.prepare_binary_model(nn.Conv2d(64, 32, 3, padding=1, bias=False), bc).eval())
    x = torch.randn(2, 64, 7, 7)
    assert packed.constants_nbytes() == 0
    outs, made = [], []
    try:
        with torch.no_grad():
            for isa in ISAS + ISAS[:1]:
                set_isa(isa)
                outs.append(packed(x))
                outs.append(packed(x))  # the cached plan's fast path
                made.append(packed._plan.consts)
                assert packed._plan.isa == K.get_isa()
                weight = packed.packed_weight.numel() * 8
                if isa == "avx2":  # the nibble-split copy of the weight (this 3x3 64-channel layer takes no tables)
                    assert packed.constants_nbytes() >= 2 * weight
                else:
                    assert 0 < packed.constants_nbytes() < weight
    finally:
        set_isa(None)
    assert all(torch.equal(o, outs[0]) for o in outs)
    assert len({c.data_ptr() for c in made}) == len(made)  # new constants for every switch
    assert sum(1 for k in BF._CONSTANTS if k[0] == id(packed.packed_weight)) == 1


@pytest.mark.parametrize("change", ["load_state_dict", "new_storage"])
def test_packed_layer_sees_weights_changed(change):
    """The layer caches its constants (a copy of the weight bits): new weights must refresh them, whether loaded
    into the same buffers (a new version) or given as a new storage (``.data =``, which keeps the version)."""
    bc = bnn.BConfig(activation_pre_process=ops.BasicInputBinarizer, weight_pre_process=ops.XNORWeightBinarizer)
    fakes = [bnn.prepare_binary_model(nn.Conv2d(64, 32, 3, padding=1, bias=False), bc).eval() for _ in range(2)]
    packed = [pack_binary_model(f) for f in fakes]
    x = torch.randn(1, 64, 6, 6)
    with torch.no_grad():
        first = packed[0](x)
        if change == "load_state_dict":
            packed[0].load_state_dict(packed[1].state_dict())  # copies into the same buffers
            expected = packed[1](x)
            torch.testing.assert_close(expected, fakes[1](x), rtol=1e-5, atol=1e-5)
        else:
            version = packed[0].packed_weight._version
            packed[0].packed_weight.data = packed[1].packed_weight.clone()
            assert packed[0].packed_weight._version == version
            reference = copy.deepcopy(packed[0])
            reference.use_native = False  # pure torch, from the buffers as they are now
            expected = reference(x)
        second = packed[0](x)
        assert not torch.equal(first, second)
        assert torch.equal(second, expected)


def test_reductions_beyond_exact_float_sums_take_the_torch_path():
    """K >= 2^23 bits per output: the kernels' float epilogue would no longer be exact, so the kernel declines."""
    x = torch.randn(1, 8)
    small = torch.zeros(1, 1, 9, 2, BF.NR, dtype=torch.int64)
    big = torch.empty(1, 1, 1, 2 ** 17, BF.NR, dtype=torch.int64)  # 64 * 2^17 = 2^23 bits, never touched
    assert BF.native_supports(x, small) == kernel_available()
    assert not BF.native_supports(x, big)


def _xorshift_words(n):
    s, out = 0x9E3779B97F4A7C15, []
    m = (1 << 64) - 1
    for _ in range(n):
        s ^= (s << 13) & m
        s ^= s >> 7
        s ^= (s << 17) & m
        out.append(s)
    return out


def test_popcount_ceiling_loops_count_right():
    """Every throughput loop of the benchmark computes the same, correct, xor+popcount sum."""
    mod = K.native()
    if not hasattr(mod, "popcount_ceiling"):
        pytest.skip("no throughput loops on this architecture")
    words = _xorshift_words(2 * 128)
    expected = sum(bin(a ^ b).count("1") for a, b in zip(words[:128], words[128:]))
    methods = [0, 1, 2] if "avx2" in available_isas() else []
    methods += [3] if "avx512" in available_isas() else []
    for m in methods:
        for threads in (1, 2):
            secs, total = mod.popcount_ceiling(m, 128, 3, threads)
            assert total == 3 * threads * expected, m
            assert secs >= 0.0


def test_constants_buffer_of_another_size_is_refused(monkeypatch):
    """The constants' layout depends on BNN_NIBBLE_TABLES: a buffer sized under one setting and filled under the
    other is refused, never overrun."""
    words = BF.pack_weight_bits(torch.rand(32, 64, 3, 3) < 0.5)
    plan = BF.native_plan((1, 64, 24, 24), words.shape[3], 32, (3, 3), (1, 1), (1, 1), (1, 1), 1)
    isa = 1 if "avx2" in ISAS else 0  # the nibble tables are AVX2 constants
    monkeypatch.setenv("BNN_NIBBLE_TABLES", "0")
    small = K.native().bconv_constants(words.data_ptr(), 0, *plan.ints, isa, 1)
    monkeypatch.setenv("BNN_NIBBLE_TABLES", "1")
    big = K.native().bconv_constants(words.data_ptr(), 0, *plan.ints, isa, 1)
    if isa == 1:
        assert big > small  # the tables
    buf = torch.empty(max(small, big), dtype=torch.int64)
    with pytest.raises(ValueError, match="constants buffer"):
        K.native().bconv_constants(words.data_ptr(), buf.data_ptr(), *plan.ints, isa, 1, small if big != small else -1)
