"""A run's checkpoints stand alone: what they record, ``bnn.load_trained``, ``bnn-eval`` and ``bnn-pack``
(the train -> pack -> load path, the packed file loaded in a process with only torch and bnn)."""
import csv
import os
import shutil
import subprocess
import sys
import textwrap

import pytest
import torch

import bnn
from bnn.cli import main as train_main
from bnn.deploy import ship
from bnn.engine import evaluate as bnn_eval
from bnn.engine.checkpoint import CheckpointError, git_commit, load_checkpoint
from bnn.engine.run_dir import find_checkpoint, load_run, validation_loader

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# the quick start shrunk to seconds: 4 shape classes, 128 + 64 images, a width-4 binary ResNet-18, 1 epoch
TINY = ["HARDWARE.WORKERS=0", "HARDWARE.DEVICE=cpu", "DATA.TRAIN_SIZE=128", "DATA.VAL_SIZE=64",
        "DATA.KWARGS={num_classes: 4}", "MODEL.KWARGS.width=4", "MODEL.KWARGS.num_classes=4",
        "TRAINING.BATCH_SIZE=32", "TRAINING.EPOCHS=1", "EXPERIMENT.PROGRESS_BAR=false",
        "EXPERIMENT.TENSORBOARD=false", "EXPERIMENT.PLOT=false"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    base = tmp_path_factory.mktemp("runs")
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert train_main(["--exp_name", "tiny", "--seed", "3", f"EXPERIMENT.DIR={base}", *TINY]) == 0
    finally:
        torch.set_num_threads(n)
    return base / "tiny"


def recorded_top1(run):
    with open(run / "metrics.csv", newline="") as fh:
        return {int(r["epoch"]): float(r["val_top1"]) for r in csv.DictReader(fh)}


def test_checkpoint_records_versions_seed_commit_and_recipe(run_dir):
    meta = load_checkpoint(str(run_dir / "best.pth"))["meta"]
    assert meta["versions"]["torch"] == torch.__version__ and meta["versions"]["bnn"] == bnn.__version__
    assert meta["seed"] == 3
    assert meta["model"] == {"name": "resnet18", "kwargs": {"num_classes": 4, "stem": "imagenet", "width": 4,
                                                            "block": "bn_first"}}
    assert meta["recipe"]["BCONFIG"]["WEIGHT_PRE_PROCESS"]["name"] == "XNORWeightBinarizer"
    assert meta["recipe"]["TRAINING"]["SEED"] == 3 and meta["step"] == 0
    assert meta["git_commit"] == git_commit()  # this checkout's commit, or None outside git


def test_git_commit_outside_a_checkout_is_none(tmp_path):
    assert git_commit(str(tmp_path)) is None
    if shutil.which("git") is None:
        return
    repo = tmp_path / "repo"
    (repo / "pkg").mkdir(parents=True)
    git = lambda *a: subprocess.run(["git", "-C", str(repo), *a], check=True, capture_output=True, text=True)  # noqa: E731
    git("init", "-q")
    (repo / "f.txt").write_text("1")
    git("add", "f.txt")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "c")
    head = git("rev-parse", "HEAD").stdout.strip()
    assert git_commit(str(repo)) == head
    (repo / "f.txt").write_text("2")
    git_commit.cache_clear()
    assert git_commit(str(repo)) == head + "+dirty"
    assert git_commit(str(repo / "pkg")) is None  # inside another repository, but not its top folder


def test_load_trained_rebuilds_the_model_from_the_checkpoint_alone(run_dir, tmp_path, one_thread):
    model = bnn.load_trained(str(run_dir), which="best")
    assert not model.training
    assert sum(isinstance(m, bnn.layers.BinaryLayerMixin) for m in model.modules()) == 16
    state = load_checkpoint(str(run_dir / "best.pth"))["model"]
    for key, value in model.state_dict().items():
        if torch.is_tensor(value):
            assert torch.equal(value, state[key]), key
    # the checkpoint alone, far from its config.yaml, gives the same model
    alone = tmp_path / "elsewhere.pth"
    shutil.copy(run_dir / "best.pth", alone)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(bnn.load_trained(str(alone))(x), model(x), rtol=0, atol=0)


