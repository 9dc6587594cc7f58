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
from lstm_flax import experiment
from lstm_flax import models
from lstm_flax import optim
from lstm_flax import programs
from lstm_flax import runtime
from lstm_flax import tasks
from lstm_flax import train as train_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _setup(config, batch_size=4):
  """(task, state of one replica with its leading seed axis, the one-replica
  step, the run's keys)."""
  task = tasks.make_task(config.task)
  model = models.make_model(config.model, task.num_outputs)
  keys = experiment.run_keys(config.seed, config.eval.seed)
  tx, _ = optim.make_optimizer(config.optimizer, config.train.steps)
  state = jax.jit(programs.make_init(model, task, tx))(keys.init)
  step = programs.make_train_step(task, batch_size)
  return task, state, step, keys


def _one_step(step, keys):
  return jax.jit(lambda s: step(s, keys.batch[0], keys.dropout[0]))


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
  _, state, step, keys = _setup(config)
  state = programs.replica(state)
  new_state, metrics = _one_step(step, keys)(state)
  assert np.isfinite(metrics['loss']) and metrics['grad_norm'] > 0
  assert int(new_state.step) == 1
  changed = jax.tree_util.tree_map(
    lambda a, b: bool(jnp.any(a != b)), state.params, new_state.params
  )
  assert all(jax.tree_util.tree_leaves(changed)), changed


def test_k_steps_per_call_equal_k_single_steps_and_remainder():
  config = _tiny(vanilla)
  _, state, step, keys = _setup(config)
  single = _one_step(step, keys)
  expected, losses = programs.replica(state), []
  for _ in range(7):
    expected, metrics = single(expected)
    losses.append(float(metrics['loss']))
  chunk = (
    jax.jit(programs.make_train_chunk(step, steps_per_call=5))
    .lower(state, keys.batch, keys.dropout, 0)
    .compile()
  )
  got, first, finite = chunk(state, keys.batch, keys.dropout, 5)
  got, rest, _ = chunk(got, keys.batch, keys.dropout, 2)  # the same program
  assert got.step.tolist() == [7] and finite.tolist() == [True]
  np.testing.assert_allclose(
    np.concatenate([first['loss'][:, 0], rest['loss'][:2, 0]]),
    losses,
    rtol=1e-5,
  )
  assert np.isnan(rest['loss'][2:]).all()  # skipped steps
  for a, b in zip(
    jax.tree_util.tree_leaves(programs.replica(got.params)),
    jax.tree_util.tree_leaves(expected.params),
  ):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_batches_are_drawn_from_seed_and_step():
  config = _tiny(vanilla)
  task, state, _, keys = _setup(config)
  train_key = keys.batch[0]
  key_step_3 = jax.random.fold_in(train_key, 3)
  a = task.generate(key_step_3, 4)
  b = task.generate(jax.random.fold_in(train_key, 4), 4)
  assert not np.array_equal(a[0], b[0])
  # Same seed, same parameters; another seed, others.
  _, again, _, _ = _setup(config)
  np.testing.assert_array_equal(
    state.params['lstm_0']['kernel'], again.params['lstm_0']['kernel']
  )
  with config.unlocked():
    config.seed = 1
  _, other, _, _ = _setup(config)
  assert not np.array_equal(
    state.params['lstm_0']['kernel'], other.params['lstm_0']['kernel']
  )


def test_run_keys_give_the_same_batches_with_either_threefry():
  """Runs compiled for compile time hash in JAX's loop, runs compiled for
  step time unrolled (prng.py): the data must not depend on which."""
  unrolled = experiment.run_keys(3, 1, 2, unrolled_batch_keys=True)
  looped = experiment.run_keys(3, 1, 2, unrolled_batch_keys=False)
  assert str(jax.random.key_impl(unrolled.batch)) != str(
    jax.random.key_impl(looped.batch)
  )
  for keys in (unrolled, looped):  # init and eval keys: JAX's own
    assert (
      str(jax.random.key_impl(keys.init))
      == str(jax.random.key_impl(keys.eval))
      == 'threefry2x32'
    )
  generate = jax.jit(
    jax.vmap(lambda k: data.damped_sine(jax.random.fold_in(k, 7), 4))
  )
  for a, b in zip(generate(unrolled.batch), generate(looped.batch)):
    np.testing.assert_array_equal(a, b)


