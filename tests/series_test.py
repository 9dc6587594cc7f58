"""The series task: reading, the chronological split, windows, normalisation,
baselines and metrics; the forecasting model options (highway, dropout)."""

import importlib.util
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lstm_flax import models
from lstm_flax import series
from lstm_flax import tasks
from lstm_flax.validation import ConfigError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def write_csv(path, header, rows):
  with open(path, 'w') as f:
    f.write(','.join(header) + '\n')
    for row in rows:
      f.write(','.join(str(c) for c in row) + '\n')
  return str(path)


def task_of(path, **options):
  return tasks.make_task({'name': 'series', 'path': path, **options})


@pytest.fixture
def index_csv(tmp_path):
  """60 rows: 'year' (a time column), 'idx' = the row index, 'wave' a
  second input."""
  rows = [(1900 + i, i, round(np.sin(i / 3), 4)) for i in range(60)]
  return write_csv(tmp_path / 'index.csv', ('year', 'idx', 'wave'), rows)


# --- windows and the split ----------------------------------------------------


def test_window_starts_keep_targets_inside_their_part():
  bounds = (20, 30, 40)
  assert list(series.window_starts('train', bounds, 3, 2)) == list(range(16))
  # Validation targets are rows 20..29: inputs may start at row 17.
  assert list(series.window_starts('valid', bounds, 3, 2)) == list(
    range(17, 26)
  )
  assert list(series.window_starts('test', bounds, 3, 2)) == list(range(27, 36))


def test_no_test_target_row_is_in_any_training_or_validation_window(index_csv):
  task = task_of(
    index_csv,
    columns='idx',
    time_column='year',
    input_length=5,
    output_length=3,
    split=(30, 45, 60),
  )
  d = series.load(
    {
      **series.DEFAULTS,
      'path': index_csv,
      'columns': 'idx',
      'input_length': 5,
      'output_length': 3,
      'split': (30, 45, 60),
    }
  )
  to_rows = lambda a: np.rint(
    np.asarray(a) * d.input_std[0] + d.input_mean[0]
  ).astype(int)
  # Every possible training window (the generator draws from these) ...
  x, y = jax.jit(task.generate, static_argnums=1)(jax.random.key(0), 4096)
  train_rows = set(to_rows(x).ravel()) | set(to_rows(y).ravel())
  assert train_rows == set(range(30))  # all of them, none after
  valid_x, valid_y = task.held_out('valid')
  test_x, test_y = task.held_out('test')
  valid_rows = set(to_rows(valid_x).ravel()) | set(to_rows(valid_y).ravel())
  test_targets = set(to_rows(test_y).ravel())
  assert test_targets == set(range(45, 60))  # every test row, once a target
  assert not test_targets & (train_rows | valid_rows)
  assert set(to_rows(valid_y).ravel()) == set(range(30, 45))
  # Test windows read their inputs from the validation part's end.
  assert to_rows(test_x).min() == 45 - 5
  # Every window of each part, in time order, inputs then targets contiguous.
  assert len(test_x) == 15 - 3 + 1 and len(valid_x) == 15 - 3 + 1
  np.testing.assert_array_equal(
    to_rows(test_x)[:, :, 0], np.arange(40, 53)[:, None] + np.arange(5)
  )
  np.testing.assert_array_equal(
    to_rows(test_y), np.arange(45, 58)[:, None] + np.arange(3)
  )


def test_changing_validation_or_test_values_changes_no_training_batch(tmp_path):
  rng = np.random.default_rng(0)
  values = rng.normal(size=(50, 2)).round(4)
  changed = values.copy()
  changed[35, 0] = 1e6  # validation part
  changed[49, 1] = -1e6  # test part
  paths = [
    write_csv(tmp_path / f'{n}.csv', ('a', 'b'), v)
    for n, v in (('orig', values), ('changed', changed))
  ]
  batches = []
  for path in paths:
    task = task_of(
      path, columns='a,b', targets='b', input_length=4, split=(30, 40, 50)
    )
    batches.append(task.generate(jax.random.key(7), 64))
  for a, b in zip(*batches):
    np.testing.assert_array_equal(a, b)


