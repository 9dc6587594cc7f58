"""Tasks: a generator, a model head size, a loss, metrics and a figure, built from a config.

An experiment's config names a task (``config.task.name``); every other field
of ``config.task`` is passed to the task's generator.  To add a task, write
its generator in ``data.py``, a builder here, and register it in ``TASKS``.
"""

import dataclasses
import functools
import inspect
from typing import Any, Callable, Dict, Optional, Tuple

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np
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
  output_kind: what the model must return: 'example' (B, K), one output per
    example; 'per_step' (B, T, K), one per input step; 'sequence'
    (B, output_steps, K), a sequence of its own length.
  output_steps: the length of a 'sequence' output.
  report: optional host-side step after evaluation,
    ``(apply_fn, params, eval_key, eval_config, workdir) -> (metrics,
    details)``: ``metrics`` (name -> float) join the eval metrics,
    ``details`` (JSON-able) go to results.json under ``report`` — for what
    one batched forward pass cannot measure (generation by feeding
    predictions back) and for printouts.
  held_out: optional ``(part) -> (inputs, targets)`` numpy arrays of EVERY
    example of a fixed data set's 'valid' or 'test' part, in the model's
    (normalised) units (tasks from files: ``series``, ``sequences``).  When
    given, evaluation uses these instead of generated examples.
  baselines: optional ``() -> {name: {metric: float}}``: simple reference
    models' metrics on exactly the test examples (``series``: persistence,
    seasonal naive, linear AR), for results.json's ``baselines``.
  """

  name: str
  input_kind: str  # 'sequence' (B, T, F) or 'frames' (B, T, H, W, C)
  generate: Callable[..., Any]
  loss: Callable[[jax.Array, jax.Array], jax.Array]
  metrics: Callable[[jax.Array, jax.Array], Metrics]
  num_outputs: int
  decode: Callable[[jax.Array], jax.Array]
  summarize: Callable[[Dict[str, float]], Dict[str, float]] = lambda m: m
  figure: Optional[Callable[..., str]] = None
  describe: Callable[..., Dict[str, Any]] = lambda x, y, p: {
    'expected': y.tolist(),
    'predicted': p.tolist(),
  }
  output_kind: str = 'example'
  output_steps: int = 0
  report: Optional[Callable[..., Tuple[Dict[str, float], Any]]] = None
  held_out: Optional[Callable[[str], Tuple[np.ndarray, np.ndarray]]] = None
  baselines: Optional[Callable[[], Dict[str, Dict[str, float]]]] = None


# --- losses and metrics (pure) -------------------------------------------------


def softmax_cross_entropy(logits, labels):
  """logits (B, C), labels (B,) int -> mean cross-entropy."""
  return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


def classification_metrics(logits, labels):
  return {
    'loss': softmax_cross_entropy(logits, labels),
    'accuracy': (jnp.argmax(logits, -1) == labels).mean(),
  }


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
    logits[:, 0], labels.astype(logits.dtype)
  ).mean()


def binary_metrics(logits, labels):
  return {
    'loss': sigmoid_binary_cross_entropy(logits, labels),
    'accuracy': ((logits[:, 0] > 0).astype(jnp.int32) == labels).mean(),
  }


def sequence_classification_metrics(logits, labels):
  """logits (B, S, C), labels (B, S) int: per-symbol accuracy and exact match."""
  correct = jnp.argmax(logits, -1) == labels
  return {
    'loss': softmax_cross_entropy(logits, labels),
    'char_accuracy': correct.mean(),
    'exact_match': correct.all(-1).mean(),
  }


def per_step_binary_cross_entropy(logits, labels):
  """logits (B, T, 1), labels (B, T) in {0, 1} -> mean over steps and batch."""
  return optax.sigmoid_binary_cross_entropy(
    logits[..., 0], labels.astype(logits.dtype)
  ).mean()


def per_step_binary_metrics(logits, labels):
  """Per-step accuracy, and the fraction of sequences right at every step."""
  correct = (logits[..., 0] > 0).astype(jnp.int32) == labels
  return {
    'loss': per_step_binary_cross_entropy(logits, labels),
    'accuracy': correct.mean(),
    'sequence_accuracy': correct.all(-1).mean(),
  }


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
  defaults = {
    name: p.default
    for name, p in inspect.signature(generator).parameters.items()
    if p.default is not inspect.Parameter.empty and name != 'offset'
  }
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
    describe=lambda x, y, p: {
      'sequence': x.argmax(-1).tolist(),
      'expected': int(y),
      'predicted': int(p),
    },
  )


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
      'mean_absolute_error': round(float(abs(p - y).mean()), 5),
    },
  )


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
    describe=lambda x, y, p: {
      'expected': _DIRECTIONS[int(y)],
      'predicted': _DIRECTIONS[int(p)],
    },
  )


_DIRECTIONS = ('left', 'right')


def _printout(task_generate, task_decode, line):
  """A ``Task.report`` that logs and returns one line per held-out example
  (``config.eval.predict_examples`` of them): ``line(input, target,
  prediction)`` on numpy arrays."""

  def report(apply_fn, params, eval_key, eval_config, workdir):
    del workdir
    n = eval_config.predict_examples
    inputs, targets = task_generate(eval_key, n)
    predictions = jax.jit(lambda p, x: task_decode(apply_fn({'params': p}, x)))(
      params, inputs
    )
    lines = [
      line(*(np.asarray(a)[i] for a in (inputs, targets, predictions)))
      for i in range(n)
    ]
    for text in lines:
      logging.info('%s', text)
    return {}, {'examples': lines}

  return report


def addition_task(options):
  o = _with_defaults('task', options, data.addition)
  v.integer('task.n_terms', o['n_terms'], 1, 100)
  v.integer('task.max_value', o['max_value'], 1, 10**6)
  longest = o['n_terms'] * len(str(o['max_value'])) + o['n_terms'] - 1
  v.integer('task.input_width', o['input_width'], longest)
  v.integer(
    'task.answer_width',
    o['answer_width'],
    len(str(o['n_terms'] * o['max_value'])),
  )
  generate = functools.partial(data.addition, **options)
  decode = lambda logits: jnp.argmax(logits, -1)

  def line(x, y, p):
    expected = data.decode_text(y).strip()
    predicted = data.decode_text(p).strip()
    return (
      f'{data.decode_text(x).strip()} = {expected} (predicted '
      f'{predicted}){"" if expected == predicted else "  WRONG"}'
    )

  return Task(
    name='addition',
    input_kind='sequence',
    generate=generate,
    loss=softmax_cross_entropy,
    metrics=sequence_classification_metrics,
    num_outputs=len(data.ALPHABET),
    decode=decode,
    describe=lambda x, y, p: {
      'question': data.decode_text(x).strip(),
      'expected': data.decode_text(y).strip(),
      'predicted': data.decode_text(p).strip(),
    },
    output_kind='sequence',
    output_steps=o['answer_width'],
    report=_printout(generate, decode, line),
  )


def cumsum_threshold_task(options):
  o = _with_defaults('task', options, data.cumsum_threshold)
  v.integer('task.length', o['length'], 1)
  v.number('task.limit_fraction', o['limit_fraction'], 0)
  generate = functools.partial(data.cumsum_threshold, **options)
  decode = lambda logits: (logits[..., 0] > 0).astype(jnp.int32)
  bits = lambda a: ''.join(str(int(b)) for b in a)

  def line(x, y, p):
    return (
      f'values {" ".join(f"{v:.2f}" for v in x[:, 0])}  expected '
      f'{bits(y)}  predicted {bits(p)}{"" if (y == p).all() else "  WRONG"}'
    )

  return Task(
    name='cumsum_threshold',
    input_kind='sequence',
    generate=generate,
    loss=per_step_binary_cross_entropy,
    metrics=per_step_binary_metrics,
    num_outputs=1,
    decode=decode,
    describe=lambda x, y, p: {
      'values': [round(float(v), 3) for v in x[:, 0]],
      'expected': bits(y),
      'predicted': bits(p),
    },
    output_kind='per_step',
    report=_printout(generate, decode, line),
  )


def _rectangles_report(mode):
  """Generation by feedback (see ``generation.py``): one rectangle from (0, 0)
  alone — a trained model is deterministic, so every generation from (0, 0)
  is this one — and ``config.eval.num_examples`` completions from (0, 0) and
  the first corner (w, 0) of held-out rectangles; figure of a few."""

  def report(apply_fn, params, eval_key, eval_config, workdir):
    from lstm_flax import generation  # pylint: disable=g-import-not-at-top

    n = eval_config.num_examples
    held_out, _ = data.rectangles(eval_key, n, mode='sequence')
    true_corners = np.asarray(
      data.rectangle_corners(held_out[:, 1, 0], held_out[:, 2, 1])
    )
    alone = np.asarray(
      generation.feed_back_jit(apply_fn, params, jnp.zeros((1, 1, 2)), mode, 4)
    )
    completed = np.asarray(
      generation.feed_back_jit(apply_fn, params, held_out[:, :2], mode, 4)
    )
    metrics = {
      'generated_right_angle_error_deg': float(
        generation.right_angle_error(alone)[0]
      ),
      'generated_corner_error': float(generation.corner_error(alone)[0]),
      'completed_right_angle_error_deg': float(
        generation.right_angle_error(completed).mean()
      ),
      'completed_corner_error': float(
        generation.corner_error(completed).mean()
      ),
      # Does the drawing keep the held-out width on its way up?
      'completed_width_error': float(
        np.abs(completed[:, 2, 0] - true_corners[:, 1, 0]).mean()
      ),
    }
    rounded = lambda a: np.round(np.asarray(a, np.float64), 4).tolist()
    details = {
      'generated_from_origin': rounded(alone[0]),
      'completed_examples': rounded(completed[:4]),
      'held_out_examples': rounded(true_corners[:4]),
    }
    logging.info(
      'rectangle generated from (0,0): %s',
      ' -> '.join(f'({x:.3f},{y:.3f})' for x, y in alone[0]),
    )
    k = eval_config.figure_examples
    if k:
      try:
        import matplotlib  # noqa: F401  # pylint: disable=g-import-not-at-top,unused-import
      except ImportError:
        logging.info(
          'matplotlib is not installed: figure skipped '
          "(pip install -e '.[plot]' to draw it)"
        )
      else:
        path = _figure('rectangles_figure')(
          workdir, alone[0], completed[:k], true_corners[:k]
        )
        details['figure'] = path
        logging.info('figure: %s', path)
    return metrics, details

  return report


def rectangles_task(options):
  o = _with_defaults('task', options, data.rectangles)
  v.choice('task.mode', o['mode'], ('pairs', 'sequence'))
  return Task(
    name='rectangles',
    input_kind='sequence',
    generate=functools.partial(data.rectangles, **options),
    loss=mean_absolute_error,
    metrics=regression_metrics,
    num_outputs=2,
    decode=lambda outputs: outputs,
    summarize=add_rmse,
    describe=lambda x, y, p: {
      name: np.round(np.asarray(a, np.float64), 4).tolist()
      for name, a in (('input', x), ('expected', y), ('predicted', p))
    },
    output_kind='example' if o['mode'] == 'pairs' else 'per_step',
    report=_rectangles_report(o['mode']),
  )


def _from_module(module, builder):
  """A builder in ``lstm_flax.<module>``, imported when first used (those
  modules import this one)."""

  def build(options):
    import importlib  # pylint: disable=g-import-not-at-top

    return getattr(importlib.import_module(f'lstm_flax.{module}'), builder)(
      options
    )

  return build


TASKS = {
  'echo': echo_task,
  'damped_sine': damped_sine_task,
  'moving_line': moving_line_task,
  'addition': addition_task,
  'cumsum_threshold': cumsum_threshold_task,
  'rectangles': rectangles_task,
  'series': _from_module('series', 'series_task'),
  'sequences': _from_module('sequences', 'sequences_task'),
}


def make_task(task_config) -> Task:
  """Builds the task named ``task_config.name`` with the rest as generator options."""
  options = dict(task_config)
  name = options.pop('name')
  v.choice('task.name', name, TASKS)
  return TASKS[name](options)
