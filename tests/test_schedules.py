"""LR schedules and binarization schedules change what they should at the right epoch (bnn.engine)."""
import math

import pytest
import torch
import torch.nn as nn
from torch.utils.data import DataLoader, TensorDataset

import bnn
from bnn.engine import (Callback, GradualBinarizationSchedule, StagedBinarizationSchedule, Config, Trainer,
                        load_checkpoint, load_config, train)
from bnn.engine.binarization_schedule import build_callbacks
from bnn.engine.steps import nncf_recipe
from bnn.engine.lr_schedule import make_lr_factor
from bnn.engine.lr_schedule import cosine_factor, linear_factor, multistep_factor, poly_drop_factor, warmup_factor

torch.set_num_threads(1)


def data(n=32, d=8, classes=3, bs=8):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, d, generator=g)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0.5).long()
    return DataLoader(TensorDataset(x, y), batch_size=bs, shuffle=True), DataLoader(TensorDataset(x, y), batch_size=16)


def mlp(bconfig, d=8, h=8, classes=3):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(d, h), nn.BatchNorm1d(h), nn.Linear(h, h), nn.BatchNorm1d(h), nn.Linear(h, classes))
    return bnn.prepare_binary_model(model, bconfig, ignore_layers_name=["_first_", "_last_"])


XNOR = bnn.BConfig(activation_pre_process=bnn.ops.BasicInputBinarizer, weight_pre_process=bnn.ops.XNORWeightBinarizer)


def cfg_for(tmp_path, *overrides, **sections):
    """A quiet 4-epoch CPU run at a constant learning rate writing to ``tmp_path``, changed by :meth:`Config.replace` arguments."""
    base = Config.from_dict({"TRAINING": {"EPOCHS": 4, "SEED": 0}, "LR_SCHEDULE": {"NAME": "constant"}, "HARDWARE": {"DEVICE": "cpu"},
                             "EXPERIMENT": {"DIR": str(tmp_path.parent), "NAME": tmp_path.name, "PROGRESS_BAR": False,
                                            "TENSORBOARD": False, "PLOT": False}})
    return base.replace(*overrides, **sections)


class Recorder(Callback):
    """Records, before every optimizer step, what the step will run with."""

    def __init__(self):
        self.rows = []

    def on_step_begin(self, trainer, t):
        acts = [m.activation_pre_process.enabled for m in trainer.model.modules() if hasattr(m, "weight_pre_process")]
        weights = [m.weight_pre_process.enabled for m in trainer.model.modules() if hasattr(m, "weight_pre_process")]
        grad = {}
        for m in trainer.model.modules():
            for attr in ("bin_ratio", "p", "ratio"):
                if hasattr(m, attr) and isinstance(getattr(m, attr), float):
                    grad[attr] = getattr(m, attr)
        self.rows.append({"epoch": trainer.epoch, "t": t, "lr": trainer.optimizer.param_groups[0]["lr"],
                          "wd": [g["weight_decay"] for g in trainer.optimizer.param_groups],
                          "acts": acts, "weights": weights, **grad})


def test_lr_factors_by_hand():
    assert multistep_factor(1.99, [2, 4], [0.1, 0.5]) == 1.0
    assert multistep_factor(2.0, [2, 4], [0.1, 0.5]) == pytest.approx(0.1)
    assert multistep_factor(4.5, [2, 4], [0.1, 0.5]) == pytest.approx(0.05)
    assert multistep_factor(3.0, [1, 2], gamma=0.2) == pytest.approx(0.04)
    with pytest.raises(ValueError, match="one gamma per milestone"):
        multistep_factor(0, [1, 2], [0.1])
    assert cosine_factor(5, 10) == pytest.approx(0.5)
    assert cosine_factor(5, 10, eta_min_factor=0.1) == pytest.approx(0.55)
    assert cosine_factor(10, 10) == pytest.approx(0.0)
    assert linear_factor(2.5, 10) == pytest.approx(0.75)
    assert poly_drop_factor(5.99, 6, 3) == 1.0
    assert poly_drop_factor(7.5, 6, 3) == pytest.approx((1.5 / 3) ** 2.1)
    assert poly_drop_factor(9.0, 6, 3) == 0.0
    assert warmup_factor(1.0, 2.0, 0.1) == pytest.approx(0.55)
    f = make_lr_factor("cosine", {}, total_epochs=10, warmup_epochs=2, warmup_start_factor=0.0)
    assert f(1.0) == pytest.approx(0.5 * 0.5 * (1 + math.cos(math.pi * 0.1)))
    with pytest.raises(ValueError, match="did you mean 'cosine'"):
        make_lr_factor("cosin", {}, total_epochs=3)
    with pytest.raises(ValueError, match="bad lr_schedule_args"):
        make_lr_factor("poly", {"start": 1}, total_epochs=3)


