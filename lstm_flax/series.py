"""Forecasting from a file: reading, a chronological split, windows,
normalisation, classical baselines and metrics in the data's own units.

The ``series`` task (``configs/series.py``) reads a CSV (columns by name) or
an ``.npy`` / ``.npz`` array once on the host, splits its rows in time order
into training, validation and test parts, and serves windows of
``input_length`` rows in -> the next ``output_length`` rows of the target
columns out:

- rows ``[0, train_end)`` train, ``[train_end, valid_end)`` validate,
  ``[valid_end, test_end)`` test (``task.split``; rows past ``test_end`` are
  not used);
- a training window lies wholly in the training part; a validation or test
  window takes its targets only from its own part and may read its inputs
  from the rows before it (a forecaster at the part's start knows the past);
- every column is normalised with the mean and standard deviation of the
  training part alone; metrics and baselines are in the data's own units.

Shapes: inputs (B, input_length, F) with F the input columns; targets and
model outputs (B, output_length * K) with K the target columns, step-major
(step 0's K targets, then step 1's ...), in normalised units.
"""

import csv
import dataclasses
import functools
import importlib.util
import math
import numbers
import os
from typing import Dict, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from lstm_flax import tasks
from lstm_flax import validation as v

# task.* fields of the series task and their defaults.
DEFAULTS = {
  'path': '',  # .csv, .npy or .npz; 'statsmodels:NAME' = a dataset
  # bundled with statsmodels (e.g. 'statsmodels:sunspots')
  'columns': '',  # input columns: 'a', 'a,b' or ('a', 'b'); '' = all
  # numeric columns but time_column
  'targets': '',  # target columns, same forms; '' = the input columns
  'time_column': '',  # optional: labels the figure's x axis, never an input
  'input_length': 24,  # T: rows in per window
  'output_length': 1,  # L: rows forecast per window
  'split': (0.7, 0.85, 1.0),  # (train_end, valid_end, test_end): row counts
  # (ints) or fractions of the rows (floats)
  'season': 1,  # m of the seasonal-naive baseline and of MASE
  'fill': '',  # missing values: '' refuses them, 'ffill' or
  # 'interpolate' fills them
  'loss': 'mse',  # what training minimises, in normalised units:
  # 'mse' or 'mae'
}
FILLS = ('', 'ffill', 'interpolate')
LOSSES = ('mse', 'mae')
PARTS = ('train', 'valid', 'test')
_MISSING = frozenset({'', 'na', 'nan', 'n/a', 'null', 'none', '?'})


def _error(field, value, why):
  v._fail(field, value, why)  # pylint: disable=protected-access


# --- reading ------------------------------------------------------------------


def resolve_path(path: str) -> str:
  """``path`` itself, or for 'statsmodels:NAME' the CSV statsmodels ships
  (found without importing statsmodels or pandas)."""
  if not isinstance(path, str) or not path:
    _error(
      'task.path',
      path,
      'set it to your data file: --config.task.path=FILE.csv '
      '(.csv, .npy or .npz) and --config.task.columns=NAME',
    )
  if path.startswith('statsmodels:'):
    name = path.split(':', 1)[1]
    spec = importlib.util.find_spec('statsmodels')
    if spec is None or not spec.submodule_search_locations:
      _error(
        'task.path',
        path,
        'it needs statsmodels, which is not installed: pip install -e '
        "'.[data]' (or give your own CSV with --config.task.path=FILE)",
      )
    root = list(spec.submodule_search_locations)[0]
    found = os.path.join(root, 'datasets', name, f'{name}.csv')
    if not os.path.isfile(found):
      _error('task.path', path, f'statsmodels has no dataset file {found}')
    return found
  if not os.path.isfile(path):
    _error(
      'task.path',
      path,
      f'no such file (looked in {os.getcwd()!r} for a relative path)',
    )
  return path