def test_normalisation_uses_the_training_part_only(tmp_path):
  values = np.concatenate([np.linspace(0, 1, 30), np.full(20, 100.0)])
  path = write_csv(tmp_path / 's.csv', ('v',), values[:, None])
  task = task_of(path, columns='v', input_length=2, split=(30, 40, 50))
  d = series.load(
    {
      **series.DEFAULTS,
      'path': path,
      'columns': 'v',
      'input_length': 2,
      'split': (30, 40, 50),
    }
  )
  np.testing.assert_allclose(d.input_mean, [values[:30].mean()])
  np.testing.assert_allclose(d.input_std, [values[:30].std()])
  x, _ = task.held_out('train')
  mean, std = values[:30].mean(), values[:30].std()
  np.testing.assert_allclose(
    x[:, 0, 0], (values[:28] - mean) / std, rtol=1e-5, atol=1e-6
  )
  test_x, test_y = task.held_out('test')
  np.testing.assert_allclose(
    test_y[:, 0], (100 - 0.5) / values[:30].std(), rtol=1e-5
  )
  # Metrics are in the data's units: a normalised error e is e * std.
  outputs = test_y + 0.5
  m = task.metrics(jnp.asarray(outputs), jnp.asarray(test_y))
  std = values[:30].std()
  np.testing.assert_allclose(float(m['mae']), 0.5 * std, rtol=1e-5)
  np.testing.assert_allclose(float(m['mse']), (0.5 * std) ** 2, rtol=1e-5)
  np.testing.assert_allclose(float(m['loss']), 0.25, rtol=1e-5)  # normalised
  assert task.summarize({k: float(v) for k, v in m.items()})['rmse'] == (
    pytest.approx(0.5 * std, rel=1e-5)
  )
  np.testing.assert_allclose(
    np.asarray(task.decode(jnp.asarray(test_y))), 100.0, rtol=1e-5
  )
  example = task.describe(test_x[0], test_y[0], np.array([99.5]))
  assert example == {
    'inputs': [[100.0], [100.0]],
    'expected': [100.0],
    'predicted': [99.5],
  }


def test_date_strings_as_the_time_column(tmp_path):
  rows = [(f'2020-01-{i + 1:02d}', i % 7, i * 0.5) for i in range(30)]
  path = write_csv(tmp_path / 'dated.csv', ('date', 'a', 'b'), rows)
  # columns='' takes every numeric column but the time column.
  task = task_of(path, time_column='date', input_length=3, split=(20, 25, 30))
  assert task.held_out('test')[0].shape == (5, 3, 2)
  with pytest.raises(
    ConfigError,
    match=r"'date'.*non-numeric value "
    r"'2020-01-01' at line 2",
  ):
    task_of(path, columns='date,a', input_length=3, split=(20, 25, 30))


# --- baselines and metrics against hand computation ---------------------------

TINY = [1, 3, 2, 5, 4, 6, 8, 7, 9, 12, 10, 11]


@pytest.fixture
def tiny_csv(tmp_path):
  return write_csv(tmp_path / 'tiny.csv', ('y',), [(y,) for y in TINY])


