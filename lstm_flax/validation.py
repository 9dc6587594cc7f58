"""Config checks that run before anything is built or compiled.

Every failure raises :class:`ConfigError` naming the field, its value and
what would be valid; ``train.py`` prints it and exits with status 2.
"""

import functools
import inspect
import math
import numbers


class ConfigError(ValueError):
  """A config field holds a value that cannot work."""


def _fail(field, value, valid):
  raise ConfigError(f'config.{field}={value!r} is invalid: {valid}')


fail = _fail  # public: other modules report their own field errors


def integer(field, value, low=None, high=None):
  """An int (not a bool) in [low, high]."""
  if isinstance(value, bool) or not isinstance(value, numbers.Integral):
    _fail(field, value, 'must be an integer')
  if low is not None and value < low:
    _fail(field, value, f'must be >= {low}')
  if high is not None and value > high:
    _fail(field, value, f'must be <= {high}')


def number(field, value, low=None, high=None, low_open=False,
           allow_inf=False):
  """A real number in [low, high] (or (low, high] with ``low_open``): never
  NaN (it passes every comparison), and finite unless ``allow_inf``."""
  if isinstance(value, bool) or not isinstance(value, numbers.Real):
    _fail(field, value, 'must be a number')
  if not isinstance(value, numbers.Integral):  # ints are finite (and may not fit a float)
    if math.isnan(value):
      _fail(field, value, 'must be a number, not NaN')
    if math.isinf(value) and not allow_inf:
      _fail(field, value, 'must be finite')
  if low is not None and (value <= low if low_open else value < low):
    _fail(field, value, f'must be {">" if low_open else ">="} {low}')
  if high is not None and value > high:
    _fail(field, value, f'must be <= {high}')


def choice(field, value, known):
  if value not in known:
    _fail(field, value, f'known values are {sorted(known)}')


def options_of(field, options, function, exclude=('key', 'batch_size', 'offset')):
  """Every key of ``options`` is a keyword of ``function``."""
  accepted = set(inspect.signature(function).parameters) - set(exclude)
  for name in options:
    if name not in accepted:
      _fail(f'{field}.{name}', options[name],
            f'{function.__name__} takes no option {name!r}; its options are '
            f'{sorted(accepted)}')


def validate(config):
  """Checks every field of an experiment config; raises ConfigError."""
  # Imported here: tasks and models import this module for their own checks.
  from lstm_flax import models  # pylint: disable=g-import-not-at-top
  from lstm_flax import tasks  # pylint: disable=g-import-not-at-top

  if not isinstance(config.name, str) or not config.name:
    _fail('name', config.name, 'must be a non-empty string')
  integer('seed', config.seed, 0, 2**32 - 1)
  integer('num_seeds', config.num_seeds, 1, 4096)
  if config.seed + config.num_seeds > 2**32:
    _fail('num_seeds', config.num_seeds,
          f'seed + num_seeds must be <= 2**32 (seed={config.seed})')

  task = tasks.make_task(config.task)          # checks config.task.*
  models.check_model_config(config.model, config.task, task.input_kind,
                            task.output_kind, task.output_steps)

  opt = config.optimizer
  choice('optimizer.name', opt.name, ('adam', 'adamw', 'sgd'))
  number('optimizer.learning_rate', opt.learning_rate, 0, low_open=True)
  choice('optimizer.schedule', opt.schedule, ('constant', 'cosine'))
  integer('optimizer.warmup_steps', opt.warmup_steps, 0)
  if opt.warmup_steps >= config.train.steps and opt.schedule == 'cosine':
    _fail('optimizer.warmup_steps', opt.warmup_steps,
          f'must be < config.train.steps={config.train.steps}')
  number('optimizer.final_lr_fraction', opt.final_lr_fraction, 0, 1)
  number('optimizer.grad_clip_norm', opt.grad_clip_norm, 0)
  number('optimizer.eps', opt.eps, 0, low_open=True)
  number('optimizer.weight_decay', opt.weight_decay, 0)
  number('optimizer.momentum', opt.momentum, 0, 1)
  if opt.momentum >= 1:
    _fail('optimizer.momentum', opt.momentum, 'must be < 1')

  train = config.train
  integer('train.steps', train.steps, 1)
  integer('train.batch_size', train.batch_size, 1)
  integer('train.steps_per_call', train.steps_per_call, 1)
  integer('train.checkpoint_every', train.checkpoint_every, 0)
  integer('train.keep_checkpoints', train.keep_checkpoints, 1)
  choice('train.optimize_for', train.optimize_for, OPTIMIZE_FOR)
  _check_xla_options(config)

  ev = config.eval
  integer('eval.num_examples', ev.num_examples, 1)
  integer('eval.batch_size', ev.batch_size, 1, ev.num_examples)
  if ev.num_examples % ev.batch_size:
    _fail('eval.batch_size', ev.batch_size,
          f'must divide config.eval.num_examples={ev.num_examples}')
  integer('eval.seed', ev.seed, 0, 2**32 - 1)
  integer('eval.figure_examples', ev.figure_examples, 0, 64)
  integer('eval.predict_examples', ev.predict_examples, 1, 10000)
  check_batch_divides_devices(config)
  return task


