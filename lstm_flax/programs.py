"""The run's programs, as pure functions of their arguments: plain JAX, no I/O.

Every program carries a leading seed axis: the state holds N >= 1 replicas
(``config.num_seeds``) and each replica has its own init and batch keys.  The
keys are arguments, never trace-time constants, so one compiled program
serves every seed of a config (and the persistent cache serves the next run).

  init:      keys (N,) -> TrainState (N, ...)
  train:     (state, batch_keys (N,), dropout_keys (N,), num_steps)
             -> (state, {'loss', 'grad_norm'} (K, N), params_finite (N,))
  evaluate:  (params (N, ...), eval_key) -> ({metric: (N,)}, {metric: ()} of
             the replicas' mean output, kept examples)
  predict:   (params of one replica, eval_key) -> (inputs, targets, predictions)
"""

from typing import Callable

from flax.training import train_state
import jax
import jax.numpy as jnp

from lstm_flax import sharding as sharding_lib
from lstm_flax import tasks

TrainState = train_state.TrainState


def over_replicas(fn: Callable) -> Callable:
  """``jax.vmap(fn)`` over the leading seed axis of every argument.

  One replica is the same computation without the vmap (index, call, add
  the axis back): XLA on CPU runs a size-1 batch of small matmuls markedly
  slower than the plain ones (docs/performance.md).  The axis is static, so
  this is decided while tracing.
  """

  def mapped(*args):
    if jax.tree_util.tree_leaves(args)[0].shape[0] != 1:
      return jax.vmap(fn)(*args)
    one = jax.tree_util.tree_map(lambda x: x[0], args)
    return jax.tree_util.tree_map(lambda x: jnp.asarray(x)[None], fn(*one))

  return mapped


def make_init(model, task: tasks.Task, tx) -> Callable:
  """``keys (N,) -> TrainState`` with N replicas on a leading axis, from one
  generated example's shapes."""
  inputs, _ = jax.eval_shape(lambda: task.generate(jax.random.key(0), 1))

  def init_one(key):
    zeros = jax.tree_util.tree_map(
      lambda a: jnp.zeros(a.shape, a.dtype), inputs
    )
    params = model.init(key, zeros)['params']
    return TrainState.create(apply_fn=model.apply, params=params, tx=tx)

  return over_replicas(init_one)


def step_metric_names(grad_norm: bool) -> tuple:
  """What a train step reports: the loss, and the gradient's norm if asked
  (it keeps XLA from fusing the gradient into the update: slower steps)."""
  return ('loss', 'grad_norm') if grad_norm else ('loss',)


def make_train_step(
  task: tasks.Task, batch_size: int, sharding=None, grad_norm: bool = True
):
  """``(state, batch_key, dropout_key) -> (state, {'loss'[, 'grad_norm']})``:
  one update of ONE replica on the batch of step ``state.step``, drawn from
  ``fold_in(batch_key, step)``.  ``sharding`` splits the batch over devices.
  """

  def train_step(state: TrainState, batch_key, dropout_key):
    inputs, targets = sharding_lib.shard_batch(
      task.generate(jax.random.fold_in(batch_key, state.step), batch_size),
      sharding,
    )
    rngs = {'dropout': jax.random.fold_in(dropout_key, state.step)}

    def loss_fn(params):
      outputs = state.apply_fn(
        {'params': params}, inputs, train=True, rngs=rngs
      )
      return task.loss(outputs, targets)

    loss, grads = jax.value_and_grad(loss_fn)(state.params)
    metrics = {'loss': loss}
    if grad_norm:
      metrics['grad_norm'] = global_norm(grads)
    return state.apply_gradients(grads=grads), metrics

  return train_step


def global_norm(tree) -> jax.Array:
  """The L2 norm of every array of ``tree`` together."""
  return jnp.sqrt(
    sum(jnp.sum(jnp.square(x)) for x in jax.tree_util.tree_leaves(tree))
  )


def make_train_chunk(
  train_step, steps_per_call: int, metric_names=('loss', 'grad_norm')
):
  """``(state, batch_keys, dropout_keys, num_steps) -> (state, per-step
  metrics (K, N), params_finite (N,))``: ``num_steps <= K`` steps of every
  replica in one ``lax.scan`` of fixed length K.

  ``num_steps`` is traced, so a shorter chunk reuses the compiled program;
  skipped steps report NaN.  ``params_finite`` says, per replica, whether
  every parameter is finite after the last step.  ``metric_names``: what
  ``train_step`` reports (``step_metric_names``).
  """
  replicated_step = over_replicas(train_step)

  def chunk(state, batch_keys, dropout_keys, num_steps):
    skipped = {
      name: jnp.full(state.step.shape, jnp.nan, jnp.float32)
      for name in metric_names
    }

    def body(state, i):
      return jax.lax.cond(
        i < num_steps,
        lambda s: replicated_step(s, batch_keys, dropout_keys),
        lambda s: (s, skipped),
        state,
      )

    state, metrics = jax.lax.scan(body, state, jnp.arange(steps_per_call))
    return state, metrics, all_finite(state.params)

  return chunk


