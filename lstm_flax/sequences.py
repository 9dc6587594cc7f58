"""Labelled sequences from a file: the ``sequences`` task (``configs/sequences.py``).

An ``.npz`` holds ``x`` (N, T, F) sequences and ``y`` their labels: (N,)
integer classes (a classifier: softmax cross-entropy, accuracy) or (N,) /
(N, K) float targets (a regressor: MSE, metrics in ``y``'s own units);
``task.kind`` overrides the guess.  The examples are shuffled with
``task.seed`` and split into training, validation and test parts by
``task.split`` = (train_end, valid_end, test_end), cumulative fractions (or
counts) of the examples, within each class for classes (a stratified split).
Inputs, and regression targets, are standardised per feature with the
training part's mean and standard deviation.

Right-padded sequences: an optional ``lengths`` (N,) array gives each
sequence's number of valid (leading) steps.  The inputs are then
``{'x': x, 'lengths': lengths}``, the LSTM layers read only the valid steps
(``seq_lengths``), and the standardisation uses valid steps only.
"""

import functools
import os
from typing import Dict

import jax
import jax.numpy as jnp
import numpy as np

from lstm_flax import series
from lstm_flax import tasks
from lstm_flax import validation as v

DEFAULTS = {
  'path': '',  # .npz with x (N, T, F) and y (N,) or (N, K)
  'kind': '',  # '' from y's dtype, 'classes' or 'regression'
  'split': (0.7, 0.85, 1.0),  # cumulative fractions (or counts) of examples
  'seed': 0,  # the shuffle before the split
  'normalize': True,  # standardise x (and regression y) per feature
}
KINDS = ('', 'classes', 'regression')
PARTS = ('train', 'valid', 'test')


def _error(field, value, why):
  v._fail(field, value, why)  # pylint: disable=protected-access


def _npz_arrays(path) -> Dict[str, np.ndarray]:
  """The arrays of the .npz at ``path`` by name, holding x and y;
  ConfigError for a bad path or file."""
  if not isinstance(path, str) or not path:
    _error(
      'task.path',
      path,
      'set it to your .npz file: '
      '--config.task.path=FILE.npz (arrays x (N, T, F) and y (N,) or '
      '(N, K))',
    )
  if not os.path.isfile(path):
    _error(
      'task.path',
      path,
      f'no such file (looked in {os.getcwd()!r} for a relative path)',
    )
  if not path.lower().endswith('.npz'):
    _error('task.path', path, 'use an .npz file with arrays x and y')
  try:
    with np.load(path, allow_pickle=False) as f:
      arrays = {k: f[k] for k in f.files}
  except (OSError, ValueError) as e:
    _error('task.path', path, f'numpy cannot read it ({e})')
  missing = [k for k in ('x', 'y') if k not in arrays]
  if missing:
    _error(
      'task.path',
      path,
      f'it has no array {missing[0]!r}; it holds '
      f'{sorted(arrays)} (needed: x (N, T, F), y (N,) or (N, K))',
    )
  return arrays


def _checked_lengths(lengths, x, path):
  """``lengths`` as (N,) int32 in [1, T]; ConfigError otherwise."""
  if (
    lengths.shape != (len(x),)
    or not np.issubdtype(lengths.dtype, np.integer)
    or (lengths < 1).any()
    or (lengths > x.shape[1]).any()
  ):
    _error(
      'task.path',
      path,
      f'lengths must be {len(x)} integers in [1, {x.shape[1]}] (each '
      f"sequence's valid steps); got {lengths.dtype} {lengths.shape} in "
      f'[{lengths.min()}, {lengths.max()}]',
    )
  return lengths.astype(np.int32)