def test_baselines_against_hand_computation(tiny_csv):
  task = task_of(
    tiny_csv,
    columns='y',
    input_length=2,
    output_length=1,
    split=(6, 9, 12),
    season=2,
  )
  b = task.baselines()
  # Test targets: rows 9, 10, 11 = 12, 10, 11.  MASE's scale: the training
  # rows 1 3 2 5 4 6 at lag 2: |2-1|, |5-3|, |4-2|, |6-5| -> 1.5.
  # Persistence: 9, 12, 10 -> errors -3, 2, -1.
  assert b['persistence']['mae'] == pytest.approx(2.0)
  assert b['persistence']['mse'] == pytest.approx(14 / 3)
  assert b['persistence']['rmse'] == pytest.approx((14 / 3) ** 0.5)
  assert b['persistence']['mase'] == pytest.approx(2.0 / 1.5)
  # Seasonal naive (season 2): rows 7, 8, 9 = 7, 9, 12 -> errors -5, -1, 1.
  assert b['seasonal_naive']['mae'] == pytest.approx(7 / 3)
  assert b['seasonal_naive']['mse'] == pytest.approx(9.0)
  assert b['seasonal_naive']['mase'] == pytest.approx(7 / 3 / 1.5)
  # Linear AR: y_t = a y_{t-2} + b y_{t-1} + c, least squares on the training
  # windows (1,3->2), (3,2->5), (2,5->4), (5,4->6): the normal equations.
  x = np.array([[1, 3, 1], [3, 2, 1], [2, 5, 1], [5, 4, 1]], float)
  y = np.array([2, 5, 4, 6], float)
  coef = np.linalg.solve(x.T @ x, x.T @ y)
  forecasts = np.array([[7, 9, 1], [9, 12, 1], [12, 10, 1]], float) @ coef
  errors = forecasts - np.array([12, 10, 11])
  assert b['linear_ar']['mae'] == pytest.approx(np.abs(errors).mean())
  assert b['linear_ar']['mse'] == pytest.approx((errors**2).mean())
  assert b['linear_ar']['mase'] == pytest.approx(np.abs(errors).mean() / 1.5)
  # The task's own MASE agrees: a model that forecasts like persistence.
  d = series.load(
    {
      **series.DEFAULTS,
      'path': tiny_csv,
      'columns': 'y',
      'input_length': 2,
      'split': (6, 9, 12),
      'season': 2,
    }
  )
  test_x, test_y = task.held_out('test')
  persistence = (np.array([[9], [12], [10]]) - d.target_mean) / d.target_std
  m = task.metrics(jnp.asarray(persistence, jnp.float32), jnp.asarray(test_y))
  assert float(m['mase']) == pytest.approx(2.0 / 1.5, rel=1e-5)
  assert float(m['mae']) == pytest.approx(2.0, rel=1e-5)


def test_multi_step_seasonal_naive_repeats_the_last_season():
  y = np.arange(20, dtype=float)[:, None]
  f = series.seasonal_naive_forecast(y, np.array([0]), 5, 4, 3)
  # Last observed row 4; steps 1..4 read rows 2, 3, 4, 2+3=5-3... one season
  # before each step: 5-3=2, 6-3=3, 7-3=4, 8-6=2.
  np.testing.assert_array_equal(f[0, :, 0], [2, 3, 4, 2])
  p = series.persistence_forecast(y, np.array([0, 1]), 5, 2)
  np.testing.assert_array_equal(p[:, :, 0], [[4, 4], [5, 5]])


def test_several_inputs_and_targets_are_step_major(index_csv):
  task = task_of(
    index_csv,
    columns=('idx', 'wave'),
    targets='wave,idx',
    input_length=4,
    output_length=2,
    split=(30, 45, 60),
  )
  assert task.num_outputs == 4
  x, y = task.generate(jax.random.key(0), 3)
  assert x.shape == (3, 4, 2) and y.shape == (3, 4)
  test_x, test_y = task.held_out('test')
  decoded = np.asarray(task.decode(jnp.asarray(test_y))).reshape(-1, 2, 2)
  # Column 1 of the targets is 'idx': rows 45, 46 for the first window.
  np.testing.assert_allclose(decoded[0, :, 1], [45, 46], atol=1e-3)
  np.testing.assert_allclose(
    decoded[0, :, 0], np.round(np.sin(np.array([45, 46]) / 3), 4), atol=1e-4
  )


# --- files ---------------------------------------------------------------------


