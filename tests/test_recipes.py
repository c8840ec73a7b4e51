"""Shipped recipes and configs: every file validates and builds (model, BConfig, step configs,
callbacks) without training; a multi-step recipe keeps learned binarizer parameters between steps."""
import glob
import os
import shutil
import textwrap

import pytest
import torch
import yaml

import bnn
from bnn.cli import QUICKSTART
from bnn.engine import build_model, load_config, train
from bnn.engine.binarization_schedule import StagedBinarizationSchedule, build_callbacks, schedule_callbacks
from bnn.engine.steps import build_float_model, float_layers, plan_steps, prepare, step_config
from bnn.layers import BinaryLayerMixin
from bnn.ops import InputBiasBinarizer, XNORWeightBinarizer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = sorted(glob.glob(os.path.join(ROOT, "configs", "*.yaml"))) + [QUICKSTART]


def test_expected_configs_are_shipped():
    names = {os.path.basename(p) for p in CONFIGS}
    for name in ("quickstart.yaml", "env_example.yaml", "cifar10_xnor_resnet18.yaml", "cifar100_gradual_resnet18.yaml",
                 "imagenet_resnet18_staged.yaml", "imagenet_resnet18_nncf.yaml", "cifar10_resnet18_two_stage.yaml",
                 "imagenet_reactnet_a_two_step.yaml"):
        assert name in names


def test_quickstart_is_package_data_and_the_only_copy():
    """The quick start ships inside the package (setup.py package_data) and exists nowhere else."""
    assert QUICKSTART.startswith(os.path.dirname(bnn.__file__)) and os.path.isfile(QUICKSTART)
    assert not os.path.exists(os.path.join(ROOT, "configs", "quickstart.yaml"))
    with open(os.path.join(ROOT, "setup.py")) as fh:
        assert "configs/*.yaml" in fh.read()


@pytest.mark.parametrize("path", CONFIGS, ids=[os.path.basename(p) for p in CONFIGS])
def test_shipped_config_validates_and_builds(path, tmp_path):
    cfg = load_config(path)
    steps = plan_steps(cfg, str(tmp_path))
    assert steps and sum(s.epochs for s in steps) == cfg.total_epochs
    for step in steps:
        tcfg = step_config(cfg, step)
        assert tcfg.TRAINING.EPOCHS == step.epochs and tcfg.OPTIMIZER == step.optimizer
        build_callbacks(step.callbacks) + schedule_callbacks(tcfg.SCHEDULE)
    if os.path.basename(path).startswith("env_"):
        return
    # the model and its binarization, at the recipe's size (no data, no training)
    prepared = build_model(cfg)
    assert any(isinstance(m, BinaryLayerMixin) for m in prepared.modules())
    model = build_float_model(cfg, load_checkpoint=False)
    if cfg.NNCF_CONFIG:
        model, schedule = bnn.from_nncf_config(model, cfg.NNCF_CONFIG)
        assert schedule.weights_bin_start_epoch == 30
    else:
        ignore = float_layers(cfg, model)
        for step in steps:
            if step.bconfig is not None:
                model = prepare(model, step.bconfig, ignore)
    binary = [n for n, m in model.named_modules() if isinstance(m, BinaryLayerMixin)]
    assert binary, "nothing was binarized"
    kept_float = {n for n, m in model.named_modules() if type(m) in (torch.nn.Conv2d, torch.nn.Linear)}
    if "imagenet_resnet18" in path:  # NNCF: first conv, fc and downsample convs stay float
        assert {"first_conv", "fc", "layer2.0.downsample.0", "layer4.0.downsample.0"} <= kept_float


def test_staged_recipe_matches_nncf():
    cfg = load_config(os.path.join(ROOT, "configs", "imagenet_resnet18_staged.yaml"))
    st, lrs = cfg.SCHEDULE.STAGED, cfg.LR_SCHEDULE
    assert (st.ACTIVATIONS_BIN_START_EPOCH, st.WEIGHTS_BIN_START_EPOCH, lrs.NAME, lrs.START_EPOCH,
            lrs.DURATION_EPOCHS, cfg.OPTIMIZER.DISABLE_WD_EPOCH) == (10, 30, "poly", 60, 30, 60)
    assert cfg.OPTIMIZER.LR == pytest.approx(1e-3) and cfg.OPTIMIZER.WEIGHT_DECAY == pytest.approx(1e-5)
    assert cfg.TRAINING.EPOCHS == 90 and cfg.TRAINING.BATCH_SIZE == 384 and cfg.DISTILLATION.ENABLED