def read_npz(path):
  """x (N, T, F) float64, y (N,) or (N, K) as stored, lengths (N,) int32 or
  None; ConfigError if bad."""
  arrays = _npz_arrays(path)
  x, y = arrays['x'], arrays['y']
  if x.ndim != 3 or not np.issubdtype(x.dtype, np.number):
    _error(
      'task.path',
      path,
      f'x must be numbers of shape (N, T, F); got {x.dtype} {x.shape}',
    )
  if y.ndim not in (1, 2) or not (
    np.issubdtype(y.dtype, np.number) or y.dtype == bool
  ):
    _error(
      'task.path',
      path,
      f'y must be numbers of shape (N,) or (N, K); got {y.dtype} {y.shape}',
    )
  if len(x) != len(y):
    _error(
      'task.path',
      path,
      f'x has {len(x)} examples and y {len(y)}: they must match',
    )
  x = x.astype(np.float64)
  bad = np.flatnonzero(~np.isfinite(x).all(axis=(1, 2)))
  if bad.size:
    _error(
      'task.path',
      path,
      f'x[{bad[0]}] holds a missing or infinite value ({bad.size} examples do)',
    )
  if np.issubdtype(y.dtype, np.floating):
    bad = np.flatnonzero(~np.isfinite(y.reshape(len(y), -1)).all(axis=1))
    if bad.size:
      _error(
        'task.path',
        path,
        f'y[{bad[0]}] is missing or infinite ({bad.size} examples are)',
      )
  lengths = arrays.get('lengths')
  if lengths is not None:
    lengths = _checked_lengths(lengths, x, path)
  return x, y, lengths


def labels_of(kind, y, path):
  """(kind, y as int32 classes or float64 (N, K) targets)."""
  if kind == '':
    kind = (
      'classes'
      if y.ndim == 1 and (np.issubdtype(y.dtype, np.integer) or y.dtype == bool)
      else 'regression'
    )
  if kind == 'classes':
    if y.ndim != 1:
      _error(
        'task.kind', kind, f'classes need y of shape (N,); {path} has {y.shape}'
      )
    if np.any(y != np.round(y)) or np.any(y < 0):
      first = int(np.flatnonzero((y != np.round(y)) | (y < 0))[0])
      _error(
        'task.kind',
        kind,
        f'class labels must be integers >= 0; y[{first}]'
        f' of {path} is {y[first]!r}',
      )
    return kind, y.astype(np.int32)
  y = y.astype(np.float64)
  return kind, (y[:, None] if y.ndim == 1 else y)


def split_indices(labels, split, seed, stratify):
  """{part: example indices}: a seeded shuffle cut at ``split``'s ends,
  per class when ``stratify`` (each part keeps the classes' proportions)."""
  n = len(labels)
  ends = series.split_rows(split, n, 'the examples', 'examples')
  rng = np.random.default_rng(seed)
  groups = (
    [np.flatnonzero(labels == c) for c in np.unique(labels)]
    if stratify
    else [np.arange(n)]
  )
  parts = {p: [] for p in PARTS}
  for group in groups:
    group = rng.permutation(group)
    cuts = [int(round(len(group) * e / n)) for e in ends]
    for p, lo, hi in zip(PARTS, [0] + cuts[:2], cuts):
      parts[p].append(group[lo:hi])
  return {p: rng.permutation(np.concatenate(parts[p])) for p in PARTS}


def sequences_task(options) -> tasks.Task:
  """The ``sequences`` task from ``config.task`` (see ``DEFAULTS``)."""
  for name in options:
    if name not in DEFAULTS:
      _error(
        f'task.{name}',
        options[name],
        f'the sequences task takes no '
        f'option {name!r}; its options are {sorted(DEFAULTS)}',
      )
  o = {**DEFAULTS, **options}
  v.choice('task.kind', o['kind'], KINDS)
  v.integer('task.seed', o['seed'], 0, 2**32 - 1)
  if not isinstance(o['normalize'], bool):
    _error('task.normalize', o['normalize'], 'must be True or False')
  x, y, lengths = read_npz(o['path'])
  kind, y = labels_of(o['kind'], y, o['path'])
  parts = split_indices(
    y if kind == 'classes' else np.zeros(len(y)),
    o['split'],
    o['seed'],
    kind == 'classes',
  )
  for p in PARTS:
    if not len(parts[p]):
      _error(
        'task.split',
        o['split'],
        f'the {p} part of {len(y)} examples would be empty',
      )
  train = parts['train']
  x_mean, x_std = np.zeros(x.shape[-1]), np.ones(x.shape[-1])
  if o['normalize']:
    valid = np.ones(x.shape[:2], bool)  # (N, T): steps that count
    if lengths is not None:
      valid = np.arange(x.shape[1]) < lengths[:, None]
    steps = x[train][valid[train]]  # (valid steps, F)
    x_mean, x_std = steps.mean(axis=0), steps.std(axis=0)
    x_std = np.where(x_std > 0, x_std, 1.0)
  x = ((x - x_mean) / x_std).astype(np.float32)
  if lengths is not None:
    x = {'x': x, 'lengths': lengths}
  if kind == 'classes':
    return _classifier(x, y, parts)
  y_mean, y_std = np.zeros(y.shape[1]), np.ones(y.shape[1])
  if o['normalize']:
    y_mean, y_std = y[train].mean(0), y[train].std(0)
    y_std = np.where(y_std > 0, y_std, 1.0)
  return _regressor(
    x, ((y - y_mean) / y_std).astype(np.float32), parts, y_mean, y_std
  )


