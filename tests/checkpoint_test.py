"""Checkpoints, resume, and the eval and predict modes."""

import json
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from configs import vanilla
from lstm_flax import checkpoints
from lstm_flax import experiment
from lstm_flax import inference
from lstm_flax import optim
from lstm_flax import runtime
from lstm_flax import train as train_lib
from lstm_flax import workdir as workdir_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _config(module, **train):
  config = module.get_config()
  with config.unlocked():
    for k, v in train.items():
      config.train[k] = v
    config.eval.num_examples = 100
    config.eval.batch_size = 100
    config.eval.figure_examples = 0
  return config


def _saved_steps(workdir):
  return checkpoints.saved_steps(checkpoints.directory(str(workdir)))


def _final_params(config, workdir):
  """The state of the newest readable checkpoint in ``workdir``."""
  _, state = inference.restore(config, str(workdir), 'init')
  return state


def _train(exp, state, num_steps):
  state, metrics, finite = exp.programs['train'](
    state, exp.keys.batch, exp.keys.dropout, num_steps
  )
  assert np.isfinite(np.asarray(metrics['loss'])[:num_steps]).all()
  assert np.asarray(finite).all()
  return state


def _save(workdir, state, keep=3):
  manager = checkpoints.manager(checkpoints.directory(str(workdir)), keep)
  checkpoints.save(
    manager, runtime.contents(state), int(np.max(state.step)), wait=True
  )
  manager.close()


def test_save_restore_round_trip(tmp_path):
  config = _config(vanilla, steps=20, steps_per_call=10)
  exp = experiment.build(config, ('train',))
  state = _train(exp, exp.init(), 10)
  _save(tmp_path, state, keep=2)
  restored, step, failed = checkpoints.restore_newest_readable(
    checkpoints.directory(str(tmp_path)), train_lib.checkpoints_target(exp)
  )
  assert step == 10 and failed == []
  assert np.asarray(restored['step']).tolist() == [10]  # (num_seeds,)
  for a, b in zip(
    jax.tree_util.tree_leaves((state.params, state.opt_state)),
    jax.tree_util.tree_leaves((restored['params'], restored['opt_state'])),
  ):
    assert a.shape == b.shape and a.shape[:1] == (1,)  # the seed axis
    np.testing.assert_array_equal(a, b)


def test_resume_in_process_equals_uninterrupted(tmp_path):
  """Train 40 of 100 steps (a run with the same config, stopped), then rerun:
  the final parameters are bit-identical to one uninterrupted run."""
  full = _config(
    vanilla, steps=100, steps_per_call=20, checkpoint_every=20, log_every=20
  )
  train_lib.train_and_evaluate(full, str(tmp_path / 'full'))

  # The interrupted run: same config, its last 60 steps never happened.
  part = tmp_path / 'part'
  exp = experiment.build(full, ('train',))
  state = _train(exp, _train(exp, exp.init(), 20), 20)
  _save(part, state)
  results = train_lib.train_and_evaluate(full, str(part))
  assert results['steps'] == 100

  a = _final_params(full, tmp_path / 'full')
  b = _final_params(full, part)
  assert a.step.tolist() == b.step.tolist() == [100]
  for x, y in zip(
    jax.tree_util.tree_leaves(a.params), jax.tree_util.tree_leaves(b.params)
  ):
    np.testing.assert_array_equal(x, y)
  steps = [
    json.loads(l)['step']
    for l in (part / 'metrics.jsonl').read_text().splitlines()
  ]
  assert steps == [60, 80, 100, 100]  # resumed records only; no duplicates


def _train_cmd(workdir, *args):
  return [
    sys.executable,
    os.path.join(ROOT, 'train.py'),
    f'--workdir={workdir}',
    '--compilation_cache_dir=',
    *args,
  ]


def test_kill_9_and_resume_equals_uninterrupted(tmp_path):
  args = [
    '--config=configs/stacked.py',
    '--config.train.steps=1500',
    '--config.train.steps_per_call=100',
    '--config.train.checkpoint_every=100',
    '--config.eval.num_examples=100',
    '--config.eval.batch_size=100',
    '--config.eval.figure_examples=0',
  ]
  env = {**os.environ, 'JAX_PLATFORMS': 'cpu'}
  killed = tmp_path / 'killed'
  proc = subprocess.Popen(
    _train_cmd(killed, *args),
    cwd=ROOT,
    env=env,
    stdout=subprocess.DEVNULL,
    stderr=subprocess.DEVNULL,
  )
  deadline = time.time() + 300
  while time.time() < deadline and proc.poll() is None:
    if len(_saved_steps(killed)) >= 2:
      break
    time.sleep(0.05)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  assert not (killed / 'results.json').exists(), 'the run ended before the kill'
  assert _saved_steps(killed)
  subprocess.run(
    _train_cmd(killed, *args),
    cwd=ROOT,
    env=env,
    check=True,
    capture_output=True,
  )
  subprocess.run(
    _train_cmd(tmp_path / 'whole', *args),
    cwd=ROOT,
    env=env,
    check=True,
    capture_output=True,
  )
  resumed = json.loads((killed / 'results.json').read_text())
  whole = json.loads((tmp_path / 'whole' / 'results.json').read_text())
  assert resumed['eval'] == whole['eval']
  assert resumed['final_train_loss'] == whole['final_train_loss']


