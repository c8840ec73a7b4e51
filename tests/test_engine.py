"""Trainer, optimizer groups, distillation, checkpoints, resume and faults (bnn.engine)."""
import copy
import importlib.util
import math
import os

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

import bnn
from bnn.engine import (Callback, CheckpointError, Config, ConfigError, DistillationLoss, NonFiniteLossError, Trainer,
                        load_checkpoint, load_model_state, save_checkpoint)
from bnn.engine.schema import OptimizerCfg
from bnn.engine.distill import kl_div_logits
from bnn.engine.optim import build_optimizer, classify_parameters
from bnn.engine.optim import set_weight_decay_enabled

torch.set_num_threads(1)


def make_data(n=64, d=12, classes=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g)
    y = ((x[:, 0] > 0).long() + 2 * (x[:, 1] > 0).long()) % classes
    return x, y


def binary_mlp(d=12, h=16, classes=4, dropout=0.0, seed=0):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(d, h), nn.BatchNorm1d(h), nn.Linear(h, h), nn.BatchNorm1d(h),
                          nn.Dropout(dropout), nn.Linear(h, classes))
    bconfig = bnn.BConfig(activation_pre_process=bnn.ops.BasicInputBinarizer,
                          weight_pre_process=bnn.ops.XNORWeightBinarizer)
    return bnn.prepare_binary_model(model, bconfig, ignore_layers_name=["_first_", "_last_"])


def cfg_for(tmp_path, *overrides, **sections):
    """A quiet 2-epoch CPU run writing to ``tmp_path``, changed by :meth:`Config.replace` arguments."""
    base = Config.from_dict({"TRAINING": {"EPOCHS": 2, "SEED": 0}, "OPTIMIZER": {"LR": 1e-2}, "HARDWARE": {"DEVICE": "cpu"},
                             "EXPERIMENT": {"DIR": str(tmp_path.parent), "NAME": tmp_path.name, "PROGRESS_BAR": False,
                                            "TENSORBOARD": False, "PLOT": False}})
    return base.replace(*overrides, **sections)


def loaders(bs=16, shuffle=True, n=64):
    x, y = make_data(n)
    return DataLoader(TensorDataset(x, y), batch_size=bs, shuffle=shuffle), DataLoader(TensorDataset(x, y), batch_size=32)


# ---------------------------------------------------------------- parameter groups
def test_param_groups_and_weight_decay():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 8), nn.BatchNorm1d(8), nn.Linear(8, 8), nn.Linear(8, 8), nn.PReLU(), nn.Linear(8, 3))
    full = bnn.BConfig(activation_pre_process=bnn.ops.InputBiasBinarizer,
                       weight_pre_process=bnn.ops.XNORWeightBinarizer,
                       activation_post_process=bnn.ops.BasicScaleBinarizer)
    acts_only = bnn.BConfig(activation_pre_process=bnn.ops.BasicInputBinarizer)
    bnn.prepare_binary_model(model, full, custom_config_layers_name={"3": acts_only}, ignore_layers_name=["_first_", "_last_"])
    groups = {k: {n for n, _ in v} for k, v in classify_parameters(model).items()}
    assert groups["latent_weights"] == {"2.weight"}  # layer 3 has an identity weight_pre_process
    binarizer_names = {n for n, _ in model[2].named_parameters() if "process" in n}
    assert binarizer_names and groups["binarizer"] == {f"2.{n}" for n in binarizer_names}
    assert groups["bn_bias"] == {"0.bias", "1.weight", "1.bias", "2.bias", "3.bias", "5.bias"}
    assert groups["rest"] == {"0.weight", "3.weight", "4.weight", "5.weight"}
    n_total = sum(1 for p in model.parameters())
    assert sum(len(v) for v in groups.values()) == n_total

    cfg = Config.from_dict({"OPTIMIZER": {"NAME": "adamw", "LR": 0.1, "WEIGHT_DECAY": 1e-4, "LATENT_WEIGHTS": {"WEIGHT_DECAY": 0.0},
                                          "BINARIZER": {"WEIGHT_DECAY": 2e-5, "LR_MULT": 10.0}, "BN_BIAS": {"WEIGHT_DECAY": 0.0}}})
    opt = build_optimizer(model, cfg.OPTIMIZER)
    assert isinstance(opt, torch.optim.AdamW)
    by_name = {g["name"]: g for g in opt.param_groups}
    assert by_name["latent_weights"]["weight_decay"] == 0.0
    assert by_name["binarizer"]["weight_decay"] == 2e-5 and by_name["binarizer"]["lr"] == pytest.approx(1.0)
    assert by_name["bn_bias"]["weight_decay"] == 0.0
    assert by_name["rest"]["weight_decay"] == 1e-4 and by_name["rest"]["lr"] == 0.1
    set_weight_decay_enabled(opt, False)
    assert all(g["weight_decay"] == 0.0 for g in opt.param_groups)
    set_weight_decay_enabled(opt, True)
    assert by_name["rest"]["weight_decay"] == 1e-4 and by_name["binarizer"]["weight_decay"] == 2e-5
    assert isinstance(build_optimizer(model, OptimizerCfg(NAME="sgd")), torch.optim.SGD)
    with pytest.raises(ValueError, match="did you mean 'adamw'"):
        build_optimizer(model, OptimizerCfg(NAME="adamww"))
    with pytest.raises(ConfigError, match="got 'adamww' \\(did you mean 'adamw'"):
        Config.from_dict({"OPTIMIZER": {"NAME": "adamww"}})
    with pytest.raises(ConfigError, match="^Config.from_dict: unknown key 'OPTIMIZER.weight_decy' \\(did you mean 'OPTIMIZER.WEIGHT_DECAY'"):
        Config.from_dict({"OPTIMIZER": {"weight_decy": 0.1}})