def test_npy_and_npz_files(tmp_path):
  values = np.stack([np.arange(30.0), np.arange(30.0) ** 0.5], axis=1)
  np.save(tmp_path / 'a.npy', values)
  np.savez(tmp_path / 'cols.npz', t=np.arange(30.0), v=values[:, 1])
  np.savez(tmp_path / 'one.npz', values)
  for path, columns in (
    (tmp_path / 'a.npy', 'c1'),
    (tmp_path / 'a.npy', 1),
    (tmp_path / 'cols.npz', 'v'),
    (tmp_path / 'one.npz', 'c1'),
  ):
    task = task_of(
      str(path), columns=columns, input_length=3, split=(20, 25, 30)
    )
    _, test_y = task.held_out('test')
    np.testing.assert_allclose(
      np.asarray(task.decode(jnp.asarray(test_y)))[:, 0],
      np.arange(25, 30) ** 0.5,
      rtol=1e-5,
    )


def test_missing_values_filled_when_asked(tmp_path):
  rows = [(i,) for i in range(30)]
  rows[10] = ('',)
  rows[11] = ('NA',)
  path = write_csv(tmp_path / 'gaps.csv', ('v',), rows)
  with pytest.raises(ConfigError, match=r"'v'.*row 10 \(line 12 of .*gaps.csv"):
    task_of(path, columns='v', input_length=3, split=(20, 25, 30))
  options = {
    **series.DEFAULTS,
    'path': path,
    'columns': 'v',
    'input_length': 3,
    'split': (20, 25, 30),
  }
  filled = series.load({**options, 'fill': 'ffill'}).inputs[:, 0]
  np.testing.assert_array_equal(filled[9:13], [9, 9, 9, 12])
  filled = series.load({**options, 'fill': 'interpolate'}).inputs[:, 0]
  np.testing.assert_array_equal(filled[9:13], [9, 10, 11, 12])


# --- bad input -> ConfigError naming the thing --------------------------------


@pytest.mark.parametrize(
  'options, pattern',
  [
    ({'path': ''}, r'task.path.*--config.task.path=FILE'),
    ({'path': '/nonexistent/x.csv'}, r'/nonexistent/x.csv.*no such file'),
    ({'columns': 'nope'}, r"no column 'nope'.*\['year', 'idx', 'wave'\]"),
    ({'targets': ('idx', 'nope')}, r"task.targets.*no column 'nope'"),
    ({'columns': 7}, r'column index 7 is out of range'),
    ({'time_column': 'when'}, r"task.time_column.*no column 'when'"),
    ({'split': (30, 20, 60)}, r'train_end < valid_end < test_end'),
    ({'split': (30, 45, 61)}, r'test_end=61 is past the end .*60 rows'),
    ({'split': (30, 45)}, r'task.split'),
    ({'split': (0.5, 0.75, 1.5)}, r'fraction must be in \(0, 1\]'),
    (
      {'split': (30, 31, 60), 'output_length': 2},
      r'valid part has 1 rows.*too few for one window',
    ),
    (
      {'split': (5, 45, 60), 'input_length': 5},
      r'train part has 5 rows.*it needs >= 6',
    ),
    ({'split': (30, 45, 46), 'output_length': 2}, r'test part has 1 rows'),
    ({'input_length': 0}, r'task.input_length'),
    ({'season': 30}, r'task.season=30.*< the training part'),
    ({'fill': 'mean'}, r'task.fill'),
    ({'loss': 'huber'}, r'task.loss'),
    ({'lenght': 3}, r"task.lenght.*takes no option 'lenght'"),
  ],
)
def test_bad_options(index_csv, options, pattern):
  options = {
    'path': index_csv,
    'columns': 'idx',
    'input_length': 4,
    'split': (30, 45, 60),
    **options,
  }
  with pytest.raises(ConfigError, match=pattern):
    task_of(**options)