def test_multistep_with_warmup_per_step_in_training(tmp_path):
    tl, vl = data()  # 4 steps per epoch
    rec = Recorder()
    cfg = cfg_for(tmp_path, "TRAINING.EPOCHS=3", OPTIMIZER={"LR": 0.1, "WEIGHT_DECAY": 1e-4, "DISABLE_WD_EPOCH": 2},
                  LR_SCHEDULE={"NAME": "multistep", "WARMUP_EPOCHS": 0.5, "MILESTONES": [1, 2], "GAMMAS": [0.5, 0.1]})
    Trainer(mlp(XNOR), tl, vl, cfg, callbacks=[rec]).fit()
    expected = [0.0, 0.05, 0.1, 0.1] + [0.05] * 4 + [0.005] * 4
    assert [r["lr"] for r in rec.rows] == pytest.approx(expected)
    # latent weights and BN/bias never decay by default (as in YAML); the rest decays until epoch 2
    assert all(r["wd"] == [0.0, 0.0, 1e-4] for r in rec.rows[:8])
    assert all(w == 0.0 for r in rec.rows[8:] for w in r["wd"])


def test_staged_schedule(tmp_path):
    tl, vl = data()  # 4 steps per epoch
    rec = Recorder()
    staged = StagedBinarizationSchedule(activations_bin_start_epoch=1, weights_bin_start_epoch=2)
    # NNCF's LR drop and weight-decay stop: settings of the run, in one place each
    cfg = cfg_for(tmp_path, OPTIMIZER={"LR": 0.01, "WEIGHT_DECAY": 1e-4, "LATENT_WEIGHTS": {"WEIGHT_DECAY": 1e-5},
                                       "BN_BIAS": {"WEIGHT_DECAY": None}, "DISABLE_WD_EPOCH": 3},
                  LR_SCHEDULE={"NAME": "poly", "START_EPOCH": 2, "DURATION_EPOCHS": 2})
    Trainer(mlp(XNOR), tl, vl, cfg, callbacks=[staged, rec]).fit()
    by_epoch = {e: [r for r in rec.rows if r["epoch"] == e] for e in range(4)}
    assert all(r["acts"] == [False] and r["weights"] == [False] for r in by_epoch[0])
    assert all(r["acts"] == [True] and r["weights"] == [False] for r in by_epoch[1])
    assert all(r["acts"] == [True] and r["weights"] == [True] for r in by_epoch[2] + by_epoch[3])
    lrs = [r["lr"] for r in rec.rows]
    poly = [((4 - t) / 2) ** 2.1 if t >= 2 else 1.0 for t in [k / 4 for k in range(16)]]
    assert lrs == pytest.approx([0.01 * f for f in poly])
    assert lrs[9] == pytest.approx(0.01 * (1.75 / 2) ** 2.1)
    for e in range(3):
        assert all(r["wd"] == [1e-5, 1e-4, 1e-4] for r in by_epoch[e])  # latent, bn_bias (None: inherits), rest
    assert all(r["wd"] == [0.0, 0.0, 0.0] for r in by_epoch[3])
    assert load_checkpoint(str(tmp_path / "last.pth"))["history"][3]["weight_decay_on"] == 0


def test_staged_from_nncf_config(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.Conv2d(4, 4, 3, padding=1),
                          nn.BatchNorm2d(4), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))
    model, schedule = bnn.from_nncf_config(model, {
        "algorithm": "binarization", "mode": "xnor",
        "params": {"batch_multiplier": 2, "activations_bin_start_epoch": 1, "weights_bin_start_epoch": 2,
                   "lr_poly_drop_start_epoch": 2, "lr_poly_drop_duration_epochs": 1, "disable_wd_start_epoch": 2},
        "ignored_scopes": ["Sequential/Conv2d[0]"]})
    assert isinstance(schedule, bnn.NNCFSchedule)
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(16, 3, 6, 6, generator=g), torch.randint(0, 3, (16,), generator=g)
    tl = DataLoader(TensorDataset(x, y), batch_size=4, shuffle=True)
    rec = Recorder()
    cfg = nncf_recipe(cfg_for(tmp_path, "TRAINING.EPOCHS=3", OPTIMIZER={"LR": 0.01, "WEIGHT_DECAY": 1e-4}), schedule)
    trainer = Trainer(model, tl, None, cfg, callbacks=[rec])
    assert trainer.batch_multiplier == 2 and trainer.steps_per_epoch == 2
    trainer.fit()
    assert [r["acts"] for r in rec.rows] == [[False], [False], [True], [True], [True], [True]]
    assert [r["weights"] for r in rec.rows] == [[False]] * 4 + [[True]] * 2
    assert [r["lr"] for r in rec.rows] == pytest.approx([0.01] * 4 + [0.01, 0.01 * 0.5 ** 2.1])
    assert all(w == 0.0 for r in rec.rows[4:] for w in r["wd"]) and any(w > 0 for w in rec.rows[0]["wd"])