def test_evaluate_is_independent_of_eval_batch_size():
  config = _tiny(vanilla)
  task, state, _, keys = _setup(config)
  whole, whole_ensemble, _ = programs.make_evaluate(task, 200, 200)(
    state.apply_fn, state.params, keys.eval
  )
  parts, _, _ = programs.make_evaluate(task, 200, 50)(
    state.apply_fn, state.params, keys.eval
  )
  for k in whole:
    assert whole[k].shape == (1,)
    np.testing.assert_allclose(whole[k], parts[k], rtol=1e-5)
    # One replica: its ensemble is itself.
    np.testing.assert_allclose(whole_ensemble[k], whole[k][0], rtol=1e-6)
  with pytest.raises(ValueError, match='multiple of'):
    programs.make_evaluate(task, 200, 30)


@pytest.mark.parametrize('num_seeds', [1, 2])
def test_eval_program_keeps_the_predict_programs_examples(num_seeds):
  config = _tiny(stacked)
  task, state, _, keys = _setup(config)
  params = state.params
  if num_seeds > 1:  # replica 0 = the state above, replica 1 perturbed
    params = jax.tree_util.tree_map(
      lambda p: jnp.concatenate([p, p * 1.5]), params
    )
  plain, _, _ = programs.make_evaluate(task, 200, 50)(
    state.apply_fn, params, keys.eval
  )
  metrics, _, kept = programs.make_evaluate(task, 200, 50, keep_examples=4)(
    state.apply_fn, params, keys.eval
  )
  want = programs.make_predict(task, 4)(
    state.apply_fn, programs.replica(state.params), keys.eval
  )
  for k in plain:
    assert plain[k].shape == (num_seeds,)
    np.testing.assert_array_equal(plain[k], metrics[k])
  assert len(kept) == 3
  for got, expected in zip(kept, want):
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
  with pytest.raises(ValueError, match='keep_examples=51'):
    programs.make_evaluate(task, 200, 50, keep_examples=51)


def test_train_and_evaluate_writes_results_and_metrics(tmp_path):
  config = _tiny(stacked, steps=12, steps_per_call=5, batch_size=4, log_every=5)
  with config.unlocked():
    config.eval.num_examples = 20
    config.eval.batch_size = 10
    config.eval.figure_examples = 0
    config.train.log_grad_norm = True
  results = train_lib.train_and_evaluate(config, str(tmp_path))
  saved = json.loads((tmp_path / 'results.json').read_text())
  assert saved == json.loads(json.dumps(results))
  assert saved['config'] == 'stacked' and saved['task'] == 'damped_sine'
  assert saved['steps'] == 12 and saved['train_seconds'] > 0
  assert set(saved['eval']) >= {'mae', 'rmse', 'loss', 'num_examples'}
  assert saved['eval']['rmse'] >= saved['eval']['mae'] > 0
  lines = [
    json.loads(l) for l in (tmp_path / 'metrics.jsonl').read_text().splitlines()
  ]
  assert [l['step'] for l in lines] == [5, 10, 12, 12]
  assert all(np.isfinite(l['train_loss']) for l in lines[:3])
  assert all(
    l['learning_rate'] == 1e-3 and l['grad_norm'] > 0 for l in lines[:3]
  )
  assert lines[-1]['final/mae'] == saved['eval']['mae']
  assert saved['final_train_loss'] == lines[2]['train_loss']
  assert saved['final_train_loss_steps'] == 2  # steps 11 and 12
  assert saved['compile_plan']['goal'] == 'compile_time'
  assert saved['compilation']['programs'] >= 2


def _run_train(workdir, *args, timeout=600):
  return subprocess.run(
    [
      sys.executable,
      os.path.join(ROOT, 'train.py'),
      f'--workdir={workdir}',
      '--compilation_cache_dir=',
      *args,
    ],
    capture_output=True,
    text=True,
    timeout=timeout,
    cwd=ROOT,
    env={**os.environ, 'JAX_PLATFORMS': 'cpu'},
  )


def test_train_py_with_overrides_writes_valid_results(tmp_path):
  proc = _run_train(
    tmp_path,
    '--config=configs/vanilla.py',
    '--config.train.steps=30',
    '--config.train.steps_per_call=8',
    '--config.train.log_every=8',
    '--config.eval.num_examples=50',
    '--config.eval.batch_size=25',
  )
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


