"""Nothing lost, nothing silent (issue 22): checkpoint fallback, the workdir
lock, the workdir check, metrics repair and strict JSON — without the loop."""

import json
import os
import shutil
import signal
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from lstm_flax import checkpoints
from lstm_flax import workdir as workdir_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _tree(width=4, fill=1.0, step=0):
  """A train-state-like pytree: params, Adam's state (namedtuples) and step."""
  params = {
    'dense': {'kernel': jnp.full((3, width), fill), 'bias': jnp.zeros(width)}
  }
  return {
    'params': params,
    'opt_state': optax.adam(1e-3).init(params),
    'step': jnp.asarray(step, jnp.int32),
  }


def _abstract(tree):
  return jax.tree_util.tree_map(
    lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), tree
  )


def _save(folder, steps, keep=5):
  mngr = checkpoints.manager(folder, keep)
  for s in steps:
    checkpoints.save(mngr, _tree(fill=float(s), step=s), s)
  mngr.wait_until_finished()
  mngr.close()


def _assert_is_step(restored, s):
  assert int(restored['step']) == s
  np.testing.assert_array_equal(
    restored['params']['dense']['kernel'], np.full((3, 4), float(s), np.float32)
  )
  # Adam's state comes back in its own structure.
  assert jax.tree_util.tree_structure(restored) == jax.tree_util.tree_structure(
    _tree()
  )


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
    folder, _abstract(_tree()), step=50
  )
  assert (step, failed) == (50, [])
  _assert_is_step(restored, 50)


def test_no_checkpoint_restores_nothing(folder):
  assert checkpoints.restore_newest_readable(folder, _tree()) == (
    None,
    None,
    [],
  )
  os.makedirs(folder)
  assert checkpoints.restore_newest_readable(folder, _tree()) == (
    None,
    None,
    [],
  )


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
    None,
    None,
    [999],
  )
  assert checkpoints.restore_newest_readable(folder, _tree(), step=7) == (
    None,
    None,
    [7],
  )
  _, step, failed = checkpoints.restore_newest_readable(
    folder, _tree(), step=100
  )
  assert (step, failed) == (100, [])


def test_without_a_target_the_tree_comes_back_as_saved(folder):
  _save(folder, [50, 100])
  shutil.rmtree(os.path.join(folder, '100', 'default'))
  restored, step, failed = checkpoints.restore_newest_readable(folder, None)
  assert (step, failed) == (50, [100])
  np.testing.assert_array_equal(
    restored['params']['dense']['kernel'], np.full((3, 4), 50.0, np.float32)
  )


def test_a_checkpoint_of_another_model_is_a_mismatch_not_damage(folder):
  """A config of another model shape must not have good checkpoints set
  aside as 'unreadable': the error names the arrays that differ."""
  _save(folder, [50])
  with pytest.raises(checkpoints.CheckpointMismatchError) as info:
    checkpoints.restore_newest_readable(folder, _tree(width=5))
  message = str(info.value)
  assert 'checkpoint 50 in' in message and 'another model' in message
  assert 'params.dense.kernel: saved (3, 4), expected (3, 5)' in message
  assert checkpoints.saved_steps(folder) == [50]  # untouched


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
    str(tmp_path / 'unreadable_checkpoints' / '999.1')
  ]
  # A manager made after setting aside saves and restores normally.
  mngr = checkpoints.manager(folder, 2)
  checkpoints.save(mngr, _tree(fill=150.0, step=150), 150, wait=True)
  mngr.close()
  assert checkpoints.saved_steps(folder) == [150, 100]  # keeps 2
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
  assert checkpoints.saved_steps(checkpoints.directory(str(tmp_path))) == [
    30,
    20,
  ]
  restored, step, _ = checkpoints.restore_newest_readable(
    checkpoints.directory(str(tmp_path), 'best'), _tree()
  )
  assert step == 20
  _assert_is_step(restored, 20)


# --- the workdir lock (issue 22 item 2) ----------------------------------------


_HOLDER = """
import sys, time
sys.path.insert(0, {root!r})
from lstm_flax import workdir
with workdir.lock({path!r}):
  print('locked', flush=True)
  time.sleep(120)
"""


