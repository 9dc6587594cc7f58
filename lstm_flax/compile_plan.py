"""How a run's programs compile: every backend- and size-dependent choice, made once.

``make_plan(config, backend)`` resolves, for one config on one backend:
whether the train program is built for step time or compile time, the LSTM
loop's unroll, which Threefry implementation draws training batches, the
XLA options of each program, the CNN encoder's implementation and buffer
donation.  The run logs the plan in one line and writes it to results.json;
nothing else in the package decides these things.

CPU-only choices (XLA's CPU options, the CNN encoder's shifted adds) are
defaults on CPU only; GPU and TPU get XLA's defaults unless a config asks.
"""

import dataclasses
import functools
from typing import Any, Dict

import jax

from lstm_flax import validation

OPTIMIZE_FOR = ('auto', 'step_time', 'compile_time')
# Below this many training examples (steps x batch x num_seeds), 'auto'
# builds the train program for compile time: compiling dominates such runs
# (docs/performance.md has the measurements behind the threshold).
SHORT_RUN_EXAMPLES = 40_000

# CPU defaults (a config's xla_options override them).  Train: -O1 compiles
# faster than XLA's -O3 and its steps run as fast.  Eval runs once: no
# fusion emitters.  Init and predict run once and briefly: -O0.
_CPU_TRAIN = {
  'xla_backend_optimization_level': 1,
  'xla_cpu_use_fusion_emitters': True,
}
_CPU_EVAL = {
  'xla_backend_optimization_level': 1,
  'xla_cpu_use_fusion_emitters': False,
}
_CPU_RUN_ONCE = {
  'xla_backend_optimization_level': 0,
  'xla_cpu_use_fusion_emitters': False,
}

# DebugOptions fields that only one backend's compiler accepts, by prefix.
_BACKEND_PREFIXES = {'cpu': 'xla_cpu_', 'gpu': 'xla_gpu_', 'tpu': 'xla_tpu_'}
# Speed tunings that not every XLA has: dropped where the installed one
# refuses them, so the same config runs on any jax version.
_TUNINGS = frozenset({'xla_cpu_use_fusion_emitters'})


@dataclasses.dataclass(frozen=True)
class CompilePlan:
  """The resolved compile-time choices of one run (see the module docstring)."""

  backend: str
  goal: str  # 'step_time' or 'compile_time'
  unroll: int  # model.unroll as built (0: the layer's auto)
  batch_prng: str  # 'threefry_unrolled' or 'threefry' (prng.py)
  encoder_implementation: str  # cnn_lstm's frame encoder: 'shifted_adds'/'conv'
  train_xla_options: Dict[str, Any]
  eval_xla_options: Dict[str, Any]
  run_once_xla_options: Dict[str, Any]  # init and predict
  donate_state: bool  # the train program updates the state in place

  @property
  def unrolled_batch_keys(self) -> bool:
    return self.batch_prng == 'threefry_unrolled'

  def model_config(self, model_config) -> Dict[str, Any]:
    """``config.model`` as a dict with the plan's unroll and encoder."""
    options = dict(model_config)
    options['unroll'] = self.unroll
    if 'encoder_implementation' in options:
      options['encoder_implementation'] = self.encoder_implementation
    return options

  def to_json(self) -> Dict[str, Any]:
    return dataclasses.asdict(self)

  def describe(self) -> str:
    """The plan in one log line."""
    options = lambda o: (
      ','.join(f'{k}={v}' for k, v in sorted(o.items())) or '-'
    )
    return (
      f'compile plan ({self.backend}): {self.goal.replace("_", " ")}, '
      f'unroll={self.unroll or "auto"}, batch keys {self.batch_prng}, '
      f'encoder {self.encoder_implementation}, train xla '
      f'{options(self.train_xla_options)}, eval xla '
      f'{options(self.eval_xla_options)}'
    )


def optimize_for(config) -> str:
  """``config.train.optimize_for`` with 'auto' resolved by the run's size."""
  goal = config.train.optimize_for
  if goal != 'auto':
    return goal
  examples = config.train.steps * config.train.batch_size * config.num_seeds
  return 'compile_time' if examples < SHORT_RUN_EXAMPLES else 'step_time'


def make_plan(config, backend: str | None = None) -> CompilePlan:
  """The compile plan of ``config`` on ``backend`` (default: JAX's).

  Raises ``validation.ConfigError`` when XLA refuses a config's options.
  """
  backend = backend or jax.default_backend()
  goal = optimize_for(config)
  on_cpu = backend == 'cpu'
  unroll = config.model.unroll
  if goal == 'compile_time' and not unroll:
    unroll = 1  # one loop body to compile, not T copies
  train = {**(_CPU_TRAIN if on_cpu else {}), **_options(config.train)}
  if goal == 'compile_time' and on_cpu:
    train['xla_cpu_use_fusion_emitters'] = False  # most of a small compile
  encoder = encoder_implementation(
    config.model.get('encoder_implementation', 'auto'), backend
  )
  plan = CompilePlan(
    backend=backend,
    goal=goal,
    unroll=unroll,
    batch_prng='threefry_unrolled' if goal == 'step_time' else 'threefry',
    encoder_implementation=encoder,
    train_xla_options=for_backend(train, backend),
    eval_xla_options=for_backend(
      {**(_CPU_EVAL if on_cpu else {}), **_options(config.eval)}, backend
    ),
    run_once_xla_options=for_backend(_CPU_RUN_ONCE if on_cpu else {}, backend),
    donate_state=True,
  )
  if backend == jax.default_backend():
    for section, options in (
      ('train', plan.train_xla_options),
      ('eval', plan.eval_xla_options),
    ):
      refusal = _xla_refusal(tuple(sorted(options.items())))
      if refusal:
        validation.fail(
          f'{section}.xla_options', options, f'XLA refused them ({refusal})'
        )
  return plan


def encoder_implementation(requested: str, backend: str | None = None) -> str:
  """The CNN frame encoder: 'auto' is shifted adds on CPU (a fused
  conv-ReLU-pool), lax.conv elsewhere."""
  if requested != 'auto':
    return requested
  return (
    'shifted_adds' if (backend or jax.default_backend()) == 'cpu' else 'conv'
  )


def _options(section) -> Dict[str, Any]:
  options = section.xla_options
  return dict(options.to_dict() if hasattr(options, 'to_dict') else options)


def for_backend(
  options: Dict[str, Any], backend: str | None = None
) -> Dict[str, Any]:
  """``options`` without other backends' fields (an ``xla_cpu_*`` option on
  a GPU, which XLA would refuse) and without the ``_TUNINGS`` the installed
  XLA lacks (asked only when ``backend`` is JAX's own)."""
  here = backend in (None, jax.default_backend())
  backend = backend or jax.default_backend()
  foreign = tuple(
    prefix for name, prefix in _BACKEND_PREFIXES.items() if name != backend
  )
  return {
    k: v
    for k, v in options.items()
    if not k.startswith(foreign)
    and not (here and k in _TUNINGS and _xla_refusal(((k, v),)))
  }


@functools.lru_cache(maxsize=None)
def _xla_refusal(options) -> str:
  """XLA's error compiling an empty program with ``options``, '' if none."""
  try:
    jax.jit(lambda: 0).lower().compile(dict(options))
  except Exception as e:  # pylint: disable=broad-except
    return str(e).splitlines()[0] if str(e) else type(e).__name__
  return ''
