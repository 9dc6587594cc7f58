"""What the loop records as it trains: the learning curve every
``train.log_every`` steps, validation metrics, and the best checkpoint."""

import time
from typing import Dict

from absl import logging
import numpy as np

from lstm_flax import evaluation
from lstm_flax import runtime


class TrainLog:
  """Training records (mean loss, gradient norm, learning rate) over windows
  of ``train.log_every`` steps, whatever ``steps_per_call`` is; validation
  records; the best checkpoint by ``eval.best_metric``."""

  def __init__(
    self, exp, writer: runtime.MetricWriter, workdir: str, step: int
  ):
    config = exp.config
    self.every = config.train.log_every or exp.steps_per_call
    self.total = config.train.steps
    self.num_seeds = exp.num_seeds
    self.schedule = exp.schedule
    self.writer = writer
    self.metric, self.mode = config.eval.best_metric, config.eval.best_mode
    self.best = runtime.read_best(workdir, step)
    self.final_loss = np.full((self.num_seeds,), np.nan)  # last window's mean
    self.final_window = 0  # its length in steps
    self.train_seconds = 0.0
    self._buffer = []
    self._last_time = time.perf_counter()
    self._last_console = 0.0

  def train_steps(self, step: int, metrics: Dict[str, np.ndarray]):
    """``metrics``: name -> (num, N) of the steps ``step - num + 1 .. step``."""
    now = time.perf_counter()
    num = len(metrics['loss'])
    self.train_seconds += now - self._last_time
    rate = num / max(now - self._last_time, 1e-9)
    self._last_time = now
    self._buffer.append(metrics)
    ends = [
      s
      for s in range(step - num + 1, step + 1)
      if s % self.every == 0 or s == self.total
    ]
    if not ends:
      return
    merged = {k: np.concatenate([m[k] for m in self._buffer]) for k in metrics}
    first = step - len(merged['loss'])  # steps done before the buffer
    for end in ends:
      window = {k: v[: end - first] for k, v in merged.items()}
      merged = {k: v[end - first :] for k, v in merged.items()}
      first = end
      self._write(end, window, rate)
    self._buffer = [merged]

  def _write(self, step: int, window, rate: float):
    loss = window['loss'].mean(axis=0)  # (N,)
    self.final_loss, self.final_window = loss, len(window['loss'])
    record = {
      'step': step,
      'train_loss': float(loss.mean()),
      'learning_rate': float(self.schedule(step - 1)),
      'steps_per_second': rate,
      'elapsed_seconds': self.train_seconds,
    }
    if 'grad_norm' in window:
      record['grad_norm'] = float(window['grad_norm'].mean())
    if self.num_seeds > 1:
      record['train_loss_per_seed'] = loss.tolist()
    self.writer.write(record)
    now = time.perf_counter()
    if now - self._last_console >= 1.0 or step == self.total:
      self._last_console = now
      grad = (
        f'  |grad| {record["grad_norm"]:.3g}' if 'grad_norm' in record else ''
      )
      logging.info(
        'step %d/%d  loss %.4g  lr %.3g%s  %.0f steps/s  ETA %s',
        step,
        self.total,
        record['train_loss'],
        record['learning_rate'],
        grad,
        rate,
        _format_eta((self.total - step) / rate),
      )

  def validation(
    self,
    step: int,
    result: evaluation.Evaluation,
    state,
    ckpt: runtime.Checkpoints,
  ):
    """Writes the validation metrics; saves the state if it is the best."""
    metrics = result.mean
    record = {'step': step, **{f'eval/{k}': v for k, v in metrics.items()}}
    if result.ensemble is not None:
      record.update(
        {f'eval_ensemble/{k}': v for k, v in result.ensemble.items()}
      )
    self.writer.write(record)
    logging.info('step %d validation: %s', step, evaluation.describe(metrics))
    best = None if self.best is None else self.best['metrics'][self.metric]
    if runtime.is_better(metrics[self.metric], best, self.mode):
      self.best = {'step': step, 'metrics': metrics}
      ckpt.save_best(state, step, metrics)


def _format_eta(seconds: float) -> str:
  seconds = int(round(seconds))
  return f'{seconds // 60}m{seconds % 60:02d}s'
