"""Config checks that run before anything is built or compiled.

Every failure raises :class:`ConfigError` naming the field, its value and
what would be valid; ``train.py`` prints it and exits with status 2.
"""

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


def number(field, value, low=None, high=None, low_open=False, allow_inf=False):
  """A real number in [low, high] (or (low, high] with ``low_open``): never
  NaN (it passes every comparison), and finite unless ``allow_inf``."""
  if isinstance(value, bool) or not isinstance(value, numbers.Real):
    _fail(field, value, 'must be a number')
  if not isinstance(
    value, numbers.Integral
  ):  # ints are finite (and may not fit a float)
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


def options_of(
  field, options, function, exclude=('key', 'batch_size', 'offset')
):
  """Every key of ``options`` is a keyword of ``function``."""
  accepted = set(inspect.signature(function).parameters) - set(exclude)
  for name in options:
    if name not in accepted:
      _fail(
        f'{field}.{name}',
        options[name],
        f'{function.__name__} takes no option {name!r}; its options are '
        f'{sorted(accepted)}',
      )


def validate(config):
  """Checks the fields every experiment has (name, seeds, optimizer, train,
  eval); raises ConfigError.  The task's and model's own fields are checked
  where they are built (``experiment.check_config`` runs every check)."""
  _check_run_fields(config)
  _check_optimizer(config.optimizer, config.train.steps)
  _check_train(config.train)
  for section in ('train', 'eval'):
    _check_xla_option_names(section, config[section].xla_options)
  _check_eval(config.eval)


def _check_run_fields(config):
  """The run's name and seeds."""
  if not isinstance(config.name, str) or not config.name:
    _fail('name', config.name, 'must be a non-empty string')
  integer('seed', config.seed, 0, 2**32 - 1)
  integer('num_seeds', config.num_seeds, 1, 4096)
  if config.seed + config.num_seeds > 2**32:
    _fail(
      'num_seeds',
      config.num_seeds,
      f'seed + num_seeds must be <= 2**32 (seed={config.seed})',
    )


def _check_optimizer(opt, train_steps):
  """``config.optimizer``; a cosine warmup must end before ``train_steps``."""
  choice('optimizer.name', opt.name, ('adam', 'adamw', 'sgd'))
  number('optimizer.learning_rate', opt.learning_rate, 0, low_open=True)
  choice('optimizer.schedule', opt.schedule, ('constant', 'cosine'))
  integer('optimizer.warmup_steps', opt.warmup_steps, 0)
  if opt.warmup_steps >= train_steps and opt.schedule == 'cosine':
    _fail(
      'optimizer.warmup_steps',
      opt.warmup_steps,
      f'must be < config.train.steps={train_steps}',
    )
  number('optimizer.final_lr_fraction', opt.final_lr_fraction, 0, 1)
  number('optimizer.grad_clip_norm', opt.grad_clip_norm, 0)
  number('optimizer.eps', opt.eps, 0, low_open=True)
  number('optimizer.weight_decay', opt.weight_decay, 0)
  number('optimizer.momentum', opt.momentum, 0, 1)
  if opt.momentum >= 1:
    _fail('optimizer.momentum', opt.momentum, 'must be < 1')


def _check_train(train):
  """``config.train`` except its xla_options."""
  integer('train.steps', train.steps, 1)
  integer('train.batch_size', train.batch_size, 1)
  integer('train.steps_per_call', train.steps_per_call, 1)
  integer('train.checkpoint_every', train.checkpoint_every, 0)
  integer('train.keep_checkpoints', train.keep_checkpoints, 1)
  integer('train.log_every', train.log_every, 0)
  choice(
    'train.optimize_for',
    train.optimize_for,
    ('auto', 'step_time', 'compile_time'),
  )
  if not isinstance(train.log_grad_norm, bool):
    _fail('train.log_grad_norm', train.log_grad_norm, 'must be True or False')
  if not isinstance(train.tensorboard, bool):
    _fail('train.tensorboard', train.tensorboard, 'must be True or False')
  if not isinstance(train.init_from, str):
    _fail(
      'train.init_from',
      train.init_from,
      'must be a path: a workdir or a Keras/PyTorch weights file',
    )


def _check_eval(ev):
  """``config.eval`` except its xla_options."""
  integer('eval.num_examples', ev.num_examples, 1)
  integer('eval.batch_size', ev.batch_size, 1, ev.num_examples)
  if ev.num_examples % ev.batch_size:
    _fail(
      'eval.batch_size',
      ev.batch_size,
      f'must divide config.eval.num_examples={ev.num_examples}',
    )
  integer('eval.seed', ev.seed, 0, 2**32 - 1)
  integer('eval.figure_examples', ev.figure_examples, 0, 64)
  integer('eval.predict_examples', ev.predict_examples, 1, 10000)
  integer('eval.every_steps', ev.every_steps, 0)
  if not isinstance(ev.best_metric, str) or not ev.best_metric:
    _fail('eval.best_metric', ev.best_metric, "must name a metric, e.g. 'loss'")
  choice('eval.best_mode', ev.best_mode, ('min', 'max'))
  if not isinstance(ev.final_from_best, bool):
    _fail('eval.final_from_best', ev.final_from_best, 'must be True or False')
  if ev.final_from_best and not ev.every_steps:
    _fail(
      'eval.final_from_best',
      ev.final_from_best,
      'needs config.eval.every_steps > 0 (the best checkpoint comes from '
      'validation during training)',
    )


def check_batch_divides_devices(config, num_devices=None):
  """Batches are split evenly over the data-parallel devices."""
  import jax  # pylint: disable=g-import-not-at-top

  num_devices = num_devices or jax.device_count()
  for field, value in (
    ('train.batch_size', config.train.batch_size),
    ('eval.batch_size', config.eval.batch_size),
  ):
    if value % num_devices:
      _fail(
        field,
        value,
        f'must be a multiple of the number of devices ({num_devices}: '
        f'the batch is split evenly over them; {jax.devices()[0].platform}'
        f' devices here)',
      )


def _check_xla_option_names(section, options):
  """Names and value types only; compile_plan asks XLA itself."""
  options = options.to_dict() if hasattr(options, 'to_dict') else dict(options)
  for name, value in options.items():
    if not name.startswith('xla_'):
      _fail(
        f'{section}.xla_options.{name}',
        value,
        "option names are XLA DebugOptions fields, starting with 'xla_'",
      )
    if not isinstance(value, (bool, int, float, str)):
      _fail(
        f'{section}.xla_options.{name}',
        value,
        'values are bool, int, float or str',
      )
