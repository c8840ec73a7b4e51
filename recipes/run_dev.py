#!/usr/bin/env python3
"""``run_dev.py``: train a binary network from a YAML recipe and a user env file, from a checkout.

::

    usage: run_dev.py [-h] [--config PATH] [-u USER] [--exp_name exp_name] [--gpu gpu]
                      [--seed seed] [--resume [PATH]] [--overwrite] [--print-config] [KEY=VALUE ...]

    python recipes/run_dev.py                                   # the quick start
    python recipes/run_dev.py -u dima                           # configs/env_dima.yaml
    python recipes/run_dev.py --config configs/cifar10_xnor_resnet18.yaml -u dima TRAINING.EPOCHS=3
    python recipes/run_dev.py --exp_name try1 --resume          # continue a run from its config.yaml

Same command line as ``bnn-train`` (see :mod:`bnn.cli`): the recipe names the data set, the model, the
BConfig by binarizer names or a preset, the optimizer and the schedules; :func:`bnn.engine.train` builds
the model and the data sets and trains the recipe's steps. To build them in Python instead, see the
README's training section.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a checkout

from bnn.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(prog="run_dev.py"))
