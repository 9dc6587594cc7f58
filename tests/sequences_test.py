"""The sequences task: labelled sequences from an .npz, a seeded
(stratified) split, training examples by key, every held-out example,
metrics from y's kind, and bad files."""

import importlib.util
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lstm_flax import tasks
from lstm_flax.validation import ConfigError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def make_npz(path, n=90, steps=5, classes=True, **extra):
  """x[i, :, 0] = i (an example id), x[i, :, 1] noise; y from the id."""
  rng = np.random.default_rng(0)
  x = np.stack(
    [
      np.repeat(np.arange(n, dtype=float)[:, None], steps, 1),
      rng.normal(size=(n, steps)),
    ],
    axis=-1,
  )
  y = (
    (np.arange(n) % 3).astype(np.int64)
    if classes
    else np.stack([np.arange(n) * 2.0 + 10, -np.arange(n) * 1.0], axis=1)
  )
  arrays = {'x': x, 'y': y, **extra}
  np.savez(path, **arrays)
  return str(path)


def task_of(path, **options):
  return tasks.make_task({'name': 'sequences', 'path': path, **options})


def test_classes_split_is_seeded_stratified_and_disjoint(tmp_path):
  path = make_npz(tmp_path / 'c.npz')
  task = task_of(path, split=(0.6, 0.8, 1.0), seed=3)
  assert task.num_outputs == 3
  parts = {}
  for part in ('train', 'valid', 'test'):
    x, y = task.held_out(part)
    assert x.dtype == np.float32 and x.shape[1:] == (5, 2)
    parts[part] = x[:, 0, 0]  # the example ids, normalised
    np.testing.assert_array_equal(
      np.bincount(y, minlength=3),
      {'train': [18] * 3, 'valid': [6] * 3, 'test': [6] * 3}[part],
    )
  all_x = np.concatenate([parts[p] for p in parts])
  assert len(np.unique(np.round(all_x, 4))) == 90  # disjoint, complete
  # Another seed, another split; the same seed, the same one.
  again = task_of(path, split=(0.6, 0.8, 1.0), seed=3)
  np.testing.assert_array_equal(
    again.held_out('test')[0], task.held_out('test')[0]
  )
  other = task_of(path, split=(0.6, 0.8, 1.0), seed=4)
  assert not np.array_equal(other.held_out('test')[0], task.held_out('test')[0])


def test_training_batches_come_from_the_training_part(tmp_path):
  path = make_npz(tmp_path / 'c.npz')
  task = task_of(path, split=(0.6, 0.8, 1.0))
  x, y = jax.jit(task.generate, static_argnums=1)(jax.random.key(0), 2048)
  assert x.shape == (2048, 5, 2) and y.shape == (2048,) and y.dtype == jnp.int32
  train_x, train_y = task.held_out('train')
  drawn = np.unique(np.round(np.asarray(x)[:, 0, 0], 5))
  np.testing.assert_array_equal(drawn, np.unique(np.round(train_x[:, 0, 0], 5)))
  # Labels travel with their examples.
  lookup = dict(zip(np.round(train_x[:, 0, 0], 5), train_y))
  assert all(
    lookup[k] == l
    for k, l in zip(np.round(np.asarray(x)[:, 0, 0], 5), np.asarray(y))
  )
  # Normalised with the training part only: mean 0, std 1 there.
  np.testing.assert_allclose(train_x.mean(axis=(0, 1)), 0, atol=1e-5)
  np.testing.assert_allclose(train_x.std(axis=(0, 1)), 1, atol=1e-5)


def test_classification_metrics(tmp_path):
  task = task_of(make_npz(tmp_path / 'c.npz'))
  x, y = task.held_out('test')
  logits = jax.nn.one_hot(y, 3) * 5.0
  logits = logits.at[0].set(jax.nn.one_hot((y[0] + 1) % 3, 3) * 5.0)
  m = task.metrics(logits, jnp.asarray(y))
  assert float(m['accuracy']) == pytest.approx(1 - 1 / len(y))
  np.testing.assert_array_equal(task.decode(logits)[1:], y[1:])
  assert task.baselines()['majority_class']['accuracy'] == pytest.approx(
    np.mean(y == 0)
  )  # ties -> the lowest class


def test_regression_metrics_in_y_units(tmp_path):
  path = make_npz(tmp_path / 'r.npz', classes=False)
  task = task_of(path, seed=1)
  assert task.num_outputs == 2
  x, y = task.held_out('test')
  assert y.shape == (len(x), 2)
  raw_y = np.load(path)['y']
  decoded = np.asarray(task.decode(jnp.asarray(y)))
  # Decoded targets are the stored ones, found by their example ids.
  assert all(any(np.allclose(d, r, atol=1e-3) for r in raw_y) for d in decoded)
  std = np.asarray(
    task.decode(jnp.ones((1, 2))) - task.decode(jnp.zeros((1, 2)))
  )[0]
  m = task.metrics(jnp.asarray(y) + 0.5, jnp.asarray(y))
  assert float(m['mae']) == pytest.approx(0.5 * std.mean(), rel=1e-5)
  assert float(m['mse']) == pytest.approx(np.mean((0.5 * std) ** 2), rel=1e-5)
  assert float(m['loss']) == pytest.approx(0.25, rel=1e-5)
  assert 'rmse' in task.summarize({k: float(v) for k, v in m.items()})
  # kind='regression' on integer labels: one float target.
  c = task_of(make_npz(tmp_path / 'c.npz'), kind='regression')
  assert c.num_outputs == 1 and c.held_out('test')[1].shape[1] == 1


