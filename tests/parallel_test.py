"""Many seeds in one program, data parallelism over devices, several processes,
and compiling each program once."""

import json
import os
import socket
import subprocess
import sys
import textwrap

from jax import monitoring
import numpy as np
import pytest

from configs import stacked
from configs import vanilla_fast
from lstm_flax import train as train_lib
from lstm_flax import validation

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _config(**fields):
  config = vanilla_fast.get_config()
  config.train.steps = 30
  config.train.steps_per_call = 10
  config.eval.num_examples = 200
  config.eval.batch_size = 100
  for name, value in fields.items():
    node = config
    *path, last = name.split('.')
    for part in path:
      node = node[part]
    node[last] = value
  return config


def test_num_seeds_replicas_equal_separate_runs(tmp_path):
  """Replica i of a num_seeds run is the run with seed + i (to float
  tolerance: vmapped matmuls may sum in another order)."""
  together = train_lib.train_and_evaluate(
    _config(seed=3, num_seeds=2), str(tmp_path / 'together')
  )
  assert together['seeds'] == [3, 4]
  assert len(together['eval_per_seed']) == 2
  for i, seed in enumerate(together['seeds']):
    alone = train_lib.train_and_evaluate(
      _config(seed=seed), str(tmp_path / f'seed{seed}')
    )
    np.testing.assert_allclose(
      together['eval_per_seed'][i]['loss'], alone['eval']['loss'], rtol=1e-4
    )
    np.testing.assert_allclose(
      together['final_train_loss_per_seed'][i],
      alone['final_train_loss'],
      rtol=1e-4,
    )
  losses = [m['loss'] for m in together['eval_per_seed']]
  assert len(set(losses)) == 2  # different init and data per replica
  stats = together['eval_stats']['loss']
  assert stats['min'] == min(losses) and stats['max'] == max(losses)
  np.testing.assert_allclose(stats['mean'], np.mean(losses), rtol=1e-6)
  np.testing.assert_allclose(stats['std'], np.std(losses), rtol=1e-6)
  assert together['eval']['loss'] == stats['mean']
  on_disk = json.loads((tmp_path / 'together' / 'results.json').read_text())
  assert on_disk['eval_stats'] == together['eval_stats']


def _stacked(**train):
  config = stacked.get_config()
  config.num_seeds = 2
  config.train.steps_per_call = 10
  config.train.checkpoint_every = 10
  config.eval.num_examples = 100
  config.eval.batch_size = 100
  config.eval.figure_examples = 2
  for name, value in train.items():
    config.train[name] = value
  return config


def test_num_seeds_resumes_from_checkpoint_and_draws_replica_0(tmp_path):
  pytest.importorskip('matplotlib')
  whole = train_lib.train_and_evaluate(
    _stacked(steps=30), str(tmp_path / 'whole')
  )
  train_lib.train_and_evaluate(_stacked(steps=20), str(tmp_path / 'resumed'))
  resumed = train_lib.train_and_evaluate(
    _stacked(steps=30), str(tmp_path / 'resumed')
  )
  assert resumed['eval_per_seed'] == whole['eval_per_seed']
  assert (tmp_path / 'whole' / 'forecast.png').stat().st_size > 0


def test_programs_compile_once(tmp_path):
  """After ``build``, training and evaluation compile nothing: the number of
  XLA compilations is the same for 3 and for 6 train calls (the remainder
  call included), and equals the programs built (init, train, eval)."""
  results = []
  compiles = []

  def listener(name, *args, **kwargs):
    del args, kwargs
    if name == '/jax/core/compile/backend_compile_duration':
      compiles.append(name)

  monitoring.register_event_duration_secs_listener(listener)
  try:
    # The first run in a process also compiles a few eager ops (key setup).
    train_lib.train_and_evaluate(_config(), str(tmp_path / 'warmup'))
    counts = []
    for steps in (25, 55):
      before = len(compiles)
      results.append(
        train_lib.train_and_evaluate(
          _config(**{'train.steps': steps, 'train.checkpoint_every': 20}),
          str(tmp_path / f'steps{steps}'),
        )
      )
      counts.append(len(compiles) - before)
  finally:
    monitoring.unregister_event_duration_listener(listener)
  assert counts == [3, 3]
  assert [r['compilation']['programs'] for r in results] == [3, 3]


