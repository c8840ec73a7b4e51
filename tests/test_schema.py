"""The typed config schema: validation errors (one line: file, key path, closest valid key),
typed KEY=VALUE overrides, layering and step inheritance."""
import os
import textwrap

import pytest

import bnn

from bnn import BConfig
from bnn.engine.schema import (
    Config,
    ConfigError,
    build_bconfig,
    load_config,
    load_nncf_json,
    parse_override,
)
from bnn.ops import BasicInputBinarizer, InputBiasBinarizer, XNORWeightBinarizer


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return str(path)


def error_of(*args, **kwargs) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(*args, **kwargs)
    msg = str(info.value)
    assert "\n" not in msg, msg
    return msg


def test_defaults_validate():
    cfg = load_config()
    assert isinstance(cfg, Config)
    assert cfg.DATA.NAME == "synthetic" and cfg.TRAINING.EPOCHS == 3
    assert cfg.OPTIMIZER.LATENT_WEIGHTS.WEIGHT_DECAY == 0.0  # no wd on latent binary weights


def test_unknown_key_names_file_path_and_closest(tmp_path):
    path = write(tmp_path, "env_x.yaml", """
        TRAINING:
          EPOCH: 3
    """)
    msg = error_of(path)
    assert msg.startswith(path + ":")
    assert "'TRAINING.EPOCH'" in msg and "did you mean 'TRAINING.EPOCHS'" in msg


def test_unknown_nested_key_and_section(tmp_path):
    path = write(tmp_path, "a.yaml", """
        OPTIMIZER:
          LATENT_WEIGHTS: {WEIGHT_DECAI: 0.0}
    """)
    msg = error_of(path)
    assert "OPTIMIZER.LATENT_WEIGHTS.WEIGHT_DECAI" in msg and "OPTIMIZER.LATENT_WEIGHTS.WEIGHT_DECAY" in msg
    path = write(tmp_path, "b.yaml", "TRANING: {EPOCHS: 1}\n")
    assert "did you mean 'TRAINING'" in error_of(path)


def test_wrong_type_names_key_and_expected_type(tmp_path):
    path = write(tmp_path, "a.yaml", "TRAINING: {EPOCHS: ten}\n")
    msg = error_of(path)
    assert path in msg and "TRAINING.EPOCHS must be an int" in msg and "'ten'" in msg
    path = write(tmp_path, "b.yaml", "DATA: {DOWNLOAD: 3}\n")
    assert "DATA.DOWNLOAD must be a bool" in error_of(path)
    path = write(tmp_path, "c.yaml", "BCONFIG: {IGNORE: fc}\n")
    assert "BCONFIG.IGNORE must be a list" in error_of(path)
    path = write(tmp_path, "d.yaml", "OPTIMIZER: {NAME: adamm}\n")
    msg = error_of(path)
    assert "OPTIMIZER.NAME must be one of adam, adamw, sgd" in msg and "did you mean 'adam'" in msg


def test_yaml_scientific_notation_and_case_insensitive_keys(tmp_path):
    # PyYAML reads 1e-3 (no dot) as a string: a float field accepts it
    path = write(tmp_path, "a.yaml", """
        optimizer: {lr: 1e-3, weight_decay: 0}
        bconfig:
          activation_pre_process: {name: BasicInputBinarizer}
          weight_pre_process: {XNORWeightBinarizer: {center_weights: true}}
    """)
    cfg = load_config(path)
    assert cfg.OPTIMIZER.LR == pytest.approx(1e-3) and isinstance(cfg.OPTIMIZER.WEIGHT_DECAY, float)
    kw = build_bconfig(cfg.BCONFIG)
    bconfig = kw["bconfig"]
    assert isinstance(bconfig, BConfig)
    assert bconfig.activation_pre_process is BasicInputBinarizer
    assert bconfig.weight_pre_process.cls is XNORWeightBinarizer
    assert bconfig.weight_pre_process.kwargs == {"center_weights": True}
    assert bconfig.activation_post_process is None


