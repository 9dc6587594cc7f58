"""Will a config fit in device memory?  Estimated from shapes, before compiling.

A size that cannot fit otherwise surfaces late or never: XLA compiles for a
minute and then fails to allocate, or (jax 0.10 on CPU) an allocation that
fails inside a program with two outputs never returns.  ``check_fits`` traces
the programs with ``jax.eval_shape`` / ``jax.make_jaxpr`` only (no compile, no
allocation) and refuses, with the numbers, what cannot fit.

What one device holds, per ``config.num_seeds`` replicas (they train as one
program, so every number below is for all of them):

  state        parameters + optimizer state (+ step), replicated on every device
  batch        one training batch: batch_size / num_devices examples
  train step   the most bytes live at once in one training step: the state,
               the batch, activations kept for the backward pass, gradients
               and the update (liveness over the step's jaxpr: an estimate,
               not a bound; XLA's fusion and buffers may need less or more)
  eval         the most bytes live at once in one eval batch, plus the
               optimizer state, which stays on the device during training
"""

import collections
import dataclasses
import functools
import math
import os
from typing import Optional

import jax
import numpy as np

from lstm_flax import programs
from lstm_flax import validation

try:
  from jax.extend import core as _core  # pylint: disable=g-import-not-at-top
except ImportError:  # older jax
  from jax import core as _core  # pylint: disable=g-import-not-at-top

GiB = 2**30
_LOOPS = ('scan', 'while')  # bodies reuse their memory every iteration


@dataclasses.dataclass(frozen=True)
class Estimate:
  """Bytes on one device (see the module docstring), and what it has."""

  state_bytes: int
  batch_bytes: int
  train_step_bytes: int
  eval_batch_bytes: int
  eval_bytes: int
  limit_bytes: int
  device: str

  @property
  def activation_bytes(self) -> int:
    """The train step's peak beyond the state and the batch."""
    return max(0, self.train_step_bytes - self.state_bytes - self.batch_bytes)

  def __str__(self):
    sizes = f'state {_gib(self.state_bytes)}, batch {_gib(self.batch_bytes)}'
    if not self.train_step_bytes:  # check_fits skipped the step's trace
      return f'{sizes}: far below the {_gib(self.limit_bytes)} of {self.device}'
    return (
      f'about {_gib(max(self.train_step_bytes, self.eval_bytes))} of '
      f'{_gib(self.limit_bytes)} ({self.device}): {sizes}, activations '
      f'{_gib(self.activation_bytes)}, eval {_gib(self.eval_bytes)}'
    )


def _gib(n: int) -> str:
  return f'{n / GiB:.3g} GiB'


def nbytes(tree) -> int:
  """Bytes of every array (or ShapeDtypeStruct) in a pytree."""
  return sum(_aval_bytes(x) for x in jax.tree_util.tree_leaves(tree))


def _aval_bytes(aval) -> int:
  shape, dtype = getattr(aval, 'shape', None), getattr(aval, 'dtype', None)
  if shape is None or dtype is None:
    return 0  # tokens and the like
  try:
    itemsize = np.dtype(dtype).itemsize
  except TypeError:  # PRNG key arrays: two uint32 words per key
    itemsize = getattr(dtype, 'itemsize', 8)
  return math.prod(shape) * itemsize


def _subjaxprs(eqn):
  for value in eqn.params.values():
    for item in value if isinstance(value, (tuple, list)) else (value,):
      if isinstance(item, _core.ClosedJaxpr):
        yield item.jaxpr
      elif isinstance(item, _core.Jaxpr):
        yield item