def test_gradual_schedule(tmp_path):
    bconfig = bnn.BConfig(activation_pre_process=bnn.ops.KBitActivationQuantizer.with_args(bits=8, ratio=0.0),
                          weight_pre_process=bnn.ops.GradualWeightBinarizer)
    model = mlp(bconfig)
    tl, vl = data()  # 4 steps per epoch
    rec = Recorder()
    cfg = cfg_for(tmp_path, "TRAINING.EPOCHS=3", SCHEDULE={"NAME": "gradual", "GRADUAL": {"START_EPOCH": 0, "END_EPOCH": 2,
                                                                                         "ACT_START_EPOCH": 1, "ACT_END_EPOCH": 3}})
    Trainer(model, tl, vl, cfg, callbacks=[rec]).fit()
    ts = [k / 4 for k in range(12)]
    assert [r["bin_ratio"] for r in rec.rows] == pytest.approx([min(t / 2, 1.0) for t in ts])
    assert [r["p"] for r in rec.rows] == pytest.approx([min(t / 2, 1.0) for t in ts])
    assert [r["ratio"] for r in rec.rows] == pytest.approx([min(max(t - 1, 0.0) / 2, 1.0) for t in ts])
    gw = [m for m in model.modules() if isinstance(m, bnn.ops.GradualWeightBinarizer)][0]
    assert gw.bin_ratio == pytest.approx(1.0) and gw.p == pytest.approx(1.0)
    # the ramped values are in the checkpoint (binarizer extra state and callback state)
    ckpt = load_checkpoint(str(tmp_path / "last.pth"))
    assert ckpt["callbacks"][0]["state"]["values"]["bin_ratio"] == pytest.approx(1.0)


def test_two_stage(tmp_path):
    """ReActNet's two stages through the one recipe driver with a Python model and loaders: stage 1 binary
    activations / float weights at weight decay 1e-5, stage 2 all binary at weight decay 0 from stage 1's
    final weights; running it again resumes (stage 1 not retrained)."""
    tl, vl = data()
    float_model = lambda: mlp(bnn.BConfig())  # noqa: E731 - a float MLP (an identity BConfig)

    class Snapshot(Callback):
        def __init__(self):
            self.states = []

        def on_train_begin(self, trainer):
            self.states.append({k: v.clone() for k, v in trainer.model.state_dict().items() if torch.is_tensor(v)})

    recipe = tmp_path / "two.yaml"
    recipe.write_text(f"""
HARDWARE: {{DEVICE: cpu, WORKERS: 0}}
EXPERIMENT: {{DIR: {tmp_path}, NAME: two, PROGRESS_BAR: false, TENSORBOARD: false, PLOT: false}}
MODEL: {{FLOAT_LAYERS: [_first_, _last_]}}
BCONFIG: {{ACTIVATION_PRE_PROCESS: BasicInputBinarizer, WEIGHT_PRE_PROCESS: XNORWeightBinarizer}}
LR_SCHEDULE: {{NAME: multistep}}
SCHEDULE:
  NAME: two_stage
  TWO_STAGE:
    STAGE1: {{EPOCHS: 2, OPTIMIZER: {{LR: 0.001, WEIGHT_DECAY: 0.00001}}, LR_SCHEDULE: {{MILESTONES: [1], GAMMAS: [0.1]}}}}
    STAGE2: {{EPOCHS: 1, OPTIMIZER: {{LR: 0.0002}}, LR_SCHEDULE: {{MILESTONES: [5], GAMMAS: [0.2]}}}}
""")
    cfg = load_config(str(recipe))
    snap = Snapshot()
    r2 = train(cfg, model=float_model(), train_loader=tl, val_loader=vl, callbacks=[snap], log=lambda *a: None)
    out = tmp_path / "two"
    s1 = load_checkpoint(str(out / "stage1" / "last.pth"))
    s2 = load_checkpoint(str(out / "stage2" / "last.pth"))
    extra = lambda sd, k: sd[f"2.{k}._extra_state"]["enabled"]  # noqa: E731
    assert extra(s1["model"], "activation_pre_process") is True and extra(s1["model"], "weight_pre_process") is False
    assert extra(s2["model"], "activation_pre_process") is True and extra(s2["model"], "weight_pre_process") is True
    # the configured decay where a group decays (latent weights, BN and biases have none by default)
    rest1 = [g for g in s1["optimizer"]["param_groups"] if g["name"] == "rest"]
    assert rest1 and all(g["weight_decay"] == 1e-5 for g in rest1)
    assert all(g["weight_decay"] == 0.0 for g in s2["optimizer"]["param_groups"])
    assert s1["optimizer"]["param_groups"][0]["lr"] == pytest.approx(1e-4)  # x0.1 from epoch 1
    assert s2["optimizer"]["param_groups"][0]["lr"] == pytest.approx(2e-4)
    # stage 2 starts from stage 1's final weights
    for k, v in snap.states[1].items():
        assert torch.equal(v, s1["model"][k]), k
    assert len(s1["history"]) == 2 and len(r2.history) == 1
    # running the pair again resumes: stage 1 is not retrained, stage 2 is complete
    r2b = train(cfg, model=float_model(), train_loader=tl, val_loader=vl, resume="auto", log=lambda *a: None)
    assert load_checkpoint(str(out / "stage1" / "last.pth"))["history"] == s1["history"]
    assert r2b.epochs_completed == 1 and r2b.history == r2.history


