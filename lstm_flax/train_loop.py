"""The one training loop every experiment shares.

Flow: config -> task (generator, loss, metrics) + model -> ``TrainState`` ->
``train_chunk``: one jitted ``lax.scan`` over K steps, each drawing its batch
on the device from ``fold_in(train_key, step)`` -> host logs every K steps ->
``evaluate`` (jitted, on keys disjoint from training) -> results.json.
"""

import contextlib
import dataclasses
import json
import os
import signal
import threading
import time
from typing import Any, Dict, Tuple

from absl import logging
import flax.linen as nn
from flax.training import train_state
import jax
import jax.numpy as jnp
import numpy as np
import optax

from lstm_flax import checkpoints
from lstm_flax import models
from lstm_flax import tasks
from lstm_flax import validation
from lstm_flax import workdir as workdir_lib

TrainState = train_state.TrainState

# Programs that run once (init, eval) compile with LLVM at -O0: 3-4x faster to
# compile on CPU, and they are too short for the slower code to matter.
_RUN_ONCE_OPTIONS = {'xla_backend_optimization_level': 0}

# Streams folded from the run's seed: parameters, training batches, eval.
_INIT, _TRAIN, _EVAL = 0, 1, 2


def run_keys(seed: int, eval_seed: int):
  """(init_key, train_key, eval_key).  Eval keys come from a separate fold of
  ``eval_seed``, so held-out data never equals a training batch."""
  root = jax.random.key(seed)
  return (jax.random.fold_in(root, _INIT), jax.random.fold_in(root, _TRAIN),
          jax.random.fold_in(jax.random.key(eval_seed), _EVAL))


def make_optimizer(opt_config, total_steps: int) -> optax.GradientTransformation:
  """Adam / AdamW / SGD with a constant or (warmup-)cosine learning rate."""
  lr = opt_config.learning_rate
  if opt_config.schedule == 'constant':
    schedule = lr
  elif opt_config.schedule == 'cosine':
    schedule = optax.warmup_cosine_decay_schedule(
        0.0 if opt_config.warmup_steps else lr, lr, opt_config.warmup_steps,
        max(total_steps, opt_config.warmup_steps + 1),
        end_value=lr * opt_config.final_lr_fraction)
  else:
    raise ValueError(f"config.optimizer.schedule={opt_config.schedule!r}; "
                     f"known: ['constant', 'cosine']")
  optimizers = {
      'adam': lambda lr: optax.adam(lr, eps=opt_config.eps),
      'adamw': lambda lr: optax.adamw(lr, eps=opt_config.eps,
                                      weight_decay=opt_config.weight_decay),
      'sgd': lambda lr: optax.sgd(lr, momentum=opt_config.momentum or None),
  }
  if opt_config.name not in optimizers:
    raise ValueError(f'config.optimizer.name={opt_config.name!r}; known: '
                     f'{sorted(optimizers)}')
  tx = optimizers[opt_config.name](schedule)
  if opt_config.grad_clip_norm > 0:
    tx = optax.chain(optax.clip_by_global_norm(opt_config.grad_clip_norm), tx)
  return tx


def make_init(model: nn.Module, task: tasks.Task, tx):
  """A jitted ``init_key -> TrainState``: parameters from one generated
  example's shapes, and the optimizer state (eager init of a scanned model is
  slow)."""
  inputs, _ = jax.eval_shape(lambda: task.generate(jax.random.key(0), 1))

  @jax.jit
  def init(key):
    params = model.init(key, jnp.zeros(inputs.shape, inputs.dtype))['params']
    return TrainState.create(apply_fn=model.apply, params=params, tx=tx)

  return init


def create_train_state(model: nn.Module, task: tasks.Task, tx, init_key):
  return make_init(model, task, tx)(init_key)


def make_train_step(task: tasks.Task, batch_size: int, train_key):
  """state -> (state, loss): one update on the batch of step ``state.step``."""

  def train_step(state: TrainState):
    inputs, targets = task.generate(jax.random.fold_in(train_key, state.step),
                                    batch_size)

    def loss_fn(params):
      return task.loss(state.apply_fn({'params': params}, inputs), targets)

    loss, grads = jax.value_and_grad(loss_fn)(state.params)
    return state.apply_gradients(grads=grads), loss

  return train_step


def make_train_chunk(train_step, steps_per_call: int):
  """A jitted ``(state, num_steps) -> (state, losses (K,))`` running
  ``num_steps <= K`` steps in one ``lax.scan`` of fixed length K.

  ``num_steps`` is a traced argument, so the last, shorter chunk reuses the
  same compiled program; skipped steps report a NaN loss.
  """

  def chunk(state, num_steps):

    def body(state, i):
      return jax.lax.cond(i < num_steps, train_step,
                          lambda s: (s, jnp.full((), jnp.nan, jnp.float32)),
                          state)

    return jax.lax.scan(body, state, jnp.arange(steps_per_call))

  return jax.jit(chunk, donate_argnums=0)