def test_a_checkpoint_without_a_record_is_rebuilt_from_its_config_yaml(run_dir, tmp_path, one_thread):
    old = tmp_path / "old"
    old.mkdir()
    shutil.copy(run_dir / "config.yaml", old / "config.yaml")
    state = load_checkpoint(str(run_dir / "best.pth"))
    del state["meta"]  # as written before checkpoints recorded their recipe
    torch.save(state, old / "best.pth")
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(bnn.load_trained(str(old))(x), bnn.load_trained(str(run_dir))(x), rtol=0, atol=0)
    (old / "config.yaml").unlink()
    with pytest.raises(CheckpointError, match="records no recipe and has no config.yaml"):
        bnn.load_trained(str(old))


def test_checkpoint_errors_are_one_line(run_dir, tmp_path):
    with pytest.raises(CheckpointError, match="no such run folder"):
        find_checkpoint(str(tmp_path / "missing"))
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "last.pth").write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"no best.pth .*which='last'"):
        find_checkpoint(str(empty), "best")


def test_bnn_eval_prints_the_recorded_top1(run_dir, capsys, one_thread):
    assert bnn_eval.main([str(run_dir), "--which", "best", "--no-progress"]) == 0
    out = capsys.readouterr().out
    expected = recorded_top1(run_dir)[1]
    assert f"top-1 {expected:.2f}%" in out and "on 64 validation images" in out
    # the same numbers through the Python API
    run = load_run(str(run_dir), "last")
    result = bnn_eval.evaluate(run.model, validation_loader(run.config))
    assert result["images"] == 64 and result["top1"] == pytest.approx(expected, abs=1e-9)


def test_bnn_eval_bad_run_is_one_line(tmp_path, capsys):
    assert bnn_eval.main([str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith("bnn-eval: error:") and "nope" in err


def test_bnn_pack_then_load_with_only_torch_and_bnn(run_dir, tmp_path, capsys, one_thread):
    out = tmp_path / "model.pt"
    assert ship.main([str(run_dir), "-o", str(out), "--batch-size", "16", "--repeats", "2"]) == 0
    printed = capsys.readouterr().out
    assert "bytes float32" in printed and "bytes packed" in printed and "x," in printed  # size and speed-up
    assert ": 16 layers with 1-bit weights\n" in printed
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".")]  # no temporary file left

    fake = bnn.load_trained(str(run_dir))
    x = next(iter(validation_loader(load_run(str(run_dir)).config, batch_size=8)))[0]
    with torch.no_grad():
        expected = fake(x)
    torch.save({"x": x, "expected": expected}, tmp_path / "io.pt")
    blocker = textwrap.dedent(f"""
        import sys
        class Block:  # nothing but torch and bnn (and what they import themselves)
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("torchvision", "yaml", "iopath", "matplotlib"):
                    raise ImportError("blocked: " + name)
        sys.meta_path.insert(0, Block())
        import torch
        model = torch.load({str(out)!r}, weights_only=False)
        io = torch.load({str(tmp_path / 'io.pt')!r})
        with torch.no_grad():
            got = model(io["x"])
        assert not model.training
        assert any(type(m).__name__.startswith("Packed") for m in model.modules())
        torch.testing.assert_close(got, io["expected"], rtol=1e-4, atol=1e-4)
        assert "bnn.engine" not in sys.modules
        print("ok")
    """)
    env = dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-c", blocker], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-2000:]


