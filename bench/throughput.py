"""Training-step throughput: lstm_flax against the plain-Flax way, same tasks and sizes.

  python bench/throughput.py                      # all models, batch 1, 32, 256, 1024
  python bench/throughput.py --models=echo --batch_sizes=1,32 --repeats=3

lstm_flax: K steps per compiled call (``lax.scan``), each step generating its
batch on the device — data generation included in its time; the train
program compiled for step time (``config.train.optimize_for='step_time'``,
what a long run gets).
Plain Flax, as an ordinary user writes it: ``nn.RNN(nn.OptimizedLSTMCell)``
layers, a Conv applied to time folded into the batch, numpy batches made on
the host beforehand, and a Python loop calling a jitted step per batch — data
generation excluded from its time (generous to it).
The two alternate, ``--repeats`` times; the table gives medians (min-max) of
steps/s and the median ratio.
"""

import os
import statistics
import sys
import time

from absl import app
from absl import flags
from flax.training import train_state
import jax
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.plain_flax import CONFIGS  # pylint: disable=g-import-not-at-top
from bench.plain_flax import numpy_batch
from bench.plain_flax import plain_step_fn
from lstm_flax import experiment

_MODELS = flags.DEFINE_list(
  'models', ['echo', 'stacked', 'cnn_lstm'], 'Which seed models to time.'
)
_BATCH_SIZES = flags.DEFINE_list(
  'batch_sizes', ['1', '32', '256', '1024'], 'Batch sizes.'
)
_REPEATS = flags.DEFINE_integer('repeats', 3, 'Alternating repeats per cell.')
_SECONDS = flags.DEFINE_float(
  'seconds', 0.5, 'Rough length of one timed measurement.'
)


# --- the plain-Flax baseline (bench/plain_flax.py) ------------------------------


def time_plain(name, batch, steps):
  rng = np.random.default_rng(0)
  batches = [numpy_batch(name, rng, batch) for _ in range(min(steps, 8))]
  model, tx, step = plain_step_fn(name)
  params = model.init(jax.random.key(0), batches[0][0][:1])['params']
  state = train_state.TrainState.create(
    apply_fn=model.apply, params=params, tx=tx
  )
  state, loss = step(state, *batches[0])  # compile
  jax.block_until_ready(loss)

  def run():
    nonlocal state
    start = time.perf_counter()
    for i in range(steps):
      state, loss = step(state, *batches[i % len(batches)])
    jax.block_until_ready(loss)
    return steps / (time.perf_counter() - start)

  return run


def time_ours(name, batch, steps):
  config = CONFIGS[name].get_config()
  with config.unlocked():
    config.train.batch_size = batch
    config.train.steps = steps
    config.train.steps_per_call = steps
    # Steady-state steps, what a long run gets: a timed measurement is a few
    # thousand steps, which optimize_for='auto' would call a short run.
    config.train.optimize_for = 'step_time'
  exp = experiment.build(config, ('train',))
  state = exp.init()

  def run():
    nonlocal state
    start = time.perf_counter()
    state, metrics, _ = exp.programs['train'](
      state, exp.keys.batch, exp.keys.dropout, steps
    )
    jax.block_until_ready(metrics)
    return steps / (time.perf_counter() - start)

  return run


def main(argv):
  del argv
  print(
    f'# {jax.devices()[0].device_kind}, {os.cpu_count()} CPUs; medians of '
    f'{_REPEATS.value} alternating repeats'
  )
  print(
    f'{"model":9} {"batch":>5} | {"lstm_flax steps/s":>24} | '
    f'{"plain Flax steps/s":>24} | {"ratio":>6} | {"lstm_flax samples/s":>19}'
  )
  for name in _MODELS.value:
    for batch in (int(b) for b in _BATCH_SIZES.value):
      if name == 'cnn_lstm' and batch > 256:
        continue  # 1024 x 50 x 50 x 50 frames: 0.5 GB per batch on the host
      ours = time_ours(name, batch, 16)
      probe = max(ours(), 1e-3)
      steps = int(min(5000, max(4, probe * _SECONDS.value)))
      ours, plain = (
        time_ours(name, batch, steps),
        time_plain(name, batch, steps),
      )
      a, b = [], []
      for _ in range(_REPEATS.value):
        a.append(ours())
        b.append(plain())
      ratio = statistics.median(x / y for x, y in zip(a, b))
      fmt = lambda v: f'{statistics.median(v):9.1f} ({min(v):.1f}-{max(v):.1f})'
      print(
        f'{name:9} {batch:5d} | {fmt(a):>24} | {fmt(b):>24} | {ratio:5.1f}x | '
        f'{statistics.median(a) * batch:19.0f}',
        flush=True,
      )


if __name__ == '__main__':
  app.run(main)