@dataclasses.dataclass(frozen=True)
class Table:
  """A file's numeric columns: ``columns[name]`` (N,) float64, NaN = missing
  (or non-numeric: see ``bad``); ``order`` the names in file order;
  ``bad[name]`` (line, text) of the first non-numeric cell; ``where(i)``
  names row ``i`` for messages."""

  path: str
  columns: Dict[str, np.ndarray]
  order: Tuple[str, ...]
  bad: Dict[str, Tuple[int, str]]
  first_line: int  # file line of row 0 (CSV), 0 for arrays

  @property
  def num_rows(self) -> int:
    return len(next(iter(self.columns.values()))) if self.columns else 0

  def where(self, i: int) -> str:
    if self.first_line:
      return f'row {i} (line {i + self.first_line} of {self.path})'
    return f'row {i} of {self.path}'


def _parse(text):
  """A CSV cell -> float, NaN for a missing value, None if not a number."""
  t = text.strip()
  if t.lower() in _MISSING:
    return math.nan
  try:
    x = float(t)
  except ValueError:
    return None
  return x if math.isfinite(x) else None


def _read_csv(path) -> Table:
  with open(path, newline='', encoding='utf-8-sig') as f:
    rows = csv.reader(f)
    header = next(rows, None)
    if not header:
      _error(
        'task.path',
        path,
        'the CSV file is empty (it needs a header row of column names)',
      )
    names = [h.strip() for h in header]
    if len(set(names)) != len(names) or not all(names):
      _error(
        'task.path',
        path,
        f'its header row must name every column once; got {names}',
      )
    values = [[] for _ in names]
    bad = {}
    blank = 0  # blank lines so far: missing rows, unless they end the file
    for line, row in enumerate(rows, start=2):
      if not row or all(not c.strip() for c in row):
        blank += 1
        continue
      for column in values:
        column.extend([math.nan] * blank)
      blank = 0
      if len(row) != len(names):
        _error(
          'task.path',
          path,
          f'line {line} has {len(row)} fields, the header {len(names)}',
        )
      for j, cell in enumerate(row):
        x = _parse(cell)
        if x is None:
          bad.setdefault(names[j], (line, cell))
          x = math.nan
        values[j].append(x)
  columns = {n: np.asarray(c, np.float64) for n, c in zip(names, values)}
  return Table(path, columns, tuple(names), bad, first_line=2)


def _array_columns(path, array, prefix='c'):
  if array.ndim == 1:
    array = array[:, None]
  if array.ndim != 2:
    _error(
      'task.path',
      path,
      f'an array must be 1-D (N,) or 2-D (N, C); got shape {array.shape}',
    )
  if not np.issubdtype(array.dtype, np.number) or np.issubdtype(
    array.dtype, np.complexfloating
  ):
    _error(
      'task.path', path, f'the array holds {array.dtype}, not real numbers'
    )
  array = array.astype(np.float64)
  return {f'{prefix}{j}': array[:, j] for j in range(array.shape[1])}


def _read_array(path) -> Table:
  try:
    loaded = np.load(path, allow_pickle=False)
  except (OSError, ValueError) as e:
    _error('task.path', path, f'numpy cannot read it ({e})')
  if isinstance(loaded, np.ndarray):
    columns = _array_columns(path, loaded)
  else:
    with loaded:
      arrays = {k: loaded[k] for k in loaded.files}
    if len(arrays) == 1 and next(iter(arrays.values())).ndim == 2:
      columns = _array_columns(path, next(iter(arrays.values())))
    elif arrays and all(a.ndim == 1 for a in arrays.values()):
      lengths = {k: len(a) for k, a in arrays.items()}
      if len(set(lengths.values())) != 1:
        _error(
          'task.path',
          path,
          f'its 1-D arrays (the columns) differ in length: {lengths}',
        )
      columns = {k: _array_columns(path, a)['c0'] for k, a in arrays.items()}
    else:
      _error(
        'task.path',
        path,
        'an .npz must hold one 2-D array (columns c0, '
        'c1, ...) or 1-D arrays of equal length (columns by array name); '
        f'it holds { ({k: a.shape for k, a in arrays.items()}) }',
      )
  bad = {}
  for name, col in columns.items():
    inf = np.flatnonzero(np.isinf(col))
    if inf.size:
      bad[name] = (int(inf[0]), str(col[inf[0]]))
      col[inf] = np.nan
  return Table(path, columns, tuple(columns), bad, first_line=0)