def all_finite(params) -> jax.Array:
  """(N,) bools: is every parameter of replica i finite?"""
  leaves = jax.tree_util.tree_leaves(params)
  per_leaf = [jnp.isfinite(x.reshape(x.shape[0], -1)).all(-1) for x in leaves]
  return jnp.stack(per_leaf).all(0)


def _replica_metrics(task: tasks.Task, apply_fn, params, inputs, targets):
  """Metrics of each replica and of their mean output, on one batch."""
  outputs = over_replicas(lambda p: apply_fn({'params': p}, inputs))(params)
  per_replica = over_replicas(lambda o: task.metrics(o, targets))(outputs)
  ensemble = task.metrics(outputs.mean(0), targets)
  return outputs, per_replica, ensemble


def make_evaluate(
  task: tasks.Task,
  num_examples: int,
  batch_size: int,
  sharding=None,
  keep_examples: int = 0,
):
  """``(apply_fn, params (N, ...), eval_key) -> (metrics {name: (N,)},
  ensemble {name: ()}, kept)`` over the first ``num_examples`` examples of
  the stream of ``eval_key``, ``batch_size`` at a time.

  ``ensemble``: the metrics of the replicas' mean output (an ensemble of the
  N seeds).  ``kept``: the first ``keep_examples`` examples with replica 0's
  decoded predictions, for a figure (``()`` when 0).
  """
  if num_examples % batch_size:
    raise ValueError(
      f'config.eval.num_examples={num_examples} must be a '
      f'multiple of config.eval.batch_size={batch_size}'
    )
  if not 0 <= keep_examples <= batch_size:
    raise ValueError(
      f'keep_examples={keep_examples} must be in [0, batch_size={batch_size}]'
    )

  def evaluate(apply_fn, params, eval_key):

    def one_batch(i):
      inputs, targets = sharding_lib.shard_batch(
        task.generate(eval_key, batch_size, offset=i * batch_size), sharding
      )
      outputs, per_replica, ensemble = _replica_metrics(
        task, apply_fn, params, inputs, targets
      )
      return (
        per_replica,
        ensemble,
        _first(keep_examples, task, inputs, targets, outputs),
      )

    per_batch, ensemble, kept = jax.lax.map(
      one_batch, jnp.arange(num_examples // batch_size)
    )
    mean = lambda tree: jax.tree_util.tree_map(lambda a: a.mean(0), tree)
    return (
      mean(per_batch),
      mean(ensemble),
      jax.tree_util.tree_map(lambda a: a[0], kept),
    )

  return evaluate


def make_evaluate_arrays(task: tasks.Task, keep_examples: int = 0):
  """Like ``make_evaluate`` on fixed arrays (every window of a file's
  validation or test part) in one batch:
  ``(apply_fn, params, inputs, targets) -> (metrics, ensemble, kept)``."""

  def evaluate(apply_fn, params, inputs, targets):
    outputs, per_replica, ensemble = _replica_metrics(
      task, apply_fn, params, inputs, targets
    )
    return (
      per_replica,
      ensemble,
      _first(keep_examples, task, inputs, targets, outputs),
    )

  return evaluate


def _first(n: int, task: tasks.Task, inputs, targets, outputs):
  """The first n examples with replica 0's decoded predictions (or ())."""
  if not n:
    return ()
  first = lambda tree: jax.tree_util.tree_map(lambda a: a[:n], tree)
  return first((inputs, targets, task.decode(first(outputs[0]))))


def make_predict(task: tasks.Task, num_examples: int):
  """``(apply_fn, params of one replica, eval_key) -> (inputs, targets,
  predictions)`` on the first ``num_examples`` held-out examples."""

  def predict(apply_fn, params, eval_key):
    inputs, targets = task.generate(eval_key, num_examples)
    return inputs, targets, task.decode(apply_fn({'params': params}, inputs))

  return predict


def make_predict_arrays(task: tasks.Task, num_examples: int):
  """Like ``make_predict`` on the first ``num_examples`` of fixed arrays
  (a file task's test windows): ``(apply_fn, params, inputs, targets)``."""

  def predict(apply_fn, params, inputs, targets):
    inputs, targets = jax.tree_util.tree_map(
      lambda a: a[:num_examples], (inputs, targets)
    )
    return inputs, targets, task.decode(apply_fn({'params': params}, inputs))

  return predict


def replica(tree, index: int = 0):
  """Replica ``index`` of a pytree with a leading seed axis."""

  def one(x):
    if isinstance(x, jax.ShapeDtypeStruct):
      return jax.ShapeDtypeStruct(x.shape[1:], x.dtype)
    return x[index]

  return jax.tree_util.tree_map(one, tree)


def stack_replicas(tree, num_seeds: int):
  """``tree`` (one model) repeated on a new leading seed axis."""
  return jax.tree_util.tree_map(
    lambda x: jnp.broadcast_to(x, (num_seeds,) + jnp.shape(x)), tree
  )
