"""Checkpoints of the train state with orbax's CheckpointManager.

A checkpoint holds ``{'params', 'opt_state', 'step'}`` under
``<workdir>/checkpoints/<step>``.  The data stream needs no saving: the batch
of step s is drawn from ``fold_in(train_key, s)``, and the key derives from the
config's seed (saved in ``config.json``), so a restored step continues the
exact stream.  orbax is imported lazily (it takes 1-2 s) so that a caller can
start the import in a background thread while XLA compiles.
"""

import os
from typing import Any, Optional

from absl import logging


def _ocp():
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  return ocp


def directory(workdir: str) -> str:
  return os.path.join(os.path.abspath(workdir), 'checkpoints')


def saved_steps(workdir: str):
  """Steps with a checkpoint folder, newest first (no orbax import needed)."""
  path = directory(workdir)
  if not os.path.isdir(path):
    return []
  return sorted((int(n) for n in os.listdir(path) if n.isdigit()), reverse=True)


def manager(workdir: str, keep: int):
  ocp = _ocp()
  return ocp.CheckpointManager(
      directory(workdir),
      options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True))


def _contents(state):
  return {'params': state.params, 'opt_state': state.opt_state,
          'step': state.step}


def save(mngr, state, step: int, wait: bool = False):
  """Saves ``state`` as checkpoint ``step`` (asynchronously unless ``wait``).
  Every process calls it; orbax writes each array once."""
  ocp = _ocp()
  mngr.save(step, args=ocp.args.StandardSave(_contents(state)),
            force=True)
  if wait:
    mngr.wait_until_finished()


def restore_latest(mngr, state) -> Optional[Any]:
  """The newest checkpoint that restores, as ``state`` with its fields
  replaced; None if there is none.  A checkpoint that fails to restore
  (truncated, corrupt) is reported and the one before it is tried."""
  ocp = _ocp()
  import jax  # pylint: disable=g-import-not-at-top
  target = jax.tree_util.tree_map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding),
      _contents(state))
  for step in sorted(mngr.all_steps(), reverse=True):
    try:
      restored = mngr.restore(step, args=ocp.args.StandardRestore(target))
    except Exception as e:  # pylint: disable=broad-except
      logging.error('checkpoint at step %d in %s could not be restored (%s: %s);'
                    ' trying the previous one', step, mngr.directory,
                    type(e).__name__, str(e).splitlines()[0] if str(e) else '')
      continue
    logging.info('restored checkpoint at step %d from %s', step, mngr.directory)
    return state.replace(**restored)
  return None


def set_aside(workdir: str, steps):
  """Moves unreadable checkpoints to ``<workdir>/unreadable_checkpoints/`` (not
  deleted: they may hold something worth recovering by hand) so that training
  can save those steps anew."""
  target = os.path.join(os.path.abspath(workdir), 'unreadable_checkpoints')
  os.makedirs(target, exist_ok=True)
  for step in steps:
    destination = os.path.join(target, f'{step}')
    suffix = 0
    while os.path.exists(destination):
      suffix += 1
      destination = os.path.join(target, f'{step}.{suffix}')
    os.replace(os.path.join(directory(workdir), str(step)), destination)
    logging.warning('moved unreadable checkpoint %d to %s', step, destination)