def _sampler(x, y, train):
  """Random training examples by key: the training part alone is on device."""
  train_x = jax.tree_util.tree_map(lambda a: jnp.asarray(a[train]), x)
  train_y = jnp.asarray(y[train])

  def generate(key, batch_size, offset=0):
    del offset
    i = jax.random.randint(key, (batch_size,), 0, len(train))
    return jax.tree_util.tree_map(lambda a: a[i], train_x), train_y[i]

  return generate


def _held_out(x, y, parts):
  @functools.lru_cache(maxsize=None)
  def held_out(part):
    if part not in parts:
      raise ValueError(f'held_out part {part!r}: use one of {list(parts)}')
    index = parts[part]
    return jax.tree_util.tree_map(lambda a: a[index], x), y[index]

  return held_out


def _classifier(x, y, parts):
  num_classes = int(y.max()) + 1
  majority = int(np.bincount(y[parts['train']], minlength=num_classes).argmax())

  def baselines() -> Dict[str, Dict[str, float]]:
    return {
      'majority_class': {
        'accuracy': float(np.mean(y[parts['test']] == majority))
      }
    }

  return tasks.Task(
    name='sequences',
    input_kind='sequence',
    generate=_sampler(x, y, parts['train']),
    loss=tasks.softmax_cross_entropy,
    metrics=tasks.classification_metrics,
    num_outputs=num_classes,
    decode=lambda logits: jnp.argmax(logits, -1),
    describe=lambda x, y, p: {'expected': int(y), 'predicted': int(p)},
    held_out=_held_out(x, y, parts),
    baselines=baselines,
  )


def _regressor(x, y, parts, y_mean, y_std):
  mean = jnp.asarray(y_mean, jnp.float32)
  std = jnp.asarray(y_std, jnp.float32)

  def loss(outputs, targets):
    return jnp.square(outputs - targets).mean()

  def metrics(outputs, targets):
    err = (outputs - targets) * std  # y's own units
    return {
      'loss': loss(outputs, targets),
      'mae': jnp.abs(err).mean(),
      'mse': jnp.square(err).mean(),
    }

  def baselines() -> Dict[str, Dict[str, float]]:
    # The training part's mean (0 in normalised units) for every example.
    err = y[parts['test']] * y_std
    mse = float(np.mean(err**2))
    return {
      'training_mean': {
        'mae': float(np.mean(np.abs(err))),
        'mse': mse,
        'rmse': mse**0.5,
      }
    }

  return tasks.Task(
    name='sequences',
    input_kind='sequence',
    generate=_sampler(x, y, parts['train']),
    loss=loss,
    metrics=metrics,
    num_outputs=y.shape[1],
    decode=lambda outputs: outputs * std + mean,
    summarize=tasks.add_rmse,
    describe=lambda x, t, p: {
      'expected': np.round(np.asarray(t) * y_std + y_mean, 4).tolist(),
      'predicted': np.round(np.asarray(p, np.float64), 4).tolist(),
    },
    held_out=_held_out(x, y, parts),
    baselines=baselines,
  )
