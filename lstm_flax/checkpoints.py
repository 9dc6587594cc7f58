"""Checkpoints of the train state with orbax.

A checkpoint holds a pytree, ``{'params', 'opt_state', 'step'}`` for the train
state, under ``<folder>/<step>/default``: ``<workdir>/checkpoints`` keeps the
newest few, ``<workdir>/best`` the best one by the validation metric.  The data
stream needs no saving: the batch of step s is drawn from
``fold_in(train_key, s)``, and the key derives from the config's seed (saved in
``config.json``), so a restored step continues the exact stream.

Restoring goes step by step through a fresh checkpointer each time: an orbax
CheckpointManager that failed on one step can fail on every valid step after
it, so one bad folder must never be read through the manager that saves.
"""

import os
import shutil
from typing import Any, Optional, Sequence

from absl import logging
import jax
import numpy as np

# The item name orbax's CheckpointManager gives a single unnamed item.
_ITEM = 'default'


class CheckpointMismatchError(ValueError):
  """A readable checkpoint holds a tree of other shapes than the target (a
  checkpoint of another model), which is not damage: nothing is set aside."""


def _orbax():
  """orbax.checkpoint, imported on first use: it is slow to import, and a
  run imports it while XLA compiles (lstm_flax/startup.py)."""
  import orbax.checkpoint  # pylint: disable=g-import-not-at-top

  return orbax.checkpoint


def directory(workdir: str, name: str = 'checkpoints') -> str:
  """``<workdir>/<name>`` as an absolute path: 'checkpoints' for the newest
  checkpoints, 'best' for the best one."""
  return os.path.join(os.path.abspath(workdir), name)


def saved_steps(directory_path: str) -> list[int]:
  """Steps with a checkpoint folder in ``directory_path``, newest first.

  Only folders named by digits count: orbax's temporary folders of
  unfinished saves (``100.orbax-checkpoint-tmp-...``) and stray files do not.
  A listed step may still be unreadable (see ``restore_newest_readable``).
  """
  if not os.path.isdir(directory_path):
    return []
  return sorted(
    (
      int(n)
      for n in os.listdir(directory_path)
      if n.isdigit() and os.path.isdir(os.path.join(directory_path, n))
    ),
    reverse=True,
  )


def manager(directory_path: str, keep: int):
  """A CheckpointManager that saves into ``directory_path`` (created if
  missing) and keeps the newest ``keep`` steps.  Use it to save; restore with
  ``restore_newest_readable``, and set aside the steps that fails on before
  creating the manager (orbax lists every step folder it finds)."""
  return _orbax().CheckpointManager(
    directory_path,
    options=_orbax().CheckpointManagerOptions(max_to_keep=keep, create=True),
  )


def save(mngr, tree: Any, step: int, wait: bool = False):
  """Saves the pytree ``tree`` as checkpoint ``step`` (in the background
  unless ``wait``; ``mngr.wait_until_finished()`` waits for it).  Every process
  calls it; orbax writes each array once."""
  mngr.save(step, args=_orbax().args.StandardSave(tree), force=True)
  if wait:
    mngr.wait_until_finished()


def _abstract(target):
  """Arrays of ``target`` as ShapeDtypeStructs (keeping their sharding);
  ShapeDtypeStructs as given (without a sharding, orbax restores onto the
  default device)."""

  def leaf(x):
    if isinstance(x, jax.ShapeDtypeStruct):
      return x
    if isinstance(x, jax.Array):
      return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding)
    return jax.ShapeDtypeStruct(np.shape(x), np.result_type(x))

  return jax.tree_util.tree_map(leaf, target)


def _first_line(error: BaseException) -> str:
  text = str(error).strip()
  return f'{type(error).__name__}: {text.splitlines()[0] if text else ""}'


def _leaf_name(path) -> str:
  """A jax key path as orbax names a leaf: 'opt_state.0.mu.kernel'."""
  parts = []
  for key in path:
    for attribute in ('key', 'idx', 'name'):
      if hasattr(key, attribute):
        parts.append(str(getattr(key, attribute)))
        break
    else:
      parts.append(str(key))
  return '.'.join(parts)