def test_eval_mode_reproduces_training_metric_and_predict_format(tmp_path):
  workdir = tmp_path / 'run'
  args = [
    '--config=configs/vanilla.py',
    '--config.train.steps=300',
    '--config.train.steps_per_call=100',
    '--config.eval.num_examples=200',
    '--config.eval.batch_size=100',
  ]
  env = {**os.environ, 'JAX_PLATFORMS': 'cpu'}
  subprocess.run(
    _train_cmd(workdir, *args),
    cwd=ROOT,
    env=env,
    check=True,
    capture_output=True,
  )
  config = json.loads((workdir / 'config.json').read_text())
  assert config['train']['steps'] == 300 and config['task']['name'] == 'echo'
  subprocess.run(
    _train_cmd(workdir, *args, '--mode=eval'),
    cwd=ROOT,
    env=env,
    check=True,
    capture_output=True,
  )
  results = json.loads((workdir / 'results.json').read_text())
  evaluated = json.loads((workdir / 'eval.json').read_text())
  assert evaluated['step'] == 300
  assert evaluated['eval'] == results['eval']

  out = tmp_path / 'predictions.json'
  proc = subprocess.run(
    _train_cmd(workdir, *args, '--mode=predict', f'--predict_out={out}'),
    cwd=ROOT,
    env=env,
    check=True,
    capture_output=True,
    text=True,
  )
  predictions = json.loads(out.read_text())
  assert len(predictions) == 10
  for p in predictions:
    assert set(p) == {'sequence', 'expected', 'predicted'}
    assert len(p['sequence']) == 5 and p['expected'] == p['sequence'][2]
  lines = [l for l in proc.stdout.splitlines() if l.startswith('sequence:')]
  assert len(lines) == 10


def test_eval_mode_without_checkpoint_is_a_clear_error(tmp_path):
  proc = subprocess.run(
    _train_cmd(tmp_path, '--mode=eval'),
    cwd=ROOT,
    capture_output=True,
    text=True,
    env={**os.environ, 'JAX_PLATFORMS': 'cpu'},
  )
  assert proc.returncode != 0
  assert 'needs a checkpoint' in proc.stderr
  assert 'Traceback' not in proc.stderr


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(
  tmp_path, monkeypatch
):
  # An optimizer whose step size turns infinite at update 120: the loss of
  # step 122 is NaN (step 121 is the last computed from finite parameters).
  import optax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top

  monkeypatch.setattr(
    optim,
    'make_optimizer',
    lambda *_: (
      optax.sgd(lambda count: jnp.where(count >= 120, jnp.inf, 1e-3)),
      lambda _: 1e-3,
    ),
  )
  config = _config(vanilla, steps=200, steps_per_call=50, checkpoint_every=50)
  with pytest.raises(runtime.TrainingError) as info:
    train_lib.train_and_evaluate(config, str(tmp_path))
  message = str(info.value)
  assert 'non-finite training loss' in message and 'at step 122' in message
  assert 'Last good checkpoint: step 100' in message
  assert not (tmp_path / 'results.json').exists()
  assert _saved_steps(tmp_path) == [100, 50]
  state = _final_params(config, tmp_path)
  assert state.step.tolist() == [100]
  assert all(
    np.isfinite(x).all() for x in jax.tree_util.tree_leaves(state.params)
  )


def test_sigterm_checkpoints_and_exits_143_then_resumes(tmp_path):
  args = [
    '--config=configs/stacked.py',
    '--config.train.steps=100000',
    '--config.train.steps_per_call=50',
    '--config.train.checkpoint_every=0',
    '--config.eval.num_examples=100',
    '--config.eval.batch_size=100',
    '--config.eval.figure_examples=0',
  ]
  env = {**os.environ, 'JAX_PLATFORMS': 'cpu'}
  proc = subprocess.Popen(
    _train_cmd(tmp_path, *args),
    cwd=ROOT,
    env=env,
    stdout=subprocess.DEVNULL,
    stderr=subprocess.PIPE,
    text=True,
  )
  deadline = time.time() + 300
  while time.time() < deadline and not (tmp_path / 'metrics.jsonl').exists():
    time.sleep(0.05)
  while time.time() < deadline and not (tmp_path / 'metrics.jsonl').read_text():
    time.sleep(0.05)
  proc.send_signal(signal.SIGTERM)
  _, stderr = proc.communicate(timeout=120)
  assert proc.returncode == 143, stderr[-2000:]
  saved = _saved_steps(tmp_path)
  assert len(saved) == 1 and saved[0] % 50 == 0 and saved[0] < 100000
  assert not (tmp_path / 'results.json').exists()


