"""Nothing lost, nothing silent (issue 22): checkpoint fallback, the workdir
lock, the workdir check, metrics repair and strict JSON — without the loop."""

import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from lstm_flax import checkpoints


def _tree(width=4, fill=1.0, step=0):
  """A train-state-like pytree: params, Adam's state (namedtuples) and step."""
  params = {'dense': {'kernel': jnp.full((3, width), fill), 'bias': jnp.zeros(width)}}
  return {'params': params, 'opt_state': optax.adam(1e-3).init(params),
          'step': jnp.asarray(step, jnp.int32)}


def _abstract(tree):
  return jax.tree_util.tree_map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), tree)


def _save(folder, steps, keep=5):
  mngr = checkpoints.manager(folder, keep)
  for s in steps:
    checkpoints.save(mngr, _tree(fill=float(s), step=s), s)
  mngr.wait_until_finished()
  mngr.close()


def _assert_is_step(restored, s):
  assert int(restored['step']) == s
  np.testing.assert_array_equal(restored['params']['dense']['kernel'],
                                np.full((3, 4), float(s), np.float32))
  # Adam's state comes back in its own structure.
  assert (jax.tree_util.tree_structure(restored) ==
          jax.tree_util.tree_structure(_tree()))


@pytest.fixture
def folder(tmp_path):
  return checkpoints.directory(str(tmp_path))


def test_directory_takes_a_name_for_the_best_checkpoint(tmp_path):
  assert checkpoints.directory(str(tmp_path)) == str(tmp_path / 'checkpoints')
  assert checkpoints.directory(str(tmp_path), 'best') == str(tmp_path / 'best')


def test_round_trip_from_arrays_or_abstract_values(folder):
  _save(folder, [50, 100])
  assert checkpoints.saved_steps(folder) == [100, 50]
  for target in (_tree(), _abstract(_tree())):
    restored, step, failed = checkpoints.restore_newest_readable(folder, target)
    assert (step, failed) == (100, [])
    _assert_is_step(restored, 100)
  restored, step, failed = checkpoints.restore_newest_readable(
      folder, _abstract(_tree()), step=50)
  assert (step, failed) == (50, [])
  _assert_is_step(restored, 50)


def test_no_checkpoint_restores_nothing(folder):
  assert checkpoints.restore_newest_readable(folder, _tree()) == (None, None, [])
  os.makedirs(folder)
  assert checkpoints.restore_newest_readable(folder, _tree()) == (None, None, [])


def test_a_step_without_its_item_falls_back_to_the_previous(folder):
  """Issue 22 item 1: after `rm -rf 100/default`, step 50 restores (one
  orbax manager failed on 50 too once it had failed on 100)."""
  _save(folder, [50, 100])
  shutil.rmtree(os.path.join(folder, '100', 'default'))
  restored, step, failed = checkpoints.restore_newest_readable(folder, _tree())
  assert (step, failed) == (50, [100])
  _assert_is_step(restored, 50)


def test_an_empty_step_folder_falls_back_to_the_newest_valid(folder):
  """Issue 22 item 1: `mkdir checkpoints/999`."""
  _save(folder, [50, 100])
  os.makedirs(os.path.join(folder, '999'))
  restored, step, failed = checkpoints.restore_newest_readable(folder, _tree())
  assert (step, failed) == (100, [999])
  _assert_is_step(restored, 100)


def test_several_bad_steps_are_all_reported_and_older_good_ones_restore(folder):
  _save(folder, [10, 20, 30])
  os.makedirs(os.path.join(folder, '999'))
  shutil.rmtree(os.path.join(folder, '30', 'default'))
  restored, step, failed = checkpoints.restore_newest_readable(folder, _tree())
  assert (step, failed) == (20, [999, 30])
  _assert_is_step(restored, 20)


