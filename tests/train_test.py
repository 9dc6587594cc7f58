"""The shared training loop: steps, chunks, evaluation, the CLI."""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import cnn_lstm
from configs import stacked
from configs import vanilla
from lstm_flax import data
from lstm_flax import models
from lstm_flax import tasks
from lstm_flax import train_loop

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _setup(config, batch_size=4):
  task = tasks.make_task(config.task)
  model = models.make_model(config.model, task.num_outputs)
  init_key, train_key, eval_key = train_loop.run_keys(config.seed, config.eval.seed)
  tx = train_loop.make_optimizer(config.optimizer, config.train.steps)
  state = train_loop.create_train_state(model, task, tx, init_key)
  step = train_loop.make_train_step(task, batch_size, train_key)
  return task, state, step, eval_key


def _tiny(config_module, **train):
  config = config_module.get_config()
  with config.unlocked():
    for k, v in train.items():
      config.train[k] = v
  return config


@pytest.mark.parametrize('config_module', [vanilla, stacked, cnn_lstm])
def test_one_step_changes_every_parameter(config_module):
  config = _tiny(config_module)
  if config_module is cnn_lstm:
    with config.unlocked():
      config.task.size = 12
  _, state, step, _ = _setup(config)
  new_state, loss = jax.jit(step)(state)
  assert np.isfinite(loss)
  assert int(new_state.step) == 1
  changed = jax.tree_util.tree_map(lambda a, b: bool(jnp.any(a != b)),
                                   state.params, new_state.params)
  assert all(jax.tree_util.tree_leaves(changed)), changed


