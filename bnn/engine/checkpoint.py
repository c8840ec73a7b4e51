"""Atomic checkpoints through iopath's ``PathManager``, exact resume, one-line errors.

A checkpoint is a dict saved with ``torch.save``::

    {"format": "bnn.engine/1", "epoch": <epochs completed>, "global_step": int,
     "model": state_dict, "optimizer": ..., "scheduler": ..., "scaler": ...,
     "callbacks": [state_dict, ...], "rng": get_rng_state(), "sampler_epoch": int,
     "best_top1": float, "best_epoch": int, "history": [metrics rows], "config": {the step's Config as nested sections},
     "meta": {"versions": {"bnn", "torch", "python"}, "git_commit": str | None, "seed": int | None,
              "argv": [str], ...what the run adds: model name and arguments, binarizer config}}

``meta`` makes a checkpoint stand alone: :func:`bnn.load_trained` rebuilds the
prepared model from it without the run's ``config.yaml`` (see
:mod:`bnn.engine.run_dir`); :func:`environment_info` is its common part.

:func:`save_checkpoint` writes to a temporary file in the destination directory,
flushes and fsyncs it, then renames it over the destination (``os.replace``,
atomic on POSIX), so a crash never leaves a half-written ``last.pth``/``best.pth``.
:func:`load_checkpoint` and :func:`load_model_state` turn every failure into a
:class:`CheckpointError` whose message is one line naming the file (and, for a
model mismatch, the first differing key and shapes).
"""
from __future__ import annotations

import functools
import os
import pickle
import platform
import random
import subprocess
import sys
from typing import Any, Dict, Optional

import numpy as np
import torch
import torch.nn as nn
from iopath.common.file_io import PathManager

from ..ops import Binarizer

__all__ = [
    "CheckpointError",
    "CHECKPOINT_FORMAT",
    "path_manager",
    "save_checkpoint",
    "load_checkpoint",
    "load_model_state",
    "check_model_state",
    "get_rng_state",
    "set_rng_state",
    "environment_info",
    "git_commit",
    "save_atomic",
]

