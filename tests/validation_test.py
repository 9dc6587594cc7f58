"""Bad configs fail at startup with a message naming field, value and what is valid."""

import os
import subprocess
import sys

import pytest

from configs import cnn_lstm
from configs import stacked
from configs import vanilla
from lstm_flax import compile_plan
from lstm_flax import experiment
from lstm_flax import validation

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

BAD = [
  (vanilla, 'task.out_index', 5, 'must be <= 4'),
  (vanilla, 'task.out_index', -1, 'must be >= 0'),
  (vanilla, 'task.n_features', 1, 'must be >= 2'),
  (
    vanilla,
    'task.name',
    'sine',
    "known values are ['addition', 'cumsum_threshold', 'damped_sine', 'echo', 'moving_line', 'rectangles', 'sequences', 'series']",
  ),
  (
    vanilla,
    'model.name',
    'gru',
    "known values are ['cnn_lstm', 'encoder_decoder', 'lstm', 'per_step']",
  ),
  (
    vanilla,
    'model.name',
    'cnn_lstm',
    "takes frames, and task 'echo' gives sequence",
  ),
  (vanilla, 'model.layer_sizes', (), 'non-empty tuple of positive integers'),
  (
    vanilla,
    'model.layer_sizes',
    (20, 0),
    'non-empty tuple of positive integers',
  ),
  (vanilla, 'model.dtype', 'float16', "['bfloat16', 'float32']"),
  (vanilla, 'model.recurrence', 'cudnn', "['auto', 'fused', 'scan']"),
  (stacked, 'model.layer_schedule', 'diagonal', "['layerwise', 'wavefront']"),
  (vanilla, 'optimizer.learning_rate', 0.0, 'must be > 0'),
  (vanilla, 'optimizer.learning_rate', -1e-3, 'must be > 0'),
  (
    vanilla,
    'optimizer.name',
    'rmsprop',
    "known values are ['adam', 'adamw', 'sgd']",
  ),
  (vanilla, 'optimizer.schedule', 'step', "['constant', 'cosine']"),
  (vanilla, 'train.steps', 0, 'must be >= 1'),
  (vanilla, 'train.batch_size', -4, 'must be >= 1'),
  (vanilla, 'train.steps_per_call', 0, 'must be >= 1'),
  (
    vanilla,
    'train.optimize_for',
    'fast',
    "['auto', 'compile_time', 'step_time']",
  ),
  (
    vanilla,
    'eval.batch_size',
    300,
    'must divide config.eval.num_examples=1000',
  ),
  (vanilla, 'eval.num_examples', 0, 'must be >= 1'),
  (stacked, 'task.decay_max', 0.001, 'must be >= 0.01'),
  (stacked, 'task.period_max', 5, 'must be >= 10'),
  (stacked, 'task.output', 0, 'must be >= 1'),
  (cnn_lstm, 'task.size', 2, 'too small for a 2x2 conv and a 2x2 pool'),
  (
    cnn_lstm,
    'model.encoder_implementation',
    'fft',
    "['auto', 'conv', 'shifted_adds']",
  ),
  (
    cnn_lstm,
    'model.name',
    'lstm',
    "takes sequence, and task 'moving_line' gives frames",
  ),
]


@pytest.mark.parametrize('module,field,value,expected', BAD)
def test_bad_value_names_field_value_and_valid_range(
  module, field, value, expected
):
  config = module.get_config()
  section, name = field.split('.')
  with config.unlocked():
    config[section][name] = value
  with pytest.raises(validation.ConfigError) as info:
    experiment.check_config(config)  # every check train.py runs
  message = str(info.value)
  assert f'config.{field}={value!r}' in message
  assert expected in message


def test_seed_configs_are_valid():
  for module in (vanilla, stacked, cnn_lstm):
    config = module.get_config()
    validation.validate(config)
    experiment.check_config(config)