# ---------------------------------------------------------------- distillation
def test_distillation_kl_by_hand():
    s = torch.tensor([[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]])
    t = torch.tensor([[0.5, 2.5, 0.0], [1.0, 0.0, 1.0]])
    T = 2.0
    total = 0.0
    for i in range(2):
        ps = [math.exp(v / T) for v in s[i].tolist()]
        pt = [math.exp(v / T) for v in t[i].tolist()]
        ps = [v / sum(ps) for v in ps]
        pt = [v / sum(pt) for v in pt]
        total += sum(b * (math.log(b) - math.log(a)) for a, b in zip(ps, pt))
    expected = T * T * total / 2
    assert kl_div_logits(s, t, T).item() == pytest.approx(expected, rel=1e-5)
    y = torch.tensor([1, 2])
    mixed = DistillationLoss(alpha=0.25, temperature=T)(s, t, y)
    assert mixed.item() == pytest.approx(0.25 * expected + 0.75 * F.cross_entropy(s, y).item(), rel=1e-5)
    assert kl_div_logits(s, s, 3.0).item() == pytest.approx(0.0, abs=1e-7)


def test_trainer_uses_teacher(tmp_path):
    torch.manual_seed(0)
    student = nn.Sequential(nn.Linear(12, 16), nn.ReLU(), nn.Linear(16, 4))
    teacher = copy.deepcopy(student)
    tl, vl = loaders()
    cfg = cfg_for(tmp_path, "DISTILLATION.ENABLED=true", "TRAINING.EPOCHS=1", OPTIMIZER={"NAME": "sgd", "LR": 0.1})
    res = Trainer(student, tl, vl, cfg, teacher=teacher).fit()
    # student == teacher: KL is 0 and so is its gradient (plain SGD: the student does not move), while
    # the cross-entropy of the same model is far from 0
    assert res.history[0]["train_loss"] == pytest.approx(0.0, abs=1e-6)
    assert res.history[0]["val_loss"] > 0.5
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(student.state_dict().values(), teacher.state_dict().values()))
    with pytest.raises(ValueError, match="no teacher"):
        Trainer(student, tl, vl, cfg_for(tmp_path, "DISTILLATION.ENABLED=true"))