def test_binarizer_name_and_argument_errors(tmp_path):
    path = write(tmp_path, "a.yaml", "BCONFIG: {WEIGHT_PRE_PROCESS: XNORWeightBinariser}\n")
    msg = error_of(path)
    assert "BCONFIG.WEIGHT_PRE_PROCESS" in msg and "did you mean 'XNORWeightBinarizer'" in msg
    path = write(tmp_path, "b.yaml", "BCONFIG: {WEIGHT_PRE_PROCESS: {XNORWeightBinarizer: {centre_weights: true}}}\n")
    msg = error_of(path)
    assert "'centre_weights'" in msg and "did you mean 'center_weights'" in msg
    path = write(tmp_path, "c.yaml", "BCONFIG: {OVERRIDES: {fc: {WEIGHT_PREPROCESS: null}}}\n")
    msg = error_of(path)
    assert "BCONFIG.OVERRIDES.fc.WEIGHT_PREPROCESS" in msg and "WEIGHT_PRE_PROCESS" in msg


def test_ignore_and_overrides_reach_prepare_kwargs(tmp_path):
    path = write(tmp_path, "a.yaml", """
        BCONFIG:
          ACTIVATION_PRE_PROCESS: InputBiasBinarizer
          WEIGHT_PRE_PROCESS: XNORWeightBinarizer
          IGNORE: [_first_, "$fc$"]
          OVERRIDES:
            layer4.1.conv2: {WEIGHT_PRE_PROCESS: XNORWeightBinarizer}
            layer1.0.conv1: {}
    """)
    kw = build_bconfig(load_config(path).BCONFIG, float_layers=["fc", "_first_"])
    assert kw["ignore_layers_name"] == ["_first_", "$fc$", "fc"]
    assert kw["bconfig"].activation_pre_process is InputBiasBinarizer
    over = kw["custom_config_layers_name"]
    assert over["layer1.0.conv1"].is_float
    assert over["layer4.1.conv2"].weight_pre_process is XNORWeightBinarizer
    assert over["layer4.1.conv2"].activation_pre_process is None  # not given: identity


def test_overrides_are_typed_by_the_schema():
    cfg = load_config(overrides=[
        "TRAINING.EPOCHS=5", "optimizer.lr=1e-2", "EXPERIMENT.NAME=007", "MODEL.KWARGS.width=8",
        "DATA.TRAIN_SIZE=null", "BCONFIG.IGNORE=[fc, first_conv]", "TRAINING.AMP=false",
        "BCONFIG.WEIGHT_PRE_PROCESS={name: XNORWeightBinarizer, center_weights: true}",
    ])
    assert cfg.TRAINING.EPOCHS == 5 and isinstance(cfg.TRAINING.EPOCHS, int)
    assert cfg.OPTIMIZER.LR == pytest.approx(0.01)
    assert cfg.EXPERIMENT.NAME == "007"  # a string field keeps the text as written
    assert cfg.MODEL.KWARGS == {"width": 8}
    assert cfg.DATA.TRAIN_SIZE is None and cfg.TRAINING.AMP is False
    assert cfg.BCONFIG.IGNORE == ["fc", "first_conv"]
    assert cfg.BCONFIG.WEIGHT_PRE_PROCESS == {"name": "XNORWeightBinarizer", "args": {"center_weights": True}}


@pytest.mark.parametrize("text, expect", [
    ("TRAINING.EPOCH=3", "unknown key 'TRAINING.EPOCH' (did you mean 'TRAINING.EPOCHS'?)"),
    ("TRAINNG.EPOCHS=3", "did you mean 'TRAINING'?"),
    ("TRAINING.EPOCHS=three", "TRAINING.EPOCHS must be an int"),
    ("OPTIMIZER.NAME=sdg", "did you mean 'sgd'?"),
    ("TRAINING.EPOCHS", "expected KEY=VALUE"),
])
def test_bad_override_is_one_line(text, expect):
    with pytest.raises(ConfigError) as info:
        parse_override(text)
    msg = str(info.value)
    assert msg.startswith(f"override {text!r}") and expect in msg and "\n" not in msg


