"""``config.train.init_from``: start a new run from other weights.

A path is either another run's workdir (its newest readable checkpoint;
replica 0's parameters if it trained several seeds) or a Keras / PyTorch
file read through ``lstm_flax.interop``.  Only the parameters are taken:
the optimizer starts fresh.  Every replica starts from the same weights.
"""

import os

from absl import logging
import jax
import numpy as np

from lstm_flax import checkpoints
from lstm_flax import programs


class WarmStartError(ValueError):
  """The weights at ``init_from`` do not fit this config's model."""


def from_path(exp, state, path: str):
  """``state`` with its parameters replaced by those found at ``path``."""
  target = jax.tree_util.tree_map(np.asarray, programs.replica(state.params))
  if os.path.isdir(path):
    params = _from_workdir(path)
  elif os.path.isfile(path):
    from lstm_flax import interop  # pylint: disable=g-import-not-at-top

    try:
      params = interop.params_from_file(path, target)
    except ValueError as e:
      raise WarmStartError(f'config.train.init_from: {e}') from e
  else:
    raise WarmStartError(
      f'config.train.init_from={path!r}: no such file or '
      f'directory (a workdir, a .keras/.h5 or a .pt file)'
    )
  check_fits(params, target, path)
  logging.info('warm start: parameters from %s (a fresh optimizer)', path)
  params = jax.tree_util.tree_map(
    lambda p, t: np.asarray(p, t.dtype), params, target
  )
  return state.replace(params=programs.stack_replicas(params, exp.num_seeds))


def _from_workdir(path: str):
  directory = checkpoints.directory(path)
  restored, _, _ = checkpoints.restore_newest_readable(directory, None)
  if restored is None:
    raise WarmStartError(
      f'config.train.init_from={path!r}: no readable checkpoint in {directory}'
    )
  params = restored['params']
  if np.shape(restored['step']):  # a leading seed axis: take replica 0
    params = jax.tree_util.tree_map(lambda x: np.asarray(x)[0], params)
  return params


def check_fits(params, target, path: str):
  """Same tree and shapes as ``target``, else a WarmStartError naming the
  first parameter that differs."""
  flat = {
    jax.tree_util.keystr(k): v
    for k, v in jax.tree_util.tree_flatten_with_path(params)[0]
  }
  for key, want in jax.tree_util.tree_flatten_with_path(target)[0]:
    name = jax.tree_util.keystr(key)
    if name not in flat:
      raise WarmStartError(
        f'config.train.init_from={path!r} has no parameter {name}; it holds'
        f' {sorted(flat)}'
      )
    if np.shape(flat[name]) != np.shape(want):
      raise WarmStartError(
        f'config.train.init_from={path!r}: parameter {name} has shape '
        f"{np.shape(flat[name])}, this config's model needs "
        f'{np.shape(want)}'
      )
  extra = set(flat) - {
    jax.tree_util.keystr(k)
    for k, _ in jax.tree_util.tree_flatten_with_path(target)[0]
  }
  if extra:
    raise WarmStartError(
      f"config.train.init_from={path!r} holds parameters this config's "
      f'model does not have: {sorted(extra)}'
    )