# ---------------------------------------------------------------- outputs, accumulation
def test_outputs_and_learning(tmp_path):
    tl, vl = loaders()
    model = binary_mlp()
    res = Trainer(model, tl, vl, cfg_for(tmp_path, "TRAINING.EPOCHS=3", EXPERIMENT={"TENSORBOARD": True, "PLOT": True,
                                                                               "PROGRESS_BAR": True})).fit()
    assert len(res.history) == 3 and res.epochs_completed == 3
    assert res.history[-1]["train_loss"] < res.history[0]["train_loss"]
    rows = open(tmp_path / "metrics.csv").read().strip().splitlines()
    assert rows[0].startswith("epoch,train_loss,train_top1") and len(rows) == 4
    assert "epoch 3/3" in open(tmp_path / "train.log").read()
    assert open(tmp_path / "curves.png", "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    if importlib.util.find_spec("tensorboard") is not None:  # events are written when tensorboard is installed
        assert any(f.startswith("events.out.tfevents") for f in os.listdir(tmp_path / "tensorboard"))
    else:
        assert not (tmp_path / "tensorboard").exists()
    assert res.best_checkpoint and os.path.exists(res.best_checkpoint)
    best = load_checkpoint(res.best_checkpoint)
    assert best["best_top1"] == res.best_top1 and best["epoch"] == res.best_epoch
    assert 0.0 <= res.history[-1]["val_top1"] <= res.history[-1]["val_top5"] <= 100.0


def test_gradient_accumulation_matches_large_batch(tmp_path):
    def run(bs, bm, sub):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(12, 16), nn.Tanh(), nn.Linear(16, 4))
        x, y = make_data(64)
        tl = DataLoader(TensorDataset(x, y), batch_size=bs, shuffle=False)
        Trainer(model, tl, None, cfg_for(tmp_path / sub, "TRAINING.EPOCHS=1", f"TRAINING.BATCH_MULTIPLIER={bm}",
                                         OPTIMIZER={"NAME": "sgd", "MOMENTUM": 0.0, "LR": 0.5})).fit()
        return model

    a, b = run(32, 1, "a"), run(16, 2, "b")
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.allclose(pa, pb, atol=1e-6)
    c = run(16, 1, "c")  # without accumulation the result differs
    assert not torch.allclose(a[0].weight, c[0].weight, atol=1e-4)


# ---------------------------------------------------------------- resume
class Crash(Callback):
    def __init__(self, epoch, step):
        self.epoch, self.step, self.seen = epoch, step, 0

    def on_step_begin(self, trainer, t):
        if trainer.epoch == self.epoch:
            self.seen += 1
            if self.seen > self.step:
                raise KeyboardInterrupt("killed mid-epoch")


def test_resume_is_bit_identical(tmp_path):
    kw = dict(TRAINING={"EPOCHS": 4, "BATCH_MULTIPLIER": 2}, LR_SCHEDULE={"NAME": "cosine", "WARMUP_EPOCHS": 0.5},
              OPTIMIZER={"WEIGHT_DECAY": 1e-3},
              SCHEDULE={"NAME": "staged", "STAGED": {"ACTIVATIONS_BIN_START_EPOCH": 1, "WEIGHTS_BIN_START_EPOCH": 2}})

    tl, vl = loaders(bs=8)
    ref = binary_mlp(dropout=0.3)
    ref_res = Trainer(ref, tl, vl, cfg_for(tmp_path / "ref", **kw)).fit()

    tl, vl = loaders(bs=8)
    run = binary_mlp(dropout=0.3)
    with pytest.raises(KeyboardInterrupt):
        Trainer(run, tl, vl, cfg_for(tmp_path / "run", **kw), callbacks=[Crash(epoch=2, step=1)]).fit()
    assert load_checkpoint(str(tmp_path / "run" / "last.pth"))["epoch"] == 2  # epoch 3's progress is lost

    tl, vl = loaders(bs=8)
    fresh = binary_mlp(dropout=0.3, seed=123)  # different init: everything must come from the checkpoint
    res = Trainer(fresh, tl, vl, cfg_for(tmp_path / "run", **kw)).fit(resume="auto")
    for (k, a), b in zip(ref.state_dict().items(), fresh.state_dict().values()):
        if torch.is_tensor(a):
            assert torch.equal(a, b), k
    strip = lambda h: [{k: v for k, v in r.items() if k != "time_s"} for r in h]  # noqa: E731
    assert strip(res.history) == strip(ref_res.history)
    rows = open(tmp_path / "run" / "metrics.csv").read().strip().splitlines()
    assert len(rows) == 5 and [r.split(",")[0] for r in rows[1:]] == ["1", "2", "3", "4"]
    assert all(not f.startswith(".") for f in os.listdir(tmp_path / "run"))  # no temporary files left