@functools.lru_cache(maxsize=8)
def _read_cached(path, mtime_ns, size) -> Table:
  del mtime_ns, size  # cache keys: a changed file is read again
  if path.lower().endswith('.csv'):
    return _read_csv(path)
  if path.lower().endswith(('.npy', '.npz')):
    return _read_array(path)
  _error('task.path', path, 'use a .csv, .npy or .npz file')


def read_table(path: str) -> Table:
  """Reads ``path`` (see ``resolve_path``) once per process and file version."""
  path = resolve_path(path)
  stat = os.stat(path)
  return _read_cached(os.path.abspath(path), stat.st_mtime_ns, stat.st_size)


def column_names(field, value, table: Table, default) -> Tuple[str, ...]:
  """``value`` ('a', 'a,b', ('a', 'b'), an int index or '') as names of
  ``table``; '' -> ``default``."""
  if value in ('', None, ()):
    return tuple(default)
  if isinstance(value, str):
    items = [s.strip() for s in value.split(',')]
  elif isinstance(value, numbers.Integral) and not isinstance(value, bool):
    items = [value]
  elif isinstance(value, (tuple, list)):
    items = list(value)
  else:
    _error(
      field,
      value,
      "must be a column name, 'a,b', a tuple of names or of column indices",
    )
  names = []
  for item in items:
    if isinstance(item, numbers.Integral) and not isinstance(item, bool):
      if not 0 <= item < len(table.order):
        _error(
          field,
          value,
          f'column index {item} is out of range: '
          f'{table.path} has {len(table.order)} columns {list(table.order)}',
        )
      item = table.order[item]
    if not isinstance(item, str) or item not in table.columns:
      _error(
        field,
        value,
        f'{table.path} has no column {item!r}; its columns '
        f'are {list(table.order)}',
      )
    names.append(item)
  if len(set(names)) != len(names):
    _error(field, value, 'names a column twice')
  return tuple(names)


def fill_missing(name, values, how, table: Table):
  """A column with its missing values (NaN) filled (``how``) or refused."""
  missing = np.flatnonzero(np.isnan(values))
  if not missing.size:
    return values
  first = int(missing[0])
  if how == '':
    _error(
      'task.fill',
      how,
      f'column {name!r} has a missing value at {table.where(first)} '
      f'({missing.size} in all); set task.fill to "ffill" (repeat the '
      'last value) or "interpolate" (linear), or clean the file',
    )
  known = np.flatnonzero(~np.isnan(values))
  if not known.size:
    _error(
      'task.columns',
      name,
      f'column {name!r} of {table.path} has no values at all',
    )
  if how == 'ffill':
    if first < known[0]:
      _error(
        'task.fill',
        how,
        f'column {name!r} starts with a missing value '
        f'at {table.where(first)}: there is no earlier value to repeat; '
        'use "interpolate" or trim the file',
      )
    index = np.maximum.accumulate(
      np.where(np.isnan(values), 0, np.arange(len(values)))
    )
    return values[index]
  # 'interpolate': linear in the row index; ends take the nearest value.
  rows = np.arange(len(values))
  return np.interp(rows, known, values[known])


# --- the split and the windows ----------------------------------------------