@pytest.mark.parametrize('truncate', ['every_file', 'array_data_only'])
def test_truncated_files_fall_back_to_the_previous(folder, truncate):
  _save(folder, [50, 100])
  for path, _, files in os.walk(os.path.join(folder, '100')):
    for name in files:
      full = os.path.join(path, name)
      # Array data lives in ocdbt's d/ folders; its metadata elsewhere.
      if truncate == 'every_file' or f'{os.sep}d' in path:
        with open(full, 'rb') as f:
          data = f.read()
        with open(full, 'wb') as f:
          f.write(data[:7])
  restored, step, failed = checkpoints.restore_newest_readable(folder, _tree())
  assert (step, failed) == (50, [100])
  _assert_is_step(restored, 50)


def test_only_the_given_step_is_tried(folder):
  _save(folder, [50, 100])
  os.makedirs(os.path.join(folder, '999'))
  assert checkpoints.restore_newest_readable(folder, _tree(), step=999) == (
      None, None, [999])
  assert checkpoints.restore_newest_readable(folder, _tree(), step=7) == (
      None, None, [7])
  _, step, failed = checkpoints.restore_newest_readable(folder, _tree(), step=100)
  assert (step, failed) == (100, [])


def test_a_checkpoint_of_another_model_is_a_mismatch_not_damage(folder):
  """A config of another model shape must not have good checkpoints set
  aside as 'unreadable': the error names the arrays that differ."""
  _save(folder, [50])
  with pytest.raises(checkpoints.CheckpointMismatchError) as info:
    checkpoints.restore_newest_readable(folder, _tree(width=5))
  message = str(info.value)
  assert 'checkpoint 50 in' in message and 'another model' in message
  assert 'params.dense.kernel: saved (3, 4), expected (3, 5)' in message
  assert checkpoints.saved_steps(folder) == [50]     # untouched


def test_saved_steps_ignore_tmp_folders_files_and_other_names(folder):
  _save(folder, [5])
  for name in ('100.orbax-checkpoint-tmp-1234', 'notes', '7x'):
    os.makedirs(os.path.join(folder, name))
  with open(os.path.join(folder, '42'), 'w') as f:
    f.write('a file, not a checkpoint')
  assert checkpoints.saved_steps(folder) == [5]
  assert checkpoints.saved_steps(os.path.join(folder, 'missing')) == []


def test_set_aside_moves_only_the_given_steps(tmp_path, folder):
  _save(folder, [50, 100])
  os.makedirs(os.path.join(folder, '999'))
  _, _, failed = checkpoints.restore_newest_readable(folder, _tree())
  moved = checkpoints.set_aside(str(tmp_path), folder, failed)
  assert moved == [str(tmp_path / 'unreadable_checkpoints' / '999')]
  assert checkpoints.saved_steps(folder) == [100, 50]
  # The same step set aside again gets a suffix; a missing one is skipped.
  os.makedirs(os.path.join(folder, '999'))
  assert checkpoints.set_aside(str(tmp_path), folder, [999, 12345]) == [
      str(tmp_path / 'unreadable_checkpoints' / '999.1')]
  # A manager made after setting aside saves and restores normally.
  mngr = checkpoints.manager(folder, 2)
  checkpoints.save(mngr, _tree(fill=150.0, step=150), 150, wait=True)
  mngr.close()
  assert checkpoints.saved_steps(folder) == [150, 100]     # keeps 2
  restored, step, failed = checkpoints.restore_newest_readable(folder, _tree())
  assert (step, failed) == (150, [])


def test_best_checkpoint_beside_the_newest(tmp_path):
  newest = checkpoints.manager(checkpoints.directory(str(tmp_path)), 2)
  best = checkpoints.manager(checkpoints.directory(str(tmp_path), 'best'), 1)
  for s in (10, 20, 30):
    checkpoints.save(newest, _tree(fill=float(s), step=s), s)
    if s == 20:
      checkpoints.save(best, _tree(fill=float(s), step=s), s)
  for m in (newest, best):
    m.wait_until_finished()
    m.close()
  assert checkpoints.saved_steps(checkpoints.directory(str(tmp_path))) == [30, 20]
  restored, step, _ = checkpoints.restore_newest_readable(
      checkpoints.directory(str(tmp_path), 'best'), _tree())
  assert step == 20
  _assert_is_step(restored, 20)