def make_predict(task: tasks.Task, num_examples: int, eval_key):
  """A jitted ``(apply_fn, params) -> (inputs, targets, predictions)`` on the
  first ``num_examples`` held-out examples (for figures and printouts)."""

  def predict(apply_fn, params):
    inputs, targets = task.generate(eval_key, num_examples)
    return inputs, targets, task.decode(apply_fn({'params': params}, inputs))

  return jax.jit(predict, static_argnums=0)


def make_evaluate(task: tasks.Task, num_examples: int, batch_size: int, eval_key):
  """A jitted ``params -> {metric: mean}`` over the first ``num_examples``
  examples of the eval stream, ``batch_size`` at a time."""
  if num_examples % batch_size:
    raise ValueError(f'config.eval.num_examples={num_examples} must be a '
                     f'multiple of config.eval.batch_size={batch_size}')

  def evaluate(apply_fn, params):

    def one_batch(i):
      inputs, targets = task.generate(eval_key, batch_size, offset=i * batch_size)
      return task.metrics(apply_fn({'params': params}, inputs), targets)

    per_batch = jax.lax.map(one_batch, jnp.arange(num_examples // batch_size))
    return jax.tree_util.tree_map(jnp.mean, per_batch)

  return jax.jit(evaluate, static_argnums=0)


def _format_eta(seconds: float) -> str:
  seconds = int(round(seconds))
  return f'{seconds // 60}m{seconds % 60:02d}s'


@dataclasses.dataclass
class Experiment:
  """Everything a config builds: the initial state and the compiled programs
  (a program that ``build`` was not asked for is None)."""
  config: Any
  task: tasks.Task
  state: TrainState
  train_chunk: Any      # compiled (state, num_steps) -> (state, losses)
  evaluate: Any         # compiled params -> {metric: mean}
  predict: Any          # compiled params -> (inputs, targets, predictions)
  steps_per_call: int
  compile_seconds: float


def build(config, programs=('train', 'eval', 'predict')) -> Experiment:
  """Builds the task, model and optimizer of ``config``, the initial state,
  and compiles the ``programs`` asked for (others are None) from shapes
  alone.  Init, eval and predict run once, so they compile at -O0.
  (Compiling them in parallel threads measured no faster on 2 cores.)"""
  task = validation.validate(config)
  model = models.make_model(config.model, task.num_outputs)
  steps = config.train.steps
  steps_per_call = min(config.train.steps_per_call, steps)
  init_key, train_key, eval_key = run_keys(config.seed, config.eval.seed)
  tx = make_optimizer(config.optimizer, steps)
  init = make_init(model, task, tx)
  jitted = {
      'train': make_train_chunk(
          make_train_step(task, config.train.batch_size, train_key),
          steps_per_call),
      'eval': make_evaluate(task, config.eval.num_examples,
                            config.eval.batch_size, eval_key),
      'predict': make_predict(task, max(1, config.eval.figure_examples,
                                        config.eval.predict_examples), eval_key),
  }

  start = time.perf_counter()
  abstract = jax.eval_shape(init, init_key)
  state = init.lower(init_key).compile(_RUN_ONCE_OPTIONS)(init_key)
  compiled = {}
  for name in programs:
    if name == 'train':
      compiled[name] = jitted[name].lower(abstract, 0).compile()
    else:
      compiled[name] = jitted[name].lower(abstract.apply_fn, abstract.params
                                          ).compile(_RUN_ONCE_OPTIONS)
  return Experiment(config, task, state, compiled.get('train'),
                    compiled.get('eval'), compiled.get('predict'),
                    steps_per_call, time.perf_counter() - start)


def _start_orbax_import():
  """orbax takes 1-2 s to import; let it happen while XLA compiles."""
  thread = threading.Thread(target=checkpoints._ocp, daemon=True)  # pylint: disable=protected-access
  thread.start()
  return thread


def evaluate_state(experiment: Experiment, state) -> Dict[str, float]:
  metrics = {k: float(v) for k, v in experiment.evaluate(state.params).items()}
  return experiment.task.summarize(metrics)


def _evaluate_and_report(exp: Experiment, state, workdir: str):
  """Eval metrics, plus those of the task's ``report`` (e.g. generation by
  feeding predictions back) if it has one; and the report's details or None."""
  metrics = evaluate_state(exp, state)
  if exp.task.report is None:
    return metrics, None
  config = exp.config
  report_metrics, details = exp.task.report(
      state.apply_fn, state.params, run_keys(config.seed, config.eval.seed)[2],
      config.eval, workdir)
  return {**metrics, **report_metrics}, details


class TrainingError(RuntimeError):
  """Training cannot go on (a non-finite loss, a workdir of another run)."""


class Interrupted(Exception):
  """SIGINT/SIGTERM arrived; the state was checkpointed.  ``signum`` says which."""

  def __init__(self, signum, step):
    super().__init__(f'interrupted by signal {signum} at step {step}')
    self.signum = signum


class _SignalCatcher:
  """Turns SIGINT/SIGTERM into a flag the loop checks between calls."""

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
    if self.signum is not None:  # a second signal: stop at once
      raise KeyboardInterrupt
    logging.warning('signal %d: checkpointing after the current call, then '
                    'stopping (send it again to stop at once)', signum)
    self.signum = signum

  def __exit__(self, *exc):
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)


class _TensorBoard:
  """Scalars to TensorBoard event files in ``<workdir>/tensorboard`` through
  tensorboardX (the optional ``tensorboard`` extra; no TensorFlow needed).
  Without it: one log line, and nothing is written."""

  def __init__(self, workdir):
    try:
      from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
    except ImportError:
      logging.info('tensorboardX is not installed: no TensorBoard events '
                   "(pip install -e '.[tensorboard]'); metrics.jsonl has it all")
      self._writer = None
      return
    self._writer = SummaryWriter(os.path.join(workdir, 'tensorboard'))

  def write(self, step, scalars):
    if self._writer is not None:
      for name, value in scalars.items():
        self._writer.add_scalar(name, value, step)

  def close(self):
    if self._writer is not None:
      self._writer.close()


def train_and_evaluate(config, workdir: str) -> Dict[str, Any]:
  """Trains ``config`` in ``workdir``, resuming from its latest checkpoint if
  it has one; writes config.json, metrics.jsonl, checkpoints/, results.json
  and the task's figure."""
  start = time.perf_counter()
  os.makedirs(workdir, exist_ok=True)
  orbax_import = _start_orbax_import()
  wants_figure = (config.eval.figure_examples > 0 and
                  tasks.make_task(config.task).figure is not None)
  exp = build(config, ('train', 'eval') + (('predict',) if wants_figure else ()))
  state = exp.state
  steps = config.train.steps
  logging.info('%s: %s on %s, %d steps of batch %d, %d per call; compiled in '
               '%.2fs', config.name, exp.task.name, jax.devices()[0].platform,
               steps, config.train.batch_size, exp.steps_per_call,
               exp.compile_seconds)
  workdir_lib.write_json(os.path.join(workdir, 'config.json'), config.to_dict())

  orbax_import.join()
  manager = checkpoints.manager(workdir, config.train.keep_checkpoints)
  metrics_path = os.path.join(workdir, 'metrics.jsonl')
  saved = checkpoints.saved_steps(workdir)
  if saved:
    restored = checkpoints.restore_latest(manager, state)
    if restored is not None:
      state = restored
    unreadable = [s for s in saved if restored is None or s > int(restored.step)]
    if unreadable:
      manager.close()
      checkpoints.set_aside(workdir, unreadable)
      manager = checkpoints.manager(workdir, config.train.keep_checkpoints)
  step = int(state.step)
  if step:
    logging.info('resuming at step %d of %d', step, steps)
  workdir_lib.trim_metrics(metrics_path, step)

  train_start = time.perf_counter()
  last_saved = step
  last_loss = float('nan')
  with open(metrics_path, 'a') as metrics_file, _SignalCatcher() as signals, \
      contextlib.closing(_TensorBoard(workdir)) as tensorboard:
    while step < steps:
      num = min(exp.steps_per_call, steps - step)
      chunk_start = time.perf_counter()
      new_state, losses = exp.train_chunk(state, num)
      losses = np.asarray(losses[:num])  # blocks until the chunk is done
      if not np.isfinite(losses).all():
        bad = step + 1 + int(np.argmin(np.isfinite(losses)))
        manager.wait_until_finished()
        good = checkpoints.saved_steps(workdir)
        raise TrainingError(
            f'non-finite training loss ({losses[bad - step - 1]}) at step {bad}; '
            f'stopped without saving.  Last good checkpoint: '
            + (f'step {good[0]} in {checkpoints.directory(workdir)}' if good
               else 'none') + '.  Try a lower config.optimizer.learning_rate '
            'or config.optimizer.grad_clip_norm > 0.')
      state = new_state
      now = time.perf_counter()
      step += num
      last_loss = float(losses[-1])
      steps_per_second = num / (now - chunk_start)
      record = {'step': step, 'train_loss': float(losses.mean()),
                'steps_per_second': steps_per_second,
                'elapsed_seconds': now - train_start}
      metrics_file.write(json.dumps(record) + '\n')
      metrics_file.flush()
      tensorboard.write(step, {'train/loss': record['train_loss'],
                               'train/steps_per_second': steps_per_second})
      logging.info('step %d/%d  loss %.4f  %.0f steps/s  ETA %s', step, steps,
                   record['train_loss'], steps_per_second,
                   _format_eta((steps - step) / steps_per_second))
      if signals.signum is not None:
        checkpoints.save(manager, state, wait=True)
        manager.close()
        logging.warning('checkpoint saved at step %d in %s; rerun the same '
                        'command to resume', step, checkpoints.directory(workdir))
        raise Interrupted(signals.signum, step)
      every = config.train.checkpoint_every
      if every > 0 and step - last_saved >= every and step < steps:
        checkpoints.save(manager, state)
        last_saved = step
    train_seconds = time.perf_counter() - train_start
    if manager.latest_step() != step:
      checkpoints.save(manager, state)  # the final state, written while we eval

    eval_metrics, report = _evaluate_and_report(exp, state, workdir)
    metrics_file.write(json.dumps(
        {'step': step, **{f'eval/{k}': v for k, v in eval_metrics.items()}})
                       + '\n')
    tensorboard.write(step, {f'eval/{k}': v for k, v in eval_metrics.items()})
  logging.info('eval on %d held-out examples: %s', config.eval.num_examples,
               ', '.join(f'{k}={v:.5g}' for k, v in eval_metrics.items()))

  if wants_figure:
    draw_figure(exp, state, workdir)
  manager.wait_until_finished()
  manager.close()

  results = {
      'config': config.name,
      'task': exp.task.name,
      'model': config.model.name,
      'seed': config.seed,
      'steps': steps,
      'batch_size': config.train.batch_size,
      'train_seconds': train_seconds,
      'compile_seconds': exp.compile_seconds,
      'total_seconds': time.perf_counter() - start,
      'final_train_loss': last_loss,
      'eval': {'num_examples': config.eval.num_examples, **eval_metrics},
      'platform': jax.devices()[0].platform,
  }
  if report is not None:
    results['report'] = report
  workdir_lib.write_json(os.path.join(workdir, 'results.json'), results)
  return results


def _restore_for_inference(config, workdir: str, program: str
                           ) -> Tuple[Experiment, TrainState]:
  steps = checkpoints.saved_steps(workdir)
  if not steps:
    raise FileNotFoundError(
        f'no checkpoint in {checkpoints.directory(workdir)}: train first '
        f'(python train.py --config=... --workdir={workdir})')
  orbax_import = _start_orbax_import()
  exp = build(config, (program,))
  orbax_import.join()
  manager = checkpoints.manager(workdir, config.train.keep_checkpoints)
  state = checkpoints.restore_latest(manager, exp.state)
  manager.close()
  if state is None:
    raise RuntimeError(f'no checkpoint in {checkpoints.directory(workdir)} '
                       f'could be restored (steps {steps})')
  return exp, state


def evaluate_checkpoint(config, workdir: str) -> Dict[str, Any]:
  """Evaluates the latest checkpoint on fresh held-out data; writes eval.json."""
  exp, state = _restore_for_inference(config, workdir, 'eval')
  metrics, report = _evaluate_and_report(exp, state, workdir)
  result = {'config': config.name, 'task': exp.task.name,
            'step': int(state.step), 'eval_seed': config.eval.seed,
            'eval': {'num_examples': config.eval.num_examples, **metrics}}
  if report is not None:
    result['report'] = report
  workdir_lib.write_json(os.path.join(workdir, 'eval.json'), result)
  logging.info('eval of step %d on %d held-out examples: %s', int(state.step),
               config.eval.num_examples,
               ', '.join(f'{k}={v:.5g}' for k, v in metrics.items()))
  return result


def predict_from_checkpoint(config, workdir: str):
  """Decoded predictions of the latest checkpoint on the first
  ``config.eval.predict_examples`` held-out examples: a list of dicts."""
  exp, state = _restore_for_inference(config, workdir, 'predict')
  inputs, targets, predictions = (
      np.asarray(a) for a in exp.predict(state.params))
  return [exp.task.describe(inputs[i], targets[i], predictions[i])
          for i in range(config.eval.predict_examples)]


def draw_figure(exp: Experiment, state, workdir: str):
  """Draws the task's figure of the first few held-out examples, if matplotlib
  is installed; otherwise logs one line and goes on."""
  try:
    import matplotlib  # pylint: disable=g-import-not-at-top,unused-import
  except ImportError:
    logging.info('matplotlib is not installed: figure skipped '
                 "(pip install -e '.[plot]' to draw it)")
    return None
  n = exp.config.eval.figure_examples
  inputs, targets, predictions = (
      np.asarray(a)[:n] for a in exp.predict(state.params))
  path = exp.task.figure(workdir, inputs, targets, predictions)
  logging.info('figure: %s', path)
  return path