@pytest.mark.parametrize(
  'arrays, options, pattern',
  [
    ({'x': np.zeros((10, 4, 1))}, {}, r"no array 'y'.*\['x'\]"),
    ({'y': np.zeros(10)}, {}, r"no array 'x'"),
    (
      {'x': np.zeros((10, 4, 1)), 'y': np.zeros(9, int)},
      {},
      'x has 10 examples and y 9',
    ),
    (
      {'x': np.zeros((10, 4)), 'y': np.zeros(10, int)},
      {},
      r'x must be numbers of shape \(N, T, F\)',
    ),
    (
      {
        'x': np.zeros((10, 4, 1)),
        'y': np.zeros(10, int),
        'lengths': np.full(10, 5),
      },
      {},
      r'lengths must be 10 integers in \[1, 4\]',
    ),
    (
      {'x': np.zeros((10, 4, 1)), 'y': np.full(10, 0.5)},
      {'kind': 'classes'},
      r'integers >= 0; y\[0\]',
    ),
    (
      {'x': np.zeros((10, 4, 1)), 'y': np.zeros((10, 2))},
      {'kind': 'classes'},
      r'classes need y of shape \(N,\)',
    ),
    (
      {
        'x': np.where(
          np.arange(10)[:, None, None] == 7, np.nan, np.zeros((10, 4, 1))
        ),
        'y': np.zeros(10, int),
      },
      {},
      r'x\[7\] holds a missing',
    ),
    (
      {'x': np.zeros((10, 4, 1)), 'y': np.arange(10) % 2},
      {'kind': 'labels'},
      'task.kind',
    ),
    (
      {'x': np.zeros((10, 4, 1)), 'y': np.arange(10) % 2},
      {'split': (0.5, 0.4, 1.0)},
      'train_end < valid_end',
    ),
    (
      {'x': np.zeros((10, 4, 1)), 'y': np.arange(10) % 2},
      {'split': (8, 9, 11)},
      r'past the end of the examples \(10 examples\)',
    ),
    # 5 classes of 2: each class's 0.6 and 0.7 round to its first example.
    (
      {'x': np.zeros((10, 4, 1)), 'y': np.arange(10) % 5},
      {'split': (0.6, 0.7, 1.0)},
      'the valid part of 10 examples would be empty',
    ),
    (
      {'x': np.zeros((10, 4, 1)), 'y': np.arange(10) % 2},
      {'shuffle': True},
      "takes no option 'shuffle'",
    ),
  ],
)
def test_bad_files_and_options(tmp_path, arrays, options, pattern):
  path = tmp_path / 'bad.npz'
  np.savez(path, **arrays)
  with pytest.raises(ConfigError, match=pattern):
    task_of(str(path), **options)


def test_bad_paths(tmp_path):
  with pytest.raises(ConfigError, match=r'task.path.*--config.task.path'):
    task_of('')
  with pytest.raises(ConfigError, match='no such file'):
    task_of(str(tmp_path / 'missing.npz'))
  np.save(tmp_path / 'x.npy', np.zeros((3, 2, 1)))
  with pytest.raises(ConfigError, match='use an .npz file'):
    task_of(str(tmp_path / 'x.npy'))


def load_config(name):
  spec = importlib.util.spec_from_file_location(
    name, os.path.join(ROOT, 'configs', f'{name}.py')
  )
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def test_sequences_config(tmp_path):
  from lstm_flax import experiment  # pylint: disable=g-import-not-at-top

  config = load_config('sequences')
  with pytest.raises(ConfigError, match='--config.task.path'):
    experiment.check_config(config)
  config = config.unlock()
  config.task.path = make_npz(tmp_path / 'c.npz')
  task = experiment.check_config(config)
  assert task.name == 'sequences' and task.num_outputs == 3


def test_right_padded_sequences_read_only_their_valid_steps(tmp_path):
  """With ``lengths``, the inputs carry them, the LSTM reads only the valid
  steps (padding values change nothing) and a run trains and evaluates."""
  from lstm_flax import experiment  # pylint: disable=g-import-not-at-top
  from lstm_flax import models  # pylint: disable=g-import-not-at-top
  from lstm_flax import train as train_lib  # pylint: disable=g-import-not-at-top

  lengths = np.arange(90) % 4 + 2  # 2..5 valid steps of 5
  path = make_npz(tmp_path / 'p.npz', lengths=lengths)
  task = task_of(path, split=(0.6, 0.8, 1.0))
  inputs, targets = task.held_out('test')
  assert set(inputs) == {'x', 'lengths'} and len(targets) == 18
  batch, _ = task.generate(jax.random.key(0), 4)
  assert batch['x'].shape == (4, 5, 2) and batch['lengths'].shape == (4,)
  model = models.StackedLSTM((6, 6), task.num_outputs)
  params = model.init(jax.random.key(1), inputs)
  padded = dict(inputs)
  steps = np.arange(5) >= inputs['lengths'][:, None]  # (N, T) padding
  padded['x'] = np.where(steps[..., None], 1e3, inputs['x'])
  np.testing.assert_allclose(
    model.apply(params, inputs), model.apply(params, padded), atol=1e-6
  )
  config = load_config('sequences').unlock()
  config.task.path = path
  config.task.split = (0.6, 0.8, 1.0)
  config.train.steps = 20
  config.train.steps_per_call = 10
  config.train.batch_size = 8
  config.eval.figure_examples = 0
  experiment.check_config(config)
  results = train_lib.train_and_evaluate(config, str(tmp_path / 'w'))
  assert results['eval']['num_examples'] == 18
  assert 0 <= results['eval']['accuracy'] <= 1