def _hold_lock_in_a_subprocess(path):
  proc = subprocess.Popen(
    [sys.executable, '-c', _HOLDER.format(root=ROOT, path=str(path))],
    stdout=subprocess.PIPE,
    text=True,
    env={**os.environ, 'JAX_PLATFORMS': 'cpu'},
  )
  assert proc.stdout.readline().strip() == 'locked'
  return proc


def test_lock_writes_the_holder_and_nests_in_one_process(tmp_path):
  path = tmp_path / 'new' / 'run'  # created, parents too
  with workdir_lib.lock(str(path)) as locked:
    assert locked == str(path) and path.is_dir()
    info = json.loads((path / '.lock').read_text())
    assert info['pid'] == os.getpid() and info['host'] and info['started']
    with workdir_lib.lock(str(tmp_path / 'new' / '..' / 'new' / 'run')):
      pass  # the same workdir: nested
    assert (path / '.lock').read_text()  # still held by the outer block
    _assert_refused_by_a_subprocess(path, os.getpid())
  assert (path / '.lock').read_text() == ''  # released, emptied
  with workdir_lib.lock(str(path)):
    pass


_TRY = """
import sys
sys.path.insert(0, {root!r})
from lstm_flax import workdir
try:
  with workdir.lock({path!r}):
    print('acquired')
except workdir.WorkdirError as e:
  print(e)
"""


def _assert_refused_by_a_subprocess(path, holder_pid):
  out = subprocess.run(
    [sys.executable, '-c', _TRY.format(root=ROOT, path=str(path))],
    capture_output=True,
    text=True,
    check=True,
    timeout=120,
    env={**os.environ, 'JAX_PLATFORMS': 'cpu'},
  ).stdout.strip()
  assert out.startswith(f'{path} is in use by pid {holder_pid} on '), out
  assert '(started ' in out
  assert out.endswith('; wait for it or use another --workdir')


def test_lock_held_by_another_process_then_released_by_sigkill(tmp_path):
  proc = _hold_lock_in_a_subprocess(tmp_path)
  try:
    with pytest.raises(
      workdir_lib.WorkdirError,
      match=rf'is in use by pid {proc.pid} on .*; wait for it',
    ):
      with workdir_lib.lock(str(tmp_path)):
        pass
  finally:
    proc.send_signal(signal.SIGKILL)
    proc.wait()
  # The dead holder's file remains, and does not block.
  assert json.loads((tmp_path / '.lock').read_text())['pid'] == proc.pid
  with workdir_lib.lock(str(tmp_path)):
    assert json.loads((tmp_path / '.lock').read_text())['pid'] == os.getpid()


def test_lock_on_a_workdir_that_cannot_be_one(tmp_path):
  a_file = tmp_path / 'file'
  a_file.write_text('not a folder')
  with pytest.raises(
    workdir_lib.WorkdirError, match=r'is a file, not a folder'
  ):
    with workdir_lib.lock(str(a_file)):
      pass
  with pytest.raises(
    workdir_lib.WorkdirError,
    match=r'cannot create the workdir .*file/run \(Not a directory\)',
  ):
    with workdir_lib.lock(str(a_file / 'run')):
      pass
  with pytest.raises(workdir_lib.WorkdirError, match=r'\(File name too long\)'):
    with workdir_lib.lock(str(tmp_path / ('x' * 300))):
      pass
  if os.geteuid() != 0:  # root writes anywhere
    read_only = tmp_path / 'read_only'
    read_only.mkdir(mode=0o555)
    with pytest.raises(
      workdir_lib.WorkdirError, match='cannot write to the workdir'
    ):
      with workdir_lib.lock(str(read_only)):
        pass


# --- which run a workdir holds (items 4, 7, 12) ----------------------------------


def _stacked():
  from configs import stacked  # pylint: disable=g-import-not-at-top

  return stacked.get_config()


def _with(config, **fields):
  """``config`` with dotted fields set: _with(c, **{'task.a': 1.0})."""
  config = config.copy_and_resolve_references()
  with config.unlocked():
    for name, value in fields.items():
      section, field = name.split('.')
      config[section][field] = value
  return config


def _run_dir(tmp_path, config=None, files=('results.json',)):
  """A workdir with config.json of ``config`` and the given run files."""
  path = tmp_path / 'w'
  path.mkdir()
  if config is not None:
    workdir_lib.write_json(str(path / 'config.json'), config.to_dict())
  for name in files:
    if name.endswith('/'):
      (path / name / '100').mkdir(parents=True)
    else:
      (path / name).write_text('{"step": 1, "train_loss": 0.5}\n')
  return path


