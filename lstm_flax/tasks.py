"""Tasks: a generator, a model head size, a loss, metrics and a figure, built from a config.

An experiment's config names a task (``config.task.name``); every other field
of ``config.task`` is passed to the task's generator.  To add a task, write
its generator in ``data.py``, a builder here, and register it in ``TASKS``.
"""

import dataclasses
import functools
import inspect
from typing import Any, Callable, Dict, Optional

import jax
import jax.numpy as jnp
import optax

from lstm_flax import data
from lstm_flax import validation as v

Metrics = Dict[str, jax.Array]


@dataclasses.dataclass(frozen=True)
class Task:
  """What the training loop needs to know about a task.

  generate: ``(key, batch_size, offset=0) -> (inputs, targets)``, pure.
  loss: ``(outputs, targets) -> ()`` scalar to minimise, a batch mean.
  metrics: ``(outputs, targets) -> {name: ()}`` batch means (``loss`` included),
    so means over equal-sized batches average exactly.
  num_outputs: the model head's size.
  decode: ``(outputs) -> predictions`` as the task reports them (class, value).
  summarize: ``(mean metrics over the eval set) -> reported metrics``, for
    metrics that are not means themselves (RMSE from the mean squared error).
  figure: optional ``(workdir, inputs, targets, predictions) -> path``
    drawing a few held-out examples (needs matplotlib).
  describe: ``(input, target, prediction) -> dict`` of one example for
    printouts, as the seed prints them (numpy in, JSON-able out).
  """

  name: str
  input_kind: str       # 'sequence' (B, T, F) or 'frames' (B, T, H, W, C)
  generate: Callable[..., Any]
  loss: Callable[[jax.Array, jax.Array], jax.Array]
  metrics: Callable[[jax.Array, jax.Array], Metrics]
  num_outputs: int
  decode: Callable[[jax.Array], jax.Array]
  summarize: Callable[[Dict[str, float]], Dict[str, float]] = lambda m: m
  figure: Optional[Callable[..., str]] = None
  describe: Callable[..., Dict[str, Any]] = lambda x, y, p: {
      'expected': y.tolist(), 'predicted': p.tolist()}


# --- losses and metrics (pure) -------------------------------------------------


def softmax_cross_entropy(logits, labels):
  """logits (B, C), labels (B,) int -> mean cross-entropy."""
  return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


def classification_metrics(logits, labels):
  return {'loss': softmax_cross_entropy(logits, labels),
          'accuracy': (jnp.argmax(logits, -1) == labels).mean()}


def mean_absolute_error(predictions, targets):
  """predictions, targets (B, K) -> mean |error|."""
  return jnp.abs(predictions - targets).mean()


def regression_metrics(predictions, targets):
  mse = jnp.square(predictions - targets).mean()
  mae = mean_absolute_error(predictions, targets)
  return {'loss': mae, 'mae': mae, 'mse': mse}


def add_rmse(metrics):
  """RMSE over the whole eval set: the root of the mean of per-batch MSEs."""
  return {**metrics, 'rmse': float(metrics['mse']) ** 0.5}


def sigmoid_binary_cross_entropy(logits, labels):
  """logits (B, 1), labels (B,) in {0, 1} -> mean binary cross-entropy."""
  return optax.sigmoid_binary_cross_entropy(
      logits[:, 0], labels.astype(logits.dtype)).mean()


def binary_metrics(logits, labels):
  return {'loss': sigmoid_binary_cross_entropy(logits, labels),
          'accuracy': ((logits[:, 0] > 0).astype(jnp.int32) == labels).mean()}


# --- task builders -------------------------------------------------------------


def _figure(name):
  """A lazily imported figure function from ``lstm_flax.plots``."""

  def draw(*args, **kwargs):
    from lstm_flax import plots  # pylint: disable=g-import-not-at-top
    return getattr(plots, name)(*args, **kwargs)

  return draw


def _with_defaults(field, options, generator):
  """options completed with the generator's defaults; unknown keys rejected."""
  v.options_of(field, options, generator)
  defaults = {name: p.default for name, p in
              inspect.signature(generator).parameters.items()
              if p.default is not inspect.Parameter.empty and name != 'offset'}
  return {**defaults, **options}


def echo_task(options):
  o = _with_defaults('task', options, data.echo)
  v.integer('task.length', o['length'], 1)
  v.integer('task.n_features', o['n_features'], 2)
  v.integer('task.out_index', o['out_index'], 0, o['length'] - 1)
  return Task(
      name='echo',
      input_kind='sequence',
      generate=functools.partial(data.echo, **options),
      loss=softmax_cross_entropy,
      metrics=classification_metrics,
      num_outputs=options.get('n_features', 10),
      decode=lambda logits: jnp.argmax(logits, -1),
      describe=lambda x, y, p: {'sequence': x.argmax(-1).tolist(),
                                'expected': int(y), 'predicted': int(p)})


def damped_sine_task(options):
  o = _with_defaults('task', options, data.damped_sine)
  v.integer('task.length', o['length'], 1)
  v.integer('task.output', o['output'], 1)
  v.integer('task.period_min', o['period_min'], 1)
  v.integer('task.period_max', o['period_max'], o['period_min'])
  v.number('task.decay_min', o['decay_min'], 0)
  v.number('task.decay_max', o['decay_max'], o['decay_min'])
  v.number('task.a', o['a'])
  v.number('task.b', o['b'])
  return Task(
      name='damped_sine',
      input_kind='sequence',
      generate=functools.partial(data.damped_sine, **options),
      loss=mean_absolute_error,
      metrics=regression_metrics,
      num_outputs=options.get('output', 5),
      decode=lambda outputs: outputs,
      summarize=add_rmse,
      figure=_figure('forecast_figure'),
      describe=lambda x, y, p: {
          'expected': [round(float(v), 4) for v in y],
          'predicted': [round(float(v), 4) for v in p],
          'mean_absolute_error': round(float(abs(p - y).mean()), 5)})


def moving_line_task(options):
  o = _with_defaults('task', options, data.moving_line)
  v.integer('task.size', o['size'], 2)
  return Task(
      name='moving_line',
      input_kind='frames',
      generate=functools.partial(data.moving_line, **options),
      loss=sigmoid_binary_cross_entropy,
      metrics=binary_metrics,
      num_outputs=1,
      decode=lambda logits: (logits[:, 0] > 0).astype(jnp.int32),
      figure=_figure('moving_line_figure'),
      describe=lambda x, y, p: {'expected': _DIRECTIONS[int(y)],
                                'predicted': _DIRECTIONS[int(p)]})


_DIRECTIONS = ('left', 'right')

TASKS = {
    'echo': echo_task,
    'damped_sine': damped_sine_task,
    'moving_line': moving_line_task,
}


def make_task(task_config) -> Task:
  """Builds the task named ``task_config.name`` with the rest as generator options."""
  options = dict(task_config)
  name = options.pop('name')
  v.choice('task.name', name, TASKS)
  return TASKS[name](options)
