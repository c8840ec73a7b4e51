"""The README's measured figures: the quick start's accuracy and wall time, and the test suite's time.

Runs the quick start exactly as the README does (``bnn-train`` with its defaults, into a temporary
``EXPERIMENT.DIR``), or reads a finished quick-start run (``--run-dir``), and prints its best and last
validation top-1, its top-1 after epochs 1 and 2 (the first epochs sit near chance), its wall time, the
machine and the load average (other jobs sharing the cores); ``--tests`` also times the test suite as CI
runs it (``python -m pytest -q tests``, with ``OMP_NUM_THREADS`` unset).

The README holds each figure between markers, ``<!-- fig:NAME -->VALUE<!-- /fig -->`` (an HTML comment
pair, invisible when rendered); ``--update`` writes the measured values there, ``--check`` compares them
and exits with status 1 when a figure differs. Accuracies are deterministic (seed 0, the same torch build
and thread count); times are not, so ``--check`` reports them but judges only the accuracies and the
test count. ``--run-dir`` takes the wall time from ``train.log``'s first and last time stamps.

::

    python benchmarks/quickstart.py                                # train the quick start, print the figures
    python benchmarks/quickstart.py --run-dir experiments/quickstart --check
    python benchmarks/quickstart.py --tests --update               # measure everything, rewrite README.md

Run it on a quiet machine: the wall times scale with the load, which it prints next to them.
"""
from __future__ import annotations

import argparse
import os
import pathlib
import platform
import re
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from typing import Callable, Dict, Optional, Tuple

REPO = pathlib.Path(__file__).resolve().parents[1]
README = REPO / "README.md"
MARKER = re.compile(r"<!-- fig:(?P<name>[a-z0-9_]+) -->(?P<value>.*?)<!-- /fig -->")
TIMESTAMP = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) ")
JUDGED = ("qs_best", "qs_best_epoch", "qs_last", "qs_epochs", "qs_top1_e1", "qs_top1_e2", "tests_count")


def machine() -> str:
    """'2 cores, AMD EPYC (AVX2)': the logical CPUs this process may use, the CPU model, its widest ISA."""
    model, isa = platform.processor() or platform.machine(), ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            first_cpu = fh.read().split("\n\n")[0].splitlines()
        info = {key.strip(): value.strip() for key, _, value in (line.partition(":") for line in first_cpu)}
        model = info["model name"]
        flags = info.get("flags", "").split()
        isa = " (AVX-512)" if "avx512f" in flags else " (AVX2)" if "avx2" in flags else ""
    except (OSError, KeyError):
        pass
    return f"{cpu_count()} cores, {model}{isa}"


def cpu_count() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def load_average() -> float:
    """The 1-minute load average: how many processes were running or waiting for a core."""
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")


def timed(run: Callable[[], object]) -> Tuple[float, str]:
    """Wall seconds of ``run()`` and the mean of the load averages before and after it."""
    load, start = load_average(), time.perf_counter()
    run()
    seconds = time.perf_counter() - start
    return seconds, f"{(load + load_average()) / 2:.1f}"