def test_build_callbacks_errors():
    cbs = build_callbacks([{"name": "staged", "weights_bin_start_epoch": 3}, "two_stage"])
    assert isinstance(cbs[0], StagedBinarizationSchedule) and cbs[0].weights_bin_start_epoch == 3
    with pytest.raises(ValueError, match="did you mean 'staged'"):
        build_callbacks([{"name": "stagged"}])
    with pytest.raises(ValueError, match="did you mean 'end_epoch'"):
        build_callbacks([{"name": "gradual", "end_epochs": 3}])
    with pytest.raises(ValueError, match="unknown field 'weights_start'"):
        StagedBinarizationSchedule(weights_start=1)
    with pytest.raises(ValueError, match=r"'disable_wd_start_epoch' is a setting of the run now: OPTIMIZER.DISABLE_WD_EPOCH"):
        build_callbacks([{"name": "staged", "disable_wd_start_epoch": 3}])
    assert isinstance(build_callbacks({"name": "gradual"})[0], GradualBinarizationSchedule)


def test_trainer_runs_the_schedule_of_its_config(tmp_path):
    """The Trainer builds the staged / gradual callback of ``SCHEDULE`` itself; a two-stage schedule is two
    runs, which the Trainer refuses to collapse into one."""
    trainer = Trainer(mlp(XNOR), *data(), cfg_for(tmp_path, SCHEDULE={"NAME": "staged"}))
    (staged,) = trainer.callbacks
    assert isinstance(staged, StagedBinarizationSchedule) and staged.weights_bin_start_epoch == Config().SCHEDULE.STAGED.WEIGHTS_BIN_START_EPOCH
    with pytest.raises(ValueError, match=r"SCHEDULE.NAME is two_stage.*bnn.engine.train\(cfg\)"):
        Trainer(mlp(XNOR), *data(), cfg_for(tmp_path, "SCHEDULE.NAME=two_stage"))
    assert len(Trainer(mlp(XNOR), *data(), cfg_for(tmp_path, "SCHEDULE.NAME=two_stage"),
                       callbacks=[{"name": "two_stage", "stage": 1}]).callbacks) == 1


def test_callbacks_are_a_contract(tmp_path):
    """The Trainer calls the Callback methods directly: a subclass overrides what it needs, its
    ``lr_factor`` and ``weight_decay_enabled`` are applied, and an object that is not a Callback is
    refused up front instead of being probed hook by hook."""
    class Halve(Callback):
        def lr_factor(self, t):
            return 0.5

        def weight_decay_enabled(self, epoch):
            return False

    tl, vl = data()
    rec = Recorder()
    Trainer(mlp(XNOR), tl, vl, cfg_for(tmp_path, "TRAINING.EPOCHS=1", OPTIMIZER={"LR": 0.1, "WEIGHT_DECAY": 1e-3}), callbacks=[Halve(), rec]).fit()
    assert [r["lr"] for r in rec.rows] == pytest.approx([0.05] * 4)
    assert all(w == 0.0 for r in rec.rows for w in r["wd"])

    class Duck:
        def on_epoch_begin(self, trainer, epoch):
            pass

    with pytest.raises(TypeError, match="must be a bnn.engine.Callback.*got Duck"):
        Trainer(mlp(XNOR), tl, vl, cfg_for(tmp_path), callbacks=[Duck()])
