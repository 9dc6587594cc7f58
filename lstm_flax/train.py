"""Training and evaluation, the loop every experiment shares.

config -> ``experiment.build`` (task, model, optimizer, compiled programs) ->
restore or init -> K steps per compiled call (``train.steps_per_call``),
logged every ``train.log_every`` steps, validated every
``eval.every_steps`` (best checkpoint kept), checkpointed -> final held-out
eval -> results.json (and the task's figure).
"""

import contextlib
import os
import time
from typing import Any, Dict

from absl import logging
import jax
import numpy as np

from lstm_flax import checkpoints
from lstm_flax import evaluation
from lstm_flax import experiment as experiment_lib
from lstm_flax import results as results_lib
from lstm_flax import runtime
from lstm_flax import sharding
from lstm_flax import startup
from lstm_flax import train_log
from lstm_flax import warm_start
from lstm_flax import workdir as workdir_lib


def train_and_evaluate(config, workdir: str) -> Dict[str, Any]:
  """Trains ``config`` in ``workdir`` (resuming from its newest readable
  checkpoint), evaluates the final model on held-out data and writes
  config.json, metrics.jsonl, checkpoints/, best/, results.json and the
  task's figure.  Returns the results dict."""
  start = time.perf_counter()
  with runtime.SignalCatcher() as signals, runtime.workdir_lock(workdir):
    exp = build_for_training(config)
    write_run_files(exp, workdir)
    state, step = restore_or_init(exp, workdir)
    with (
      contextlib.closing(
        runtime.Checkpoints(workdir, config.train.keep_checkpoints)
      ) as ckpt,
      contextlib.closing(
        runtime.MetricWriter(
          workdir if runtime.is_writer() else None, config.train.tensorboard
        )
      ) as writer,
    ):
      log = train_log.TrainLog(exp, writer, workdir, step)
      state, step = train(exp, state, step, log, ckpt, signals)
      stop_if_interrupted(signals, step, workdir)
      if config.eval.final_from_best and log.best is not None:
        state = restore_best(exp, ckpt, log.best['step'])
      final = final_eval(exp, state, workdir, writer)
      stop_if_interrupted(signals, step, workdir)
    results = results_lib.training_results(exp, final, log, start)
    results_lib.write(workdir, 'results.json', results)
  results_lib.draw_figure(exp, state, workdir, final.kept)
  return results


def build_for_training(config) -> experiment_lib.Experiment:
  """The experiment with the train and eval programs compiled."""
  wants_figure = config.eval.figure_examples > 0
  names = ('train', 'eval') + (
    ('eval_valid',) if config.eval.every_steps else ()
  )
  exp = experiment_lib.build(
    config,
    names,
    kept_examples=(config.eval.figure_examples if wants_figure else 0),
    while_compiling=lambda task: startup.import_while_compiling(
      figure=wants_figure and task.figure is not None
    ),
  )
  logging.info(
    '%s: %s on %d %s device(s) in %d process(es), %d steps of '
    'batch %d, %d per call%s; compiled in %.2fs',
    config.name,
    exp.task.name,
    jax.device_count(),
    jax.devices()[0].platform,
    jax.process_count(),
    config.train.steps,
    config.train.batch_size,
    exp.steps_per_call,
    f', {config.num_seeds} seeds at once' if config.num_seeds > 1 else '',
    exp.compile_seconds,
  )
  logging.info('%s', exp.plan.describe())
  return exp


def write_run_files(exp, workdir: str):
  """config.json (what makes this run) and the model summary."""
  if not runtime.is_writer():
    return
  workdir_lib.write_json(
    os.path.join(workdir, 'config.json'), exp.config.to_dict()
  )
  summary = results_lib.model_summary(exp)
  if summary:
    logging.info('model:\n%s', summary)
    with open(os.path.join(workdir, 'model_summary.txt'), 'w') as f:
      f.write(summary + '\n')


def restore_or_init(exp, workdir: str):
  """(state, step): the newest readable checkpoint (unreadable newer ones
  are set aside), else a fresh state, warm-started from
  ``config.train.init_from`` if set."""
  directory = checkpoints.directory(workdir)
  target = checkpoints_target(exp)
  restored, step, failed = checkpoints.restore_newest_readable(
    directory, target
  )
  if failed and runtime.is_writer():
    checkpoints.set_aside(workdir, directory, failed)
  if restored is not None:
    state = exp.abstract_state.replace(**restored)
    logging.info('resuming at step %d of %d', step, exp.config.train.steps)
  else:
    state = exp.init()
    if exp.config.train.init_from:
      state = warm_start.from_path(exp, state, exp.config.train.init_from)
  step = int(np.max(sharding.to_host(state.step)))
  if step > exp.config.train.steps:
    raise runtime.TrainingError(
      f'{workdir} holds a checkpoint at step {step}, past '
      f'config.train.steps={exp.config.train.steps}: raise train.steps to '
      f'continue, or use another --workdir'
    )
  if runtime.is_writer():
    workdir_lib.trim_metrics(os.path.join(workdir, 'metrics.jsonl'), step)
  return state, step