CHECKPOINT_FORMAT = "bnn.engine/1"
path_manager = PathManager()


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be read or does not fit the model/run; the message is one line."""


def _is_local(path: str) -> bool:
    return "://" not in str(path) or str(path).startswith("file://")


def _local(path: str) -> str:
    return str(path)[len("file://"):] if str(path).startswith("file://") else str(path)


@functools.lru_cache(maxsize=None)
def git_commit(directory: Optional[str] = None) -> Optional[str]:
    """The commit of the git checkout whose top folder is ``directory`` (default: the one holding the
    ``bnn`` package), with ``+dirty`` for local changes to tracked files; None outside such a checkout
    (an installed package inside some other repository included) or without git."""
    directory = os.path.realpath(directory or os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    try:
        head = subprocess.run(["git", "-C", directory, "rev-parse", "--show-toplevel", "HEAD"], capture_output=True,
                              text=True, timeout=10)
        lines = head.stdout.split()
        if head.returncode != 0 or len(lines) != 2 or os.path.realpath(lines[0]) != directory:
            return None
        commit = lines[1]
        dirty = subprocess.run(["git", "-C", directory, "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10)
        return commit + ("+dirty" if dirty.returncode == 0 and dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def environment_info() -> Dict[str, Any]:
    """What produced a checkpoint: ``{"versions": {bnn, torch, python}, "git_commit", "argv"}``."""
    from .. import __version__

    return {
        "versions": {"bnn": __version__, "torch": torch.__version__, "python": platform.python_version()},
        "git_commit": git_commit(),
        "argv": list(sys.argv),
    }


def save_checkpoint(state: Dict[str, Any], path: str) -> str:
    """Write ``state`` to ``path`` atomically (temporary file in the same directory, then rename)."""
    return save_atomic(state, path)


def save_atomic(obj: Any, path: str) -> str:
    """``torch.save(obj)`` to ``path`` atomically: a temporary file in the same directory, flushed,
    fsynced and renamed over ``path`` (nothing half-written, even on a crash)."""
    path = str(path)
    directory = os.path.dirname(path) or "."
    path_manager.mkdirs(directory)
    tmp = os.path.join(directory, f".{os.path.basename(path)}.tmp-{os.getpid()}")
    try:
        with path_manager.open(tmp, "wb") as fh:
            torch.save(obj, fh)
            fh.flush()
            if hasattr(fh, "fileno"):
                try:
                    os.fsync(fh.fileno())
                except (OSError, ValueError):
                    pass
        if _is_local(path):
            os.replace(_local(tmp), _local(path))
            try:  # make the rename itself durable
                dfd = os.open(_local(directory), os.O_RDONLY)
                try:
                    os.fsync(dfd)
                finally:
                    os.close(dfd)
            except OSError:
                pass
        else:
            path_manager.mv(tmp, path)
    finally:
        try:
            if path_manager.exists(tmp):
                path_manager.rm(tmp)
        except Exception:  # noqa: BLE001 - cleanup must not hide the real error
            pass
    return path


def load_checkpoint(path: str, map_location: Any = "cpu") -> Dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint`; any failure is a one-line CheckpointError."""
    path = str(path)
    if not path_manager.exists(path):
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        with path_manager.open(path, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        raise CheckpointError(f"checkpoint {path} cannot be read: {exc}") from None
    import io

    state = None
    try:
        state = torch.load(io.BytesIO(data), map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        if "weights only" in str(exc).lower() or "weights_only" in str(exc).lower():
            try:  # our own checkpoint holding a non-tensor object (e.g. a custom binarizer's extra state)
                state = torch.load(io.BytesIO(data), map_location=map_location, weights_only=False)
            except Exception as exc2:  # noqa: BLE001
                raise CheckpointError(f"checkpoint {path} is corrupted or not a torch checkpoint ({type(exc2).__name__}: {str(exc2).splitlines()[0] if str(exc2) else ''})") from None
        else:
            raise CheckpointError(f"checkpoint {path} is corrupted or not a torch checkpoint ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})") from None
    except Exception as exc:  # noqa: BLE001 - truncated zip, EOF, garbage
        first = str(exc).splitlines()[0] if str(exc) else ""
        raise CheckpointError(f"checkpoint {path} is corrupted or not a torch checkpoint ({type(exc).__name__}: {first})") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"checkpoint {path} is not a bnn checkpoint (holds a {type(state).__name__}, not a dict)")
    return state


def _model_state(state: Dict[str, Any]) -> Dict[str, Any]:
    if "model" in state and isinstance(state["model"], dict):
        return state["model"]
    if "state_dict" in state and isinstance(state["state_dict"], dict):
        return state["state_dict"]
    return state


def check_model_state(model: nn.Module, model_state: Dict[str, Any], path: str = "<state dict>", strict: bool = True) -> None:
    """Raise a one-line CheckpointError naming ``path`` and the first key that differs in name or shape."""
    own = model.state_dict()
    for key, value in own.items():
        if key in model_state and torch.is_tensor(value) and torch.is_tensor(model_state[key]):
            if tuple(value.shape) != tuple(model_state[key].shape):
                raise CheckpointError(
                    f"checkpoint {path} does not match the model: first differing key '{key}' has shape "
                    f"{list(model_state[key].shape)} in the checkpoint, {list(value.shape)} in the model")
    if strict:
        missing = [k for k in own if k not in model_state and not k.endswith("_extra_state")]
        unexpected = [k for k in model_state if k not in own]
        # binarizer entries may be missing (a float checkpoint loads into a prepared model): let the
        # modules decide, and report only what load_state_dict itself would report.
        if unexpected:
            raise CheckpointError(f"checkpoint {path} does not match the model: first differing key '{unexpected[0]}' is in the checkpoint but not in the model ({len(unexpected)} unexpected keys)")
        if missing:
            real_missing = _really_missing(model, missing, model_state)
            if real_missing:
                raise CheckpointError(f"checkpoint {path} does not match the model: first differing key '{real_missing[0]}' is in the model but not in the checkpoint ({len(real_missing)} missing keys)")


def _really_missing(model: nn.Module, missing, model_state: Dict[str, Any]):
    """The keys load_state_dict would report missing: a binarizer with no entry at all in the
    checkpoint keeps its initial state on purpose (a float checkpoint loads into a prepared model)."""
    out = []
    for key in missing:
        parts = key.split(".")
        module, prefix, skipped = model, "", False
        for part in parts[:-1]:
            module = getattr(module, part, None)
            if not isinstance(module, nn.Module):
                break
            prefix = prefix + part + "."
            if isinstance(module, Binarizer) and not any(k.startswith(prefix) for k in model_state):
                skipped = True
                break
        if not skipped:
            out.append(key)
    return out


def load_model_state(model: nn.Module, source: Any, strict: bool = True, path: Optional[str] = None) -> nn.Module:
    """Load model weights from a checkpoint path (``state['model']``) or a state dict, with one-line errors."""
    if isinstance(source, (str, os.PathLike)):
        path = str(source)
        source = load_checkpoint(path)
    path = path or "<state dict>"
    model_state = _model_state(source)
    target = model.module if hasattr(model, "module") and isinstance(model.module, nn.Module) else model
    check_model_state(target, model_state, path, strict=strict)
    try:
        target.load_state_dict(model_state, strict=strict)
    except Exception as exc:  # noqa: BLE001
        first = str(exc).strip().splitlines()
        raise CheckpointError(f"checkpoint {path} does not match the model: {' '.join(l.strip() for l in first)[:300]}") from None
    return model


def get_rng_state() -> Dict[str, Any]:
    """RNG states of python ``random``, numpy, torch CPU and every CUDA device (tensors and plain types only)."""
    py = random.getstate()
    np_state = np.random.get_state()
    state = {
        "python": [py[0], list(py[1]), py[2]],
        "numpy": {"name": np_state[0], "keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Dict[str, Any]) -> None:
    """Inverse of :func:`get_rng_state`."""
    if "python" in state:
        v, internal, gauss = state["python"]
        random.setstate((v, tuple(internal), gauss))
    if "numpy" in state:
        n = state["numpy"]
        keys = n["keys"].numpy() if torch.is_tensor(n["keys"]) else np.asarray(n["keys"])
        np.random.set_state((n["name"], keys.astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"]))
    if "torch" in state:
        torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        cuda_states = state["cuda"]
        if len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all([s.cpu() for s in cuda_states])