def run_wall_seconds(run_dir: pathlib.Path) -> float:
    """Seconds from the first to the last time stamp of ``train.log`` (the run, without Python's start-up)."""
    stamps = [TIMESTAMP.match(line) for line in (run_dir / "train.log").read_text(encoding="utf-8").splitlines()]
    stamps = [datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S") for m in stamps if m]
    if not stamps:
        raise SystemExit(f"quickstart.py: {run_dir / 'train.log'} has no time-stamped line")
    return (stamps[-1] - stamps[0]).total_seconds()


def run_figures(run_dir: pathlib.Path, wall_s: Optional[float] = None) -> Dict[str, str]:
    """The figures of a finished quick-start run, formatted as the README writes them."""
    import yaml

    from bnn.engine.reporting import read_metrics

    rows = read_metrics(str(run_dir / "metrics.csv"))
    if not rows:
        raise SystemExit(f"quickstart.py: {run_dir / 'metrics.csv'} holds no epoch")
    config = yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8"))
    num_classes = config["MODEL"]["KWARGS"].get("num_classes", 10)
    chance = 100.0 / num_classes
    best = max(rows, key=lambda row: row["val_top1"])  # the first epoch reaching the best, as best.pth
    wall_s = run_wall_seconds(run_dir) if wall_s is None else wall_s
    return {
        "qs_best": f"{best['val_top1']:.1f}",
        "qs_best_epoch": f"{int(best['epoch'])}",
        "qs_last": f"{rows[-1]['val_top1']:.1f}",
        "qs_epochs": f"{len(rows)}",
        "qs_chance": f"{chance:.0f}",
        "qs_top1_e1": f"{rows[0]['val_top1']:.1f}",
        "qs_top1_e2": f"{rows[min(1, len(rows) - 1)]['val_top1']:.1f}",
        "qs_wall_s": f"{wall_s:.0f}",
        "qs_wall_min": f"{wall_s / 60:.1f}",
        "qs_epoch_s": f"{sum(row['time_s'] for row in rows) / len(rows):.0f}",
    }


def train_quickstart(exp_dir: str) -> Dict[str, str]:
    """Runs ``bnn-train EXPERIMENT.DIR=exp_dir`` (the quick start's defaults otherwise); returns its figures."""
    script = pathlib.Path(sys.executable).with_name("bnn-train")  # the installed console script, else the module
    command = [str(script)] if script.exists() else [sys.executable, "-m", "bnn.cli"]
    command.append(f"EXPERIMENT.DIR={os.path.abspath(exp_dir)}")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    wall_s, load = timed(lambda: subprocess.run(command, check=True, cwd=exp_dir, env=env))
    figures = run_figures(pathlib.Path(exp_dir) / "quickstart", wall_s)
    figures.update(qs_load=load, qs_threads=os.environ.get("OMP_NUM_THREADS") or str(cpu_count()))
    return figures


def test_suite_figures() -> Dict[str, str]:
    """Times ``python -m pytest -q tests`` from the repository root, as CI runs it (``OMP_NUM_THREADS`` unset)."""
    env = {key: value for key, value in os.environ.items() if key != "OMP_NUM_THREADS"}
    done = None

    def run_suite() -> None:
        nonlocal done
        done = subprocess.run([sys.executable, "-m", "pytest", "-q", "tests"], cwd=REPO, env=env,
                              capture_output=True, text=True)

    seconds, load = timed(run_suite)
    summary = (done.stdout.strip().splitlines() or [""])[-1]
    passed = re.search(r"(\d+) passed", summary)
    if done.returncode != 0 or not passed:
        failed = [line for line in done.stdout.splitlines() if line.startswith(("FAILED", "ERROR"))]
        raise SystemExit("\n".join([f"quickstart.py: the test suite failed: {summary}"] + failed))
    return {"tests_s": f"{seconds:.0f}", "tests_count": passed.group(1), "tests_load": load}


def readme_figures(text: str) -> Dict[str, str]:
    """``{name: value}`` of the README's markers; a name written twice with two values is an error."""
    figures: Dict[str, str] = {}
    for match in MARKER.finditer(text):
        name, value = match.group("name"), match.group("value")
        if figures.setdefault(name, value) != value:
            raise ValueError(f"README.md: figure '{name}' is written both as '{figures[name]}' and '{value}'")
    return figures


def update_text(text: str, figures: Dict[str, str]) -> str:
    """``text`` with every marker whose name is in ``figures`` holding that value."""
    def replace(match: "re.Match[str]") -> str:
        name = match.group("name")
        return f"<!-- fig:{name} -->{figures.get(name, match.group('value'))}<!-- /fig -->"

    return MARKER.sub(replace, text)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run-dir", type=pathlib.Path, help="read this finished quick-start run instead of training one")
    parser.add_argument("--exp-dir", help="train into EXP_DIR/quickstart and keep it (default: a temporary folder)")
    parser.add_argument("--tests", action="store_true", help="also time the test suite")
    action = parser.add_mutually_exclusive_group()
    action.add_argument("--update", action="store_true", help="write the measured figures into README.md")
    action.add_argument("--check", action="store_true", help="exit 1 when README.md's accuracies differ")
    args = parser.parse_args(argv)

    if args.run_dir is not None:
        figures = run_figures(args.run_dir)
    elif args.exp_dir is not None:
        os.makedirs(args.exp_dir, exist_ok=True)
        figures = train_quickstart(args.exp_dir)
    else:
        with tempfile.TemporaryDirectory(prefix="bnn_quickstart_") as exp_dir:
            figures = train_quickstart(exp_dir)
    if args.tests:
        figures.update(test_suite_figures())
    figures["machine"] = machine()

    print(f"quick start: best top-1 {figures['qs_best']}% (epoch {figures['qs_best_epoch']}), "
          f"last {figures['qs_last']}% after {figures['qs_epochs']} epochs, chance {figures['qs_chance']}%; "
          f"{figures['qs_top1_e1']}% after epoch 1, {figures['qs_top1_e2']}% after epoch 2")
    print(f"quick start: {figures['qs_wall_s']} s wall ({figures['qs_wall_min']} min, "
          f"{figures['qs_epoch_s']} s per epoch) on {figures['machine']}"
          + (f", torch threads {figures['qs_threads']}, load average {figures['qs_load']}" if "qs_load" in figures else ""))
    if args.tests:
        print(f"tests: {figures['tests_count']} passed in {figures['tests_s']} s, load average {figures['tests_load']}")

    text = README.read_text(encoding="utf-8")
    written = readme_figures(text)
    if args.update:
        partial = README.with_name(README.name + ".tmp")
        partial.write_text(update_text(text, figures), encoding="utf-8")
        os.replace(partial, README)  # nothing half-written
        print(f"updated {len([n for n in written if n in figures])} figures in {README}")
        return 0
    differ = [name for name in written if name in figures and written[name] != figures[name]]
    for name in differ:
        print(f"README.md: {name} is {written[name]}, measured {figures[name]}")
    judged = [name for name in differ if name in JUDGED]
    if args.check and judged:
        print(f"README.md: {len(judged)} figure(s) differ; rewrite them with --update")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
