"""The packed kernel's epilogue beyond scale and shift: sign words for the next packed conv (sign-bit chaining,
bnn.deploy.chain) and Bi-Real Net's real shortcut added in the kernel."""
import io
import math

import pytest
import torch
import torch.nn as nn

import bnn
from bnn import ops
from bnn.deploy import PackedConv2d, available_isas, kernel_available, pack_binary_model, set_isa
from bnn.deploy import functional as BF
from bnn.deploy.chain import _through_clamp
from bnn.deploy.layers import SignWordsPassthrough

ISAS = available_isas() if kernel_available() else []


def _bconfig(post=None):
    return bnn.BConfig(activation_pre_process=ops.InputBiasBinarizer, weight_pre_process=ops.XNORWeightBinarizer,
                       activation_post_process=post)


def _randomized(model):
    """Random BN statistics and RSign biases (nonzero input thresholds, some of them negative)."""
    torch.manual_seed(0)
    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, nn.BatchNorm2d):
                mod.running_mean.normal_()
                mod.running_var.uniform_(0.5, 2.0)
                mod.weight.normal_()
                mod.bias.normal_()
            elif isinstance(mod, ops.InputBiasBinarizer):
                mod.bias.normal_(0, 0.5)
    return model.eval()


def _prepare(net, post=None, **kwargs):
    return _randomized(bnn.prepare_binary_model(net, _bconfig(post), **kwargs))


def _paths():
    """(isa, nibble tables) of every native path this CPU has, then the pure-torch path (None)."""
    paths = [(isa, "0") for isa in ISAS] + ([("avx2", "1")] if "avx2" in ISAS else [])
    return paths + [(None, None)]


def _on_path(packed, path, monkeypatch):
    isa, tables = path
    for m in packed.modules():
        if isinstance(m, PackedConv2d):
            m.use_native = None if isa else False
            m.__dict__.pop("_plan", None)
    set_isa(isa)
    if tables is not None:
        monkeypatch.setenv("BNN_NIBBLE_TABLES", tables)
    BF._CONSTANTS.clear()  # constants made under another BNN_NIBBLE_TABLES setting have another layout


# -- the layer: sign words out and in ----------------------------------------------------------------------------
SHAPES = [  # cin, cout, size, stride, kernel: 64-channel words, partial words and panels (70, 40, 96), 1x1 strided
    (64, 64, 9, 1, 3), (64, 128, 10, 2, 3), (70, 40, 7, 1, 3), (130, 96, 6, 2, 3), (64, 70, 8, 2, 1),
    (32, 32, 12, 1, 3),
]