def peak_bytes(jaxpr, count_inputs: bool = True) -> int:
  """The most bytes live at once while ``jaxpr`` runs, without reusing any
  value's memory before its last use.  Inputs count until their last use
  (``count_inputs``); a nested program (call, cond) adds its own peak while
  it runs, a loop body its peak once (iterations reuse it)."""
  last_use = {}
  for i, eqn in enumerate(jaxpr.eqns):
    for v in eqn.invars:
      if isinstance(v, _core.Var):
        last_use[v] = i
  for v in jaxpr.outvars:
    if isinstance(v, _core.Var):
      last_use[v] = len(jaxpr.eqns)
  dying = collections.defaultdict(list)
  for v, i in last_use.items():
    dying[i].append(v)
  counted = set()
  live = 0
  if count_inputs:
    for v in list(jaxpr.constvars) + list(jaxpr.invars):
      counted.add(v)
      live += _aval_bytes(v.aval)
  peak = live
  for i, eqn in enumerate(jaxpr.eqns):
    outs = [v for v in eqn.outvars if not isinstance(v, _core.DropVar)]
    out = sum(_aval_bytes(v.aval) for v in outs)
    inner = max(
      (peak_bytes(j, count_inputs=False) for j in _subjaxprs(eqn)), default=0
    )
    if eqn.primitive.name in _LOOPS:
      peak = max(peak, live + out + inner)
    else:  # the nested program's peak includes its outputs
      peak = max(peak, live + max(out, inner))
    for v in outs:
      counted.add(v)
      live += _aval_bytes(v.aval)
      if v not in last_use:  # never read: freed at once
        live -= _aval_bytes(v.aval)
    for v in dying[i]:
      if v in counted:
        live -= _aval_bytes(v.aval)
  return peak


def device_memory(device=None):
  """(bytes one device can hold, a description).  GPU/TPU: the allocator's
  limit; CPU: physical memory (or the cgroup's limit, if lower) shared by the
  process's CPU devices."""
  device = device or jax.local_devices()[0]
  try:
    stats = device.memory_stats()
  except Exception:  # pylint: disable=broad-except  (not every backend has it)
    stats = None
  if stats and stats.get('bytes_limit'):
    return int(stats['bytes_limit']), f'{device.platform} device memory'
  ram = os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES')
  for path in (
    '/sys/fs/cgroup/memory.max',
    '/sys/fs/cgroup/memory/memory.limit_in_bytes',
  ):
    try:
      with open(path) as f:
        ram = min(ram, int(f.read().strip()))
    except (OSError, ValueError):  # absent, or 'max'
      pass
  shared_by = max(
    1, sum(d.platform == device.platform for d in jax.local_devices())
  )
  what = 'memory' if shared_by == 1 else f'memory / {shared_by} CPU devices'
  return ram // shared_by, what


_LOWER_EVAL = (
  'config.eval.batch_size (and config.eval.num_examples, a multiple of it)'
)


def _refuse_over(
  limit: int, device: str, needed: int, parts: str, lower: str
) -> None:
  """Raises ConfigError when ``needed`` bytes exceed ``limit``: the sizes in
  GiB (``parts``: what they are made of) and the config field to lower."""
  if needed > limit:
    raise validation.ConfigError(
      f'the config needs about {_gib(needed)} on one device ({parts}), more '
      f'than its {_gib(limit)} of {device}: lower {lower}'
    )


def _state_shapes(model, task, tx):
  """(one example's input, one replica's TrainState), as shapes only."""
  key = jax.random.key(0)
  example, _ = jax.eval_shape(lambda: task.generate(key, 1))
  params = jax.eval_shape(model.init, key, example)['params']
  state = jax.eval_shape(
    lambda p: programs.TrainState.create(apply_fn=model.apply, params=p, tx=tx),
    params,
  )
  return example, state


def _batch_bytes(task, n: int, seeds: int) -> int:
  """Bytes of one batch of ``n`` examples (inputs and targets) per replica,
  times ``seeds`` replicas."""
  return seeds * nbytes(
    jax.eval_shape(lambda: task.generate(jax.random.key(0), n))
  )


def _train_step_bytes(task, state, batch: int, seeds: int) -> int:
  """Peak bytes of one training step on ``batch`` examples, traced for one
  replica's ``state`` and scaled to ``seeds`` replicas."""
  step = programs.make_train_step(task, batch)
  key = jax.random.key(0)  # traced as an input: only its shape matters
  return seeds * peak_bytes(jax.make_jaxpr(step)(state, key, key).jaxpr)


def _eval_bytes(model, task, state, eval_batch: int, seeds: int) -> int:
  """Peak bytes of one eval batch of ``eval_batch`` examples over ``seeds``
  replicas' parameters (shape [seeds, ...]), plus their optimizer state and
  step, which stay on the device during training."""
  evaluate = programs.make_evaluate(task, eval_batch, eval_batch)
  replicas = jax.tree_util.tree_map(
    lambda x: jax.ShapeDtypeStruct((seeds,) + x.shape, x.dtype), state.params
  )
  jaxpr = jax.make_jaxpr(
    lambda params, key: evaluate(model.apply, params, key)
  )(replicas, jax.random.key(0)).jaxpr
  return seeds * nbytes((state.opt_state, state.step)) + peak_bytes(jaxpr)


