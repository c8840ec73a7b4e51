"""The README's measured figures stay under ``benchmarks/quickstart.py``'s markers and agree with each other."""
import importlib.util
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("quickstart_figures", ROOT / "benchmarks" / "quickstart.py")
quickstart = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(quickstart)

METRICS = """epoch,train_loss,train_top1,train_top5,val_loss,val_top1,val_top5,lr,weight_decay_on,time_s
1,2.33,11.3,57.0,2.28,13.0,56.2,0.003,1,10.0
2,2.04,19.4,80.0,1.78,27.35,89.2,0.002,1,12.0
3,1.69,30.3,90.0,1.57,35.0,94.3,0.001,1,14.0
4,1.60,32.0,91.0,1.55,34.95,94.0,0.0,1,12.0
"""
LOG = """2026-11-23 16:38:48 output folder: x
2026-11-23 16:38:48 command: bnn-train
2026-11-23 16:39:30 epoch 1/4 ...
2026-11-23 16:41:52 done: best top-1 35.00% at epoch 3; checkpoints in x
"""


def test_run_figures_of_a_finished_run(tmp_path):
    (tmp_path / "metrics.csv").write_text(METRICS)
    (tmp_path / "train.log").write_text(LOG)
    (tmp_path / "config.yaml").write_text("MODEL:\n  KWARGS: {num_classes: 4}\n")
    figures = quickstart.run_figures(tmp_path)
    assert figures["qs_best"] == "35.0" and figures["qs_best_epoch"] == "3"
    assert figures["qs_last"] == "35.0" and figures["qs_epochs"] == "4"  # 34.95 rounds to 35.0
    assert figures["qs_top1_e1"] == "13.0" and figures["qs_top1_e2"] == "27.4"
    assert figures["qs_chance"] == "25"
    assert figures["qs_wall_s"] == "184" and figures["qs_wall_min"] == "3.1"  # 16:38:48 -> 16:41:52
    assert figures["qs_epoch_s"] == "12"


def test_update_rewrites_only_marked_figures():
    text = "top-1 <!-- fig:qs_best -->57.9<!-- /fig -->% (table: <!-- fig:qs_best -->57.9<!-- /fig -->), 90 s"
    updated = quickstart.update_text(text, {"qs_best": "61.4", "tests_s": "110"})
    assert updated == "top-1 <!-- fig:qs_best -->61.4<!-- /fig -->% (table: <!-- fig:qs_best -->61.4<!-- /fig -->), 90 s"
    assert quickstart.readme_figures(updated) == {"qs_best": "61.4"}


def test_a_figure_written_twice_must_agree():
    with pytest.raises(ValueError, match="qs_best"):
        quickstart.readme_figures("<!-- fig:qs_best -->61.4<!-- /fig --> and <!-- fig:qs_best -->57.9<!-- /fig -->")


def test_readme_marks_every_quickstart_and_test_suite_figure():
    written = quickstart.readme_figures((ROOT / "README.md").read_text(encoding="utf-8"))
    measured = {"qs_best", "qs_last", "qs_chance", "qs_top1_e1", "qs_top1_e2", "qs_wall_s", "qs_wall_min",
                "qs_epoch_s", "qs_load", "qs_threads", "machine", "tests_s", "tests_count", "tests_load"}
    assert measured <= set(written), sorted(measured - set(written))