def test_layering_defaults_recipe_env_overrides(tmp_path):
    recipe = write(tmp_path, "recipe.yaml", """
        TRAINING: {EPOCHS: 90, BATCH_SIZE: 384}
        OPTIMIZER: {LR: 0.001, WEIGHT_DECAY: 0.00001}
        MODEL: {NAME: resnet18, KWARGS: {num_classes: 1000}}
    """)
    env = write(tmp_path, "env_me.yaml", """
        PROJECT: {ROOT: /somewhere}
        HARDWARE: {WORKERS: 7}
        TRAINING: {BATCH_SIZE: 32}
        EXPERIMENT: {DIR: runs}
    """)
    cfg = load_config(recipe, env, ["TRAINING.EPOCHS=2"])
    assert cfg.TRAINING.EPOCHS == 2  # override > recipe
    assert cfg.TRAINING.BATCH_SIZE == 32  # env > recipe
    assert cfg.HARDWARE.WORKERS == 7 and cfg.OPTIMIZER.WEIGHT_DECAY == pytest.approx(1e-5)
    assert cfg.OPTIMIZER.NAME == "adam"  # default kept
    assert cfg.resolve_path(cfg.EXPERIMENT.DIR) == os.path.join("/somewhere", "runs")
    assert cfg.resolve_path("/abs/path") == "/abs/path"


def test_steps_inherit_top_level_sections_key_by_key(tmp_path):
    path = write(tmp_path, "steps.yaml", """
        OPTIMIZER: {LR: 0.004, WEIGHT_DECAY: 0.00001}
        BCONFIG: {ACTIVATION_PRE_PROCESS: InputBiasBinarizer, IGNORE: [fc]}
        STEPS:
          - {NAME: acts, EPOCHS: 2}
          - NAME: weights
            EPOCHS: 3
            BCONFIG: {WEIGHT_PRE_PROCESS: XNORWeightBinarizer}
            OPTIMIZER: {WEIGHT_DECAY: 0}
    """)
    cfg = load_config(path, overrides=["STEPS.1.EPOCHS=4", "OPTIMIZER.LR=0.003"])
    s1, s2 = cfg.STEPS
    assert cfg.total_epochs == 6
    assert s1.OPTIMIZER.LR == s2.OPTIMIZER.LR == pytest.approx(0.003)  # inherited, after the override
    assert s1.OPTIMIZER.WEIGHT_DECAY == pytest.approx(1e-5) and s2.OPTIMIZER.WEIGHT_DECAY == 0.0
    assert s1.BCONFIG.WEIGHT_PRE_PROCESS is None and s2.BCONFIG.WEIGHT_PRE_PROCESS["name"] == "XNORWeightBinarizer"
    assert s2.BCONFIG.ACTIVATION_PRE_PROCESS["name"] == "InputBiasBinarizer" and s2.BCONFIG.IGNORE == ["fc"]
    msg = error_of(path, overrides=["STEPS.5.EPOCHS=1"])
    assert "out of range" in msg


def test_two_stage_defaults_and_gamma_check(tmp_path):
    cfg = load_config(overrides=["SCHEDULE.NAME=two_stage", "SCHEDULE.TWO_STAGE.STAGE1.EPOCHS=2",
                                 "SCHEDULE.TWO_STAGE.STAGE2.EPOCHS=3"])
    two = cfg.SCHEDULE.TWO_STAGE
    assert two.STAGE1.OPTIMIZER.WEIGHT_DECAY == pytest.approx(1e-5) and two.STAGE2.OPTIMIZER.WEIGHT_DECAY == 0.0
    assert cfg.total_epochs == 5
    path = write(tmp_path, "a.yaml", "LR_SCHEDULE: {NAME: multistep, MILESTONES: [40, 60], GAMMAS: [0.1]}\n")
    msg = error_of(path)
    assert "LR_SCHEDULE.GAMMAS has 1 values but LR_SCHEDULE.MILESTONES has 2" in msg


def test_bad_files_are_one_line(tmp_path):
    missing = str(tmp_path / "nope.yaml")
    assert error_of(missing) == f"{missing}: config file not found"
    path = write(tmp_path, "bad.yaml", "TRAINING: {EPOCHS: 3\n")
    msg = error_of(path)
    assert path in msg and "invalid YAML" in msg
    path = write(tmp_path, "list.yaml", "- 1\n- 2\n")
    assert "top level must be a mapping" in error_of(path)


