"""``benchmarks/accuracy.py``: the budget rule (every row trains as many epochs as the float row) and
the run that follows it."""
import argparse
import importlib.util
import pathlib

import torch

ROOT = pathlib.Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("accuracy_benchmark", ROOT / "benchmarks" / "accuracy.py")
accuracy = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(accuracy)

RECIPES = ["xnor_net", "nncf", accuracy.BEST]


def test_every_pipeline_trains_the_float_budget():
    for reference in ("continued", "scratch"):
        plans = accuracy.pipelines(RECIPES, pretrain_epochs=40, epochs=20, split=0.25, float_reference=reference)
        assert set(plans) == {accuracy.FLOAT, *RECIPES}
        assert {name: sum(e for _, e in plan) for name, plan in plans.items()} == dict.fromkeys(plans, 60)
        assert {what for what, _ in plans[accuracy.FLOAT]} == {accuracy.FLOAT}
    assert plans[accuracy.FLOAT] == [(accuracy.FLOAT, 60)]  # scratch: one schedule for the whole budget
    assert plans["xnor_net"] == [(accuracy.FLOAT, 40), ("binary", 20)]
    assert plans[accuracy.BEST] == [(accuracy.FLOAT, 40), ("activations", 5), ("binary", 15)]
    continued = accuracy.pipelines(RECIPES, 40, 20, 0.5)
    assert continued[accuracy.FLOAT] == [(accuracy.FLOAT, 40), (accuracy.FLOAT, 20)]
    assert continued[accuracy.BEST] == [(accuracy.FLOAT, 40), ("activations", 10), ("binary", 10)]
    assert accuracy.pipelines([accuracy.BEST], 0, 4, split=1.0)[accuracy.BEST] == [("activations", 4)]


def test_run_trains_each_row_for_the_whole_budget(monkeypatch):
    """The epochs run() hands to fit, per row, add up to P + B; only the best recipe distils, and
    every binary step of it and of the presets uses the binary learning rate."""
    g = torch.Generator().manual_seed(0)
    data = (torch.randn(40, 1, 8, 8, generator=g), torch.arange(40) % 4,
            torch.randn(20, 1, 8, 8, generator=g), torch.arange(20) % 4)
    monkeypatch.setitem(accuracy.DATASETS, "tiny", lambda size, seed, image_size: data)
    calls = []
    real_fit = accuracy.fit

    def recording_fit(model, x, y, epochs, lr, seed, teacher=None, *rest):
        binary = [m.activation_pre_process.enabled for m in model.modules() if hasattr(m, "activation_pre_process")]
        calls.append((epochs, lr, teacher is not None, any(binary)))
        return real_fit(model, x, y, epochs, lr, seed, teacher, *rest)

    monkeypatch.setattr(accuracy, "fit", recording_fit)
    args = argparse.Namespace(train_size=40, image_size=8, recipes=["xnor_net", accuracy.BEST], pretrain_epochs=2,
                              epochs=3, split=0.5, float_reference="continued", width=4, block="bn_first", lr=1e-3,
                              binary_lr=5e-3, best_preset="nncf", kd_weight=1.0, temperature=1.0)
    result = accuracy.run("tiny", 0, args)
    assert set(result) == {accuracy.FLOAT, "xnor_net", accuracy.BEST}
    assert all(0.0 <= top1 <= 100.0 for top1 in result.values())
    pretrain, float_row, preset, *best = calls
    assert pretrain == (2, 1e-3, False, False)  # shared by every row
    assert float_row == (3, 1e-3, False, False)
    assert preset == (3, 5e-3, False, True)
    assert best == [(2, 5e-3, True, True), (1, 5e-3, True, True)]  # round(0.5 * 3) = 2 epochs, then the rest


def test_train_top1_is_measured_on_the_training_images(monkeypatch):
    """``--train-top1``: each row also reports top-1 on its training images (and only with the flag)."""
    g = torch.Generator().manual_seed(1)
    xtr, xva = torch.randn(40, 1, 8, 8, generator=g), torch.randn(20, 1, 8, 8, generator=g)
    monkeypatch.setitem(accuracy.DATASETS, "tiny", lambda size, seed, image_size: (xtr, torch.arange(40) % 4,
                                                                                   xva, torch.arange(20) % 4))
    monkeypatch.setattr(accuracy, "top1", lambda model, x, y: 100.0 if x is xtr else 0.0)  # which images it saw
    args = argparse.Namespace(train_size=40, image_size=8, recipes=["xnor_net"], pretrain_epochs=1, epochs=1,
                              split=0.5, float_reference="continued", width=4, block="bn_first", lr=1e-2,
                              binary_lr=1e-2, best_preset="nncf", kd_weight=1.0, temperature=1.0, train_top1=True)
    result = accuracy.run("tiny", 0, args)
    assert result == {accuracy.FLOAT: 0.0, "xnor_net": 0.0,
                      f"{accuracy.FLOAT} {accuracy.TRAIN}": 100.0, f"xnor_net {accuracy.TRAIN}": 100.0}
    args.train_top1 = False
    assert set(accuracy.run("tiny", 0, args)) == {accuracy.FLOAT, "xnor_net"}