def test_figure_is_skipped_with_one_log_line_without_matplotlib(
  tmp_path, monkeypatch
):
  import builtins  # pylint: disable=g-import-not-at-top
  from absl import logging  # pylint: disable=g-import-not-at-top

  real_import = builtins.__import__

  def no_matplotlib(name, *args, **kwargs):
    if name.startswith('matplotlib'):
      raise ImportError('No module named matplotlib')
    return real_import(name, *args, **kwargs)

  messages = []
  monkeypatch.setattr(builtins, '__import__', no_matplotlib)
  monkeypatch.setattr(
    logging, 'info', lambda msg, *a: messages.append(str(msg))
  )
  config = _tiny(stacked, steps=5, steps_per_call=5, batch_size=2)
  with config.unlocked():
    config.eval.num_examples = 10
    config.eval.batch_size = 10
  results = train_lib.train_and_evaluate(config, str(tmp_path))
  assert results['steps'] == 5
  assert not (tmp_path / 'forecast.png').exists()
  assert sum('figure skipped' in m for m in messages) == 1


@pytest.mark.parametrize(
  'goal,unroll,want_unroll,want_emitters',
  [
    ('compile_time', 0, 1, False),
    ('compile_time', 5, 5, False),  # an explicit unroll is kept
    ('step_time', 0, 0, True),
  ],
)
def test_build_compiles_the_train_program_for_what_optimize_for_says(
  goal, unroll, want_unroll, want_emitters, monkeypatch
):
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
  exp = experiment.build(config, ('train',))
  assert exp.model.recurrent.unroll == want_unroll == exp.plan.unroll
  # The last -O1 compile is the train program's (the plan may compile an
  # empty program with the same options first; init compiles at -O0).
  train_options = [
    o for o in compiled_with if o.get('xla_backend_optimization_level') == 1
  ][-1]
  if jax.default_backend() == 'cpu':  # other backends do not take the field
    assert train_options['xla_cpu_use_fusion_emitters'] == want_emitters
  else:
    assert not any(k.startswith('xla_cpu_') for k in train_options)
  state, metrics, finite = exp.programs['train'](
    exp.init(), exp.keys.batch, exp.keys.dropout, 3
  )
  assert np.isfinite(np.asarray(metrics['loss'])).all() and finite.all()
  assert state.step.tolist() == [3]


def test_seeds_share_one_program_keys_are_arguments():
  """The keys are arguments: seed 1's programs are seed 0's, so the
  persistent cache serves a new seed."""
  texts = []
  for seed in (0, 1):
    config = _tiny(stacked, steps=4, steps_per_call=2)
    with config.unlocked():
      config.seed = seed
    exp = experiment.build(config, ('train', 'eval'))
    texts.append([exp.programs[n].as_text() for n in ('init', 'train', 'eval')])
  assert texts[0] == texts[1]


@pytest.mark.parametrize(
  'step,want',
  [
    (0, 5),
    (5, 3),
    (8, 2),
    (10, 2),  # eval every 4, checkpoints every 10
  ],
)
def test_chunks_end_at_validation_and_checkpoint_steps(step, want):
  assert (
    train_lib.chunk_length(step, 5, 12, 4, 10) == want
    if step != 0
    else train_lib.chunk_length(step, 5, 12, 0, 10) == want
  )


def _run(tmp_path, name, **fields):
  config = _tiny(stacked, **fields.pop('train', {}))
  with config.unlocked():
    config.eval.num_examples = 20
    config.eval.batch_size = 10
    config.eval.figure_examples = 0
    for section, values in fields.items():
      for k, v in values.items():
        config[section][k] = v
  workdir = tmp_path / name
  return train_lib.train_and_evaluate(config, str(workdir)), workdir


def _records(workdir):
  return [
    json.loads(l) for l in (workdir / 'metrics.jsonl').read_text().splitlines()
  ]


def test_validation_every_n_steps_keeps_the_best_checkpoint(tmp_path):
  results, workdir = _run(
    tmp_path,
    'w',
    train=dict(steps=12, steps_per_call=5, batch_size=4, log_every=4),
    eval=dict(every_steps=4),
  )
  records = _records(workdir)
  assert not any('grad_norm' in r for r in records)  # off unless asked
  validations = [r for r in records if 'eval/mae' in r]
  assert [r['step'] for r in validations] == [4, 8, 12]
  assert [r['step'] for r in records if 'train_loss' in r] == [4, 8, 12]
  best = min(validations, key=lambda r: r['eval/loss'])
  assert results['best']['step'] == best['step']
  assert results['best']['metrics']['loss'] == best['eval/loss']
  assert os.listdir(workdir / 'best') == [str(best['step'])]
  assert json.loads((workdir / 'best.json').read_text())['step'] == best['step']