def split_rows(
  split, num_rows: int, of: str = 'the series', unit: str = 'rows'
) -> Tuple[int, int, int]:
  """``task.split`` as the row counts ``(train_end, valid_end, test_end)``
  (``of`` and ``unit`` name what is split, for messages)."""
  if not isinstance(split, (tuple, list)) or len(split) != 3:
    _error(
      'task.split',
      split,
      'must be (train_end, valid_end, test_end), as '
      f'{unit} counts or fractions of the {unit}, e.g. (0.7, 0.85, 1.0)',
    )
  ends = []
  for x in split:
    if isinstance(x, bool) or not isinstance(x, numbers.Real):
      _error('task.split', split, 'its entries must be numbers')
    if isinstance(x, numbers.Integral):
      ends.append(int(x))
    elif 0 < x <= 1:
      ends.append(int(round(x * num_rows)))
    else:
      _error(
        'task.split',
        split,
        f'a fraction must be in (0, 1]; got {x} (give row counts as integers)',
      )
  train_end, valid_end, test_end = ends
  if not 0 < train_end < valid_end < test_end:
    _error(
      'task.split',
      split,
      f'needs 0 < train_end < valid_end < test_end; got {unit} {tuple(ends)}',
    )
  if test_end > num_rows:
    _error(
      'task.split',
      split,
      f'test_end={test_end} is past the end of {of} ({num_rows} {unit})',
    )
  return train_end, valid_end, test_end


def window_starts(part: str, bounds, input_length: int, output_length: int):
  """Start rows of every window of ``part``: inputs are rows
  ``[s, s + input_length)``, targets ``[s + input_length, s + input_length +
  output_length)``, all targets inside the part."""
  train_end, valid_end, test_end = bounds
  begin, end = {
    'train': (0, train_end),
    'valid': (train_end, valid_end),
    'test': (valid_end, test_end),
  }[part]
  first = max(0, begin - input_length)
  last = end - input_length - output_length  # inclusive
  return np.arange(first, last + 1)


def windows(values, starts, length):
  """values (N, C), starts (W,) -> (W, length, C): rows s .. s+length-1."""
  return values[starts[:, None] + np.arange(length)[None]]


# --- baselines and metrics (numpy, data units) ------------------------------


def seasonal_scale(target_values, train_end: int, season: int):
  """MASE's denominator per target column: the in-sample MAE of the
  seasonal-naive forecast ``y[t - season]`` over the training part."""
  y = target_values[:train_end]
  return np.abs(y[season:] - y[:-season]).mean(axis=0)


def forecast_metrics(predictions, targets, scale) -> Dict[str, float]:
  """predictions, targets (W, L, K) in data units -> mae, mse, rmse, mase."""
  err = np.asarray(predictions, np.float64) - np.asarray(targets, np.float64)
  mse = float(np.mean(err**2))
  return {
    'mae': float(np.mean(np.abs(err))),
    'mse': mse,
    'rmse': mse**0.5,
    'mase': float(np.mean(np.abs(err) / scale)),
  }


def persistence_forecast(target_values, starts, input_length, output_length):
  """Every step repeats the last observed value: (W, L, K)."""
  last = target_values[starts + input_length - 1]  # (W, K)
  return np.repeat(last[:, None], output_length, axis=1)


def seasonal_naive_forecast(
  target_values, starts, input_length, output_length, season
):
  """Step h (1-based) repeats the value one season before:
  ``y[t + h - season * ceil(h / season)]``, t the last observed row."""
  h = np.arange(1, output_length + 1)
  back = h - season * np.ceil(h / season).astype(int)  # <= 0
  rows = (starts + input_length - 1)[:, None] + back[None]
  return target_values[rows]


def fit_linear_ar(input_windows, target_windows):
  """Least squares of flattened targets on the flattened input window and a
  constant: returns ``coef`` ((T*F + 1), L*K)."""
  x = input_windows.reshape(len(input_windows), -1)
  x = np.concatenate([x, np.ones((len(x), 1))], axis=1)
  y = target_windows.reshape(len(target_windows), -1)
  coef, *_ = np.linalg.lstsq(x, y, rcond=None)
  return coef


def linear_ar_forecast(coef, input_windows, output_length):
  x = input_windows.reshape(len(input_windows), -1)
  x = np.concatenate([x, np.ones((len(x), 1))], axis=1)
  return (x @ coef).reshape(len(x), output_length, -1)