def test_unknown_task_option_lists_the_generators_options():
  config = vanilla.get_config()
  with config.unlocked():
    config.task.lenght = 5
  with pytest.raises(
    validation.ConfigError, match="echo takes no option 'lenght'"
  ):
    experiment.check_config(config)


@pytest.mark.parametrize(
  'name,value,expected',
  [
    (
      'xla_no_such_option',
      1,
      "XLA refused them (INVALID_ARGUMENT: No such compile option: 'xla_no_such_option')",
    ),
    (
      'optimization_level',
      1,
      "config.train.xla_options.optimization_level=1 is invalid: option names are XLA DebugOptions fields, starting with 'xla_'",
    ),
    ('xla_cpu_enable_fast_math', [1], 'values are bool, int, float or str'),
  ],
)
@pytest.mark.parametrize('section', ['train', 'eval'])
def test_bad_xla_options_fail_before_any_model_compiles(
  section, name, value, expected
):
  config = cnn_lstm.get_config()
  with config.unlocked():
    config[section].xla_options[name] = value
  with pytest.raises(validation.ConfigError) as info:
    experiment.check_config(config)
  assert expected.replace('config.train.', f'config.{section}.') in str(
    info.value
  )


@pytest.mark.parametrize(
  'args,expected',
  [
    (
      ['--config.task.out_index=7'],
      'config.task.out_index=7 is invalid: must be <= 4',
    ),
    (['--config.train.stpes=3'], 'Did you mean "steps"'),
    (['--config=configs/nope.py'], 'nope.py'),
  ],
)
def test_cli_exits_2_without_traceback_before_compiling(
  tmp_path, args, expected
):
  proc = subprocess.run(
    [
      sys.executable,
      os.path.join(ROOT, 'train.py'),
      f'--workdir={tmp_path}/w',
      *args,
    ],
    capture_output=True,
    text=True,
    cwd=ROOT,
    env={**os.environ, 'JAX_PLATFORMS': 'cpu'},
    timeout=120,
  )
  assert proc.returncode == 2
  assert expected in proc.stderr
  assert 'Traceback' not in proc.stderr
  assert not os.path.exists(tmp_path / 'w')  # nothing was started


@pytest.mark.parametrize(
  'goal,steps,batch,seeds,resolved',
  [
    ('auto', 2000, 1, 1, 'compile_time'),  # the vanilla seed protocol
    ('auto', 39_999, 1, 1, 'compile_time'),
    ('auto', 40_000, 1, 1, 'step_time'),
    ('auto', 2000, 32, 1, 'step_time'),  # 64,000 examples
    ('auto', 1999, 10, 2, 'compile_time'),  # 39,980 examples in all
    ('auto', 2000, 10, 2, 'step_time'),  # 40,000
    ('step_time', 10, 1, 1, 'step_time'),
    ('compile_time', 10**6, 256, 1, 'compile_time'),
  ],
)
def test_optimize_for_auto_is_compile_time_for_short_runs(
  goal, steps, batch, seeds, resolved
):
  config = vanilla.get_config()
  with config.unlocked():
    config.train.optimize_for = goal
    config.train.steps, config.train.batch_size, config.num_seeds = (
      steps,
      batch,
      seeds,
    )
  assert compile_plan.optimize_for(config) == resolved
  plan = compile_plan.make_plan(config, 'cpu')
  assert plan.goal == resolved
  # On CPU the fusion emitters are on by default; compile_time turns them off.
  emitters = plan.train_xla_options['xla_cpu_use_fusion_emitters']
  assert emitters == (resolved == 'step_time')
  assert plan.train_xla_options['xla_backend_optimization_level'] == 1
  assert plan.batch_prng == (
    'threefry_unrolled' if resolved == 'step_time' else 'threefry'
  )
  assert plan.unroll == (
    0 if resolved == 'step_time' else 1
  )  # 0: the layer's auto
  # The eval program's options never depend on it: the CPU eval defaults
  # under vanilla.py's own eval.xla_options.
  assert plan.eval_xla_options == {
    'xla_backend_optimization_level': 0,
    'xla_cpu_use_fusion_emitters': False,
  }
  assert plan.run_once_xla_options == {
    'xla_backend_optimization_level': 0,
    'xla_cpu_use_fusion_emitters': False,
  }