def test_k_steps_per_call_equal_k_single_steps_and_remainder():
  config = _tiny(vanilla)
  _, state, step, _ = _setup(config)
  single = jax.jit(step)
  expected, losses = state, []
  for _ in range(7):
    expected, loss = single(expected)
    losses.append(float(loss))
  chunk = train_loop.make_train_chunk(step, steps_per_call=5).lower(
      state, 0).compile()
  got, first = chunk(state, 5)
  got, rest = chunk(got, 2)            # the remainder: the same program
  assert int(got.step) == 7
  np.testing.assert_allclose(np.concatenate([first, rest[:2]]), losses, rtol=1e-5)
  assert np.isnan(rest[2:]).all()      # skipped steps
  for a, b in zip(jax.tree_util.tree_leaves(got.params),
                  jax.tree_util.tree_leaves(expected.params)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_batches_are_drawn_from_seed_and_step():
  config = _tiny(vanilla)
  task, state, _, _ = _setup(config)
  _, train_key, _ = train_loop.run_keys(0, 1)
  key_step_3 = jax.random.fold_in(train_key, 3)
  a = task.generate(key_step_3, 4)
  b = task.generate(jax.random.fold_in(train_key, 4), 4)
  assert not np.array_equal(a[0], b[0])
  # Same seed, same parameters; another seed, others.
  _, again, _, _ = _setup(config)
  np.testing.assert_array_equal(state.params['lstm_0']['kernel'],
                                again.params['lstm_0']['kernel'])
  with config.unlocked():
    config.seed = 1
  _, other, _, _ = _setup(config)
  assert not np.array_equal(state.params['lstm_0']['kernel'],
                            other.params['lstm_0']['kernel'])


def test_run_keys_give_the_same_batches_with_either_threefry():
  """Runs compiled for compile time hash in JAX's loop, runs compiled for
  step time unrolled (prng.py): the data must not depend on which."""
  unrolled = train_loop.run_keys(3, 1, 2, unrolled_train_key=True)
  looped = train_loop.run_keys(3, 1, 2, unrolled_train_key=False)
  assert str(jax.random.key_impl(unrolled[1])) != str(jax.random.key_impl(looped[1]))
  for keys in (unrolled, looped):   # init and eval keys: JAX's own
    assert str(jax.random.key_impl(keys[0])) == str(jax.random.key_impl(keys[2])) \
        == 'threefry2x32'
  generate = jax.jit(jax.vmap(lambda k: data.damped_sine(jax.random.fold_in(k, 7), 4)))
  for a, b in zip(generate(unrolled[1]), generate(looped[1])):
    np.testing.assert_array_equal(a, b)


def test_evaluate_is_independent_of_eval_batch_size():
  config = _tiny(vanilla)
  task, state, _, eval_key = _setup(config)
  whole = train_loop.make_evaluate(task, 200, 200, eval_key)(state.apply_fn,
                                                              state.params)
  parts = train_loop.make_evaluate(task, 200, 50, eval_key)(state.apply_fn,
                                                            state.params)
  for k in whole:
    np.testing.assert_allclose(whole[k], parts[k], rtol=1e-5)
  with pytest.raises(ValueError, match='multiple of'):
    train_loop.make_evaluate(task, 200, 30, eval_key)


@pytest.mark.parametrize('num_seeds', [1, 2])
def test_eval_program_keeps_the_predict_programs_examples(num_seeds):
  config = _tiny(stacked)
  task, state, _, eval_key = _setup(config)
  params = state.params
  if num_seeds > 1:   # replica 0 = the state above, replica 1 perturbed
    params = jax.tree_util.tree_map(lambda p: jnp.stack([p, p * 1.5]), params)
  plain = train_loop.make_evaluate(task, 200, 50, eval_key, num_seeds)(
      state.apply_fn, params)
  metrics, kept = train_loop.make_evaluate(
      task, 200, 50, eval_key, num_seeds, keep_examples=4)(state.apply_fn, params)
  want = train_loop.make_predict(task, 4, eval_key)(state.apply_fn, state.params)
  for k in plain:
    np.testing.assert_array_equal(plain[k], metrics[k])
  assert len(kept) == 3
  for got, expected in zip(kept, want):
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
  with pytest.raises(ValueError, match='keep_examples=51'):
    train_loop.make_evaluate(task, 200, 50, eval_key, keep_examples=51)


def test_train_and_evaluate_writes_results_and_metrics(tmp_path):
  config = _tiny(stacked, steps=12, steps_per_call=5, batch_size=4)
  with config.unlocked():
    config.eval.num_examples = 20
    config.eval.batch_size = 10
    config.eval.figure_examples = 0
  results = train_loop.train_and_evaluate(config, str(tmp_path))
  saved = json.loads((tmp_path / 'results.json').read_text())
  assert saved == json.loads(json.dumps(results))
  assert saved['config'] == 'stacked' and saved['task'] == 'damped_sine'
  assert saved['steps'] == 12 and saved['train_seconds'] > 0
  assert set(saved['eval']) >= {'mae', 'rmse', 'loss', 'num_examples'}
  assert saved['eval']['rmse'] >= saved['eval']['mae'] > 0
  lines = [json.loads(l) for l in (tmp_path / 'metrics.jsonl').read_text().splitlines()]
  assert [l['step'] for l in lines] == [5, 10, 12, 12]
  assert all(np.isfinite(l['train_loss']) for l in lines[:3])
  assert lines[-1]['eval/mae'] == saved['eval']['mae']


def _run_train(workdir, *args, timeout=600):
  return subprocess.run(
      [sys.executable, os.path.join(ROOT, 'train.py'), f'--workdir={workdir}',
       '--compilation_cache_dir=', *args],
      capture_output=True, text=True, timeout=timeout, cwd=ROOT,
      env={**os.environ, 'JAX_PLATFORMS': 'cpu'})


def test_train_py_with_overrides_writes_valid_results(tmp_path):
  proc = _run_train(tmp_path, '--config=configs/vanilla.py',
                    '--config.train.steps=30', '--config.train.steps_per_call=8',
                    '--config.eval.num_examples=50', '--config.eval.batch_size=25')
  assert proc.returncode == 0, proc.stderr[-3000:]
  results = json.loads((tmp_path / 'results.json').read_text())
  assert results['config'] == 'vanilla' and results['task'] == 'echo'
  assert results['steps'] == 30
  assert 0 <= results['eval']['accuracy'] <= 1
  assert results['eval']['num_examples'] == 50
  assert len((tmp_path / 'metrics.jsonl').read_text().splitlines()) == 4 + 1


@pytest.mark.slow
def test_vanilla_fast_reaches_full_accuracy(tmp_path):
  proc = _run_train(tmp_path, '--config=configs/vanilla_fast.py')
  assert proc.returncode == 0, proc.stderr[-3000:]
  results = json.loads((tmp_path / 'results.json').read_text())
  assert results['eval']['num_examples'] >= 1000
  assert results['eval']['accuracy'] == 1.0


@pytest.mark.slow
def test_stacked_seed_protocol_reaches_mae_target(tmp_path):
  proc = _run_train(tmp_path, '--config=configs/stacked.py')
  assert proc.returncode == 0, proc.stderr[-3000:]
  results = json.loads((tmp_path / 'results.json').read_text())
  assert results['steps'] == 1000 and results['batch_size'] == 10
  assert results['eval']['mae'] <= 0.03
  assert (tmp_path / 'forecast.png').stat().st_size > 10000


@pytest.mark.slow
def test_cnn_lstm_seed_protocol_reaches_accuracy_target(tmp_path):
  proc = _run_train(tmp_path, '--config=configs/cnn_lstm.py')
  assert proc.returncode == 0, proc.stderr[-3000:]
  results = json.loads((tmp_path / 'results.json').read_text())
  assert results['steps'] == 157 and results['batch_size'] == 32
  assert results['eval']['accuracy'] >= 0.98
  assert (tmp_path / 'moving_line.png').stat().st_size > 10000


def test_figure_is_skipped_with_one_log_line_without_matplotlib(tmp_path, monkeypatch):
  import builtins  # pylint: disable=g-import-not-at-top
  from absl import logging  # pylint: disable=g-import-not-at-top
  real_import = builtins.__import__

  def no_matplotlib(name, *args, **kwargs):
    if name.startswith('matplotlib'):
      raise ImportError('No module named matplotlib')
    return real_import(name, *args, **kwargs)

  messages = []
  monkeypatch.setattr(builtins, '__import__', no_matplotlib)
  monkeypatch.setattr(logging, 'info', lambda msg, *a: messages.append(str(msg)))
  config = _tiny(stacked, steps=5, steps_per_call=5, batch_size=2)
  with config.unlocked():
    config.eval.num_examples = 10
    config.eval.batch_size = 10
  results = train_loop.train_and_evaluate(config, str(tmp_path))
  assert results['steps'] == 5
  assert not (tmp_path / 'forecast.png').exists()
  assert sum('figure skipped' in m for m in messages) == 1


@pytest.mark.parametrize('goal,unroll,want_unroll,want_emitters', [
    ('compile_time', 0, 1, False),
    ('compile_time', 5, 5, False),       # an explicit unroll is kept
    ('step_time', 0, 0, True),
])
def test_build_compiles_the_train_program_for_what_optimize_for_says(
    goal, unroll, want_unroll, want_emitters, monkeypatch):
  config = _tiny(vanilla, steps=3, steps_per_call=3)
  with config.unlocked():
    config.train.optimize_for = goal
    config.model.unroll = unroll
  compiled_with = []
  real_compile = jax.stages.Lowered.compile

  def compile_(self, options=None, **kwargs):
    compiled_with.append(dict(options or {}))
    return real_compile(self, options, **kwargs)

  monkeypatch.setattr(jax.stages.Lowered, 'compile', compile_)
  exp = train_loop.build(config, programs=('train',))
  assert exp.state.apply_fn.__self__.unroll == want_unroll
  # The last -O1 compile is the train program's (validation may compile an
  # empty program with the same options first; init compiles at -O0).
  train_options = [o for o in compiled_with
                   if o.get('xla_backend_optimization_level') == 1][-1]
  if jax.default_backend() == 'cpu':   # other backends do not take the field
    assert train_options['xla_cpu_use_fusion_emitters'] == want_emitters
  else:
    assert not any(k.startswith('xla_cpu_') for k in train_options)
  state, losses = exp.train_chunk(exp.state, 3)
  assert np.isfinite(np.asarray(losses)).all() and train_loop.state_step(state) == 3