def _snapshot(path):
  return {
    str(p.relative_to(path)): p.read_bytes() if p.is_file() else None
    for p in sorted(path.rglob('*'))
  }


def test_the_same_config_resumes_and_a_new_workdir_is_fine(tmp_path):
  config = _stacked()
  assert workdir_lib.check_workdir(config, str(tmp_path / 'missing')) == []
  path = _run_dir(tmp_path, config, ('checkpoints/', 'metrics.jsonl'))
  assert workdir_lib.check_workdir(config, str(path)) == []


def test_resumable_fields_may_change_and_are_reported(tmp_path):
  """More steps continue a run; a lower learning rate or clipping is the
  advice after a NaN stop (item 12); eval and logging settings are not the run."""
  path = _run_dir(tmp_path, _stacked(), ('checkpoints/',))
  config = _with(
    _stacked(),
    **{
      'train.steps': 5000,
      'train.steps_per_call': 10,
      'train.checkpoint_every': 10,
      'train.keep_checkpoints': 7,
      'train.tensorboard': True,
      'optimizer.learning_rate': 1e-4,
      'optimizer.grad_clip_norm': 1.0,
      'eval.num_examples': 10,
      'eval.batch_size': 10,
      'eval.seed': 9,
    },
  )
  with config.unlocked():
    config.train.log_every = 5  # a field config.json may lack
  before = _snapshot(path)
  notes = workdir_lib.check_workdir(config, str(path))
  assert 'train.steps: 1000 -> 5000' in notes
  assert 'optimizer.learning_rate: 0.001 -> 0.0001' in notes
  assert 'optimizer.grad_clip_norm: 0.0 -> 1.0' in notes
  assert 'train.tensorboard: False -> True' in notes
  assert any(
    n.startswith('train.log_every: ') and n.endswith(' -> 5') for n in notes
  )
  assert 'eval.seed: 1 -> 9' in notes
  assert _snapshot(path) == before


@pytest.mark.parametrize(
  'field,value',
  [
    ('task.decay_max', 0.2),
    ('model.layer_sizes', (30, 20)),
    ('train.batch_size', 64),
    ('optimizer.name', 'sgd'),
    ('seed', 3),
  ],
)
def test_another_config_is_refused_naming_the_fields_and_nothing_changes(
  tmp_path, field, value
):
  path = _run_dir(tmp_path, _stacked(), ('checkpoints/', 'metrics.jsonl'))
  config = _stacked()
  with config.unlocked():
    if '.' in field:
      section, name = field.split('.')
      config[section][name] = value
    else:
      config[field] = value
  before = _snapshot(path)
  with pytest.raises(workdir_lib.WorkdirError) as info:
    workdir_lib.check_workdir(config, str(path))
  message = str(info.value)
  assert message.startswith(
    f"{path} holds a run of a different config ('stacked';"
    f' fields that differ: {field} ('
  )
  assert message.endswith(
    'Use another --workdir, or pass --overwrite to delete '
    'that run and start anew.'
  )
  assert _snapshot(path) == before


def test_another_config_without_a_run_is_fine(tmp_path):
  path = _run_dir(tmp_path, _stacked(), ())
  (path / 'checkpoints').mkdir()  # empty: a run killed before its first save
  assert (
    workdir_lib.check_workdir(_with(_stacked(), **{'task.a': 1.0}), str(path))
    == []
  )


@pytest.mark.parametrize(
  'run_file',
  [
    'checkpoints/',
    'best/',
    'best.json',
    'metrics.jsonl',
    'results.json',
    'eval.json',
  ],
)
def test_a_run_without_config_json_is_refused(tmp_path, run_file):
  """Item 4: the check was skipped when config.json was missing."""
  path = _run_dir(tmp_path, None, (run_file,))
  before = _snapshot(path)
  with pytest.raises(
    workdir_lib.WorkdirError,
    match=rf'holds a run \({run_file}\) without config.json',
  ):
    workdir_lib.check_workdir(_stacked(), str(path))
  assert _snapshot(path) == before