@pytest.mark.parametrize(
  'backend,kept,kept_eval',
  [
    (
      'cpu',
      {
        'xla_backend_optimization_level': 1,
        'xla_cpu_use_fusion_emitters': False,
      },
      {
        'xla_backend_optimization_level': 0,
        'xla_cpu_use_fusion_emitters': False,
      },
    ),
    (
      'gpu',
      {'xla_gpu_autotune_level': 0},
      {'xla_backend_optimization_level': 0},
    ),
    ('tpu', {}, {'xla_backend_optimization_level': 0}),
  ],
)
def test_xla_options_of_other_backends_are_dropped(backend, kept, kept_eval):
  """A config tuned for CPU (stacked.py turns the CPU fusion emitters off)
  compiles unchanged on a GPU, whose compiler refuses xla_cpu_* fields; the
  CPU defaults (compile_plan) apply on CPU only."""
  config = stacked.get_config()
  with config.unlocked():
    config.train.xla_options.xla_gpu_autotune_level = 0
  plan = compile_plan.make_plan(config, backend)
  assert plan.backend == backend
  assert plan.train_xla_options == kept
  assert plan.eval_xla_options == kept_eval
  assert plan.run_once_xla_options == (
    {'xla_backend_optimization_level': 0, 'xla_cpu_use_fusion_emitters': False}
    if backend == 'cpu'
    else {}
  )
  # The config's own options, less the other backends' fields.
  assert (
    compile_plan.for_backend(config.train.xla_options.to_dict(), backend)
    == {
      'cpu': {'xla_cpu_use_fusion_emitters': False},
      'gpu': {'xla_gpu_autotune_level': 0},
      'tpu': {},
    }[backend]
  )
  experiment.check_config(
    config
  )  # on this (CPU) machine: the GPU field is not sent


def test_tunings_this_xla_lacks_are_dropped_and_misspellings_still_fail(
  monkeypatch,
):
  """jax 0.11.2's CPU compiler refuses xla_cpu_use_fusion_emitters, which
  the seed configs set: they must still run there (seen on a GPU machine's
  jax, JAX_PLATFORMS=cpu)."""
  real = compile_plan._xla_refusal  # pylint: disable=protected-access

  def refusal(options):
    if any(name == 'xla_cpu_use_fusion_emitters' for name, _ in options):
      return "INVALID_ARGUMENT: No such compile option: 'xla_cpu_use_fusion_emitters'"
    return real(options)

  monkeypatch.setattr(compile_plan, '_xla_refusal', refusal)
  config = stacked.get_config()
  plan = compile_plan.make_plan(config)
  assert plan.train_xla_options == {'xla_backend_optimization_level': 1}
  assert plan.eval_xla_options == {'xla_backend_optimization_level': 0}
  assert plan.run_once_xla_options == {'xla_backend_optimization_level': 0}
  experiment.check_config(config)
  with config.unlocked():
    config.train.xla_options.xla_use_fusion_emiters = (
      False  # not a tuning we know
    )
  with pytest.raises(validation.ConfigError, match="'xla_use_fusion_emiters'"):
    experiment.check_config(config)


