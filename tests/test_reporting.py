"""What a run says: the start banner, throughput per log interval, and the curves' decisions
(best epoch marked, axes labelled, top-5 only where it means something, redrawn every epoch)."""

import pytest
import torch
import torch.nn as nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

import bnn
from bnn.engine import Callback, Config, Trainer, reporting
from bnn.engine.checkpoint import environment_info
from bnn.engine.reporting import Throughput, curve_plan, plot_metrics, run_banner


def binary_mlp():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(12, 16), nn.BatchNorm1d(16), nn.Linear(16, 16), nn.BatchNorm1d(16),
                          nn.Linear(16, 4))
    bconfig = bnn.BConfig(activation_pre_process=bnn.ops.BasicInputBinarizer,
                          weight_pre_process=bnn.ops.XNORWeightBinarizer)
    return bnn.prepare_binary_model(model, bconfig, ignore_layers_name=["_first_", "_last_"])


def loaders(n_train=64, n_val=32):
    g = torch.Generator().manual_seed(0)
    data = lambda n: TensorDataset(torch.randn(n, 12, generator=g), torch.randint(0, 4, (n,), generator=g))  # noqa: E731
    return DataLoader(data(n_train), batch_size=16), DataLoader(data(n_val), batch_size=16)


def rows(top1, top5=None):
    out = []
    for i, t in enumerate(top1):
        row = {"epoch": i + 1, "train_loss": 1.0, "val_loss": 1.0, "train_top1": t, "val_top1": t, "lr": 0.1}
        if top5 is not None:
            row["val_top5"] = top5[i]
        out.append(row)
    return out


# ---------------------------------------------------------------- curves
def test_top5_is_drawn_only_with_more_than_10_classes():
    history = rows([10, 20, 30], top5=[60, 70, 80])
    accuracy = lambda plan: plan[1]["keys"]  # noqa: E731
    assert "val_top5" not in accuracy(curve_plan(history, num_classes=10))
    assert "val_top5" not in accuracy(curve_plan(history, num_classes=4))
    assert "val_top5" in accuracy(curve_plan(history, num_classes=100))
    # class count unknown: top-5 stuck at 100% says nothing, below 100% it is drawn
    assert "val_top5" not in accuracy(curve_plan(rows([10, 20], top5=[100.0, 100.0])))
    assert "val_top5" in accuracy(curve_plan(rows([10, 20], top5=[90.0, 100.0])))


def test_curves_mark_the_best_epoch_and_label_both_axes():
    plan = curve_plan(rows([10.0, 30.0, 30.0, 20.0]), num_classes=10)
    assert [p["title"] for p in plan] == ["loss", "accuracy", "learning rate"]
    assert all(p["best_epoch"] == 2 for p in plan)  # the first of the tied best epochs, as the trainer picks it
    assert plan[0]["keys"] == ["train_loss", "val_loss"] and plan[1]["keys"] == ["train_top1", "val_top1"]
    assert all(p["ylabel"] for p in plan)
    # without validation the best epoch is the best training top-1
    train_only = [{"epoch": e, "train_top1": t} for e, t in ((1, 5.0), (2, 9.0), (3, 7.0))]
    assert curve_plan(train_only)[1]["best_epoch"] == 2