# --- the task -----------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class SeriesData:
  """A series read, checked, split and normalised (host side, numpy).

  ``inputs`` (N, F) and ``targets`` (N, K) raw values of the used rows
  (``N = test_end``); ``mean`` / ``std`` per input and target column from the
  training part; ``bounds`` = (train_end, valid_end, test_end).
  """

  path: str
  input_names: Tuple[str, ...]
  target_names: Tuple[str, ...]
  inputs: np.ndarray
  targets: np.ndarray
  times: Optional[np.ndarray]
  bounds: Tuple[int, int, int]
  input_length: int
  output_length: int
  season: int
  input_mean: np.ndarray
  input_std: np.ndarray
  target_mean: np.ndarray
  target_std: np.ndarray
  scale: np.ndarray  # MASE denominator per target column

  def normalised_inputs(self):
    return (self.inputs - self.input_mean) / self.input_std

  def normalised_targets(self):
    return (self.targets - self.target_mean) / self.target_std

  def starts(self, part):
    return window_starts(
      part, self.bounds, self.input_length, self.output_length
    )

  def part_windows(self, part, normalised=True):
    """Every window of ``part``: inputs (W, T, F), targets (W, L, K)."""
    s = self.starts(part)
    x = self.normalised_inputs() if normalised else self.inputs
    y = self.normalised_targets() if normalised else self.targets
    return (
      windows(x, s, self.input_length),
      windows(y, s + self.input_length, self.output_length),
    )


def _std(values):
  """Per-column standard deviation; 1 for a column constant over the
  training part (it is then only centred)."""
  std = values.std(axis=0)
  return np.where(std > 0, std, 1.0)


def _check_scalars(o):
  """The integer and choice options, checked before the file is read."""
  v.integer('task.input_length', o['input_length'], 1)
  v.integer('task.output_length', o['output_length'], 1)
  v.integer('task.season', o['season'], 1)
  v.choice('task.fill', o['fill'], FILLS)
  v.choice('task.loss', o['loss'], LOSSES)


def _chosen_columns(o, table: Table):
  """(input names, target names) from task.columns / task.targets, after
  checking task.time_column; refuses a chosen column with a non-numeric
  value."""
  if not isinstance(o['time_column'], str):
    _error('task.time_column', o['time_column'], 'must be a column name or ""')
  if o['time_column'] and o['time_column'] not in table.columns:
    _error(
      'task.time_column',
      o['time_column'],
      f'{table.path} has no column {o["time_column"]!r}; its columns are '
      f'{list(table.order)}',
    )
  default = [
    n for n in table.order if n != o['time_column'] and n not in table.bad
  ]
  if not default and o['columns'] in ('', None, ()):
    _error(
      'task.columns',
      o['columns'],
      f'{table.path} has no numeric column; '
      f'its columns are {list(table.order)}',
    )
  input_names = column_names('task.columns', o['columns'], table, default)
  target_names = column_names('task.targets', o['targets'], table, input_names)
  for name in dict.fromkeys(input_names + target_names):
    if name in table.bad:
      line, text = table.bad[name]
      where = (
        f'line {line} of {table.path}'
        if table.first_line
        else f'row {line} of {table.path}'
      )
      _error(
        'task.columns',
        name,
        f'column {name!r} holds a non-numeric value {text!r} at {where}',
      )
  return input_names, target_names