def test_workdir_of_another_config_is_refused_unless_overwrite(tmp_path):
  env = {**os.environ, 'JAX_PLATFORMS': 'cpu'}
  common = [
    '--config.train.steps=20',
    '--config.train.steps_per_call=10',
    '--config.eval.num_examples=10',
    '--config.eval.batch_size=10',
  ]
  subprocess.run(
    _train_cmd(tmp_path, *common),
    cwd=ROOT,
    env=env,
    check=True,
    capture_output=True,
  )
  before = (tmp_path / 'results.json').read_text()
  proc = subprocess.run(
    _train_cmd(tmp_path, *common, '--config.task.out_index=3'),
    cwd=ROOT,
    env=env,
    capture_output=True,
    text=True,
  )
  assert proc.returncode == 1
  assert 'holds a run of a different config' in proc.stderr
  assert 'task.out_index' in proc.stderr and '--overwrite' in proc.stderr
  assert (tmp_path / 'results.json').read_text() == before  # nothing lost
  assert _saved_steps(tmp_path) == [20]
  # Other eval settings are the same run: it resumes (nothing to train).
  subprocess.run(
    _train_cmd(
      tmp_path,
      *common[:2],
      '--config.eval.num_examples=20',
      '--config.eval.batch_size=10',
    ),
    cwd=ROOT,
    env=env,
    check=True,
    capture_output=True,
  )
  proc = subprocess.run(
    _train_cmd(tmp_path, *common, '--config.task.out_index=3', '--overwrite'),
    cwd=ROOT,
    env=env,
    capture_output=True,
    text=True,
  )
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert (
    json.loads((tmp_path / 'config.json').read_text())['task']['out_index'] == 3
  )


def test_workdir_of_older_code_without_a_new_field_is_the_same_run(tmp_path):
  config = vanilla.get_config()
  saved = json.loads(json.dumps(config.to_dict()))
  del saved['train']['optimize_for']  # written before the field existed
  workdir_lib.write_json(str(tmp_path / 'config.json'), saved)
  workdir_lib.write_json(str(tmp_path / 'results.json'), {})
  workdir_lib.check_workdir(config, str(tmp_path))  # resumes: no error
  with config.unlocked():
    config.train.optimize_for = 'step_time'  # not the default: another run
  with pytest.raises(workdir_lib.WorkdirError, match='train.optimize_for'):
    workdir_lib.check_workdir(config, str(tmp_path))


def test_learning_curve_plot_and_tensorboard_events(tmp_path):
  pytest.importorskip('matplotlib')
  config = _config(
    vanilla, steps=30, steps_per_call=10, log_every=10, tensorboard=True
  )
  with config.unlocked():
    config.eval.every_steps = 15
  results = train_lib.train_and_evaluate(config, str(tmp_path))
  from lstm_flax import plot  # pylint: disable=g-import-not-at-top

  train, validation, final = plot.read_metrics(str(tmp_path))
  assert [r['step'] for r in train] == [10, 20, 30]
  assert [r['step'] for r in validation] == [15, 30]
  assert plot.main(['plot', '--help']) == 0
  assert plot.main(['plot', str(tmp_path)]) == 0
  assert (tmp_path / 'learning_curve.png').stat().st_size > 5000
  assert plot.main(['plot', str(tmp_path / 'nothing')]) == 2
  try:
    import tensorboardX  # noqa: F401  # pylint: disable=g-import-not-at-top,unused-import
  except ImportError:
    pass
  else:
    events = list((tmp_path / 'tensorboard').glob('events.out.tfevents.*'))
    assert events and events[0].stat().st_size > 100
  # The final held-out record (written as 'final/<metric>') is the plot's.
  assert final is not None and final['step'] == 30
  assert final['final/accuracy'] == results['eval']['accuracy']


def test_corrupt_newest_checkpoint_falls_back_to_the_previous(tmp_path):
  config = _config(
    vanilla,
    steps=40,
    steps_per_call=10,
    checkpoint_every=10,
    keep_checkpoints=3,
  )
  train_lib.train_and_evaluate(config, str(tmp_path))
  assert _saved_steps(tmp_path) == [40, 30, 20]
  # Truncate every file of the newest checkpoint.
  for path in (tmp_path / 'checkpoints' / '40').rglob('*'):
    if path.is_file():
      path.write_bytes(path.read_bytes()[:7])
  state = _final_params(config, tmp_path)
  assert state.step.tolist() == [30]
  # Training in that workdir resumes from 30, keeps the bad one aside, saves 40.
  results = train_lib.train_and_evaluate(config, str(tmp_path))
  assert results['steps'] == 40
  assert _saved_steps(tmp_path) == [40, 30, 20]
  assert (tmp_path / 'unreadable_checkpoints' / '40').is_dir()
  assert _final_params(config, tmp_path).step.tolist() == [40]