def test_plot_metrics_labels_the_axes_it_draws(tmp_path, monkeypatch):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    seen = {}
    real_close = plt.close

    def keep(fig=None):  # look at the figure before it is closed
        seen["axes"] = [(ax.get_xlabel(), ax.get_ylabel(), [l.get_label() for l in ax.get_lines()]) for ax in fig.axes]
        real_close(fig)

    monkeypatch.setattr(plt, "close", keep)
    png = plot_metrics(rows([10.0, 40.0, 30.0], top5=[50.0, 60.0, 70.0]), str(tmp_path / "c.png"), num_classes=10)
    assert open(png, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    assert [a[:2] for a in seen["axes"]] == [("epoch", "cross-entropy loss"), ("epoch", "accuracy (%)"),
                                             ("epoch", "learning rate")]
    assert seen["axes"][1][2] == ["train_top1", "val_top1", "best epoch 2"]


class Crash(Callback):
    def on_epoch_begin(self, trainer, epoch):
        if epoch == 1:
            raise KeyboardInterrupt("killed")


def test_curves_are_redrawn_every_epoch_so_a_killed_run_has_its_plot(tmp_path, monkeypatch, one_thread):
    calls = []
    real = reporting.plot_metrics
    monkeypatch.setattr(reporting, "plot_metrics",
                        lambda r, png, num_classes=None: calls.append((len(r), num_classes)) or real(r, png, num_classes))
    tl, vl = loaders()
    cfg = Config.from_dict({"TRAINING": {"EPOCHS": 3}, "HARDWARE": {"DEVICE": "cpu"},
                            "EXPERIMENT": {"PROGRESS_BAR": False, "TENSORBOARD": False, "PLOT": True}})
    with pytest.raises(KeyboardInterrupt):
        Trainer(binary_mlp(), tl, vl, cfg, callbacks=[Crash()], exp_dir=tmp_path).fit()
    assert calls == [(1, 4)]  # after epoch 1, with the model's 4 classes
    assert (tmp_path / "curves.png").is_file()


# ---------------------------------------------------------------- banner and throughput
def test_run_banner_says_what_the_run_is(tmp_path):
    tl, vl = loaders(n_train=64, n_val=32)
    info = {**environment_info(), "seed": 7, "argv": ["bnn-train", "--exp_name", "a b"]}
    model = binary_mlp()
    before = {k: v.clone() for k, v in model.state_dict().items() if torch.is_tensor(v)}
    lines = run_banner(str(tmp_path / "exp"), model, tl, vl, info)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())  # the summary changed nothing
    assert model.training  # and left the model in training mode
    text = "\n".join(lines)
    assert f"output folder: {tmp_path / 'exp'}" in text
    assert "command: bnn-train --exp_name 'a b'" in text
    assert "data: 64 training, 32 validation images of 12" in text
    # Linear 12->16 (208) + BN (32) + Linear 16->16 (272) + BN (32) + Linear 16->4 (68)
    assert "612 parameters" in text
    # only the middle layer is binarized: 16*16 of 12*16 + 16*16 + 16*4 MACs = 256 / 512
    assert "binarized: 1 of 3 conv/linear layers, 50.0% of 512 MACs per image" in text
    assert f"seed 7; bnn {bnn.__version__}, torch {torch.__version__}" in text


class NoisyData(Dataset):
    """Draws random numbers when indexed, as a random augmentation does."""

    def __len__(self):
        return 8

    def __getitem__(self, i):
        return torch.rand(12), 0


def test_run_banner_draws_no_random_numbers():
    loader, model = DataLoader(NoisyData(), batch_size=4), binary_mlp()
    torch.manual_seed(1)
    expected = torch.rand(3)
    torch.manual_seed(1)
    lines = run_banner(".", model, loader, loader, {"seed": 1})
    assert "validation images of 12" in "\n".join(lines)  # it did read a sample
    assert torch.equal(torch.rand(3), expected)


def test_trainer_logs_the_banner_and_throughput_to_train_log(tmp_path, one_thread, capsys):
    tl, vl = loaders()
    cfg = Config.from_dict({"TRAINING": {"EPOCHS": 1, "LOG_INTERVAL": 2, "SEED": 5}, "HARDWARE": {"DEVICE": "cpu"},
                            "EXPERIMENT": {"PROGRESS_BAR": False, "TENSORBOARD": False, "PLOT": False}})
    Trainer(binary_mlp(), tl, vl, cfg, exp_dir=tmp_path).fit()
    log = (tmp_path / "train.log").read_text()
    assert "output folder:" in log and "data: 64 training, 32 validation images" in log
    assert "binarized: 1 of 3 conv/linear layers" in log and "seed 5;" in log
    interval_lines = [l for l in log.splitlines() if " batch " in l]
    assert len(interval_lines) == 2 and all(" img/s data " in l for l in interval_lines)  # 4 batches, every 2
    epoch_line = [l for l in log.splitlines() if "epoch 1/1" in l][0]
    assert " img/s, data " in epoch_line
    console = capsys.readouterr().out  # the banner and the epoch line go to the console too, not the per-step lines
    assert "output folder:" in console and "binarized: 1 of 3" in console and " img/s, data " in console
    assert " batch " not in console


def test_throughput_counts_images_and_data_wait():
    clock = iter([0.0, 1.0, 1.5, 3.0, 3.25, 4.0, 5.0, 6.0])
    meter = Throughput(clock=lambda: next(clock))  # t=0
    meter.data_ready()            # t=1: waited 1 s for the first batch
    meter.step_done(32)           # t=1.5
    meter.data_ready()            # t=3: waited 1.5 s
    meter.step_done(32)           # t=3.25
    speed = meter.take()          # t=4
    assert speed == {"img_s": 64 / 4.0, "data_s": 2.5, "data_share": 2.5 / 4.0}
    meter.data_ready()            # t=5: the next interval starts where this one ended
    assert meter.take() == {"img_s": 0.0, "data_s": 1.0, "data_share": 0.5}  # t=6


def test_run_banner_without_a_mac_count_still_counts_binarized_layers():
    class TwoInputs(nn.Module):  # a forward the one-sample summary cannot call
        def __init__(self):
            super().__init__()
            self.body = binary_mlp()

        def forward(self, x, y):
            return self.body(x + y)

    tl, vl = loaders()
    lines = run_banner(".", TwoInputs(), tl, vl, {"seed": 0})
    assert "binarized: 1 conv/linear layers" in lines