def _check_windows(o, bounds, num_rows: int):
  """Refuses a split with a part too short for one window, and a season the
  training part (MASE) or the first test window (seasonal naive) cannot
  look back over; ``bounds`` = (train_end, valid_end, test_end) in rows."""
  train_end, valid_end, test_end = bounds
  length, horizon, season = o['input_length'], o['output_length'], o['season']
  counts = {p: len(window_starts(p, bounds, length, horizon)) for p in PARTS}
  for part, count in counts.items():
    if count < 1:
      rows = dict(
        zip(PARTS, (train_end, valid_end - train_end, test_end - valid_end))
      )[part]
      need = length + horizon if part == 'train' else horizon
      _error(
        'task.split',
        o['split'],
        f'the {part} part has {rows} rows (rows {tuple(bounds)} of '
        f'{num_rows}), too few for one window of input_length='
        f'{length} and output_length={horizon}: it needs >= {need}',
      )
  if season >= train_end:
    _error(
      'task.season',
      season,
      f"must be < the training part's {train_end} "
      'rows (MASE compares each training value with the one a season '
      'before)',
    )
  first_test = window_starts('test', bounds, length, horizon)[0]
  if first_test + length - season < 0:
    _error(
      'task.season',
      season,
      'the seasonal-naive forecast of the first '
      'test window would read before row 0; it needs valid_end - season '
      '>= 0',
    )


def _checked_scale(o, targets, target_names, train_end: int):
  """MASE's denominator per target column (``targets`` (N, K), data units);
  refuses a column that does not change over the training part."""
  season = o['season']
  scale = seasonal_scale(targets, train_end, season)
  if not np.all(scale > 0):
    flat = [n for n, s in zip(target_names, scale) if not s > 0]
    _error(
      'task.targets',
      o['targets'] or ','.join(target_names),
      f'{flat} do not change over the training part at season {season}: '
      'MASE would divide by zero',
    )
  return scale


def _numeric_times(table: Table, time_column: str, test_end: int):
  """The time column's values of the used rows, or None: no time column, or
  non-numeric times (dates), for which the figure counts rows."""
  if not time_column:
    return None
  times = table.columns[time_column][:test_end]
  return None if np.isnan(times).any() else times


def load(options) -> SeriesData:
  """Reads and checks a series from ``options`` (task.* with defaults);
  every bad value raises validation.ConfigError naming it."""
  o = options
  _check_scalars(o)
  table = read_table(o['path'])
  input_names, target_names = _chosen_columns(o, table)
  bounds = split_rows(o['split'], table.num_rows)
  train_end, _, test_end = bounds

  filled = {
    n: fill_missing(n, table.columns[n][:test_end], o['fill'], table)
    for n in dict.fromkeys(input_names + target_names)
  }
  inputs = np.stack([filled[n] for n in input_names], axis=1)
  targets = np.stack([filled[n] for n in target_names], axis=1)
  _check_windows(o, bounds, table.num_rows)
  scale = _checked_scale(o, targets, target_names, train_end)
  return SeriesData(
    path=table.path,
    input_names=input_names,
    target_names=target_names,
    inputs=inputs,
    targets=targets,
    times=_numeric_times(table, o['time_column'], test_end),
    bounds=bounds,
    input_length=o['input_length'],
    output_length=o['output_length'],
    season=o['season'],
    input_mean=inputs[:train_end].mean(0),
    input_std=_std(inputs[:train_end]),
    target_mean=targets[:train_end].mean(0),
    target_std=_std(targets[:train_end]),
    scale=scale,
  )


def baseline_forecasts(d: SeriesData, part='test') -> Dict[str, np.ndarray]:
  """(W, L, K) forecasts in data units of every window of ``part`` by
  persistence, seasonal naive and the linear AR fit on the training windows."""
  s = d.starts(part)
  x_train, y_train = d.part_windows('train', normalised=False)
  coef = fit_linear_ar(x_train, y_train)
  x, _ = d.part_windows(part, normalised=False)
  return {
    'persistence': persistence_forecast(
      d.targets, s, d.input_length, d.output_length
    ),
    'seasonal_naive': seasonal_naive_forecast(
      d.targets, s, d.input_length, d.output_length, d.season
    ),
    'linear_ar': linear_ar_forecast(coef, x, d.output_length),
  }