def _shape_differences(path: str, target) -> list[str]:
  """How the tree saved at ``path`` differs from ``target`` in its arrays'
  shapes: [] if they hold the same shapes, or if the checkpoint's metadata
  cannot be read (damage, not another model).  Leaves are matched by name
  for the message only; the verdict compares the shapes as a multiset."""
  try:
    with _orbax().StandardCheckpointer() as checkpointer:
      metadata = checkpointer.metadata(path)
    saved = {
      leaf.name: tuple(leaf.shape)
      for leaf in jax.tree_util.tree_leaves(
        getattr(metadata, 'item_metadata', metadata)
      )
      if hasattr(leaf, 'name') and hasattr(leaf, 'shape')
    }
  except Exception:  # pylint: disable=broad-except
    return []
  wanted = {
    _leaf_name(p): tuple(x.shape)
    for p, x in jax.tree_util.tree_flatten_with_path(target)[0]
  }
  if not saved or sorted(saved.values()) == sorted(wanted.values()):
    return []
  differences = [
    f'{name}: saved {saved[name]}, expected {wanted[name]}'
    for name in sorted(
      set(saved) & set(wanted), key=lambda n: (n.count('.'), n)
    )
    if saved[name] != wanted[name]
  ]
  return differences or [f'{len(saved)} arrays saved, {len(wanted)} expected']


def restore_newest_readable(
  directory_path: str,
  target: Any,
  step: Optional[int] = None,
) -> tuple[Optional[Any], Optional[int], list[int]]:
  """Restores the newest checkpoint in ``directory_path`` that can be read.

  Args:
    directory_path: the checkpoint folder, e.g. ``directory(workdir)``.
    target: the pytree to restore into: arrays or ``jax.ShapeDtypeStruct``s
      (their shapes, dtypes and shardings are those restored), e.g.
      ``{'params': ..., 'opt_state': ..., 'step': ...}``; or None: the tree as
      saved (nested dicts and lists of arrays on the default device).
    step: try only this step (``None``: every saved step, newest first).

  Returns:
    ``(restored, step, failed_steps)``: the restored pytree (with ``target``'s
    structure) and its step, or ``(None, None, ...)`` if none could be read;
    ``failed_steps`` lists, newest first, the steps whose restore failed (an
    empty or incomplete folder, a truncated file): only those, never a
    readable step older than the one restored.  Each step is read by a fresh
    checkpointer, so one bad step cannot make the next fail.

  Raises:
    CheckpointMismatchError: a step failed to restore while its metadata
      reads fine and names other leaves or shapes than ``target``: the
      checkpoint of another model (config), not a damaged one.
  """
  target = _abstract(target)
  steps = saved_steps(directory_path) if step is None else [step]
  failed = []
  for s in steps:
    path = os.path.join(directory_path, str(s), _ITEM)
    try:
      with _orbax().StandardCheckpointer() as checkpointer:
        restored = checkpointer.restore(path, target)
    except Exception as e:  # pylint: disable=broad-except
      differences = [] if target is None else _shape_differences(path, target)
      if differences:
        shown = '; '.join(differences[:4]) + (
          f'; and {len(differences) - 4} more' if len(differences) > 4 else ''
        )
        raise CheckpointMismatchError(
          f'checkpoint {s} in {directory_path} holds another model than '
          f'this config builds ({shown}): use the config it was trained '
          f"with (its workdir's config.json)"
        ) from e
      logging.warning(
        'checkpoint %d in %s could not be read (%s)',
        s,
        directory_path,
        _first_line(e),
      )
      failed.append(s)
      continue
    logging.info('restored checkpoint %d from %s', s, directory_path)
    return restored, s, failed
  return None, None, failed


def set_aside(
  workdir: str, directory_path: str, steps: Sequence[int]
) -> list[str]:
  """Moves the folders of ``steps`` out of ``directory_path`` into
  ``<workdir>/unreadable_checkpoints/`` (not deleted: they may hold something
  worth recovering by hand) so that training can save those steps anew.  A
  name taken there gets a suffix (``100.1``); a step without a folder is
  skipped.  Returns the new paths."""
  target = os.path.join(os.path.abspath(workdir), 'unreadable_checkpoints')
  moved = []
  for step in steps:
    source = os.path.join(directory_path, str(step))
    if not os.path.exists(source):
      continue
    os.makedirs(target, exist_ok=True)
    destination = os.path.join(target, str(step))
    suffix = 0
    while os.path.exists(destination):
      suffix += 1
      destination = os.path.join(target, f'{step}.{suffix}')
    shutil.move(source, destination)
    logging.warning(
      'moved unreadable checkpoint %d from %s to %s',
      step,
      directory_path,
      destination,
    )
    moved.append(destination)
  return moved