def _final_params(workdir):
  from lstm_flax import checkpoints  # pylint: disable=g-import-not-at-top

  restored, step, _ = checkpoints.restore_newest_readable(
    checkpoints.directory(str(workdir)), None
  )
  return step, restored['params']


def test_raising_train_steps_continues_the_run_bit_identically(tmp_path):
  train = dict(steps_per_call=4, batch_size=4, optimize_for='step_time')
  _run(tmp_path, 'continued', train=dict(steps=6, **train))
  _run(tmp_path, 'continued', train=dict(steps=10, **train))
  _run(tmp_path, 'straight', train=dict(steps=10, **train))
  step_a, a = _final_params(tmp_path / 'continued')
  step_b, b = _final_params(tmp_path / 'straight')
  assert step_a == step_b == 10
  for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
    np.testing.assert_array_equal(x, y)


def test_init_from_another_workdir_starts_from_its_parameters(tmp_path):
  _run(tmp_path, 'source', train=dict(steps=5, steps_per_call=5, batch_size=4))
  _, source = _final_params(tmp_path / 'source')
  results, workdir = _run(
    tmp_path,
    'warm',
    train=dict(
      steps=1,
      steps_per_call=1,
      batch_size=4,
      init_from=str(tmp_path / 'source'),
    ),
    optimizer=dict(learning_rate=1e-9),
  )
  _, warm = _final_params(workdir)
  for x, y in zip(
    jax.tree_util.tree_leaves(source), jax.tree_util.tree_leaves(warm)
  ):
    np.testing.assert_allclose(x, y, atol=1e-6)  # one step at lr 1e-9
  assert results['steps'] == 1


def test_init_from_a_model_of_another_shape_is_a_clear_error(tmp_path):
  _run(tmp_path, 'source', train=dict(steps=2, steps_per_call=2, batch_size=4))
  from lstm_flax import warm_start  # pylint: disable=g-import-not-at-top

  with pytest.raises(warm_start.WarmStartError, match='shape'):
    _run(
      tmp_path,
      'warm',
      train=dict(steps=1, init_from=str(tmp_path / 'source')),
      model=dict(layer_sizes=(20, 21)),
    )


def test_an_update_that_overflows_the_parameters_saves_nothing(tmp_path):
  """A learning rate float32 cannot hold: the loss of step 1 is finite, the
  parameters after it are not.  The run stops before saving them."""
  with pytest.raises(runtime.TrainingError, match='non-finite parameters'):
    _run(
      tmp_path,
      'w',
      train=dict(steps=1, steps_per_call=1, batch_size=4),
      optimizer=dict(learning_rate=1e39),
    )
  assert not os.path.exists(tmp_path / 'w' / 'checkpoints' / '1')
  assert not (tmp_path / 'w' / 'results.json').exists()


def test_final_eval_from_the_best_checkpoint_when_asked(tmp_path):
  from lstm_flax import inference  # pylint: disable=g-import-not-at-top

  results, workdir = _run(
    tmp_path,
    'w',
    train=dict(steps=12, steps_per_call=4, batch_size=4, log_every=4),
    eval=dict(every_steps=4, final_from_best=True),
  )
  best = results['best']['step']
  assert results['eval_checkpoint'] == f'best (step {best})'
  config = _tiny(stacked, steps=12, steps_per_call=4, batch_size=4)
  with config.unlocked():
    config.eval.num_examples, config.eval.batch_size = 20, 10
    config.eval.figure_examples = 0
  again = inference.evaluate_checkpoint(config, str(workdir), 'best')
  assert again['step'] == best
  assert again['eval']['mae'] == pytest.approx(results['eval']['mae'], rel=1e-6)


def test_resume_may_turn_on_clipping_and_lower_the_learning_rate(tmp_path):
  """The advice after a non-finite loss: rerun with a lower learning rate
  or clipping.  The rerun resumes from the checkpoint, it does not restart."""
  train = dict(steps_per_call=4, batch_size=4, log_every=4)
  _run(tmp_path, 'w', train=dict(steps=4, **train))
  results, workdir = _run(
    tmp_path,
    'w',
    train=dict(steps=8, **train),
    optimizer=dict(grad_clip_norm=1.0, learning_rate=5e-4),
  )
  assert not (workdir / 'unreadable_checkpoints').exists()
  steps = [r['step'] for r in _records(workdir) if 'train_loss' in r]
  assert steps == [4, 8]  # resumed at 4, not redone
  assert _records(workdir)[1]['learning_rate'] == 5e-4