def baseline_metrics(d: SeriesData, part='test') -> Dict[str, Dict[str, float]]:
  """{name: {mae, mse, rmse, mase}} of each baseline on every window of ``part``."""
  _, y = d.part_windows(part, normalised=False)
  return {
    name: forecast_metrics(p, y, d.scale)
    for name, p in baseline_forecasts(d, part).items()
  }


def series_task(options) -> tasks.Task:
  """The ``series`` task from ``config.task`` (see ``DEFAULTS``)."""
  for name in options:
    if name not in DEFAULTS:
      _error(
        f'task.{name}',
        options[name],
        f'the series task takes no option '
        f'{name!r}; its options are {sorted(DEFAULTS)}',
      )
  o = {**DEFAULTS, **options}
  d = load(o)
  return make_task(d, o['loss'])


def _training_windows(d: SeriesData):
  """``generate(key, batch_size, offset=0)`` of the Task: random training
  windows, normalised."""
  length, horizon = d.input_length, d.output_length
  k = len(d.target_names)
  train_end = d.bounds[0]
  # Only the training rows go to the device: the generator cannot see the rest.
  train_x = jnp.asarray(d.normalised_inputs()[:train_end], jnp.float32)
  train_y = jnp.asarray(d.normalised_targets()[:train_end], jnp.float32)
  num_starts = len(d.starts('train'))

  def generate(key, batch_size, offset=0):
    """Random training windows: inputs (B, T, F), targets (B, L*K)."""
    del offset
    starts = jax.random.randint(key, (batch_size,), 0, num_starts)
    x = train_x[starts[:, None] + jnp.arange(length)]
    y = train_y[starts[:, None] + length + jnp.arange(horizon)]
    return x, y.reshape(batch_size, horizon * k)

  return generate


def _loss_and_metrics(d: SeriesData, loss: str):
  """The Task's ``(loss, metrics)`` of outputs and targets (B, L*K), both
  normalised: the loss ('mse' or 'mae') in normalised units, the metrics
  (mae, mse, mase) in the data's own units."""
  horizon = d.output_length
  std = jnp.asarray(np.tile(d.target_std, horizon), jnp.float32)
  scale = jnp.asarray(np.tile(d.scale, horizon), jnp.float32)

  def loss_fn(outputs, targets):
    err = outputs - targets
    return jnp.mean(jnp.square(err) if loss == 'mse' else jnp.abs(err))

  def metrics(outputs, targets):
    err = (outputs - targets) * std  # data units
    return {
      'loss': loss_fn(outputs, targets),
      'mae': jnp.abs(err).mean(),
      'mse': jnp.square(err).mean(),
      'mase': (jnp.abs(err) / scale).mean(),
    }

  return loss_fn, metrics


def make_task(d: SeriesData, loss: str = 'mse') -> tasks.Task:
  """The Task of a loaded series (``loss``: 'mse' or 'mae', normalised)."""
  horizon = d.output_length
  k = len(d.target_names)
  mean = jnp.asarray(np.tile(d.target_mean, horizon), jnp.float32)
  std = jnp.asarray(np.tile(d.target_std, horizon), jnp.float32)
  loss_fn, metrics = _loss_and_metrics(d, loss)

  @functools.lru_cache(maxsize=None)
  def held_out(part):
    if part not in ('valid', 'test', 'train'):
      raise ValueError(f"held_out part {part!r}: use 'valid' or 'test'")
    x, y = d.part_windows(part)
    return (
      x.astype(np.float32),
      y.reshape(len(y), horizon * k).astype(np.float32),
    )

  @functools.lru_cache(maxsize=None)
  def baselines():
    return baseline_metrics(d, 'test')

  def in_units(a):
    """Normalised targets (W, L*K), numpy -> data units, float64."""
    return np.asarray(a, np.float64) * np.tile(d.target_std, horizon) + np.tile(
      d.target_mean, horizon
    )

  def describe(x, y, p):
    return {
      'inputs': np.round(
        np.asarray(x) * d.input_std + d.input_mean, 4
      ).tolist(),
      'expected': np.round(in_units(y), 4).tolist(),
      'predicted': np.round(np.asarray(p, np.float64), 4).tolist(),
    }

  def figure(workdir, inputs, targets, predictions):
    return series_figure(
      workdir,
      d,
      held_out('test'),
      inputs,
      in_units(targets),
      np.asarray(predictions),
    )

  return tasks.Task(
    name='series',
    input_kind='sequence',
    generate=_training_windows(d),
    loss=loss_fn,
    metrics=metrics,
    num_outputs=horizon * k,
    decode=lambda outputs: outputs * std + mean,  # data units
    summarize=tasks.add_rmse,
    figure=figure,
    describe=describe,
    held_out=held_out,
    baselines=baselines,
  )