def test_resume_with_another_batch_size_is_refused(tmp_path):
    """The schedule is indexed by optimizer step: a changed batch size would resume at the wrong point of it
    (the learning rate of a later epoch, 0 past the end). One line; the checkpoint is left as it was."""
    tl, vl = loaders(bs=16)
    Trainer(binary_mlp(), tl, vl, cfg_for(tmp_path, "TRAINING.EPOCHS=1")).fit()
    before = (tmp_path / "last.pth").read_bytes()
    tl, vl = loaders(bs=8)
    with pytest.raises(CheckpointError) as info:
        Trainer(binary_mlp(), tl, vl, cfg_for(tmp_path, "TRAINING.EPOCHS=2")).fit(resume="auto")
    msg = str(info.value)
    assert "\n" not in msg and "4 optimizer steps per epoch, this run makes 8" in msg
    assert (tmp_path / "last.pth").read_bytes() == before


# ---------------------------------------------------------------- faults
class PoisonAt(Callback):
    def __init__(self, x, epoch):
        self.x, self.epoch = x, epoch

    def on_epoch_begin(self, trainer, epoch):
        if epoch == self.epoch:
            self.x[40] = float("nan")


def test_nan_loss_stops_and_last_good_checkpoint_loads(tmp_path):
    x, y = make_data(64)
    tl = DataLoader(TensorDataset(x, y), batch_size=16, shuffle=False)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(12, 16), nn.ReLU(), nn.Linear(16, 4))  # a sign() would swallow the NaN
    trainer = Trainer(model, tl, None, cfg_for(tmp_path, "TRAINING.EPOCHS=3"), callbacks=[PoisonAt(x, epoch=1)])
    with pytest.raises(NonFiniteLossError, match=r"epoch 2/3, step 3/4") as info:
        trainer.fit()
    assert info.value.epoch == 2 and info.value.step == 3
    assert "non-finite loss" in open(tmp_path / "train.log").read()
    ckpt = load_checkpoint(str(tmp_path / "last.pth"))
    assert ckpt["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values() if torch.is_tensor(v))
    load_model_state(nn.Sequential(nn.Linear(12, 16), nn.ReLU(), nn.Linear(16, 4)), str(tmp_path / "last.pth"))
    assert len(open(tmp_path / "metrics.csv").read().strip().splitlines()) == 2


def test_checkpoint_atomic_and_clear_errors(tmp_path, monkeypatch):
    path = str(tmp_path / "last.pth")
    save_checkpoint({"format": "x", "a": torch.ones(3)}, path)
    good = open(path, "rb").read()

    real_save = torch.save

    def dying_save(obj, fh, *a, **k):
        fh.write(b"PK\x03\x04 half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", dying_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint({"format": "x", "a": torch.zeros(3)}, path)
    monkeypatch.setattr(torch, "save", real_save)
    assert open(path, "rb").read() == good
    assert os.listdir(tmp_path) == ["last.pth"]  # the temporary file is gone

    with open(path, "wb") as fh:
        fh.write(good[: len(good) // 2])  # truncated
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    msg = str(info.value)
    assert path in msg and "corrupted" in msg and "\n" not in msg

    model = nn.Sequential(nn.Linear(4, 3))
    save_checkpoint({"model": model.state_dict()}, path)
    with pytest.raises(CheckpointError) as info:
        load_model_state(nn.Sequential(nn.Linear(4, 5)), path)
    msg = str(info.value)
    assert path in msg and "'0.weight'" in msg and "[3, 4]" in msg and "[5, 4]" in msg and "\n" not in msg
    with pytest.raises(CheckpointError, match="'1.weight' is in the model"):
        load_model_state(nn.Sequential(nn.Linear(4, 3), nn.Linear(3, 2)), path)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(str(tmp_path / "nope.pth"))

    # a Trainer resuming from a corrupted checkpoint fails with the same one line
    with open(path, "wb") as fh:
        fh.write(b"garbage")
    tl, vl = loaders()
    with pytest.raises(CheckpointError, match="corrupted"):
        Trainer(binary_mlp(), tl, vl, cfg_for(tmp_path)).fit(resume=path)