def test_batch_not_divisible_by_devices_is_a_config_error():
  config = _config(**{'train.batch_size': 30})
  with pytest.raises(
    validation.ConfigError,
    match=r'train.batch_size=30 .*multiple of the number of '
    r'devices \(4',
  ):
    validation.check_batch_divides_devices(config, num_devices=4)
  config = _config(**{'eval.batch_size': 50, 'eval.num_examples': 100})
  with pytest.raises(validation.ConfigError, match=r'eval.batch_size=50'):
    validation.check_batch_divides_devices(config, num_devices=4)
  validation.check_batch_divides_devices(_config(), num_devices=4)


_FOUR_DEVICES = textwrap.dedent("""
    import functools, json, sys
    import jax, numpy as np
    jax.config.update('jax_disable_most_optimizations', True)
    sys.path.insert(0, {root!r})
    from configs import vanilla_fast, stacked
    from lstm_flax import evaluation, experiment, programs, sharding
    assert jax.device_count() == 4, jax.devices()
    out = {{}}
    for name, module, seeds in (('vanilla', vanilla_fast, 1),
                                ('stacked', stacked, 2)):
      config = module.get_config()
      config.train.batch_size = 8
      config.train.steps_per_call = 20
      config.train.log_grad_norm = True
      config.num_seeds = seeds
      config.eval.num_examples = 80
      config.eval.batch_size = 40
      exp = experiment.build(config, ('train', 'eval'))
      mesh = sharding.data_mesh()
      assert mesh.size == 4
      task = exp.task
      state = exp.init()
      one_state = jax.device_put(jax.tree_util.tree_map(np.array, state),
                                 jax.devices()[0])  # a copy, before donation
      state, metrics, finite = exp.programs['train'](
          state, exp.keys.batch, exp.keys.dropout, 20)
      sharded = sharding.to_host(exp.evaluate(state.params))
      summary = evaluation.evaluate(exp, state).mean
      # The same steps on one device: no mesh, no sharding constraint.
      one = jax.jit(programs.make_train_chunk(
          programs.make_train_step(task, 8), 20))
      one_state, one_train, one_finite = one(
          one_state, exp.keys.batch, exp.keys.dropout, 20)
      one_eval = jax.jit(functools.partial(
          programs.make_evaluate(task, 80, 40), one_state.apply_fn))(
              one_state.params, exp.keys.eval)
      # The batch inside the step is split over the 4 devices.
      batch = jax.jit(lambda k: sharding.shard_batch(
          task.generate(k, 8), sharding.batch_sharding(mesh)))(
              jax.random.key(0))
      tolist = lambda tree: jax.tree_util.tree_map(
          lambda a: np.asarray(a).tolist(), tree)
      out[name] = dict(
          losses=tolist(metrics['loss']),
          one_losses=tolist(one_train['loss']),
          grad_norms=tolist(metrics['grad_norm']),
          one_grad_norms=tolist(one_train['grad_norm']),
          finite=tolist(finite), one_finite=tolist(one_finite),
          steps=tolist(state.step), one_steps=tolist(one_state.step),
          metrics=tolist(sharded[0]), one_metrics=tolist(one_eval[0]),
          ensemble=tolist(sharded[1]), one_ensemble=tolist(one_eval[1]),
          summary=summary,
          summary_of_one={{k: float(np.mean(v))
                           for k, v in one_eval[0].items()}},
          param_devices=len(jax.tree_util.tree_leaves(state.params)[0].sharding.device_set),
          param_sharding=str(jax.tree_util.tree_leaves(state.params)[0].sharding.spec),
          batch_spec=str(batch[0].sharding.spec),
          shard_rows=sorted({{s.data.shape[0] for s in batch[0].addressable_shards}}),
          shard_devices=len({{s.device for s in batch[0].addressable_shards}}),
          same_batch=bool(np.array_equal(
              np.asarray(batch[0]), np.asarray(task.generate(jax.random.key(0), 8)[0]))))
    print('RESULT' + json.dumps(out))
""")


