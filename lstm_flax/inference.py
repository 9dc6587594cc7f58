"""Evaluation and prediction from a saved checkpoint (``--mode=eval|predict``)."""

from typing import Any, Dict, List, Union

from absl import logging
import jax
import numpy as np

from lstm_flax import checkpoints
from lstm_flax import evaluation
from lstm_flax import experiment as experiment_lib
from lstm_flax import programs
from lstm_flax import results as results_lib
from lstm_flax import sharding
from lstm_flax import train as train_lib

Checkpoint = Union[str, int]  # 'latest', 'best' or a step


def restore(
  config, workdir: str, program: str, checkpoint: Checkpoint = 'latest'
):
  """(experiment with ``program`` compiled, the restored state)."""
  name = 'best' if checkpoint == 'best' else 'checkpoints'
  directory = checkpoints.directory(workdir, name)
  if not checkpoints.saved_steps(directory):
    raise FileNotFoundError(
      f'no checkpoint in {directory}: '
      + (
        'the best checkpoint is kept when config.eval.every_steps > 0'
        if checkpoint == 'best'
        else f'train first (lstm-flax --config=... --workdir={workdir})'
      )
    )
  step = None if checkpoint in ('latest', 'best') else int(checkpoint)
  exp = experiment_lib.build(config, (program,))
  restored, found, failed = checkpoints.restore_newest_readable(
    directory, train_lib.checkpoints_target(exp), step
  )
  if restored is None:
    raise FileNotFoundError(
      f'checkpoint {checkpoint} in {directory} could not be restored '
      f'(steps that failed: {failed}; saved: '
      f'{checkpoints.saved_steps(directory)})'
    )
  if failed:
    logging.warning(
      'checkpoints %s in %s could not be read; using step %d',
      failed,
      directory,
      found,
    )
  return exp, exp.abstract_state.replace(**restored)


def evaluate_checkpoint(
  config, workdir: str, checkpoint: Checkpoint = 'latest'
) -> Dict[str, Any]:
  """Evaluates a checkpoint on the held-out set; writes eval.json."""
  exp, state = restore(config, workdir, 'eval', checkpoint)
  final = evaluation.add_report(
    exp, state, evaluation.evaluate(exp, state, 'test'), workdir
  )
  step = int(np.max(sharding.to_host(state.step)))
  result = {
    'config': config.name,
    'task': exp.task.name,
    'step': step,
    'checkpoint': str(checkpoint),
    'eval_seed': config.eval.seed,
    'eval': {'num_examples': results_lib.num_eval_examples(exp), **final.mean},
  }
  if exp.num_seeds > 1:
    result.update(
      eval_per_seed=final.per_seed,
      eval_stats=evaluation.seed_statistics(final.per_seed),
      eval_ensemble=final.ensemble,
    )
  if final.report is not None:
    result['report'] = final.report
  logging.info('eval of step %d: %s', step, evaluation.describe(final.mean))
  results_lib.write(workdir, 'eval.json', result)
  return result


def predict_from_checkpoint(
  config, workdir: str, checkpoint: Checkpoint = 'latest'
) -> List[Dict[str, Any]]:
  """Decoded predictions (replica 0's) on the first
  ``config.eval.predict_examples`` held-out examples: a list of dicts."""
  exp, state = restore(config, workdir, 'predict', checkpoint)
  inputs, targets, predictions = sharding.to_host(
    exp.predict(programs.replica(state.params))
  )
  examples = (inputs, targets, predictions)
  count = min(config.eval.predict_examples, len(targets))
  return [
    exp.task.describe(*jax.tree_util.tree_map(lambda a, i=i: a[i], examples))
    for i in range(count)
  ]