def test_bnn_pack_refuses_a_packed_model_that_differs(run_dir, tmp_path, capsys, monkeypatch, one_thread):
    from bnn.deploy import pack

    real = pack.pack_binary_model

    def broken(model, **kw):
        packed = real(model, **kw)
        with torch.no_grad():
            packed.fc.bias += 0.5  # what a wrong kernel would do
        return packed

    monkeypatch.setattr(pack, "pack_binary_model", broken)
    out = tmp_path / "model.pt"
    assert ship.main([str(run_dir), "-o", str(out), "--batch-size", "8"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "differ from the fake-binarized" in err and "best.pth" in err
    assert not out.exists()


def test_check_packed_tolerates_rounding_only():
    fake = torch.nn.Linear(4, 3)
    x = torch.randn(5, 4)
    same = torch.nn.Linear(4, 3)
    same.load_state_dict(fake.state_dict())
    assert ship.check_packed(fake, same, x) == (0.0, 0)
    with torch.no_grad():
        same.weight[1, 2] += 1e-2
    with pytest.raises(ship.PackCheckError, match=r"on 5 of 5 samples \(max \|diff\| [0-9.e-]+ > "):
        ship.check_packed(fake, same, x, where="m.pth")


def test_check_packed_allows_a_rare_sign_tie_only():
    """Up to 5 of 100 samples whose outputs jump (a sign flipped by rounding) are ties; 6 are an error."""
    x = torch.randn(100, 4)

    class Flip(torch.nn.Module):
        def __init__(self, rows):
            super().__init__()
            self.rows = rows

        def forward(self, inp):
            out = inp.clone()
            out[self.rows] += 0.5
            return out

    check = ship.check_packed(torch.nn.Identity(), Flip([7, 9]), x)
    assert check.ties == 2 and check.max_abs_diff == 0.0
    with pytest.raises(ship.PackCheckError, match="on 6 of 100 samples.*first at sample 7"):
        ship.check_packed(torch.nn.Identity(), Flip([7, 9, 11, 13, 15, 17]), x)
    nan = ship.check_packed  # a NaN is never a tie
    with pytest.raises(ship.PackCheckError):
        nan(torch.nn.Identity(), lambda inp: inp.masked_fill(torch.arange(100)[:, None] == 3, float("nan")), x)


def test_multi_step_run_loads_each_steps_model(tmp_path, one_thread):
    """Step 1 binarizes activations only, step 2 weights too: each checkpoint rebuilds its own step's model."""
    steps = "STEPS=[{NAME: act, EPOCHS: 1, BCONFIG: {WEIGHT_PRE_PROCESS: null}}, {NAME: all, EPOCHS: 1}]"
    tiny = [t for t in TINY if not t.startswith("TRAINING.EPOCHS")] + ["DATA.TRAIN_SIZE=64", "DATA.VAL_SIZE=32"]
    assert train_main(["--exp_name", "m", f"EXPERIMENT.DIR={tmp_path}", *tiny, steps]) == 0
    run = tmp_path / "m"
    assert find_checkpoint(str(run)) == str(run / "step2_all" / "best.pth")  # the last step's
    for path, step, weights in ((run, 1, "XNORWeightBinarizer"), (run / "step1_act" / "best.pth", 0, "Identity")):
        loaded = load_run(str(path))
        assert loaded.meta["step"] == step
        assert type(loaded.model.layer1[0].conv1.weight_pre_process).__name__ == weights
        state = load_checkpoint(loaded.checkpoint)["model"]
        for key, value in loaded.model.state_dict().items():
            if torch.is_tensor(value):
                assert torch.equal(value, state[key]), key


def test_an_nncf_driven_run_is_rebuilt_from_the_json_its_checkpoint_holds(tmp_path, one_thread):
    nncf = os.path.join(ROOT, "configs", "nncf", "resnet18_imagenet_binarization_xnor.json")
    tiny = TINY + ["DATA.TRAIN_SIZE=64", "DATA.VAL_SIZE=32", f"NNCF_CONFIG={nncf}"]
    assert train_main(["--exp_name", "n", f"EXPERIMENT.DIR={tmp_path}", *tiny]) == 0
    alone = tmp_path / "alone.pth"  # away from the run folder and from the JSON's path
    shutil.copy(tmp_path / "n" / "best.pth", alone)
    loaded = load_run(str(alone))
    assert loaded.meta["nncf"]["algorithm"] == "binarization"
    state = load_checkpoint(str(alone))["model"]
    assert sum(isinstance(m, bnn.layers.BinaryLayerMixin) for m in loaded.model.modules()) == 16
    for key, value in loaded.model.state_dict().items():
        if torch.is_tensor(value):
            assert torch.equal(value, state[key]), key
