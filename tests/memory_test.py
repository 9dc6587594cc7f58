"""lstm_flax.memory: will a config fit?  From shapes only, before compiling."""

import time

import jax
import jax.numpy as jnp
import pytest

from lstm_flax import cli
from lstm_flax import memory
from lstm_flax import models
from lstm_flax import optim
from lstm_flax import tasks
from lstm_flax import validation


def _parts(name, **overrides):
  """(model, task, tx, config) of a packaged config with dotted overrides."""
  config = cli.config_from_spec(name)
  with config.unlocked():
    for path, value in overrides.items():
      *sections, field = path.split('__')
      node = config
      for section in sections:
        node = node[section]
      node[field] = value
  task = tasks.make_task(config.task)
  model = models.make_model(config.model, task.num_outputs)
  tx, _ = optim.make_optimizer(config.optimizer, config.train.steps)
  return model, task, tx, config


def test_peak_counts_values_until_their_last_use():
  x = jax.ShapeDtypeStruct((1000,), jnp.float32)  # 4,000 bytes
  # x and 2x are live together; then x dies and the sum is 4 bytes.
  assert (
    memory.peak_bytes(jax.make_jaxpr(lambda x: (x * 2).sum())(x).jaxpr) == 8000
  )
  # Three values alive at once.
  assert (
    memory.peak_bytes(jax.make_jaxpr(lambda x: (x * 2, x * 3))(x).jaxpr)
    == 12000
  )

  def loop(x):  # a body's values count once, not once per iteration
    return jax.lax.scan(lambda c, _: (c * 2 + 1, None), x, None, length=100)[0]

  assert memory.peak_bytes(jax.make_jaxpr(loop)(x).jaxpr) <= 5 * 4000


@pytest.mark.parametrize('name', ['vanilla', 'stacked', 'cnn_lstm'])
def test_seed_configs_fit_and_the_state_is_counted_exactly(name):
  model, task, tx, config = _parts(name)
  estimate = memory.check_fits(model, task, tx, config, precise=True)
  params = jax.eval_shape(
    model.init,
    jax.random.key(0),
    jax.eval_shape(lambda: task.generate(jax.random.key(0), 1))[0],
  )['params']
  # Adam: the parameters, two moments of the same size, a few counters.
  assert (
    3 * memory.nbytes(params)
    <= estimate.state_bytes
    <= (3 * memory.nbytes(params) + 64)
  )
  inputs, targets = jax.eval_shape(
    lambda: task.generate(jax.random.key(0), config.train.batch_size)
  )
  assert estimate.batch_bytes == memory.nbytes((inputs, targets))
  assert estimate.train_step_bytes > estimate.state_bytes + estimate.batch_bytes
  assert estimate.eval_bytes > 0
  assert estimate.limit_bytes > max(
    estimate.train_step_bytes, estimate.eval_bytes
  )
  assert 'GiB' in str(estimate)


def test_seeds_and_devices_scale_what_one_device_holds():
  one = memory.check_fits(*_parts('stacked'), precise=True)
  eight = memory.check_fits(*_parts('stacked', num_seeds=8), precise=True)
  assert eight.state_bytes == 8 * one.state_bytes
  assert eight.train_step_bytes == 8 * one.train_step_bytes
  halves = memory.check_fits(
    *_parts('stacked', train__batch_size=64), num_devices=2
  )
  whole = memory.check_fits(
    *_parts('stacked', train__batch_size=32), precise=True
  )
  assert halves.batch_bytes == whole.batch_bytes


@pytest.mark.parametrize(
  'overrides,field',
  [
    ({'model__layer_sizes': (1_000_000,)}, 'lower config.model.layer_sizes'),
    ({'train__batch_size': 1_000_000_000}, 'lower config.train.batch_size'),
    (
      {'eval__batch_size': 1_000_000_000, 'eval__num_examples': 1_000_000_000},
      'lower config.eval.batch_size',
    ),
  ],
)
def test_sizes_that_cannot_fit_are_refused_at_once(overrides, field):
  parts = _parts('vanilla', **overrides)
  start = time.process_time()
  with pytest.raises(validation.ConfigError, match='GiB') as info:
    memory.check_fits(*parts)
  assert time.process_time() - start < 2.0
  message = str(info.value)
  assert field in message and 'on one device' in message


def test_a_smaller_device_refuses_the_field_that_grows(monkeypatch):
  parts = _parts('cnn_lstm', eval__batch_size=10, eval__num_examples=10)
  estimate = memory.check_fits(*parts, precise=True)
  assert estimate.eval_bytes < estimate.train_step_bytes
  between = (
    estimate.state_bytes + estimate.batch_bytes + estimate.train_step_bytes
  ) // 2  # holds state and batch only
  monkeypatch.setattr(
    memory, 'device_memory', lambda device=None: (between, 'a small device')
  )
  with pytest.raises(
    validation.ConfigError, match=r'lower config\.train\.batch_size'
  ):
    memory.check_fits(*parts)
  monkeypatch.setattr(
    memory,
    'device_memory',
    lambda device=None: (estimate.train_step_bytes, 'a small device'),
  )
  big_eval = _parts('cnn_lstm', eval__batch_size=5000, eval__num_examples=5000)
  with pytest.raises(
    validation.ConfigError, match=r'lower config\.eval\.batch_size'
  ):
    memory.check_fits(*big_eval)


def test_device_memory_is_positive():
  limit, what = memory.device_memory()
  assert limit > 2**20 and what


def test_activations_too_large_are_refused_without_asking_for_precision():
  """Small state, small batch of inputs, huge activations: the sizes-only
  shortcut must not wave it through."""
  parts = _parts('stacked', model__layer_sizes=(2000,), train__batch_size=20000)
  with pytest.raises(validation.ConfigError, match='GiB'):
    memory.check_fits(*parts)