def restore_best(exp, ckpt, step: int):
  """The best checkpoint (by validation), for the final eval."""
  ckpt.wait()
  restored, _, _ = checkpoints.restore_newest_readable(
    checkpoints.directory(ckpt.workdir, 'best'), checkpoints_target(exp), step
  )
  if restored is None:
    raise runtime.TrainingError(
      f'the best checkpoint (step {step}) in '
      f'{checkpoints.directory(ckpt.workdir, "best")} could not be read'
    )
  logging.info('final eval on the best checkpoint, step %d', step)
  return exp.abstract_state.replace(**restored)


def checkpoints_target(exp):
  """The checkpoint's abstract contents, placed as the programs expect."""
  placement = sharding.replicated(sharding.data_mesh())
  return jax.tree_util.tree_map(
    lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=placement),
    runtime.contents(exp.abstract_state),
  )


def train(exp, state, step: int, log, ckpt, signals):
  """Runs compiled chunks of steps up to ``config.train.steps``; returns the
  final (state, step), its checkpoint saved (asynchronously)."""
  config = exp.config
  total = config.train.steps
  last_saved = step
  while step < total and signals.signum is None:
    num = chunk_length(
      step,
      exp.steps_per_call,
      total,
      config.eval.every_steps,
      config.train.checkpoint_every,
    )
    state, metrics, finite = exp.programs['train'](
      state, exp.keys.batch, exp.keys.dropout, num
    )
    metrics = {k: v[:num] for k, v in sharding.to_host(metrics).items()}
    check_finite(exp, metrics, sharding.to_host(finite), step, ckpt)
    step += num
    log.train_steps(step, metrics)
    if config.eval.every_steps and step % config.eval.every_steps == 0:
      log.validation(
        step, evaluation.evaluate(exp, state, 'valid'), state, ckpt
      )
    every = config.train.checkpoint_every
    if (
      signals.signum is not None
      or step == total
      or (every and step - last_saved >= every)
    ):
      ckpt.save(state, step, wait=signals.signum is not None)
      last_saved = step
  if signals.signum is None and last_saved != step:
    ckpt.save(state, step)  # a finished run restored as it was
  return state, step


def stop_if_interrupted(signals, step: int, workdir: str):
  """Raises Interrupted once a signal has arrived (the state is saved)."""
  if signals.signum is None:
    return
  saved = (
    f'checkpoint in {checkpoints.directory(workdir)}'
    if step
    else 'nothing trained yet'
  )
  logging.warning(
    'stopped at step %d (%s): rerun the same command to resume', step, saved
  )
  raise runtime.Interrupted(signals.signum, step)


def chunk_length(
  step: int,
  steps_per_call: int,
  total: int,
  eval_every: int,
  checkpoint_every: int,
) -> int:
  """Steps in the next compiled call: it ends at the next validation or
  checkpoint step, so those land exactly (a shorter call reuses the same
  program)."""
  end = min(step + steps_per_call, total)
  for every in (eval_every, checkpoint_every):
    if every:
      end = min(end, (step // every + 1) * every)
  return end - step


def check_finite(exp, metrics, params_finite, step: int, ckpt):
  """Stops, saving nothing, at the first non-finite loss or parameter."""
  losses = metrics['loss']  # (num, N)
  if np.isfinite(losses).all() and params_finite.all():
    return
  if not np.isfinite(losses).all():
    row = int(np.argmin(np.isfinite(losses).all(axis=1)))
    what = (
      f'non-finite training loss ({losses[row].tolist()}) at step '
      f'{step + 1 + row}'
    )
    bad = np.flatnonzero(~np.isfinite(losses[row]))
  else:
    what = f'non-finite parameters after steps {step + 1}-{step + len(losses)}'
    bad = np.flatnonzero(~params_finite)
  seeds = [exp.config.seed + int(i) for i in bad]
  ckpt.wait()
  good = checkpoints.saved_steps(checkpoints.directory(ckpt.workdir))
  raise runtime.TrainingError(
    what
    + (f' (seeds {seeds})' if exp.num_seeds > 1 else '')
    + '; stopped without saving.  Last good checkpoint: '
    + (
      f'step {good[0]} in {checkpoints.directory(ckpt.workdir)}'
      if good
      else 'none'
    )
    + '.  Rerun with a lower --config.optimizer.learning_rate'
    ' or --config.optimizer.grad_clip_norm > 0: it resumes from there.'
  )


def final_eval(exp, state, workdir: str, writer) -> evaluation.Evaluation:
  """The final model on the held-out set (a file task's test part)."""
  final = evaluation.add_report(
    exp, state, evaluation.evaluate(exp, state, 'test'), workdir
  )
  step = int(np.max(sharding.to_host(state.step)))
  writer.write(
    {'step': step, **{f'final/{k}': v for k, v in final.mean.items()}}
  )
  logging.info(
    'final eval on %d held-out examples%s: %s',
    results_lib.num_eval_examples(exp),
    f' (mean of {exp.num_seeds} seeds)' if exp.num_seeds > 1 else '',
    evaluation.describe(final.mean),
  )
  if not evaluation.all_finite(final.mean):
    raise runtime.TrainingError(
      f'the final held-out metrics are not finite ({final.mean}); the '
      f'checkpoint at step {step} is kept in '
      f'{checkpoints.directory(workdir)}'
    )
  return final