def test_multi_step_recipe_keeps_learned_binarizer_params(tmp_path):
    """Step 1 learns the RSign biases (binary activations, float weights); step 2 re-prepares the same
    model with XNOR weights added and a zero learning rate for binarizer parameters: the biases it
    starts from, and ends with, are exactly step 1's learned ones."""
    recipe = tmp_path / "steps.yaml"
    recipe.write_text(textwrap.dedent(f"""
        TRAINING: {{EPOCHS: 1, BATCH_SIZE: 32, SEED: 3}}
        HARDWARE: {{WORKERS: 0, DEVICE: cpu}}
        EXPERIMENT: {{DIR: {tmp_path}, NAME: steps, PROGRESS_BAR: false, TENSORBOARD: false, PLOT: false}}
        DATA: {{NAME: synthetic, TRAIN_SIZE: 96, VAL_SIZE: 32, KWARGS: {{image_size: 16}}}}
        MODEL: {{NAME: resnet18, KWARGS: {{stem: cifar, width: 4}}}}
        OPTIMIZER: {{LR: 0.05}}
        LR_SCHEDULE: {{NAME: constant}}
        STEPS:
          - NAME: acts
            EPOCHS: 1
            BCONFIG: {{ACTIVATION_PRE_PROCESS: InputBiasBinarizer}}
          - NAME: weights
            EPOCHS: 1
            BCONFIG: {{ACTIVATION_PRE_PROCESS: InputBiasBinarizer, WEIGHT_PRE_PROCESS: XNORWeightBinarizer}}
            OPTIMIZER: {{BINARIZER: {{LR_MULT: 0.0}}}}
    """))
    cfg = load_config(str(recipe))
    train(cfg, log=lambda *a: None)
    s1 = torch.load(tmp_path / "steps" / "step1_acts" / "last.pth", map_location="cpu", weights_only=False)["model"]
    s2 = torch.load(tmp_path / "steps" / "step2_weights" / "last.pth", map_location="cpu", weights_only=False)["model"]
    biases = [k for k in s1 if k.endswith("activation_pre_process.bias")]
    assert biases, "step 1 has no RSign biases"
    assert any(s1[k].abs().max() > 0 for k in biases), "step 1 learned nothing"
    for k in biases:
        torch.testing.assert_close(s2[k], s1[k], rtol=0, atol=0)
    # step 2 did train (with binary weights): the latent weights moved
    conv = "layer1.0.conv1.weight"
    assert not torch.equal(s1[conv], s2[conv])

    # and the same check through bnn.prepare_binary_model directly on the trained model
    model = build_float_model(cfg, num_classes=10)
    model = prepare(model, cfg.STEPS[0].BCONFIG, float_layers(cfg, model))
    model.load_state_dict(s1)
    model = prepare(model, cfg.STEPS[1].BCONFIG, float_layers(cfg, model))
    layer = model.layer1[0].conv1
    assert isinstance(layer.weight_pre_process, XNORWeightBinarizer)
    assert isinstance(layer.activation_pre_process, InputBiasBinarizer)
    torch.testing.assert_close(layer.activation_pre_process.bias, s1["layer1.0.conv1.activation_pre_process.bias"])


def test_a_model_prepared_in_python_keeps_its_binarizers(tmp_path):
    """``train(cfg, model=...)`` with a recipe that names no binarizer trains the model as given (re-preparing
    it with an empty BConfig would silently make it float again)."""
    import torch.nn as nn
    from torch.utils.data import DataLoader, TensorDataset

    model = bnn.prepare_binary_model(nn.Sequential(nn.Linear(6, 6), nn.Linear(6, 6), nn.Linear(6, 2)),
                                     bnn.presets.get_preset("xnor_net", activation_scale=False),
                                     ignore_layers_name=["_first_", "_last_"])
    x = torch.randn(32, 6)
    loader = DataLoader(TensorDataset(x, (x[:, 0] > 0).long()), batch_size=8)
    cfg = load_config(overrides=["TRAINING.EPOCHS=1", "HARDWARE.DEVICE=cpu", f"EXPERIMENT.DIR={tmp_path}",
                                 "EXPERIMENT.PROGRESS_BAR=false", "EXPERIMENT.TENSORBOARD=false", "EXPERIMENT.PLOT=false"])
    train(cfg, model=model, train_loader=loader, val_loader=loader, log=lambda *a: None)
    assert isinstance(model[1].weight_pre_process, XNORWeightBinarizer)
    state = torch.load(tmp_path / "default" / "last.pth", map_location="cpu", weights_only=False)["model"]
    assert "1.weight_pre_process._extra_state" in state


@pytest.mark.parametrize("path", CONFIGS, ids=[os.path.basename(p) for p in CONFIGS])
def test_saved_config_loads_back_unchanged(path, tmp_path):
    """A run's config.yaml is its config: read back, it equals the config the run trained with (so a resume
    reports only the overrides it is given)."""
    from bnn.engine.schema import config_diff
    from bnn.engine.steps import write_config

    cfg = load_config(path, overrides=["BCONFIG.PRESET=bireal"] if "quickstart" in path else ())
    write_config(cfg, str(tmp_path))
    again = load_config(str(tmp_path / "config.yaml"))
    assert config_diff(cfg, again) == [] and again == cfg