def test_nncf_json_with_comments(tmp_path):
    path = write(tmp_path, "nncf.json", """
        {
            "algorithm": "binarization",
            "mode": "xnor", // 'xnor' or 'dorefa'
            "params": {"activations_bin_start_epoch": 10, // comment with "quotes"
                       "weights_bin_start_epoch": 30},
            "ignored_scopes": ["ResNet/Linear[fc]"]
        }
    """)
    data = load_nncf_json(path)
    assert data["mode"] == "xnor" and data["params"]["weights_bin_start_epoch"] == 30
    recipe = write(tmp_path, "r.yaml", "NNCF_CONFIG: nncf.json\n")
    assert load_config(recipe).NNCF_CONFIG == path  # relative to the YAML file
    bad = write(tmp_path, "r2.yaml", "NNCF_CONFIG: missing.json\n")
    assert "NNCF config file not found" in error_of(bad)


# ---- presets, the binarizer registry, one place per setting ------------------------------------------
def test_bconfig_preset_by_name_and_explicit_keys_override_it(tmp_path):
    from bnn.ops import MagnitudeAwareWeightBinarizer

    path = write(tmp_path, "p.yaml", "BCONFIG: {PRESET: reactnet}\n")
    built = build_bconfig(load_config(path).BCONFIG)["bconfig"]
    assert built.activation_pre_process is InputBiasBinarizer
    assert built.weight_pre_process is MagnitudeAwareWeightBinarizer and built.activation_post_process is None
    path = write(tmp_path, "q.yaml", "BCONFIG: {PRESET: reactnet, WEIGHT_PRE_PROCESS: XNORWeightBinarizer}\n")
    built = build_bconfig(load_config(path).BCONFIG)["bconfig"]
    assert built.activation_pre_process is InputBiasBinarizer and built.weight_pre_process is XNORWeightBinarizer
    # a preset given on the command line replaces the file's binarizers; a later explicit key wins again
    cfg = load_config(path, overrides=["BCONFIG.PRESET=xnor_net", "BCONFIG.WEIGHT_PRE_PROCESS=null"])
    built = build_bconfig(cfg.BCONFIG)["bconfig"]
    assert built.activation_pre_process is BasicInputBinarizer and built.weight_pre_process is None
    assert built.activation_post_process is not None  # XNOR-Net's K scale
    # relu_friendly's real shortcut is an output process, named in YAML and removed with null
    from bnn.ops import RealShortcut

    cfg = load_config(path, overrides=["BCONFIG.PRESET=relu_friendly"])
    assert build_bconfig(cfg.BCONFIG)["bconfig"].activation_post_process is RealShortcut
    cfg = load_config(path, overrides=["BCONFIG.PRESET=relu_friendly", "BCONFIG.ACTIVATION_POST_PROCESS=null"])
    assert build_bconfig(cfg.BCONFIG)["bconfig"] == bnn.presets.relu_friendly(shortcut=False)
    # a step names its own preset
    path = write(tmp_path, "s.yaml", "STEPS: [{EPOCHS: 1, BCONFIG: {PRESET: bireal}}]\n")
    assert load_config(path).STEPS[0].BCONFIG.WEIGHT_PRE_PROCESS["name"] == "MagnitudeAwareWeightBinarizer"
    msg = error_of(write(tmp_path, "bad.yaml", "BCONFIG: {PRESET: reactnt}\n"))
    assert "BCONFIG.PRESET" in msg and "did you mean 'reactnet'" in msg and "bad.yaml" in msg