def test_bad_files(tmp_path):
  rows = [(i, i) for i in range(30)]
  rows[17] = (17, 'abc')
  path = write_csv(tmp_path / 'text.csv', ('a', 'b'), rows)
  with pytest.raises(
    ConfigError,
    match=r"'b'.*non-numeric value 'abc' at "
    r'line 19 of .*text.csv',
  ):
    task_of(
      path, columns='a,b', input_length=3, split=(20, 25, 30), fill='ffill'
    )
  # Column 'b' is not used: the file is fine.
  task_of(path, columns='a', input_length=3, split=(20, 25, 30))
  with open(tmp_path / 'ragged.csv', 'w') as f:
    f.write('a,b\n1,2\n3\n')
  with pytest.raises(ConfigError, match='line 3 has 1 fields'):
    task_of(str(tmp_path / 'ragged.csv'), columns='a')
  (tmp_path / 'x.txt').write_text('1\n2\n')
  with pytest.raises(ConfigError, match=r'\.csv, \.npy or \.npz'):
    task_of(str(tmp_path / 'x.txt'))
  np.save(tmp_path / 'cube.npy', np.zeros((4, 3, 2)))
  with pytest.raises(ConfigError, match=r'1-D \(N,\) or 2-D'):
    task_of(str(tmp_path / 'cube.npy'))
  np.savez(tmp_path / 'ragged.npz', a=np.zeros(5), b=np.zeros(6))
  with pytest.raises(ConfigError, match='differ in length'):
    task_of(str(tmp_path / 'ragged.npz'))
  values = np.arange(30.0)
  values[22] = np.nan
  np.save(tmp_path / 'gap.npy', values)
  with pytest.raises(ConfigError, match=r"'c0'.*missing value at row 22"):
    task_of(str(tmp_path / 'gap.npy'), input_length=3, split=(20, 25, 30))
  constant = write_csv(tmp_path / 'flat.csv', ('v',), [(1,)] * 30)
  with pytest.raises(ConfigError, match='MASE would divide by zero'):
    task_of(constant, input_length=3, split=(20, 25, 30))


def test_statsmodels_missing_says_how_to_install(monkeypatch):
  monkeypatch.setattr(importlib.util, 'find_spec', lambda name: None)
  with pytest.raises(ConfigError, match=r"pip install -e '\.\[data\]'"):
    task_of('statsmodels:sunspots', columns='SUNACTIVITY')


# --- configs --------------------------------------------------------------------


def load_config(name):
  spec = importlib.util.spec_from_file_location(
    name, os.path.join(ROOT, 'configs', f'{name}.py')
  )
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def test_series_config_without_a_path_says_to_set_one():
  config = load_config('series')
  with pytest.raises(
    ConfigError, match=r'config.task.path.*--config.task.path'
  ):
    tasks.make_task(config.task)


def test_series_config_on_a_csv(index_csv):
  from lstm_flax import experiment  # pylint: disable=g-import-not-at-top

  config = load_config('series').unlock()
  config.task.path = index_csv
  config.task.columns = 'idx'
  config.task.time_column = 'year'
  config.task.season = 1
  task = experiment.check_config(config)
  assert task.name == 'series' and task.held_out is not None


@pytest.mark.skipif(
  importlib.util.find_spec('statsmodels') is None,
  reason='needs the data extra (statsmodels)',
)
def test_sunspots_config():
  from lstm_flax import experiment  # pylint: disable=g-import-not-at-top

  config = load_config('sunspots')
  task = experiment.check_config(config)
  test_x, test_y = task.held_out('test')
  assert test_x.shape[1:] == (config.task.input_length, 1)
  # 309 years from 1700: the test years are the rows after valid_end.
  assert len(test_y) == 309 - config.task.split[1]
  b = task.baselines()
  assert set(b) == {'persistence', 'seasonal_naive', 'linear_ar'}
  assert b['linear_ar']['mse'] < b['persistence']['mse']


# --- model options for forecasting -------------------------------------------