def test_nncf_json_sets_each_schedule_setting_in_its_one_place():
    """The NNCF recipe's JSON ``params`` land where a YAML recipe writes them: SCHEDULE.STAGED, the poly
    LR schedule and OPTIMIZER.DISABLE_WD_EPOCH (and the Trainer settings derived from them)."""
    from bnn.engine.lr_schedule import lr_schedule_args
    from bnn.engine.steps import _apply_nncf, _nncf

    cfg = load_config(os.path.join(ROOT, "configs", "imagenet_resnet18_nncf.yaml"))
    model, cfg = _apply_nncf(cfg, build_float_model(cfg, load_checkpoint=False), _nncf(cfg))
    st, lrs = cfg.SCHEDULE.STAGED, cfg.LR_SCHEDULE
    assert (cfg.SCHEDULE.NAME, st.ACTIVATIONS_BIN_START_EPOCH, st.WEIGHTS_BIN_START_EPOCH) == ("staged", 10, 30)
    assert (lrs.NAME, lrs.START_EPOCH, lrs.DURATION_EPOCHS, cfg.OPTIMIZER.DISABLE_WD_EPOCH) == ("poly", 60, 30, 60)
    (step,) = plan_steps(cfg, "")
    tcfg = step_config(cfg, step)
    assert lr_schedule_args(tcfg.LR_SCHEDULE) == {"start_epoch": 60, "duration_epochs": 30, "power": 2.1}
    (staged,) = schedule_callbacks(tcfg.SCHEDULE)
    assert isinstance(staged, StagedBinarizationSchedule)
    assert (staged.activations_bin_start_epoch, staged.weights_bin_start_epoch) == (10, 30)


def test_the_same_model_teacher_is_the_trained_float_step(tmp_path):
    """A recipe that trains float first, then distils into the binary network: its ``TEACHER: same`` is the
    network the float step trained (the untrained float model would teach noise), also on a resume that
    skips the finished float step."""
    from bnn.engine import Callback

    recipe = tmp_path / "kd.yaml"
    recipe.write_text(textwrap.dedent(f"""
        TRAINING: {{EPOCHS: 1, BATCH_SIZE: 32, SEED: 3}}
        HARDWARE: {{WORKERS: 0, DEVICE: cpu}}
        EXPERIMENT: {{DIR: {tmp_path}, NAME: kd, PROGRESS_BAR: false, TENSORBOARD: false, PLOT: false}}
        DATA: {{NAME: synthetic, TRAIN_SIZE: 64, VAL_SIZE: 32, KWARGS: {{image_size: 16}}}}
        MODEL: {{NAME: resnet18, KWARGS: {{stem: cifar, width: 4}}}}
        OPTIMIZER: {{LR: 0.05}}
        BCONFIG: {{ACTIVATION_PRE_PROCESS: LearnedThresholdBinarizer, WEIGHT_PRE_PROCESS: MagnitudeAwareWeightBinarizer}}
        STEPS:
          - NAME: float
            EPOCHS: 1
            BCONFIG: {{ACTIVATION_PRE_PROCESS: null, WEIGHT_PRE_PROCESS: null}}
          - NAME: binary
            EPOCHS: 1
            DISTILLATION: {{ENABLED: true, TEACHER: same}}
    """))

    class Teachers(Callback):
        seen = []

        def on_train_begin(self, trainer):
            Teachers.seen.append(None if trainer.teacher is None else
                                 {k: v.clone() for k, v in trainer.teacher.state_dict().items()})

    cfg = load_config(str(recipe))
    train(cfg, callbacks=[Teachers()], log=lambda *a: None)
    floats = torch.load(tmp_path / "kd" / "step1_float" / "last.pth", map_location="cpu", weights_only=False)["model"]
    untrained = build_float_model(cfg, num_classes=10).state_dict()
    assert Teachers.seen[0] is None  # the float step distils nothing
    taught = Teachers.seen[1]
    assert not torch.equal(untrained["layer1.0.conv1.weight"], floats["layer1.0.conv1.weight"])  # the float step trained
    for key, value in taught.items():
        torch.testing.assert_close(value, floats[key], rtol=0, atol=0)

    # interrupted before the binary step: a resume skips the finished float step, whose weights still teach
    shutil.rmtree(tmp_path / "kd" / "step2_binary")
    Teachers.seen.clear()
    train(cfg, callbacks=[Teachers()], resume="auto", log=lambda *a: None)
    assert len(Teachers.seen) == 1
    for key, value in Teachers.seen[-1].items():
        torch.testing.assert_close(value, floats[key], rtol=0, atol=0)