@pytest.mark.parametrize(
  'content,files,expected',
  [
    (
      '{"name": "stacked", "task": {"na',
      ('results.json',),
      r'its config.json cannot be read \(Unterminated string',
    ),
    ('[1, 2, 3]', ('checkpoints/',), 'JSON list without a task section'),
    ('[1, 2, 3]', (), 'JSON list without a task section'),  # someone's file
    ('{"settings": 1}', (), 'JSON dict without a task section'),
  ],
)
def test_a_config_json_that_is_not_a_config_is_refused(
  tmp_path, content, files, expected
):
  path = _run_dir(tmp_path, None, files)
  (path / 'config.json').write_text(content)
  before = _snapshot(path)
  with pytest.raises(workdir_lib.WorkdirError, match=expected):
    workdir_lib.check_workdir(_stacked(), str(path))
  assert _snapshot(path) == before


def test_overwrite_deletes_the_run_only_when_the_check_fails(tmp_path):
  files = (
    'checkpoints/',
    'best/',
    'best.json',
    'metrics.jsonl',
    'results.json',
    'eval.json',
    'tensorboard/',
    'unreadable_checkpoints/',
    'forecast.png',
  )
  path = _run_dir(tmp_path, _stacked(), files)
  before = _snapshot(path)
  assert workdir_lib.check_workdir(_stacked(), str(path), overwrite=True) == []
  assert _snapshot(path) == before  # the same run: nothing deleted
  workdir_lib.check_workdir(
    _with(_stacked(), **{'task.a': 1.0}), str(path), overwrite=True
  )
  assert sorted(os.listdir(path)) == ['forecast.png', 'unreadable_checkpoints']


def test_config_json_of_older_code_without_a_new_field_is_the_same_run(
  tmp_path,
):
  config = _stacked()
  path = _run_dir(tmp_path, None, ('results.json',))
  saved = json.loads(json.dumps(config.to_dict()))
  del saved['train']['optimize_for']  # written before the field existed
  workdir_lib.write_json(str(path / 'config.json'), saved)
  assert workdir_lib.check_workdir(config, str(path)) == []
  with pytest.raises(
    workdir_lib.WorkdirError,
    match=r"train.optimize_for \('auto' there, 'step_time' here\)",
  ):
    workdir_lib.check_workdir(
      _with(config, **{'train.optimize_for': 'step_time'}), str(path)
    )


def test_load_config_round_trips_a_config(tmp_path):
  from lstm_flax import validation  # pylint: disable=g-import-not-at-top

  config = _stacked()
  path = _run_dir(tmp_path, config, ())
  loaded = workdir_lib.load_config(str(path))
  assert loaded.model.layer_sizes == (20, 20)  # a tuple again
  assert loaded.to_dict() == config.to_dict()
  validation.validate(loaded)
  with pytest.raises(AttributeError):  # locked, like a config file's
    loaded.train.stpes = 3
  # Fields added to config_base since the run come back at their defaults.
  saved = json.loads((path / 'config.json').read_text())
  del saved['train']['optimize_for']
  (path / 'config.json').write_text(json.dumps(saved))
  assert workdir_lib.load_config(str(path)).train.optimize_for == 'auto'


@pytest.mark.parametrize(
  'content,expected',
  [
    (None, 'it has no config.json'),
    ('{"task": ', 'cannot be read'),
    ('"text"', 'JSON str without a task section'),
  ],
)
def test_load_config_of_a_workdir_without_one_is_a_clear_error(
  tmp_path, content, expected
):
  if content is not None:
    (tmp_path / 'config.json').write_text(content)
  with pytest.raises(
    workdir_lib.WorkdirError,
    match=(
      rf'{tmp_path} holds no config to use: .*{expected}.*; pass --config'
    ),
  ):
    workdir_lib.load_config(str(tmp_path))
  with pytest.raises(workdir_lib.WorkdirError, match='cannot tell which model'):
    workdir_lib.model_differences(_stacked(), str(tmp_path))


