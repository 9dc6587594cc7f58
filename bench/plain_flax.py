"""The plain-Flax baseline: the seed experiments written the way an ordinary
Flax user writes them, for the benchmarks to compare against.

``nn.RNN(nn.OptimizedLSTMCell)`` layers, a Conv applied to time folded into
the batch, numpy data made on the host (the whole training set materialised
first, as the Keras tutorial does), and a Python loop calling a jitted step
per batch.

  python bench/plain_flax.py --model=stacked     # one seed protocol, end to end

prints one JSON line: steps, seconds to make the data, to compile, to train,
to evaluate, and the held-out metric.
"""

import json
import os
import sys
import time

from absl import app
from absl import flags
import flax.linen as nn
from flax.training import train_state
import jax
import jax.numpy as jnp
import numpy as np
import optax

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from configs import cnn_lstm  # pylint: disable=g-import-not-at-top
from configs import stacked
from configs import vanilla

CONFIGS = {'echo': vanilla, 'stacked': stacked, 'cnn_lstm': cnn_lstm}
NUM_OUTPUTS = {'echo': 10, 'stacked': 5, 'cnn_lstm': 1}


def numpy_batch(name, rng, batch):
  """Host-side numpy data, generated the way the Keras tutorial does it."""
  if name == 'echo':
    values = rng.integers(0, 10, (batch, 5))
    return np.eye(10, dtype=np.float32)[values], values[:, 2].astype(np.int32)
  if name == 'stacked':
    period = rng.integers(10, 21, (batch, 1))
    decay = rng.uniform(0.01, 0.1, (batch, 1))
    i = np.arange(55)
    f = (0.5 + 0.5 * np.sin(2 * np.pi * i / period) * np.exp(-i * decay)).astype(np.float32)
    return f[:, :50, None], f[:, 50:]
  frames = np.zeros((batch, 50, 50, 50, 1), np.float32)
  labels = rng.integers(0, 2, batch).astype(np.int32)
  for n in range(batch):
    row = rng.integers(0, 50)
    for t in range(50):
      col = t if labels[n] else 49 - t
      if t:
        row = rng.integers(max(0, row - 1), min(49, row + 1) + 1)
      frames[n, t:, row, col, 0] = 1
  return frames, labels


class PlainModel(nn.Module):
  layer_sizes: tuple
  num_outputs: int
  cnn: bool = False

  @nn.compact
  def __call__(self, x):
    if self.cnn:
      b, t = x.shape[:2]
      x = x.reshape((b * t,) + x.shape[2:])
      x = nn.max_pool(nn.relu(nn.Conv(2, (2, 2), padding='VALID')(x)), (2, 2), (2, 2))
      x = x.reshape(b, t, -1)
    for units in self.layer_sizes:
      x = nn.RNN(nn.OptimizedLSTMCell(units))(x)
    return nn.Dense(self.num_outputs)(x[:, -1])


def make_model(name):
  config = CONFIGS[name].get_config()
  return PlainModel(tuple(config.model.layer_sizes), NUM_OUTPUTS[name],
                    cnn=name == 'cnn_lstm')


def loss_and_metric(name, out, y):
  """(loss, the task's headline metric) of a batch."""
  if name == 'echo':
    loss = optax.softmax_cross_entropy_with_integer_labels(out, y).mean()
    return loss, (out.argmax(-1) == y).mean()
  if name == 'stacked':
    mae = jnp.abs(out - y).mean()
    return mae, mae
  loss = optax.sigmoid_binary_cross_entropy(out[:, 0], y.astype(jnp.float32)).mean()
  return loss, ((out[:, 0] > 0) == (y == 1)).mean()


def plain_step_fn(name, learning_rate=1e-3, grad_clip_norm=0.0):
  """(model, tx, jitted step (state, x, y) -> (state, loss))."""
  model = make_model(name)
  tx = optax.adam(learning_rate, eps=1e-7)
  if grad_clip_norm:
    tx = optax.chain(optax.clip_by_global_norm(grad_clip_norm), tx)

  @jax.jit
  def step(state, x, y):
    def loss_fn(params):
      return loss_and_metric(name, model.apply({'params': params}, x), y)[0]
    loss, grads = jax.value_and_grad(loss_fn)(state.params)
    return state.apply_gradients(grads=grads), loss

  return model, tx, step


def seed_protocol(name, seed=0, steps=0):
  """Trains and evaluates one seed protocol (``steps`` > 0: only that many
  updates); returns its timings and metric."""
  config = CONFIGS[name].get_config()
  steps, batch = steps or config.train.steps, config.train.batch_size
  rng = np.random.default_rng(seed)
  start = time.perf_counter()
  x, y = numpy_batch(name, rng, steps * batch)          # the training set
  test_x, test_y = numpy_batch(name, rng, 1000)         # the held-out set
  data_seconds = time.perf_counter() - start

  model, tx, step = plain_step_fn(name, config.optimizer.learning_rate,
                                  config.optimizer.grad_clip_norm)
  start = time.perf_counter()
  params = model.init(jax.random.key(seed), x[:1])['params']
  state = train_state.TrainState.create(apply_fn=model.apply, params=params,
                                        tx=tx)
  state, loss = step(state, x[:batch], y[:batch])       # compiles
  jax.block_until_ready(loss)
  compile_seconds = time.perf_counter() - start

  start = time.perf_counter()
  for i in range(1, steps):
    state, loss = step(state, x[i * batch:(i + 1) * batch],
                       y[i * batch:(i + 1) * batch])
  jax.block_until_ready(loss)
  train_seconds = time.perf_counter() - start

  start = time.perf_counter()
  evaluate = jax.jit(lambda p, x, y: loss_and_metric(
      name, model.apply({'params': p}, x), y)[1])
  metric = float(np.mean([evaluate(state.params, test_x[i:i + 100],
                                   test_y[i:i + 100])
                          for i in range(0, 1000, 100)]))
  return {'model': name, 'steps': steps, 'batch_size': batch,
          'data_seconds': data_seconds, 'compile_seconds': compile_seconds,
          'train_seconds': train_seconds,
          'eval_seconds': time.perf_counter() - start,
          'metric': metric}


_MODEL = flags.DEFINE_enum('model', 'echo', list(CONFIGS), 'Seed protocol.')
_SEED = flags.DEFINE_integer('seed', 0, 'Seed.')
_STEPS = flags.DEFINE_integer('steps', 0, 'Updates (0: the seed protocol\'s).')


def main(argv):
  del argv
  print(json.dumps(seed_protocol(_MODEL.value, _SEED.value, _STEPS.value)))


if __name__ == '__main__':
  app.run(main)