def check_batch_divides_devices(config, num_devices=None):
  """Batches are split evenly over the data-parallel devices."""
  import jax  # pylint: disable=g-import-not-at-top
  num_devices = num_devices or jax.device_count()
  for field, value in (('train.batch_size', config.train.batch_size),
                       ('eval.batch_size', config.eval.batch_size)):
    if value % num_devices:
      _fail(field, value,
            f'must be a multiple of the number of devices ({num_devices}: '
            f'the batch is split evenly over them; {jax.devices()[0].platform}'
            f' devices here)')


OPTIMIZE_FOR = ('auto', 'step_time', 'compile_time')
# Below this many training examples (steps x batch x num_seeds), 'auto'
# compiles the train program for compile time.  Measured on echo (T=5, a
# 2-core CPU): the compile_time program compiled 1.0-1.3 s faster and its steps
# took 31 -> 62 us at batch 1, 234 -> 257 us at batch 32, 1.55 -> 1.82 ms at
# batch 256: it stays ahead for ~42,000 steps at batch 1 (42,000 examples),
# ~56,000 at batch 32, ~3,800 at batch 256 (~1M examples).
SHORT_RUN_EXAMPLES = 40_000


def optimize_for(config) -> str:
  """``config.train.optimize_for`` with 'auto' resolved: 'step_time' or
  'compile_time'."""
  goal = config.train.optimize_for
  if goal != 'auto':
    return goal
  examples = config.train.steps * config.train.batch_size * config.num_seeds
  return 'compile_time' if examples < SHORT_RUN_EXAMPLES else 'step_time'


# DebugOptions fields that only one backend's compiler accepts, by prefix.
_BACKEND_PREFIXES = {'cpu': 'xla_cpu_', 'gpu': 'xla_gpu_', 'tpu': 'xla_tpu_'}


# Speed tunings set by our configs that not every XLA has (jax 0.11.2's CPU
# compiler refuses xla_cpu_use_fusion_emitters; 0.10.2's takes it): dropped
# where the installed XLA refuses them, so the configs run on either.
_TUNINGS = frozenset({'xla_cpu_use_fusion_emitters'})


def for_backend(options: dict, backend: str | None = None) -> dict:
  """``options`` without the fields of other backends' compilers (an
  ``xla_cpu_*`` option on a GPU, say), which XLA would refuse, and without
  the ``_TUNINGS`` this XLA lacks: the seed configs are tuned for CPU and run
  unchanged elsewhere.  ``backend``: ``jax.default_backend()`` unless given
  (the installed XLA is asked about ``_TUNINGS`` only for that one)."""
  import jax  # pylint: disable=g-import-not-at-top
  here = backend in (None, jax.default_backend())   # else XLA cannot be asked
  backend = backend or jax.default_backend()
  foreign = tuple(prefix for name, prefix in _BACKEND_PREFIXES.items()
                  if name != backend)
  return {k: v for k, v in options.items()
          if not k.startswith(foreign)
          and not (here and k in _TUNINGS and _xla_refusal(((k, v),)))}


def xla_options(config, section: str = 'train', backend: str | None = None) -> dict:
  """``config.<section>.xla_options`` as the dict ``Lowered.compile`` takes on
  ``backend`` (see ``for_backend``); for a train program optimized for
  compile time, without XLA's CPU fusion emitters (they take most of the
  compile time of small programs)."""
  return for_backend(_all_xla_options(config, section), backend)


def _all_xla_options(config, section: str) -> dict:
  options = config[section].xla_options
  options = dict(options.to_dict() if hasattr(options, 'to_dict') else options)
  if section == 'train' and optimize_for(config) == 'compile_time':
    options['xla_cpu_use_fusion_emitters'] = False
  return options


def _check_xla_options(config):
  """Names and values first, then XLA itself on an empty program (~20 ms),
  so that a misspelt option fails here rather than after tracing a model."""
  for section in ('train', 'eval'):
    for name, value in _all_xla_options(config, section).items():
      if not name.startswith('xla_'):
        _fail(f'{section}.xla_options.{name}', value,
              "option names are XLA DebugOptions fields, starting with 'xla_'")
      if not isinstance(value, (bool, int, float, str)):
        _fail(f'{section}.xla_options.{name}', value,
              'values are bool, int, float or str')
    options = xla_options(config, section)
    refusal = _xla_refusal(tuple(sorted(options.items())))
    if refusal:
      _fail(f'{section}.xla_options', options, f'XLA refused them ({refusal})')


@functools.lru_cache(maxsize=None)
def _xla_refusal(options) -> str:
  """XLA's error compiling an empty program with ``options``, '' if none
  (once per process and option set)."""
  import jax  # pylint: disable=g-import-not-at-top
  try:
    jax.jit(lambda: 0).lower().compile(dict(options))
  except Exception as e:  # pylint: disable=broad-except
    return str(e).splitlines()[0] if str(e) else type(e).__name__
  return ''