def test_a_user_registered_binarizer_works_by_name(tmp_path):
    import torch

    from bnn.ops import SignBinarizer, register_binarizer

    @register_binarizer("schema_test_sign")
    class SchemaTestSign(SignBinarizer):
        def __init__(self, margin: float = 0.0):
            super().__init__()
            self.margin = margin

        def forward(self, x):
            return torch.where(x < self.margin, -1.0, 1.0)

    path = write(tmp_path, "u.yaml", "BCONFIG: {ACTIVATION_PRE_PROCESS: {schema_test_sign: {margin: 0.5}}}\n")
    factory = build_bconfig(load_config(path).BCONFIG)["bconfig"].activation_pre_process
    module = factory()
    assert isinstance(module, SchemaTestSign) and module.margin == 0.5
    assert module(torch.tensor([0.4, 0.6])).tolist() == [-1.0, 1.0]
    msg = error_of(write(tmp_path, "v.yaml", "BCONFIG: {ACTIVATION_PRE_PROCESS: {schema_test_sign: {margn: 1}}}\n"))
    assert "did you mean 'margin'" in msg
    msg = error_of(write(tmp_path, "w.yaml", "BCONFIG: {ACTIVATION_PRE_PROCESS: schema_test_sing}\n"))
    assert "did you mean 'schema_test_sign'" in msg


def test_old_staged_spellings_map_to_the_one_place(tmp_path):
    path = write(tmp_path, "old.yaml", """
        LR_SCHEDULE: {NAME: constant}
        SCHEDULE:
          NAME: staged
          STAGED: {WEIGHTS_BIN_START_EPOCH: 3, LR_POLY_DROP_START_EPOCH: 6, LR_POLY_DROP_DURATION_EPOCHS: 4,
                   DISABLE_WD_START_EPOCH: 6}
    """)
    cfg = load_config(path)
    assert (cfg.LR_SCHEDULE.NAME, cfg.LR_SCHEDULE.START_EPOCH, cfg.LR_SCHEDULE.DURATION_EPOCHS) == ("poly", 6, 4)
    assert cfg.OPTIMIZER.DISABLE_WD_EPOCH == 6 and cfg.SCHEDULE.STAGED.WEIGHTS_BIN_START_EPOCH == 3
    cfg = load_config(overrides=["SCHEDULE.STAGED.DISABLE_WD_START_EPOCH=4"])
    assert cfg.OPTIMIZER.DISABLE_WD_EPOCH == 4
    assert not hasattr(cfg.SCHEDULE.STAGED, "DISABLE_WD_START_EPOCH")  # one place only


def test_python_and_yaml_train_the_same_request(tmp_path):
    """One config model: ``Config.from_dict``, ``Config.replace``, a YAML file and ``KEY=VALUE`` overrides of
    the same request give the same config, and Trainers built from them the same parameter groups (no weight
    decay on latent weights and BN/bias unless set) and the same learning-rate curve."""
    import copy
    import math

    import torch.nn as nn
    import yaml

    import bnn
    from bnn.engine import Trainer

    model = bnn.prepare_binary_model(nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4), nn.Linear(4, 4), nn.Linear(4, 2)),
                                     BConfig(activation_pre_process=BasicInputBinarizer,
                                             weight_pre_process=XNORWeightBinarizer),
                                     ignore_layers_name=["_first_", "_last_"])
    request = {"OPTIMIZER": {"WEIGHT_DECAY": 1e-4, "LR": 0.5}, "LR_SCHEDULE": {"NAME": "cosine", "WARMUP_EPOCHS": 0.5}}
    path = tmp_path / "request.yaml"
    path.write_text(yaml.safe_dump(request))
    configs = [Config.from_dict(request), Config().replace(**request), load_config(str(path)),
               load_config(overrides=["OPTIMIZER.WEIGHT_DECAY=1e-4", "OPTIMIZER.LR=0.5", "LR_SCHEDULE.WARMUP_EPOCHS=0.5"])]
    assert all(c == configs[0] for c in configs[1:])

    def training(cfg):
        trainer = Trainer(copy.deepcopy(model), [[None, None]] * 4, None, cfg.replace("HARDWARE.DEVICE=cpu"),
                          exp_dir=tmp_path / "run")
        groups = {g["name"]: (g["weight_decay"], g["initial_lr"]) for g in trainer.optimizer.param_groups}
        return groups, [trainer.scheduler.lr_lambdas[0](step) for step in range(4 * trainer.epochs)], trainer.epochs

    runs = [training(c) for c in configs]
    assert all(r == runs[0] for r in runs[1:])
    assert runs[0][0] == {"latent_weights": (0.0, 0.5), "bn_bias": (0.0, 0.5), "rest": (1e-4, 0.5)}
    epochs = Config().TRAINING.EPOCHS  # cosine over the run, times the warmup ramp over its first half epoch
    cosine = [(1 + math.cos(math.pi * t / epochs)) / 2 * min(t / 0.5, 1.0) for t in (0.0, 0.25, 0.5, 0.75)]
    assert runs[0][1][:4] == pytest.approx(cosine) and runs[0][2] == epochs
    # one set of defaults: the schema's, whatever the entry point
    assert load_config() == Config() == Config.from_dict({})
    trainer = Trainer(copy.deepcopy(model), [], None, {"hardware": {"device": "cpu"}}, exp_dir=tmp_path)
    assert trainer.cfg == Config().replace("HARDWARE.DEVICE=cpu")
    with open(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "setup.py")) as fh:
        assert "configs/*.yaml" in fh.read()


