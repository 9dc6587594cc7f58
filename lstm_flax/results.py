"""What a run leaves for people: results.json, the figure, the model summary."""

import os
import time
from typing import Any, Dict

from absl import logging
import jax

from lstm_flax import evaluation
from lstm_flax import programs
from lstm_flax import runtime
from lstm_flax import sharding
from lstm_flax import summary
from lstm_flax import workdir as workdir_lib


def num_eval_examples(exp) -> int:
  """Examples of the final eval: every test window of a file task, else
  ``config.eval.num_examples`` generated ones."""
  if exp.held_out is not None:
    return int(exp.held_out['test'][1].shape[0])  # the targets
  return exp.config.eval.num_examples


def training_results(
  exp, final: evaluation.Evaluation, log, start: float
) -> Dict[str, Any]:
  """results.json of a training run.  With N > 1 seeds, ``eval`` holds the
  mean over seeds, ``eval_per_seed`` each seed's and ``eval_ensemble`` the
  metrics of the seeds' mean output."""
  config = exp.config
  results = {
    'config': config.name,
    'task': exp.task.name,
    'model': config.model.name,
    'seed': config.seed,
    'steps': config.train.steps,
    'batch_size': config.train.batch_size,
    'train_seconds': log.train_seconds,
    'compile_seconds': exp.compile_seconds,
    'total_seconds': time.perf_counter() - start,
    'final_train_loss': float(log.final_loss.mean()),
    'final_train_loss_steps': log.final_window,  # the window it averages
    'eval': {'num_examples': num_eval_examples(exp), **final.mean},
    'platform': jax.devices()[0].platform,
    'num_devices': jax.device_count(),
    'num_processes': jax.process_count(),
    'compile_plan': exp.plan.to_json(),
    'compilation': exp.compilation,
  }
  if exp.num_seeds > 1:
    results.update(
      {
        'num_seeds': exp.num_seeds,
        'seeds': list(range(config.seed, config.seed + exp.num_seeds)),
        'final_train_loss_per_seed': log.final_loss.tolist(),
        'eval_per_seed': final.per_seed,
        'eval_stats': evaluation.seed_statistics(final.per_seed),
        'eval_ensemble': final.ensemble,
      }
    )
  if log.best is not None:
    results['best'] = log.best
  results['eval_checkpoint'] = (
    f'best (step {log.best["step"]})'
    if config.eval.final_from_best and log.best is not None
    else 'final'
  )
  if final.report is not None:
    results['report'] = final.report
  if exp.task.baselines is not None:
    results['baselines'] = exp.task.baselines()
  return results


def write(workdir: str, name: str, obj):
  if runtime.is_writer():
    workdir_lib.write_json(os.path.join(workdir, name), obj)


def draw_figure(exp, state, workdir: str, kept=None):
  """The task's figure of a few held-out examples (replica 0's predictions),
  if it has one and matplotlib is installed; else one log line.  ``kept``:
  the examples the eval program returned, or None to run predict."""
  n = exp.config.eval.figure_examples
  if not n or exp.task.figure is None or not runtime.is_writer():
    return None
  try:
    import matplotlib  # noqa: F401  # pylint: disable=g-import-not-at-top,unused-import
  except ImportError:
    logging.info(
      'matplotlib is not installed: figure skipped '
      "(pip install -e '.[plot]' to draw it)"
    )
    return None
  if not kept:
    kept = exp.predict(programs.replica(state.params))
  inputs, targets, predictions = (sharding.to_host(a)[:n] for a in kept)
  try:
    path = exp.task.figure(workdir, inputs, targets, predictions)
  except OSError as e:
    logging.error('figure not drawn: %s', e)
    return None
  logging.info('figure: %s', path)
  return path


def model_summary(exp) -> str:
  """Layers, output shapes and parameter counts."""
  inputs, _ = jax.eval_shape(lambda: exp.task.generate(jax.random.key(0), 1))
  return summary.model_summary(exp.model, inputs)