def test_model_differences_name_what_changes_a_checkpoints_meaning(tmp_path):
  """Item 7: --mode=eval|predict with another task or model is refused."""
  path = _run_dir(tmp_path, _stacked(), ('checkpoints/',))
  same_model = _with(
    _stacked(),
    **{
      'eval.num_examples': 10,
      'eval.batch_size': 10,
      'eval.predict_examples': 3,
      'train.steps': 9,
      'train.steps_per_call': 3,
      'train.checkpoint_every': 3,
      'train.keep_checkpoints': 1,
      'optimizer.name': 'sgd',
      'optimizer.learning_rate': 0.5,
    },
  )
  assert workdir_lib.model_differences(same_model, str(path)) == []
  other = _with(
    _stacked(),
    **{'task.output': 4, 'model.layer_sizes': (20,), 'train.batch_size': 7},
  )
  assert workdir_lib.model_differences(other, str(path)) == [
    'model.layer_sizes',
    'task.output',
    'train.batch_size',
  ]


# --- metrics.jsonl and JSON files (items 4, 6, 11) ----------------------------------


def test_trim_metrics_drops_a_partial_last_line_and_keeps_eval_records(
  tmp_path,
):
  path = tmp_path / 'metrics.jsonl'
  path.write_text(
    '{"step": 50, "train_loss": 0.5}\n'
    '{"step": 50, "eval/mae": 0.1}\n'
    '{"step": 100, "train_loss": 0.4}\n'
    '{"step": 100, "eval/mae": 0.09}\n'
    '{"step": 100, "final/mae": 0.09}\n'  # a finished run's final eval
    '{"step": 150, "train_loss": 0.3}\n'
    '{"step": 150, "eval/mae": 0.08}\n'
    '{"step": 200, "train_lo'
  )  # killed while writing
  workdir_lib.trim_metrics(str(path), 100)
  assert [json.loads(l) for l in path.read_text().splitlines()] == [
    {'step': 50, 'train_loss': 0.5},
    {'step': 50, 'eval/mae': 0.1},
    {'step': 100, 'train_loss': 0.4},
    {'step': 100, 'eval/mae': 0.09},
  ]
  assert os.listdir(tmp_path) == ['metrics.jsonl']  # no temp file left
  workdir_lib.trim_metrics(str(path), 0)  # no checkpoint: start anew
  assert path.read_text() == ''
  workdir_lib.trim_metrics(
    str(tmp_path / 'missing.jsonl'), 10
  )  # no file: no-op


def test_trim_metrics_drops_garbage_lines_anywhere(tmp_path):
  path = tmp_path / 'metrics.jsonl'
  path.write_bytes(
    b'{"step": 1, "train_loss": 0.5}\n\xff\xfe garbage\n[1]\n'
    b'{"train_loss": 1}\n\n{"step": 2, "train_loss": 0.4}\n'
  )
  workdir_lib.trim_metrics(str(path), 10)
  assert [json.loads(l)['step'] for l in path.read_text().splitlines()] == [
    1,
    2,
  ]


def _strict_load(text):
  def refuse(constant):
    raise ValueError(f'not strict JSON: {constant}')

  return json.loads(text, parse_constant=refuse)


def test_write_json_writes_strict_json(tmp_path):
  """Item 6: NaN metrics were written as bare NaN, which is not JSON."""
  path = tmp_path / 'results.json'
  workdir_lib.write_json(
    str(path),
    {
      'eval': {
        'loss': float('nan'),
        'mae': np.float32(0.25),
        'big': float('inf'),
        'small': -np.inf,
      },
      'per_seed': np.array([1.0, np.nan]),
      'shape': (2, 3),
      'steps': np.int64(7),
    },
  )
  assert _strict_load(path.read_text()) == {
    'eval': {'loss': None, 'mae': 0.25, 'big': None, 'small': None},
    'per_seed': [1.0, None],
    'shape': [2, 3],
    'steps': 7,
  }
  assert os.listdir(tmp_path) == ['results.json']


def test_write_json_failures_leave_no_temp_file_and_keep_the_old_file(tmp_path):
  path = tmp_path / 'results.json'
  workdir_lib.write_json(str(path), {'a': 1})
  with pytest.raises(TypeError):
    workdir_lib.write_json(str(path), {'a': object()})
  assert os.listdir(tmp_path) == ['results.json']
  assert json.loads(path.read_text()) == {'a': 1}
  missing = tmp_path / 'no' / 'such' / 'out.json'
  with pytest.raises(
    workdir_lib.WorkdirError,
    match=rf'cannot write {missing} \(No such file or directory\)',
  ):
    workdir_lib.write_json(str(missing), [1])
  assert os.listdir(tmp_path) == ['results.json']