def test_replace_validates_like_overrides_and_reaches_inheriting_stages():
    """``Config.replace`` goes through the override path (same one-line errors), and a changed top-level
    section reaches the two-stage stages that inherit it, while a stage's own value stays."""
    cfg = Config.from_dict({"SCHEDULE": {"NAME": "two_stage", "TWO_STAGE": {"STAGE2": {"OPTIMIZER": {"LR": 2e-4}}}}})
    two = cfg.SCHEDULE.TWO_STAGE
    assert (two.STAGE1.OPTIMIZER.LR, two.STAGE2.OPTIMIZER.LR, two.STAGE2.OPTIMIZER.WEIGHT_DECAY) == (1e-3, 2e-4, 0.0)
    new = cfg.replace("OPTIMIZER.LR=0.01", OPTIMIZER={"BETAS": [0.5, 0.9]}, TRAINING={"EPOCHS": 7})
    two = new.SCHEDULE.TWO_STAGE
    assert (new.OPTIMIZER.LR, two.STAGE1.OPTIMIZER.LR, two.STAGE2.OPTIMIZER.LR) == (0.01, 0.01, 2e-4)
    assert two.STAGE1.OPTIMIZER.BETAS == two.STAGE2.OPTIMIZER.BETAS == [0.5, 0.9] and new.TRAINING.EPOCHS == 7
    assert cfg.OPTIMIZER.LR == 1e-3  # a copy
    with pytest.raises(ConfigError, match=r"^override 'OPTIMIZER.LRR=1': unknown key 'OPTIMIZER.LRR' \(did you mean 'OPTIMIZER.LR'\?\)$"):
        cfg.replace("OPTIMIZER.LRR=1")
    with pytest.raises(ConfigError, match=r"^Config.replace: TRAINING.EPOCHS must be an int, got str 'ten'$"):
        cfg.replace(TRAINING={"EPOCHS": "ten"})


def test_config_from_record_reads_back_a_recorded_config():
    """What a run records (config_to_dict) reads back as the same config, steps included, without reading the
    files it names; a damaged record fails in one line naming its source and the closest key."""
    from bnn.engine.schema import config_from_record, config_to_dict

    cfg = Config.from_dict({"TRAINING": {"EPOCHS": 3}, "OPTIMIZER": {"LR": 3e-3},
                            "STEPS": [{"NAME": "a", "EPOCHS": 1}, {"NAME": "b", "OPTIMIZER": {"LR": 1e-3}}]})
    record = config_to_dict(cfg)
    assert config_from_record(record, "ckpt") == cfg
    record["NNCF_CONFIG"] = "/nowhere/nncf.json"  # a file on the training machine: not read back
    assert config_from_record(record, "ckpt").NNCF_CONFIG == "/nowhere/nncf.json"
    record["TRAINING"]["EPOHCS"] = record["TRAINING"].pop("EPOCHS")
    with pytest.raises(ConfigError) as info:
        config_from_record(record, "run/best.pth (recorded recipe)")
    msg = str(info.value)
    assert "\n" not in msg and "run/best.pth (recorded recipe)" in msg and "EPOCHS" in msg
