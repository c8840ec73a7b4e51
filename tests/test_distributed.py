"""Two CPU processes under torchrun with Gloo: DDP keeps the ranks' weights identical (bnn.engine)."""
import os
import subprocess
import sys
import textwrap

import torch

from bnn.engine import load_checkpoint
from bnn.engine.distributed import find_free_port

WORKER = textwrap.dedent('''
    import os, sys
    import torch, torch.nn as nn
    from torch.utils.data import DataLoader, TensorDataset
    import bnn
    from bnn.engine import Config, Trainer
    from bnn.engine.distributed import get_rank, get_world_size, cleanup_distributed

    torch.set_num_threads(1)
    out = sys.argv[1]
    rank = int(os.environ["RANK"])
    torch.manual_seed(100 + rank)  # different initial weights per rank: DDP must broadcast rank 0's
    model = nn.Sequential(nn.Linear(8, 16), nn.BatchNorm1d(16), nn.Linear(16, 16), nn.BatchNorm1d(16), nn.Linear(16, 3))
    # InputBiasBinarizer has a parameter that is unused while the staged schedule keeps it off (epoch 0)
    bconfig = bnn.BConfig(activation_pre_process=bnn.ops.InputBiasBinarizer,
                          weight_pre_process=bnn.ops.XNORWeightBinarizer)
    bnn.prepare_binary_model(model, bconfig, ignore_layers_name=["_first_", "_last_"])
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 8, generator=g)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0).long()
    tl = DataLoader(TensorDataset(x, y), batch_size=8, shuffle=True)
    vl = DataLoader(TensorDataset(x[:61], y[:61]), batch_size=16)  # odd size: shards of 31 and 30
    cfg = Config.from_dict({"TRAINING": {"EPOCHS": 2, "SEED": 0}, "OPTIMIZER": {"LR": 1e-2}, "HARDWARE": {"DEVICE": "cpu"},
                            "EXPERIMENT": {"PROGRESS_BAR": False, "TENSORBOARD": False, "PLOT": False},
                            "SCHEDULE": {"NAME": "staged", "STAGED": {"ACTIVATIONS_BIN_START_EPOCH": 1, "WEIGHTS_BIN_START_EPOCH": 1}}})
    trainer = Trainer(model, tl, vl, cfg, exp_dir=os.path.join(out, "exp"))
    assert get_world_size() == 2 and trainer.steps_per_epoch == 4, (get_world_size(), trainer.steps_per_epoch)
    result = trainer.fit()
    model.eval()
    with torch.no_grad():  # the whole validation set on one process, with the final weights
        logits = model(x[:61])
    local = {"val_loss": float(nn.functional.cross_entropy(logits, y[:61])),
             "val_top1": 100.0 * float((logits.argmax(1) == y[:61]).double().mean())}
    torch.save({"state": model.state_dict(), "history": result.history, "local": local,
                "sampler": type(trainer.train_loader.sampler).__name__}, os.path.join(out, f"rank{rank}.pt"))
    cleanup_distributed()
''')


def test_two_process_gloo_ranks_stay_identical(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    env = dict(os.environ, OMP_NUM_THREADS="1", GLOO_SOCKET_IFNAME="lo", PYTHONPATH=os.getcwd() + os.pathsep + os.environ.get("PYTHONPATH", ""))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes=1", "--nproc_per_node=2",
           "--master_addr=127.0.0.1", f"--master_port={find_free_port()}", str(script), str(tmp_path)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=110)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=False)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=False)
    assert r0["sampler"] == r1["sampler"] == "DistributedSampler"
    params = [k for k, v in r0["state"].items() if torch.is_tensor(v) and v.is_floating_point()]
    assert params
    for k in params:
        assert torch.equal(r0["state"][k], r1["state"][k]), k
    # metrics are averaged over both ranks, and only rank 0 wrote logs and checkpoints
    assert r0["history"][-1]["train_loss"] == r1["history"][-1]["train_loss"]
    # validation counts every sample exactly once (no padding duplicates)
    assert abs(r0["history"][-1]["val_top1"] - r0["local"]["val_top1"]) < 1e-9
    assert abs(r0["history"][-1]["val_loss"] - r0["local"]["val_loss"]) < 1e-5
    exp = tmp_path / "exp"
    assert sorted(p for p in os.listdir(exp) if not p.startswith(".")) == ["best.pth", "last.pth", "metrics.csv", "train.log"]
    log = open(exp / "train.log").read()
    assert log.count("epoch 2/2") == 1 and "processes 2" in log
    ckpt = load_checkpoint(str(exp / "last.pth"))
    assert ckpt["world_size"] == 2 and ckpt["epoch"] == 2
    for k in params:
        assert torch.equal(ckpt["model"][k], r0["state"][k]), k
    # the weights moved from rank 0's initial weights
    torch.manual_seed(100)
    first = torch.nn.Linear(8, 16)
    assert not torch.equal(first.weight, r0["state"]["0.weight"])