def _config_from_command_line(*overrides, config='configs/stacked.py'):
  """The config train.py would get from ``--config=... --config.a.b=v``
  (ml_collections parses 'nan' and 'inf' as floats)."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top

  argv = ['train.py', f'--config={os.path.join(ROOT, config)}', *overrides]
  flag_values = flags.FlagValues()
  config_flags.DEFINE_config_file(
    'config', None, flag_values=flag_values, sys_argv=argv
  )
  flag_values(argv)
  return flag_values.config


@pytest.mark.parametrize(
  'field,value,expected',
  [
    # NaN passed every bound: it turned clipping off, or trained to NaN metrics.
    ('optimizer.grad_clip_norm', 'nan', 'must be a number, not NaN'),
    ('optimizer.learning_rate', 'inf', 'must be finite'),
    ('optimizer.learning_rate', 'nan', 'must be a number, not NaN'),
    ('optimizer.eps', 'nan', 'must be a number, not NaN'),
    ('optimizer.momentum', 'nan', 'must be a number, not NaN'),
    ('optimizer.final_lr_fraction', 'nan', 'must be a number, not NaN'),
    ('optimizer.weight_decay', 'inf', 'must be finite'),
    ('task.decay_min', 'nan', 'must be a number, not NaN'),
    ('task.decay_max', 'inf', 'must be finite'),
    ('task.a', 'nan', 'must be a number, not NaN'),
    ('task.b', '-inf', 'must be finite'),
  ],
)
def test_nan_and_inf_from_the_command_line_are_config_errors(
  field, value, expected
):
  config = _config_from_command_line(f'--config.{field}={value}')
  with pytest.raises(validation.ConfigError) as info:
    experiment.check_config(config)  # every check train.py runs
  assert f'config.{field}={float(value)!r} is invalid: {expected}' in str(
    info.value
  )


def _float_fields(config, prefix=''):
  """Dotted names of every float field, xla_options aside."""
  for name, value in config.items():
    if name == 'xla_options':
      continue
    if hasattr(value, 'items'):
      yield from _float_fields(value, f'{prefix}{name}.')
    elif isinstance(value, float):
      yield f'{prefix}{name}'


_CONFIG_FILES = sorted(
  n
  for n in os.listdir(os.path.join(ROOT, 'configs'))
  if n.endswith('.py') and not n.startswith('_')
)


@pytest.mark.parametrize('config_file', _CONFIG_FILES)
def test_every_float_field_of_every_config_refuses_nan_and_inf(
  config_file, tmp_path
):
  """A guard for fields added later: each one must go through number()."""
  overrides = []
  if config_file == 'series.py':  # the data-file configs need a file
    data = tmp_path / 'data.csv'
    data.write_text('x\n' + ''.join(f'{i % 7}.5\n' for i in range(300)))
    overrides = [f'--config.task.path={data}', '--config.task.columns=x']
  elif config_file == 'sequences.py':
    import numpy as np  # pylint: disable=g-import-not-at-top

    data = tmp_path / 'data.npz'
    np.savez(data, x=np.zeros((60, 4, 2), np.float32), y=np.arange(60) % 3)
    overrides = [f'--config.task.path={data}']
  load = lambda: _config_from_command_line(
    *overrides, config=f'configs/{config_file}'
  )
  base = load()
  experiment.check_config(base)  # valid as it is
  fields = list(_float_fields(base))
  assert 'optimizer.learning_rate' in fields
  for field in fields:
    for bad in (float('nan'), float('inf')):
      config = load()
      section, name = field.rsplit('.', 1)
      with config.unlocked():
        config[section][name] = bad
      with pytest.raises(validation.ConfigError) as info:
        experiment.check_config(config)
      assert f'config.{field}={bad!r}' in str(info.value), field


def test_number_allows_inf_only_when_asked_and_ints_of_any_size():
  validation.number('x', float('inf'), 0, allow_inf=True)
  validation.number('x', 10**400, 0)  # too big for a float, still finite
  with pytest.raises(validation.ConfigError, match='not NaN'):
    validation.number('x', float('nan'), allow_inf=True)
  with pytest.raises(
    validation.ConfigError, match=r'config.x=-inf is invalid: must be >= 0'
  ):
    validation.number('x', float('-inf'), 0, allow_inf=True)
  import numpy as np  # pylint: disable=g-import-not-at-top

  with pytest.raises(validation.ConfigError, match='not NaN'):
    validation.number('x', np.float32('nan'))
