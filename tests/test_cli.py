"""``bnn-train`` / ``recipes/run_dev.py`` end to end at a reduced size: artefacts, accuracy above
chance, ``-u USER`` env files, overrides, ``--resume``, one-line errors."""
import csv
import os
import subprocess
import sys
import textwrap

import pytest
import torch
import yaml

from bnn.cli import main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUN_DEV = os.path.join(ROOT, "recipes", "run_dev.py")

# The quick start at a reduced size: 4 shape classes, 640 training images, a width-8 binary ResNet-18.
SMALL = [
    "HARDWARE.WORKERS=0", "HARDWARE.DEVICE=cpu",
    "DATA.TRAIN_SIZE=640", "DATA.VAL_SIZE=200", "DATA.KWARGS={num_classes: 4}",
    "MODEL.KWARGS.width=8", "TRAINING.BATCH_SIZE=32",
    "EXPERIMENT.PROGRESS_BAR=false", "EXPERIMENT.TENSORBOARD=false",
]


def rows(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def top1_column(row):
    for key in ("val_top1", "val/top1", "val_acc1"):
        if key in row:
            return float(row[key])
    raise KeyError(f"no validation top-1 column in {sorted(row)}")


def test_run_dev_end_to_end_trains_above_chance(tmp_path):
    """``recipes/run_dev.py``, as a user runs it, on the quick-start model at a reduced size (4 classes,
    2000 training images, 6 epochs): checkpoint, metrics.csv and the plot land in
    EXPERIMENT.DIR/<exp_name>, and validation accuracy is far above chance (25%)."""
    cmd = [sys.executable, RUN_DEV, "--exp_name", "small", "--seed", "0", f"EXPERIMENT.DIR={tmp_path}", *SMALL,
           "DATA.TRAIN_SIZE=2000", "DATA.VAL_SIZE=400", "MODEL.KWARGS.width=16", "TRAINING.EPOCHS=6",
           "OPTIMIZER.LR=0.005"]
    proc = subprocess.run(cmd, cwd=str(tmp_path), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    exp = tmp_path / "small"
    for name in ("last.pth", "best.pth", "metrics.csv", "curves.png", "config.yaml", "train.log"):
        assert (exp / name).is_file(), name
    assert (exp / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    history = rows(exp / "metrics.csv")
    assert len(history) == 6
    best = max(top1_column(r) for r in history)
    assert best > 35.0, f"validation top-1 {best}% is not far above chance (25%)"  # measured: 45%
    saved = yaml.safe_load((exp / "config.yaml").read_text())
    assert saved["EXPERIMENT"]["NAME"] == "small" and saved["TRAINING"]["SEED"] == 0
    ckpt = torch.load(exp / "last.pth", map_location="cpu", weights_only=False)
    assert ckpt["epoch"] == 6
    assert any(k.endswith("weight_pre_process._extra_state") for k in ckpt["model"])  # a binary model


def test_bnn_train_console_script_prints_quickstart(tmp_path):
    exe = os.path.join(os.path.dirname(sys.executable), "bnn-train")
    if not os.path.exists(exe):
        pytest.skip("bnn-train is not installed in this environment (pip install -e .)")
    proc = subprocess.run([exe, "--print-config", "TRAINING.EPOCHS=1"], cwd=str(tmp_path), capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    cfg = yaml.safe_load(proc.stdout)
    assert cfg["DATA"]["NAME"] == "synthetic" and cfg["EXPERIMENT"]["NAME"] == "quickstart"
    assert cfg["TRAINING"]["EPOCHS"] == 1


def test_user_env_file_and_shorthands(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "env_tester.yaml").write_text(textwrap.dedent("""
        PROJECT: {ROOT: /data/me}
        HARDWARE: {WORKERS: 5}
        TRAINING: {EPOCHS: 7, BATCH_SIZE: 48}
        EXPERIMENT: {DIR: logs}
    """))
    assert main(["-u", "tester", "--exp_name", "e1", "--seed", "9", "--gpu", "cpu", "--print-config",
                 "TRAINING.EPOCHS=2"]) == 0
    cfg = yaml.safe_load(capsys.readouterr().out)
    assert cfg["PROJECT"]["ROOT"] == "/data/me" and cfg["HARDWARE"]["WORKERS"] == 5
    assert cfg["TRAINING"]["BATCH_SIZE"] == 48 and cfg["TRAINING"]["EPOCHS"] == 2  # override > env
    assert cfg["TRAINING"]["SEED"] == 9 and cfg["EXPERIMENT"]["NAME"] == "e1" and cfg["HARDWARE"]["DEVICE"] == "cpu"
    # with --config, the env file goes on top of the recipe
    assert main(["-u", "tester", "--config", os.path.join(ROOT, "configs", "cifar10_xnor_resnet18.yaml"),
                 "--print-config"]) == 0
    cfg = yaml.safe_load(capsys.readouterr().out)
    assert cfg["DATA"]["NAME"] == "cifar10" and cfg["TRAINING"]["EPOCHS"] == 7
    # an unknown user: one line naming the file looked for and the closest known user
    assert main(["-u", "testr", "--print-config"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "env_testr.yaml" in err and "did you mean '-u tester'?" in err


def test_config_errors_exit_with_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    bad = tmp_path / "bad.yaml"
    bad.write_text("TRAINING:\n  EPOHCS: 3\n")
    assert main(["--config", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"bnn-train: error: {bad}: unknown key 'TRAINING.EPOHCS' (did you mean 'TRAINING.EPOCHS'?)"
    assert main(["OPTIMIZER.LRR=0.1"]) == 2
    err = capsys.readouterr().err.strip()
    assert "'OPTIMIZER.LRR'" in err and "did you mean 'OPTIMIZER.LR'" in err and "\n" not in err
    assert main(["TRAINING.EPOCHS=1.5"]) == 2
    assert "TRAINING.EPOCHS must be an int" in capsys.readouterr().err
    assert main(["MODEL.NAME=resnet81", *SMALL, f"EXPERIMENT.DIR={tmp_path}"]) == 2
    err = capsys.readouterr().err.strip()
    assert "MODEL" in err and "resnet18" in err and "\n" not in err


def test_missing_data_root_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["DATA.NAME=cifar10", f"DATA.ROOT={tmp_path / 'nowhere'}", f"EXPERIMENT.DIR={tmp_path}"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "nowhere" in err
    assert not (tmp_path / "quickstart" / "last.pth").exists()


def test_resume_through_the_cli_matches_an_uninterrupted_run(tmp_path, monkeypatch, capsys):
    """2 epochs in one go == 1 epoch, then ``--resume`` with 2 epochs (constant LR, fixed seed, CPU)."""
    monkeypatch.chdir(tmp_path)
    tiny = [*SMALL, "DATA.TRAIN_SIZE=128", "DATA.VAL_SIZE=32", "MODEL.KWARGS.width=4", "LR_SCHEDULE.NAME=constant",
            "EXPERIMENT.PLOT=false", f"EXPERIMENT.DIR={tmp_path}"]
    assert main(["--exp_name", "full", "TRAINING.EPOCHS=2", *tiny]) == 0
    assert main(["--exp_name", "split", "TRAINING.EPOCHS=1", *tiny]) == 0
    assert main(["--exp_name", "split", "--resume", "TRAINING.EPOCHS=2", *tiny]) == 0
    full = torch.load(tmp_path / "full" / "last.pth", map_location="cpu", weights_only=False)
    split = torch.load(tmp_path / "split" / "last.pth", map_location="cpu", weights_only=False)
    assert split["epoch"] == 2 and len(rows(tmp_path / "split" / "metrics.csv")) == 2
    for key, value in full["model"].items():
        if torch.is_tensor(value):
            torch.testing.assert_close(split["model"][key], value, rtol=0, atol=0, msg=key)
    # a corrupted checkpoint: one line, the checkpoint left as it was
    (tmp_path / "split" / "last.pth").write_bytes(b"not a checkpoint")
    capsys.readouterr()
    assert main(["--exp_name", "split", "--resume", "TRAINING.EPOCHS=3", *tiny]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "last.pth" in err
    assert (tmp_path / "split" / "last.pth").read_bytes() == b"not a checkpoint"
    assert main(["--resume", str(tmp_path / "missing.pth"), *tiny]) == 2
    assert "no such checkpoint" in capsys.readouterr().err


TINY = [*SMALL, "DATA.TRAIN_SIZE=64", "DATA.VAL_SIZE=32", "MODEL.KWARGS.width=4", "LR_SCHEDULE.NAME=constant",
        "EXPERIMENT.PLOT=false", "TRAINING.EPOCHS=1"]


def snapshot(folder):
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_second_run_never_touches_the_first_runs_files(tmp_path, monkeypatch, capsys):
    """A new run into a folder holding a run refuses (one line naming the folder and both ways out) and leaves
    every file byte-identical; ``--overwrite`` replaces the run; the run directory loads back for evaluation."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # not installed: a warning, not silence
    args = ["--exp_name", "first", *TINY, f"EXPERIMENT.DIR={tmp_path}", "EXPERIMENT.TENSORBOARD=true"]
    assert main(args) == 0
    assert "tensorboard package is not installed" in capsys.readouterr().out
    run = tmp_path / "first"
    before = snapshot(run)
    assert {"config.yaml", "metrics.csv", "last.pth", "best.pth", "train.log"} <= {str(p) for p in before}
    assert main(args + ["TRAINING.EPOCHS=2"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and str(run) in err and "--resume" in err and "--overwrite" in err
    assert snapshot(run) == before
    # --overwrite: a fresh run, none of the earlier rows left; a file of the user's own stays
    (run / "notes.txt").write_text("mine")
    assert main(args + ["TRAINING.EPOCHS=2", "--overwrite"]) == 0
    assert [r["epoch"] for r in rows(run / "metrics.csv")] == ["1", "2"]
    assert (run / "notes.txt").read_text() == "mine"

    # what evaluation and packing use: the saved config and the model as training built it
    from bnn.engine import build_model, build_val_loader, load_run_config

    cfg = load_run_config(str(run))
    assert cfg.TRAINING.EPOCHS == 2 and cfg.MODEL.KWARGS["width"] == 4
    model = build_model(cfg)
    state = torch.load(run / "best.pth", map_location="cpu", weights_only=False)["model"]
    model.load_state_dict(state)  # strict: the same layers and binarizers as trained
    loader = build_val_loader(cfg)
    images, labels = next(iter(loader))
    assert len(loader.dataset) == 32 and int(labels.max()) < 4
    assert model.eval()(images).shape == (len(images), state["fc.weight"].shape[0])


def test_resume_starts_from_the_runs_config_and_refuses_a_broken_schedule(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["--exp_name", "r", *TINY, f"EXPERIMENT.DIR={tmp_path}"]) == 0
    run = tmp_path / "r"
    before = snapshot(run)
    capsys.readouterr()
    # the batch size indexes the schedule: refused, one line, nothing touched
    assert main(["--exp_name", "r", f"EXPERIMENT.DIR={tmp_path}", "--resume", "TRAINING.BATCH_SIZE=16"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "TRAINING.BATCH_SIZE 32 -> 16" in err
    assert snapshot(run) == before
    # fewer epochs than the run has: refused
    assert main(["--exp_name", "r", f"EXPERIMENT.DIR={tmp_path}", "--resume", "TRAINING.EPOCHS=0"]) == 2
    assert "TRAINING.EPOCHS >= 1" in capsys.readouterr().err
    # only the overrides given change: the run's own settings (width 4, 64 images) come from its config.yaml
    assert main(["--exp_name", "r", f"EXPERIMENT.DIR={tmp_path}", "--resume", "TRAINING.EPOCHS=2"]) == 0
    out = capsys.readouterr().out
    assert "TRAINING.EPOCHS 1 -> 2" in out
    log_lines = (run / "train.log").read_text().splitlines()
    changed = [i for i, line in enumerate(log_lines) if "resume: settings changed" in line]
    resumed = [i for i, line in enumerate(log_lines) if "resumed from" in line]
    assert len(changed) == 1 and "TRAINING.EPOCHS 1 -> 2" in log_lines[changed[0]]
    assert out.count("resume: settings changed") == 1  # on the console once, not echoed again
    assert resumed and changed[0] < resumed[0]  # the log tells what changed before it goes on
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["MODEL"]["KWARGS"]["width"] == 4 and saved["TRAINING"]["EPOCHS"] == 2
    history = rows(run / "metrics.csv")
    assert len(history) == 2 and float(history[1]["lr"]) > 0


def test_run_dev_with_a_missing_gpu_is_one_line_and_leaves_no_folder(tmp_path):
    """The README's ``run_dev.py -u dima --exp_name try1 --gpu 0 --seed 1`` on a machine without that GPU."""
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "env_dima.yaml").write_text("EXPERIMENT: {DIR: experiments}\n")
    gpu = str(torch.cuda.device_count())  # one past the last GPU: 0 on a machine without any
    proc = subprocess.run([sys.executable, RUN_DEV, "-u", "dima", "--exp_name", "try1", "--gpu", gpu, "--seed", "1"],
                          cwd=str(tmp_path), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    err = proc.stderr.strip()
    assert "\n" not in err and f"cuda:{gpu}" in err, err
    assert not (tmp_path / "experiments").exists()


def test_print_config_checks_model_arguments(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["--print-config", "MODEL.KWARGS.widht=32"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "MODEL.KWARGS.widht" in err and "did you mean 'width'" in err
    assert main(["--print-config", "DISTILLATION.ENABLED=true", "DISTILLATION.TEACHER=resnet34",
                 "DISTILLATION.TEACHER_KWARGS.num_clases=10"]) == 2
    err = capsys.readouterr().err.strip()
    assert "DISTILLATION.TEACHER_KWARGS.num_clases" in err and "did you mean 'num_classes'" in err


def test_resume_overrides_reach_the_stages_that_inherit_them(tmp_path):
    """A saved two-stage config holds each stage's full sections; an override on --resume still reaches the stage
    that inherited the top-level value, and leaves a stage's own value alone."""
    from bnn.engine.schema import Config, ConfigError, config_to_dict
    from bnn.engine.steps import resume_config

    cfg = Config.from_dict({"SCHEDULE": {"NAME": "two_stage", "TWO_STAGE": {"STAGE2": {"OPTIMIZER": {"LR": 2e-4}}}},
                            "OPTIMIZER": {"LR": 1e-3}, "EXPERIMENT": {"DIR": str(tmp_path), "NAME": "two"}})
    run = tmp_path / "two"
    run.mkdir()
    (run / "config.yaml").write_text(yaml.safe_dump(config_to_dict(cfg)))
    notes = []
    new = resume_config(cfg, str(run), ["OPTIMIZER.LR=5e-4"], log=notes.append)
    assert new.OPTIMIZER.LR == 5e-4
    assert new.SCHEDULE.TWO_STAGE.STAGE1.OPTIMIZER.LR == 5e-4  # inherited: follows the override
    assert new.SCHEDULE.TWO_STAGE.STAGE2.OPTIMIZER.LR == 2e-4  # its own value: kept
    assert any("OPTIMIZER.LR 0.001 -> 0.0005" in n for n in notes)
    # a stage's epochs or binarizers still index the schedule: refused
    with pytest.raises(ConfigError, match="STAGE2.EPOCHS"):
        resume_config(cfg, str(run), ["SCHEDULE.TWO_STAGE.STAGE2.EPOCHS=7"], log=notes.append)