def test_four_devices_same_batch_and_loss_curve_as_one():
  env = dict(
    os.environ,
    XLA_FLAGS='--xla_force_host_platform_device_count=4',
    JAX_PLATFORMS='cpu',
  )
  proc = subprocess.run(
    [sys.executable, '-c', _FOUR_DEVICES.format(root=ROOT)],
    env=env,
    capture_output=True,
    text=True,
    timeout=600,
    check=False,
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  out = json.loads(proc.stdout.split('RESULT', 1)[1])
  for name, r in out.items():
    seeds = 2 if name == 'stacked' else 1
    assert np.asarray(r['losses']).shape == (20, seeds), name  # (K, N)
    np.testing.assert_allclose(
      r['losses'], r['one_losses'], rtol=2e-5, atol=1e-6, err_msg=name
    )
    np.testing.assert_allclose(
      r['grad_norms'], r['one_grad_norms'], rtol=1e-4, atol=1e-6, err_msg=name
    )
    assert r['finite'] == r['one_finite'] == [True] * seeds, r
    assert r['steps'] == r['one_steps'] == [20] * seeds, r
    for metric, value in r['one_metrics'].items():  # per replica, (N,)
      assert len(value) == seeds, (name, metric)
      np.testing.assert_allclose(
        r['metrics'][metric], value, rtol=2e-5, err_msg=f'{name} {metric}'
      )
      np.testing.assert_allclose(
        r['ensemble'][metric],
        r['one_ensemble'][metric],
        rtol=2e-5,
        err_msg=f'{name} ensemble {metric}',
      )
    for metric, value in r['summary_of_one'].items():  # means, not summaries
      np.testing.assert_allclose(
        r['summary'][metric], value, rtol=2e-5, err_msg=f'{name} mean {metric}'
      )
    assert r['param_devices'] == 4, r
    assert r['param_sharding'] in ('P()', 'PartitionSpec()'), r  # replicated
    assert r['batch_spec'] in ("P('data',)", "PartitionSpec('data',)"), r
    assert r['shard_rows'] == [2] and r['shard_devices'] == 4, r
    assert r['same_batch'], r


def _free_port():
  with socket.socket() as s:
    s.bind(('localhost', 0))
    return s.getsockname()[1]


def test_two_processes_on_localhost_write_one_result(tmp_path):
  """Two CPU processes, one device each, joined by jax.distributed: the same
  results as one process, written once, by process 0."""
  args = [
    '--config=' + os.path.join(ROOT, 'configs', 'vanilla_fast.py'),
    '--config.train.steps=20',
    '--config.train.steps_per_call=10',
    '--config.train.log_every=10',
    '--config.eval.num_examples=100',
    '--config.eval.batch_size=50',
    '--compilation_cache_dir=',
  ]
  env = dict(os.environ, JAX_PLATFORMS='cpu')
  env.pop('XLA_FLAGS', None)
  port = _free_port()
  procs = [
    subprocess.Popen(
      [
        sys.executable,
        os.path.join(ROOT, 'train.py'),
        *args,
        f'--workdir={tmp_path / "two"}',
        f'--coordinator_address=localhost:{port}',
        '--num_processes=2',
        f'--process_id={i}',
      ],
      env=env,
      stdout=subprocess.PIPE,
      stderr=subprocess.STDOUT,
      text=True,
    )
    for i in range(2)
  ]
  outputs = [p.communicate(timeout=600)[0] for p in procs]
  for i, p in enumerate(procs):
    assert p.returncode == 0, f'process {i}:\n{outputs[i][-3000:]}'
  two = json.loads((tmp_path / 'two' / 'results.json').read_text())
  assert two['num_processes'] == 2 and two['num_devices'] == 2
  assert 'results.json' in outputs[0] and 'results.json' not in outputs[1]
  metrics = [
    json.loads(l)
    for l in (tmp_path / 'two' / 'metrics.jsonl').read_text().splitlines()
  ]
  assert [m['step'] for m in metrics] == [10, 20, 20]  # written once

  one = subprocess.run(
    [
      sys.executable,
      os.path.join(ROOT, 'train.py'),
      *args,
      f'--workdir={tmp_path / "one"}',
    ],
    env=env,
    capture_output=True,
    text=True,
    timeout=600,
    check=False,
  )
  assert one.returncode == 0, one.stderr[-3000:]
  one = json.loads((tmp_path / 'one' / 'results.json').read_text())
  np.testing.assert_allclose(
    two['eval']['loss'], one['eval']['loss'], rtol=2e-5
  )
  np.testing.assert_allclose(
    two['final_train_loss'], one['final_train_loss'], rtol=2e-5
  )


def test_incomplete_multi_host_flags_are_a_usage_error(tmp_path):
  proc = subprocess.run(
    [
      sys.executable,
      os.path.join(ROOT, 'train.py'),
      f'--workdir={tmp_path}',
      '--num_processes=2',
    ],
    capture_output=True,
    text=True,
    timeout=120,
    check=False,
    env=dict(os.environ, JAX_PLATFORMS='cpu'),
  )
  assert proc.returncode != 0
  assert "missing ['--coordinator_address', '--process_id']" in (
    proc.stdout + proc.stderr
  )