def _clearly_fits(config, example, sizes: Estimate, batch: int) -> bool:
  """A generous bound on a step's activations from sizes alone (every input
  and every recurrent unit's value at every step, 16 times over) far below
  the device's memory: the per-step trace (the slow part) is not needed.
  ``sizes``: the Estimate's state, batch and limit figures; ``example``: one
  input, [1, steps, ...]; ``batch``: training examples per device."""
  shape = jax.tree_util.tree_leaves(example)[0].shape  # x of {'x', 'lengths'}
  steps = shape[1] if len(shape) > 1 else 1
  units = sum(dict(config.model).get('layer_sizes', (1,)))
  recurrent = 4 * config.num_seeds * batch * steps * units
  rough = 16 * (max(sizes.batch_bytes, sizes.eval_batch_bytes) + recurrent)
  return sizes.state_bytes * 4 + rough < sizes.limit_bytes / 20


def check_fits(
  model,
  task,
  tx,
  config,
  num_devices: Optional[int] = None,
  precise: bool = False,
) -> Estimate:
  """Estimates the memory one device needs to train and evaluate ``config``
  and raises ``validation.ConfigError`` (sizes in GiB, the field to lower)
  when it exceeds the device's memory.  Traces, never compiles: returns in
  well under a second, at once for sizes far too large.

  Args:
    model, task, tx: what ``experiment.build`` makes of the config (the
      Flax module, ``tasks.Task``, the optax transformation).
    config: the experiment config (train/eval batch sizes, num_seeds).
    num_devices: devices the batch is split over (default: all of them).
    precise: trace one train step and one eval batch even when sizes alone
      show the config fits far below the limit (the Estimate's activation
      and eval figures are 0 then).

  Returns:
    The Estimate, in bytes.
  """
  num_devices = num_devices or jax.device_count()
  limit, device = device_memory()
  refuse = functools.partial(_refuse_over, limit, device)
  seeds = config.num_seeds
  batch = -(-config.train.batch_size // num_devices)
  eval_batch = -(-config.eval.batch_size // num_devices)

  # One replica's state: N replicas are N times its bytes (tracing the
  # vmapped programs would cost twice the time for the same numbers).
  example, state = _state_shapes(model, task, tx)
  state_bytes = seeds * nbytes((state.params, state.opt_state, state.step))
  lower_model = 'config.model.layer_sizes'
  lower_model += ' or config.num_seeds' if seeds > 1 else ''
  refuse(
    state_bytes,
    f'parameters and optimizer state {_gib(state_bytes)} for {seeds} seed(s)',
    lower_model,
  )
  train_batch_bytes = _batch_bytes(task, batch, seeds)
  refuse(
    state_bytes + train_batch_bytes,
    f'state {_gib(state_bytes)}, one training batch {_gib(train_batch_bytes)}',
    'config.train.batch_size',
  )
  eval_batch_bytes = _batch_bytes(task, eval_batch, seeds)
  refuse(
    state_bytes + eval_batch_bytes,
    f'state {_gib(state_bytes)}, one eval batch {_gib(eval_batch_bytes)}',
    _LOWER_EVAL,
  )
  estimate = Estimate(
    state_bytes, train_batch_bytes, 0, eval_batch_bytes, 0, limit, device
  )
  if not precise and _clearly_fits(config, example, estimate, batch):
    return estimate  # the activation and eval figures stay 0

  train_step_bytes = _train_step_bytes(task, state, batch, seeds)
  refuse(
    train_step_bytes,
    f'state {_gib(state_bytes)}, one training batch '
    f'{_gib(train_batch_bytes)} and the activations and gradients of '
    f'one step {_gib(train_step_bytes - state_bytes - train_batch_bytes)}',
    lower_model if 2 * state_bytes > limit else 'config.train.batch_size',
  )
  eval_bytes = _eval_bytes(model, task, state, eval_batch, seeds)
  refuse(
    eval_bytes,
    f'state {_gib(state_bytes)}, one eval batch '
    f'{_gib(eval_batch_bytes)} and its activations',
    _LOWER_EVAL,
  )
  return dataclasses.replace(
    estimate, train_step_bytes=train_step_bytes, eval_bytes=eval_bytes
  )