# forecast.png's line style of each baseline.
_BASELINE_STYLES = {
  'persistence': ':',
  'seasonal_naive': '-.',
  'linear_ar': '--',
}


def _plot_target(ax, j, name, x, targets, predictions, others):
  """Target column ``j`` on ``ax``: the actual values, the model's and each
  baseline's first forecast step at ``x`` (W,); the legend gives each one's
  MSE over all steps.  ``targets``, ``predictions`` and ``others``' forecasts
  are (W, L, K) in data units."""
  ax.plot(x, targets[:, 0, j], 'o-', color='black', ms=3, label='actual')
  mse = np.mean((predictions[..., j] - targets[..., j]) ** 2)
  ax.plot(
    x,
    predictions[:, 0, j],
    'x-',
    color='tab:red',
    ms=4,
    label=f'model (MSE {mse:.4g})',
  )
  for other, forecast in others.items():
    mse = np.mean((forecast[..., j] - targets[..., j]) ** 2)
    ax.plot(
      x,
      forecast[:, 0, j],
      _BASELINE_STYLES[other],
      alpha=0.8,
      label=f'{other} (MSE {mse:.4g})',
    )
  ax.set_ylabel(name)
  ax.grid(alpha=0.3)
  ax.legend(loc='upper right', fontsize=7)


def series_figure(
  workdir, d: SeriesData, test_windows, inputs, targets, predictions
):
  """The forecast of each target column over the test part (the first
  forecast step of every window) -> forecast.png.  ``inputs`` (W, T, F)
  normalised; ``targets``, ``predictions`` (W, L*K) in data units.  When the
  windows are the test part's first W (as the loop passes them), the
  baselines' forecasts of the same windows are drawn beside the model's."""
  from matplotlib.figure import Figure  # pylint: disable=g-import-not-at-top

  w, k = len(inputs), len(d.target_names)
  test_x = test_windows[0]
  aligned = w <= len(test_x) and np.allclose(inputs, test_x[:w])
  first_row = d.starts('test')[:w] + d.input_length
  if aligned:
    x = d.times[first_row] if d.times is not None else first_row
    others = {n: f[:w] for n, f in baseline_forecasts(d, 'test').items()}
  else:
    x, others = np.arange(w), {}
  targets = targets.reshape(w, -1, k)
  predictions = predictions.reshape(w, -1, k)
  fig = Figure(figsize=(9, 2.8 * k))
  axes = fig.subplots(k, 1, squeeze=False)[:, 0]
  for j, (ax, name) in enumerate(zip(axes, d.target_names)):
    _plot_target(ax, j, name, x, targets, predictions, others)
  horizon = (
    'one-step forecasts'
    if d.output_length == 1
    else f'{d.output_length}-step forecasts (first step shown; MSE over '
    'all steps)'
  )
  axes[0].set_title(
    f'{os.path.basename(d.path)}: {horizon} over the test part'
    if aligned
    else f'{horizon} of held-out windows',
    fontsize=9,
  )
  axes[-1].set_xlabel(
    'time'
    if aligned and d.times is not None
    else 'window'
    if not aligned
    else 'row'
  )
  fig.tight_layout()
  path = os.path.join(workdir, 'forecast.png')
  fig.savefig(path, dpi=100)
  return path
