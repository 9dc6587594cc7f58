"""The host side of a run: signals, metric writers, checkpoints of the latest
and the best state.  Nothing here computes; the loop calls these between
compiled calls."""

import contextlib
import json
import math
import os
import signal
import threading
from typing import Any, Dict, Optional

from absl import logging
import jax
import numpy as np

from lstm_flax import checkpoints
from lstm_flax import workdir as workdir_lib


class TrainingError(RuntimeError):
  """Training cannot go on (a non-finite loss or state)."""


class Interrupted(Exception):
  """SIGINT/SIGTERM arrived; the state was checkpointed.  ``signum`` says which."""

  def __init__(self, signum, step):
    super().__init__(f'interrupted by signal {signum} at step {step}')
    self.signum = signum


def is_writer() -> bool:
  """Only process 0 writes logs, metrics, results and figures (every process
  computes, and takes part in orbax's checkpoint saves)."""
  return jax.process_index() == 0


def workdir_lock(workdir: str):
  """The workdir's exclusive lock, held by the writing process (the others
  of a multi-host run share its workdir)."""
  if is_writer():
    return workdir_lib.lock(workdir)
  return contextlib.nullcontext(workdir)


class SignalCatcher:
  """SIGINT/SIGTERM become a flag the loop checks between compiled calls
  (a call runs to its end: at most ``train.steps_per_call`` steps, or one
  eval).  A second signal gets the default action: the process ends at once,
  and the newest complete checkpoint is still on disk."""

  def __init__(self):
    self.signum = None
    self._previous = {}

  def __enter__(self):
    if threading.current_thread() is threading.main_thread():
      for sig in (signal.SIGINT, signal.SIGTERM):
        self._previous[sig] = signal.signal(sig, self._catch)
    return self

  def _catch(self, signum, frame):
    del frame
    self.signum = signum
    for sig in self._previous:
      signal.signal(sig, signal.SIG_DFL)
    logging.warning(
      'signal %d: checkpointing after the current call, then '
      'stopping (send it again to stop at once)',
      signum,
    )

  def __exit__(self, *exc):
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)


class MetricWriter:
  """Records to ``<workdir>/metrics.jsonl`` (one JSON object a line) and,
  with ``config.train.tensorboard``, TensorBoard events in
  ``<workdir>/tensorboard`` (tensorboardX, the optional extra)."""

  def __init__(self, workdir: Optional[str], tensorboard: bool):
    self._file = self._tensorboard = None
    if workdir is None:  # not the writing process
      return
    self._file = open(os.path.join(workdir, 'metrics.jsonl'), 'a')
    if tensorboard:
      try:
        import tensorboardX  # pylint: disable=g-import-not-at-top
      except ImportError:
        logging.warning(
          'config.train.tensorboard: tensorboardX is not '
          "installed (pip install -e '.[tensorboard]')"
        )
      else:
        self._tensorboard = tensorboardX.SummaryWriter(
          os.path.join(workdir, 'tensorboard')
        )

  def write(self, record: Dict[str, Any]):
    """``record``: ``{'step': s, name: float or list, ...}``."""
    if self._file is None:
      return
    record = workdir_lib.strict(record)  # NaN/inf -> null: strict JSON
    self._file.write(json.dumps(record, allow_nan=False) + '\n')
    self._file.flush()
    if self._tensorboard is not None:
      for name, value in record.items():
        if name != 'step' and isinstance(value, float):
          self._tensorboard.add_scalar(name, value, record['step'])

  def close(self):
    if self._file is not None:
      self._file.close()
    if self._tensorboard is not None:
      self._tensorboard.close()


class Checkpoints:
  """The newest states in ``<workdir>/checkpoints`` and the best one by the
  validation metric in ``<workdir>/best`` (with ``best.json`` beside it)."""

  def __init__(self, workdir: str, keep: int):
    self.workdir = workdir
    self.latest = checkpoints.manager(checkpoints.directory(workdir), keep)
    self._best = None

  def save(self, state, step: int, wait: bool = False):
    checkpoints.save(self.latest, contents(state), step, wait)

  def save_best(self, state, step: int, metrics: Dict[str, float]):
    if self._best is None:
      self._best = checkpoints.manager(
        checkpoints.directory(self.workdir, 'best'), 1
      )
    checkpoints.save(self._best, contents(state), step)
    if is_writer():
      workdir_lib.write_json(
        best_record_path(self.workdir), {'step': step, 'metrics': metrics}
      )

  def wait(self):
    self.latest.wait_until_finished()
    if self._best is not None:
      self._best.wait_until_finished()

  def close(self):
    self.wait()
    self.latest.close()
    if self._best is not None:
      self._best.close()


def contents(state) -> Dict[str, Any]:
  """What a checkpoint holds: the state without its static fields."""
  return {
    'params': state.params,
    'opt_state': state.opt_state,
    'step': state.step,
  }


def best_record_path(workdir: str) -> str:
  return os.path.join(workdir, 'best.json')


def read_best(workdir: str, up_to_step: int) -> Optional[Dict[str, Any]]:
  """``{'step', 'metrics'}`` of the best checkpoint if it is at a step <=
  ``up_to_step`` (a resumed run redoes the steps after its checkpoint)."""
  try:
    with open(best_record_path(workdir)) as f:
      best = json.load(f)
  except (OSError, ValueError):
    return None
  if not isinstance(best, dict) or best.get('step', math.inf) > up_to_step:
    return None
  return best


def is_better(value: float, best: Optional[float], mode: str) -> bool:
  if best is None:
    return bool(np.isfinite(value))
  return value < best if mode == 'min' else value > best