def test_highway_adds_a_linear_autoregression_on_the_last_steps():
  x = jax.random.normal(jax.random.key(1), (3, 9, 2))
  plain = models.StackedLSTM((5,), 4)
  model = models.StackedLSTM((5,), 4, highway=3)
  params = model.init(jax.random.key(0), x)['params']
  assert sorted(params) == ['dense', 'highway', 'lstm_0']
  assert params['highway']['kernel'].shape == (3 * 2, 4)
  recent = x[:, -3:, :].reshape(3, 6)
  expected = (
    plain.apply({'params': {k: params[k] for k in ('dense', 'lstm_0')}}, x)
    + recent @ params['highway']['kernel']
    + params['highway']['bias']
  )
  np.testing.assert_allclose(
    model.apply({'params': params}, x), expected, rtol=1e-5, atol=1e-6
  )
  # highway=0 keeps the parameters and outputs of the plain model.
  plain_params = plain.init(jax.random.key(0), x)['params']
  assert sorted(plain_params) == ['dense', 'lstm_0']
  with pytest.raises(ValueError, match='highway=10 is longer'):
    models.StackedLSTM((5,), 4, highway=10).init(jax.random.key(0), x)


@pytest.mark.parametrize(
  'name, options',
  [
    ('lstm', {'layer_sizes': (5, 4)}),
    ('encoder_decoder', {'layer_sizes': (5, 4), 'output_steps': 2}),
    ('per_step', {'layer_sizes': (5,), 'bidirectional': True}),
  ],
)
def test_dropout_only_when_training(name, options):
  x = jax.random.normal(jax.random.key(1), (3, 9, 2))
  plain = models.make_model({'name': name, **options}, 3)
  model = models.make_model(
    {'name': name, 'dropout': 0.3, 'recurrent_dropout': 0.2, **options}, 3
  )
  params = plain.init(jax.random.key(0), x)['params']
  assert jax.tree.structure(
    model.init(jax.random.key(0), x)['params']
  ) == jax.tree.structure(params)
  reference = plain.apply({'params': params}, x)
  np.testing.assert_array_equal(model.apply({'params': params}, x), reference)
  train = lambda k: model.apply(
    {'params': params}, x, train=True, rngs={'dropout': jax.random.key(k)}
  )
  assert not np.allclose(train(0), reference)
  np.testing.assert_array_equal(train(0), train(0))
  assert not np.allclose(train(0), train(1))
  # Without dropout, train=True changes nothing.
  np.testing.assert_array_equal(
    plain.apply({'params': params}, x, train=True), reference
  )


def test_model_option_checks():
  task_config = {'name': 'series', 'input_length': 8}
  base = {'name': 'lstm', 'layer_sizes': (4,)}
  for field, value, pattern in (
    ('dropout', 1.0, r'model.dropout.*\[0, 1\)'),
    ('recurrent_dropout', -0.1, 'must be >= 0'),
    ('highway', 9, r'<= task.input_length=8'),
    ('highway', -1, 'must be >= 0'),
  ):
    with pytest.raises(ConfigError, match=pattern):
      models.check_model_config(
        {**base, field: value}, _Config(task_config), 'sequence'
      )
  with pytest.raises(ConfigError, match="takes no option 'highway'"):
    models.check_model_config(
      {'name': 'per_step', 'layer_sizes': (4,), 'highway': 2},
      _Config(task_config),
      'sequence',
      'per_step',
    )


class _Config(dict):
  """A dict with attribute access, like a ConfigDict."""

  __getattr__ = dict.__getitem__


@pytest.mark.skipif(
  importlib.util.find_spec('matplotlib') is None,
  reason='needs the plot extra (matplotlib)',
)
def test_figure_of_the_test_part(index_csv, tmp_path):
  task = task_of(
    index_csv,
    columns='idx,wave',
    targets='wave',
    time_column='year',
    input_length=4,
    output_length=2,
    split=(30, 45, 60),
  )
  test_x, test_y = task.held_out('test')
  predictions = np.asarray(task.decode(jnp.asarray(test_y)))
  path = task.figure(str(tmp_path), test_x, test_y, predictions)
  assert path.endswith('forecast.png') and os.path.getsize(path) > 0
  # Windows that are not the test part's first: drawn without baselines.
  os.remove(path)
  assert (
    os.path.getsize(
      task.figure(str(tmp_path), test_x[1:3], test_y[1:3], predictions[1:3])
    )
    > 0
  )