@pytest.mark.parametrize("path", _paths(), ids=str)
def test_sign_words_out_and_in_equal_the_float_layer(path, monkeypatch):
    """Words out = the torch-made signs of the float output; words in = the float layer on the +-1 input."""
    torch.manual_seed(1)
    try:
        for cin, cout, size, stride, k in SHAPES:
            fake = _prepare(nn.Conv2d(cin, cout, k, stride, k // 2, bias=True))
            packed = pack_binary_model(fake)
            _on_path(packed, path, monkeypatch)
            x = torch.randn(2, cin, size, size)
            with torch.no_grad():
                ref = packed(x)
                t = torch.randn(cout) * 0.5
                t[:3] = torch.tensor([-math.inf, math.inf, 0.0])
                packed.output_threshold = t
                for _ in range(2):  # the first call plans, the second takes the cached plan
                    words = packed(x)
                    assert words.dtype == torch.int64 and words.shape == (2, *ref.shape[2:], -(-cout // 64))
                    assert torch.equal(words, BF.sign_words(ref, t)), (cin, cout, size, stride, k)
                # bit by bit: channel c of pixel (n, i, j) is bit c % 64 of word c // 64; no bit past cout
                bits = (words.unsqueeze(-1) >> torch.arange(64)) & 1
                bits = bits.flatten(-2)
                assert torch.equal(bits[..., :cout].bool(), (ref < t.view(1, -1, 1, 1)).permute(0, 2, 3, 1))
                assert not bits[..., cout:].any()
                packed.output_threshold = None
                # the input's signs as words: thresholds already applied, so the layer's own are not
                thr = packed.input_threshold if packed.input_threshold is not None else torch.zeros(cin)
                signs_in = BF.sign_words(x, thr)
                packed.input_threshold = None  # the +-1 input, binarized by the plain sign
                expected = packed(torch.where(x < thr.view(1, -1, 1, 1), -1.0, 1.0))
                packed.input_threshold = thr
                for _ in range(2):
                    assert torch.equal(packed(signs_in), expected), (cin, cout, size, stride, k)
    finally:
        set_isa(None)


def test_sign_words_round_trip():
    y = torch.randn(2, 70, 3, 4)
    t = torch.randn(70)
    signs = BF.unsign_words(BF.sign_words(y, t), 70)
    assert torch.equal(signs, torch.where(y < t.view(1, -1, 1, 1), -1.0, 1.0))


def test_bad_sign_words_raise_naming_the_layer():
    packed = pack_binary_model(_prepare(nn.Sequential(nn.Conv2d(70, 8, 3, padding=1), nn.Conv2d(8, 8, 3, groups=2))))
    with torch.no_grad(), pytest.raises(ValueError, match=r"packed layer '0': expects sign words \[N, H, W, 2\]"):
        packed[0](torch.zeros(1, 5, 5, 1, dtype=torch.int64))
    with torch.no_grad(), pytest.raises(TypeError, match=r"packed layer '1'.*groups=1"):
        packed[1](torch.zeros(1, 5, 5, 1, dtype=torch.int64))
    packed[0].output_threshold = torch.zeros(3)  # the kernel would read 8 thresholds
    wrong_size = r"packed layer '0': buffer 'output_threshold' has shape \[3\]"
    with torch.no_grad(), pytest.raises(ValueError, match=wrong_size):
        packed[0](torch.randn(1, 70, 5, 5))


# -- the pass: which pairs, which thresholds -------------------------------------------------------------------------
def test_thresholds_through_clamps_by_hand():
    t = torch.tensor([-2.0, -1.0, 0.0, 0.5, 1.0, 2.0])
    inf = math.inf
    assert _through_clamp(t, 0.0, inf).tolist() == [-inf, -inf, -inf, 0.5, 1.0, 2.0]  # ReLU
    assert _through_clamp(t, -1.0, 1.0).tolist() == [-inf, -inf, 0.0, 0.5, 1.0, inf]  # Hardtanh
    assert _through_clamp(t, -inf, inf).tolist() == t.tolist()  # Identity
    # the defining property, on a grid that hits every threshold exactly
    y = torch.linspace(-3, 3, 121)
    for lo, hi in [(0.0, inf), (-1.0, 1.0), (0.0, 6.0)]:
        tt = _through_clamp(t, lo, hi)
        assert torch.equal(y.clamp(lo, hi)[:, None] < t, y[:, None] < tt)


def _chain_net():
    return nn.Sequential(
        nn.Conv2d(3, 64, 3, padding=1),                                           # float stem
        nn.Conv2d(64, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(),          # 1 -> 4
        nn.Conv2d(64, 96, 3, stride=2, padding=1), nn.BatchNorm2d(96), nn.Hardtanh(), nn.Dropout(0.2),  # 4 -> 8
        nn.Conv2d(96, 96, 3, padding=1), nn.PReLU(96),                           # not a clamp: 8 not chained
        nn.Conv2d(96, 32, 1),                                                    # 10 -> 11 (identity)
        nn.Conv2d(32, 16, 3, padding=1),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10),
    )


def test_chained_model_is_bit_identical_to_the_unchained_one(monkeypatch):
    fake = _prepare(_chain_net(), ignore_layers_name=["0", "14"])
    chained, plain = pack_binary_model(fake), pack_binary_model(fake, chain_signs=False)
    producers = [n for n, m in chained.named_modules()
                 if isinstance(m, PackedConv2d) and m.output_threshold is not None]
    assert producers == ["1", "4", "10"]
    assert isinstance(chained[3], SignWordsPassthrough) and isinstance(chained[6], SignWordsPassthrough)
    assert isinstance(chained[2], nn.Identity) and isinstance(chained[5], nn.Identity)  # folded BNs pass words as is
    assert isinstance(chained[9], nn.PReLU) and chained[8].output_threshold is None
    # the ReLU's threshold: the next layer's RSign threshold where positive, -inf (always +1) elsewhere
    t4 = chained[4].input_threshold
    assert torch.equal(chained[1].output_threshold, torch.where(t4 > 0, t4, torch.tensor(-math.inf)))
    x = torch.randn(2, 3, 12, 12)
    try:
        with torch.no_grad():
            ref = fake(x)
            for path in _paths():
                _on_path(chained, path, monkeypatch)
                _on_path(plain, path, monkeypatch)
                for _ in range(2):
                    assert torch.equal(chained(x), plain(x)), path
            assert (chained(x) - ref).abs().max() <= 1e-4 * max(1.0, ref.abs().max().item())
    finally:
        set_isa(None)


class _Block(nn.Module):
    """torchvision's BasicBlock wiring: one ReLU module called twice, a residual add."""

    def __init__(self, c):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)
        self.conv2, self.bn2 = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + x)


def test_shared_activation_still_applies_to_float_inputs():
    fake = _prepare(nn.Sequential(nn.Conv2d(3, 64, 3, padding=1), _Block(64), _Block(64)), ignore_layers_name=["0"])
    chained, plain = pack_binary_model(fake), pack_binary_model(fake, chain_signs=False)
    assert isinstance(chained[1].relu, SignWordsPassthrough)
    assert chained[1].conv1.output_threshold is not None and chained[1].conv2.output_threshold is None  # the add
    x = torch.randn(2, 3, 10, 10)
    with torch.no_grad():
        out = chained(x)
        assert torch.equal(out, plain(x))
        assert out.min() >= 0  # the block's last ReLU ran on the float sum


def test_pairs_that_must_not_chain():
    # a real shortcut (Bi-Real Net) needs the float output and input
    bireal = pack_binary_model(_prepare(nn.Sequential(nn.Conv2d(64, 64, 3, padding=1), nn.Conv2d(64, 64, 3, padding=1)),
                                        post=ops.RealShortcut))
    assert all(m.output_threshold is None for m in bireal.modules() if isinstance(m, PackedConv2d))
    # grouped consumer; an output read twice; hooks on the producer
    grouped = pack_binary_model(_prepare(nn.Sequential(nn.Conv2d(64, 64, 3, padding=1),
                                                       nn.Conv2d(64, 64, 3, padding=1, groups=2))))
    assert grouped[0].output_threshold is None

    class Branch(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b, self.c = (nn.Conv2d(64, 64, 3, padding=1) for _ in range(3))

        def forward(self, x):
            y = self.a(x)
            return self.b(y) + self.c(y)

    branch = pack_binary_model(_prepare(Branch()))
    assert branch.a.output_threshold is None
    hooked = _prepare(nn.Sequential(nn.Conv2d(64, 64, 3, padding=1), nn.Conv2d(64, 64, 3, padding=1)))
    packed = pack_binary_model(hooked, chain_signs=False)
    packed[0].register_forward_hook(lambda m, i, o: None)
    from bnn.deploy.chain import chain_sign_words

    assert chain_sign_words(packed) == []


def test_chained_model_saves_loads_and_compiles():
    fake = _prepare(_chain_net(), ignore_layers_name=["0", "14"])
    chained = pack_binary_model(fake)
    x = torch.randn(2, 3, 12, 12)
    with torch.no_grad():
        eager = chained(x)
        buf = io.BytesIO()
        torch.save(chained, buf)
        buf.seek(0)
        assert torch.equal(torch.load(buf, weights_only=False)(x), eager)
        fresh = pack_binary_model(fake)
        fresh.load_state_dict(chained.state_dict())
        assert torch.equal(fresh(x), eager)
        torch._dynamo.reset()
        assert torch.equal(torch.compile(chained, fullgraph=True, backend="aot_eager")(x), eager)
        torch._dynamo.reset()
        assert torch.equal(torch.export.export(chained, (x,)).module()(x), eager)


def test_summary_counts_the_macs_of_chained_layers():
    fake = _prepare(_chain_net(), ignore_layers_name=["0", "14"])
    rows = {r.name: r.macs for r in bnn.summary(pack_binary_model(fake), (3, 12, 12), print_fn=None).layers}
    plain = {r.name: r.macs for r in bnn.summary(pack_binary_model(fake, chain_signs=False), (3, 12, 12),
                                                print_fn=None).layers}
    assert rows == plain and rows["1"] == 64 * 64 * 9 * 12 * 12


# -- the real shortcut in the kernel --------------------------------------------------------------------------------
@pytest.mark.parametrize("path", _paths(), ids=str)
def test_real_shortcut_in_the_kernel_equals_the_torch_path(path, monkeypatch):
    """out + gain_c * S(x) (Bi-Real Net) added by the kernel: bit-identical to the pure-torch path, with and without
    a folded BatchNorm's gain; S(x) is the input itself (mode 1) or, for a strided conv with more outputs than
    inputs, the input pooled 2x2 and repeated (mode 2, made by torch)."""
    torch.manual_seed(2)
    try:
        for cin, cout, size, stride, bn in [(64, 64, 9, 1, False), (64, 64, 8, 1, True), (70, 70, 7, 1, True),
                                            (128, 128, 5, 1, False), (32, 64, 8, 2, True), (64, 128, 6, 2, False)]:
            net = nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1), *([nn.BatchNorm2d(cout)] if bn else []))
            fake = _prepare(net, post=ops.RealShortcut)
            packed = pack_binary_model(fake)
            assert (packed[0].post_process.gain is not None) == bn  # the folded BatchNorm's k scales the shortcut
            x = torch.randn(2, cin, size, size)
            with torch.no_grad():
                _on_path(packed, (None, None), monkeypatch)
                ref = packed(x)
                _on_path(packed, path, monkeypatch)
                for _ in range(2):
                    assert torch.equal(packed(x), ref), (cin, cout, size, stride, bn)
                if path[0] is not None:  # added by the kernel, not by a torch op after it
                    assert packed[0]._plan.shortcut == (1 if stride == 1 else 2)
                expected = fake(x)
                assert (ref - expected).abs().max() <= 1e-4 * max(1.0, expected.abs().max().item())
    finally:
        set_isa(None)
