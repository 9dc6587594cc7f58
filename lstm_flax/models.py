"""Linen models built on the LSTM layer.  Every model returns raw outputs
(logits or regression values); the task's loss applies the activation.

Dense and Conv layers use Keras' default initialisers (Glorot-uniform kernel,
zero bias), like the seed's Keras models.
"""

import dataclasses
import inspect
from typing import Any, Dict, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from lstm_flax import compile_plan
from lstm_flax import conv_pool
from lstm_flax import validation as v
from lstm_flax.lstm import LSTM
from lstm_flax.lstm import MERGE_MODES
from lstm_flax.lstm import RECURRENCES
from lstm_flax.lstm import RECURRENT_LAYERS
from lstm_flax.lstm import Bidirectional
from lstm_flax.lstm import LSTMWeights
from lstm_flax.lstm import lstm_stack_wavefront
from lstm_flax.lstm import use_fused_recurrence

glorot_uniform = nn.initializers.glorot_uniform()
LAYER_SCHEDULES = ('wavefront', 'layerwise')


@dataclasses.dataclass(frozen=True)
class RecurrentOptions:
  """How a model's recurrent layers run (one object shared by every model).

  unroll: time steps per loop iteration (0: auto, see ``lstm.LSTM``).
  dtype: the matmuls' dtype (None: float32).
  input_projection: ``x @ kernel`` 'hoisted' before the loop, 'in_scan' per
    step, or 'auto' (``lstm.hoist_input_projection``).
  recurrence: 'fused' (``recurrence.py``), 'scan' (``nn.scan``) or 'auto'.
  layer_schedule: stacked fused LSTMs as one 'wavefront' loop or one loop
    per layer ('layerwise'); the same parameters either way.
  dropout, recurrent_dropout: every layer's (Keras' semantics), drawn from
    the 'dropout' rng only when the model is called with ``train=True``.
  """

  unroll: int = 0
  dtype: Optional[Any] = None
  input_projection: str = 'auto'
  recurrence: str = 'auto'
  layer_schedule: str = 'wavefront'
  dropout: float = 0.0
  recurrent_dropout: float = 0.0

  def layer_options(self, train: bool, cell: str = 'lstm') -> Dict[str, Any]:
    """Keyword arguments of one ``lstm.LSTM`` (or GRU) layer."""
    options = {
      'unroll': self.unroll,
      'dtype': self.dtype,
      'input_projection': self.input_projection,
      'dropout': self.dropout,
      'recurrent_dropout': self.recurrent_dropout,
      'deterministic': not train,
    }
    if cell == 'lstm':
      options['recurrence'] = self.recurrence
    return options


RECURRENT_OPTIONS = tuple(f.name for f in dataclasses.fields(RecurrentOptions))


def split_inputs(inputs):
  """(x (B, T, F), seq_lengths (B,) or None) of a model's inputs: an array,
  or ``{'x': x, 'lengths': lengths}`` for right-padded sequences."""
  if isinstance(inputs, dict):
    return inputs['x'], inputs['lengths']
  return inputs, None


def lstm_stack(
  inputs,
  layer_sizes,
  names,
  return_sequences,
  layer_schedule,
  seq_lengths=None,
  **options,
):
  """LSTM layers ``layer_sizes`` (submodules ``names``) one into the next,
  inside the calling module; the last returns its whole sequence or, without
  ``return_sequences``, its final output.  ``layer_schedule``: 'wavefront'
  runs two or more fused layers (``lstm.use_fused_recurrence``) as one loop
  (``lstm.lstm_stack_wavefront``; same parameters), 'layerwise' one loop
  per layer.  ``options``: the layers' ``unroll``, ``dtype``,
  ``input_projection``, ``recurrence``, ``dropout``, ``recurrent_dropout``
  and ``deterministic`` (dropout off); layers that drop, or read
  right-padded sequences (``seq_lengths`` (B,)), run one loop each (the
  wavefront has no masks).
  """
  if layer_schedule not in LAYER_SCHEDULES:
    raise ValueError(
      f'layer_schedule={layer_schedule!r}: use one of {list(LAYER_SCHEDULES)}'
    )
  dropping = not options.get('deterministic', True) and (
    options.get('dropout', 0.0) or options.get('recurrent_dropout', 0.0)
  )
  if (
    layer_schedule == 'wavefront'
    and len(layer_sizes) > 1
    and not dropping
    and seq_lengths is None
    and use_fused_recurrence(
      options.get('recurrence', 'auto'),
      options.get('unroll', 0),
      inputs.shape[1],
    )
  ):
    weights, features = [], inputs.shape[-1]
    for units, name in zip(layer_sizes, names):
      weights.append(LSTMWeights(units, name=name)(features))
      features = units
    return lstm_stack_wavefront(
      inputs,
      weights,
      return_sequences,
      options.get('unroll', 0),
      options.get('dtype'),
      options.get('input_projection', 'auto'),
    )
  x = inputs
  for i, (units, name) in enumerate(zip(layer_sizes, names)):
    x = LSTM(
      units,
      return_sequences=return_sequences or i < len(names) - 1,
      name=name,
      **options,
    )(x, seq_lengths=seq_lengths)
  return x


class StackedLSTM(nn.Module):
  """LSTM(layer_sizes[0]) -> ... -> LSTM(layer_sizes[-1]) -> Dense(num_outputs).

  Every layer but the last returns its whole sequence into the next; the
  last returns its final output.  One layer is the seed's vanilla LSTM.

  ``recurrent``: how the LSTM layers run (``RecurrentOptions``).
  ``highway`` n > 0: a linear autoregression on the last n input steps of
  every input feature, ``Dense(num_outputs)`` named ``highway`` of the
  flattened (B, n * F) inputs, added to the output (LSTNet's highway: the
  recurrent path learns what the linear model misses).

  inputs (B, T, F), or ``{'x': (B, T, F), 'lengths': (B,)}`` for right-padded
  sequences -> outputs (B, num_outputs).
  """

  layer_sizes: Sequence[int]
  num_outputs: int
  recurrent: RecurrentOptions = RecurrentOptions()
  highway: int = 0  # 0: none; n: AR on the last n steps

  @nn.compact
  def __call__(self, inputs, train: bool = False):
    inputs, seq_lengths = split_inputs(inputs)
    x = lstm_stack(
      inputs,
      self.layer_sizes,
      [f'lstm_{i}' for i in range(len(self.layer_sizes))],
      False,
      self.recurrent.layer_schedule,
      seq_lengths,
      **self.recurrent.layer_options(train),
    )
    outputs = nn.Dense(
      self.num_outputs, kernel_init=glorot_uniform, name='dense'
    )(x)
    if self.highway:
      if seq_lengths is not None:
        raise ValueError(
          'StackedLSTM.highway reads the last input steps, which right-'
          'padded sequences do not have: set model.highway=0'
        )
      if self.highway > inputs.shape[1]:
        raise ValueError(
          f'StackedLSTM.highway={self.highway} is longer than '
          f'the inputs ({inputs.shape[1]} steps)'
        )
      recent = inputs[:, -self.highway :, :].reshape(inputs.shape[0], -1)
      outputs = outputs + nn.Dense(
        self.num_outputs, kernel_init=glorot_uniform, name='highway'
      )(recent)
    return outputs


def pooled_size(size, kernel_size, pool_size):
  """Side of the feature map after a VALID conv and a floor-mode max-pool."""
  return (size - kernel_size + 1) // pool_size


class FrameEncoder(nn.Module):
  """Conv(features, k x k, stride 1, VALID, ReLU) -> max-pool(p x p, stride p) -> flatten.

  Parameters are in ``nn.Conv``'s layout: ``kernel`` (k, k, C, features),
  ``bias`` (features,).  ``implementation='shifted_adds'`` computes conv, ReLU
  and pool together on the pooled grid with a hand-written gradient
  (``conv_pool.py``; for a tiny kernel with few channels far cheaper on CPU
  than XLA's convolution and its gradient); ``'conv'`` uses ``lax.conv`` and a
  reshape max-pool.  Both give the
  same numbers as ``nn.Conv`` + ``nn.max_pool``.

  frames (B, H, W, C) -> features (B, Hp * Wp * features), flattened (row, col, feature).
  """

  features: int = 2
  kernel_size: int = 2
  pool_size: int = 2
  implementation: str = 'shifted_adds'

  @nn.compact
  def __call__(self, frames):
    _, height, width, channels = frames.shape
    k, p = self.kernel_size, self.pool_size
    kernel = self.param(
      'kernel', glorot_uniform, (k, k, channels, self.features)
    )
    bias = self.param('bias', nn.initializers.zeros, (self.features,))
    hp, wp = pooled_size(height, k, p), pooled_size(width, k, p)
    if self.implementation == 'shifted_adds':
      y = conv_pool.conv_relu_pool(frames, kernel, bias, p)
    elif self.implementation == 'conv':
      y = (
        jax.lax.conv_general_dilated(
          frames,
          kernel,
          (1, 1),
          'VALID',
          dimension_numbers=('NHWC', 'HWIO', 'NHWC'),
        )
        + bias
      )
      y = nn.relu(y[:, : hp * p, : wp * p])
      y = y.reshape(-1, hp, p, wp, p, self.features).max(axis=(2, 4))
    else:
      raise ValueError(
        f"FrameEncoder.implementation must be 'shifted_adds' or "
        f"'conv'; got {self.implementation!r}"
      )
    return y.reshape(y.shape[0], hp * wp * self.features)


class CNNLSTM(nn.Module):
  """FrameEncoder applied to every frame (``nn.vmap`` over time, shared
  parameters, like Keras' TimeDistributed) -> StackedLSTM.

  frames (B, T, H, W, C) -> outputs (B, num_outputs).
  """

  layer_sizes: Sequence[int]
  num_outputs: int
  conv_features: int = 2
  kernel_size: int = 2
  pool_size: int = 2
  encoder_implementation: str = 'shifted_adds'
  recurrent: RecurrentOptions = RecurrentOptions()

  @nn.compact
  def __call__(self, frames, train: bool = False):
    encoder = nn.vmap(
      FrameEncoder,
      in_axes=1,
      out_axes=1,
      variable_axes={'params': None},
      split_rngs={'params': False},
    )
    x = encoder(
      self.conv_features,
      self.kernel_size,
      self.pool_size,
      self.encoder_implementation,
      name='encoder',
    )(frames)
    return StackedLSTM(
      self.layer_sizes, self.num_outputs, self.recurrent, name='rnn'
    )(x, train)


class EncoderDecoder(nn.Module):
  """Encoder LSTMs -> the last output repeated ``output_steps`` times (Keras'
  RepeatVector) -> decoder LSTMs returning sequences -> Dense(num_outputs)
  at every output step.

  ``layer_sizes[:encoder_depth]`` are the encoder's layers,
  ``layer_sizes[encoder_depth:]`` the decoder's (the seed: (75, 50), depth 1).

  inputs (B, T, F) -> outputs (B, output_steps, num_outputs).
  """

  layer_sizes: Sequence[int]
  num_outputs: int
  output_steps: int = 2
  encoder_depth: int = 1
  recurrent: RecurrentOptions = RecurrentOptions()

  @nn.compact
  def __call__(self, inputs, train: bool = False):
    x = inputs
    options = self.recurrent.layer_options(train)
    encoder = self.layer_sizes[: self.encoder_depth]
    decoder = self.layer_sizes[self.encoder_depth :]
    x = lstm_stack(
      x,
      encoder,
      [f'encoder_{i}' for i in range(len(encoder))],
      False,
      self.recurrent.layer_schedule,
      **options,
    )
    x = jnp.repeat(x[:, None, :], self.output_steps, axis=1)
    x = lstm_stack(
      x,
      decoder,
      [f'decoder_{i}' for i in range(len(decoder))],
      True,
      self.recurrent.layer_schedule,
      **options,
    )
    return nn.Dense(self.num_outputs, kernel_init=glorot_uniform, name='dense')(
      x
    )


class PerStepRNN(nn.Module):
  """(Bidirectional) recurrent layers, each returning its whole sequence ->
  Dense(num_outputs) at every step (Keras' TimeDistributed(Dense)).

  Attributes:
    layer_sizes: units per layer (per direction), input side first.
    bidirectional: each layer is ``Bidirectional`` (submodules ``forward`` and
      ``backward``); False: forward-only, a causal model.
    merge_mode: how the directions merge: 'concat', 'sum', 'mean', 'multiply'.
    cell: 'lstm' or 'gru'.

  inputs (B, T, F) -> outputs (B, T, num_outputs).
  """

  layer_sizes: Sequence[int]
  num_outputs: int
  bidirectional: bool = True
  merge_mode: str = 'concat'
  cell: str = 'lstm'
  recurrent: RecurrentOptions = RecurrentOptions()

  @nn.compact
  def __call__(self, inputs, train: bool = False):
    x = inputs
    options = self.recurrent.layer_options(train, self.cell)
    names = [f'rnn_{i}' for i in range(len(self.layer_sizes))]
    if self.bidirectional:
      for units, name in zip(self.layer_sizes, names):
        x = Bidirectional(
          units,
          self.cell,
          self.merge_mode,
          return_sequences=True,
          layer_options=options,
          name=name,
        )(x)
    elif self.cell == 'lstm':
      x = lstm_stack(
        x,
        self.layer_sizes,
        names,
        True,
        self.recurrent.layer_schedule,
        **options,
      )
    else:
      for units, name in zip(self.layer_sizes, names):
        x = RECURRENT_LAYERS[self.cell](
          units, return_sequences=True, name=name, **options
        )(x)
    return nn.Dense(self.num_outputs, kernel_init=glorot_uniform, name='dense')(
      x
    )


_OUTPUT_SHAPES = {
  'example': '(B, K), one output per example',
  'per_step': '(B, T, K), one output per input step',
  'sequence': '(B, S, K), an output sequence',
}


def check_model_config(
  model_config, task_config, input_kind, output_kind='example', output_steps=0
):
  """Raises validation.ConfigError for a model config that cannot work with
  its task (``task_config``: the task's options, e.g. the image size;
  ``input_kind``: the task's, 'sequence' or 'frames'; ``output_kind`` and
  ``output_steps``: what the task's targets need, see ``tasks.Task``)."""
  options = dict(model_config)
  name = options.pop('name')
  v.choice('model.name', name, MODELS)
  _check_fits_task(name, task_config, input_kind, output_kind)
  accepted = config_fields(MODELS[name])
  for key in options:
    if key not in accepted:
      v.fail(
        f'model.{key}',
        options[key],
        f'{MODELS[name].__name__} takes no option {key!r}; its options '
        f'are {sorted(accepted)}',
      )
  sizes = options.get('layer_sizes')
  if (
    not isinstance(sizes, (tuple, list))
    or not sizes
    or not all(
      isinstance(u, int) and not isinstance(u, bool) and u > 0 for u in sizes
    )
  ):
    v.fail(
      'model.layer_sizes',
      sizes,
      'must be a non-empty tuple of positive integers, e.g. (20, 20)',
    )
  _check_recurrent_options(options)
  _MODEL_CHECKS.get(name, lambda *a: None)(options, task_config, output_steps)


def _check_fits_task(name, task_config, input_kind, output_kind):
  """The model takes the task's inputs and returns what its targets need."""
  wanted = MODEL_INPUTS[name]
  if input_kind != wanted:
    v.fail(
      'model.name',
      name,
      f'it takes {wanted}, and task {task_config.name!r} gives '
      f'{input_kind}; use one of '
      f'{sorted(m for m, k in MODEL_INPUTS.items() if k == input_kind)}',
    )
  if MODEL_OUTPUTS[name] != output_kind:
    fitting = sorted(
      m
      for m in MODELS
      if MODEL_OUTPUTS[m] == output_kind and MODEL_INPUTS[m] == input_kind
    )
    v.fail(
      'model.name',
      name,
      f'it returns {_OUTPUT_SHAPES[MODEL_OUTPUTS[name]]}, and task '
      f'{task_config.name!r} needs {_OUTPUT_SHAPES[output_kind]}; use one'
      f' of {fitting}',
    )


def _check_recurrent_options(options):
  """The ``RecurrentOptions`` fields of a model config."""
  v.integer('model.unroll', options.get('unroll', 0), 0)
  v.choice(
    'model.input_projection',
    options.get('input_projection', 'auto'),
    ('auto', 'hoisted', 'in_scan'),
  )
  v.choice(
    'model.dtype', options.get('dtype', 'float32'), ('float32', 'bfloat16')
  )
  v.choice('model.recurrence', options.get('recurrence', 'auto'), RECURRENCES)
  v.choice(
    'model.layer_schedule',
    options.get('layer_schedule', 'wavefront'),
    LAYER_SCHEDULES,
  )
  for field in ('dropout', 'recurrent_dropout'):
    rate = options.get(field, 0.0)
    v.number(f'model.{field}', rate, 0)
    if rate >= 1:
      v.fail(f'model.{field}', rate, 'must be in [0, 1)')


def _check_lstm(options, task_config, output_steps):
  del output_steps
  highway = options.get('highway', 0)
  v.integer('model.highway', highway, 0)
  steps = dict(task_config).get('input_length')
  if isinstance(steps, int) and highway > steps:
    v.fail(
      'model.highway',
      highway,
      f'must be <= task.input_length={steps} (the steps it reads)',
    )


def _check_encoder_decoder(options, task_config, output_steps):
  sizes = options['layer_sizes']
  if len(sizes) < 2:
    v.fail(
      'model.layer_sizes',
      sizes,
      'encoder_decoder needs encoder and decoder sizes, e.g. (75, 50)',
    )
  v.integer(
    'model.encoder_depth', options.get('encoder_depth', 1), 1, len(sizes) - 1
  )
  if options.get('output_steps', 2) != output_steps:
    v.fail(
      'model.output_steps',
      options.get('output_steps', 2),
      f'must equal the target length of task {task_config.name!r}, '
      f'{output_steps}',
    )


def _check_per_step(options, task_config, output_steps):
  del task_config, output_steps
  v.choice('model.merge_mode', options.get('merge_mode', 'concat'), MERGE_MODES)
  v.choice('model.cell', options.get('cell', 'lstm'), RECURRENT_LAYERS)
  if not isinstance(options.get('bidirectional', True), bool):
    v.fail(
      'model.bidirectional', options['bidirectional'], 'must be True or False'
    )


def _check_cnn_lstm(options, task_config, output_steps):
  del output_steps
  k, p = options.get('kernel_size', 2), options.get('pool_size', 2)
  v.integer('model.conv_features', options.get('conv_features', 2), 1)
  v.integer('model.kernel_size', k, 1)
  v.integer('model.pool_size', p, 1)
  v.choice(
    'model.encoder_implementation',
    options.get('encoder_implementation', 'auto'),
    ('auto', 'shifted_adds', 'conv'),
  )
  size = dict(task_config).get('size', 50)
  if pooled_size(size, k, p) < 1:
    v.fail(
      'task.size',
      size,
      f'the image is too small for a {k}x{k} conv and a {p}x{p} pool:'
      f' it needs size >= {k + p - 1}',
    )


_MODEL_CHECKS = {
  'lstm': _check_lstm,
  'encoder_decoder': _check_encoder_decoder,
  'per_step': _check_per_step,
  'cnn_lstm': _check_cnn_lstm,
}


def config_fields(model_class) -> set:
  """The ``config.model`` fields of a model class: its own attributes and
  the ``RecurrentOptions`` fields, which make_model gathers into one."""
  own = set(inspect.signature(model_class).parameters)
  return (own - {'num_outputs', 'parent', 'name', 'recurrent'}) | set(
    RECURRENT_OPTIONS
  )


def make_model(model_config, num_outputs) -> nn.Module:
  """Builds the model named ``model_config.name`` with a head of ``num_outputs``."""
  options = dict(model_config)
  name = options.pop('name')
  v.choice('model.name', name, MODELS)
  recurrent = {k: options.pop(k) for k in RECURRENT_OPTIONS if k in options}
  dtype = recurrent.pop('dtype', 'float32')
  recurrent['dtype'] = None if dtype == 'float32' else jnp.dtype(dtype)
  options['layer_sizes'] = tuple(options['layer_sizes'])
  if 'encoder_implementation' in options:
    options['encoder_implementation'] = compile_plan.encoder_implementation(
      options['encoder_implementation']
    )
  return MODELS[name](
    num_outputs=num_outputs, recurrent=RecurrentOptions(**recurrent), **options
  )


MODELS = {
  'lstm': StackedLSTM,
  'cnn_lstm': CNNLSTM,
  'encoder_decoder': EncoderDecoder,
  'per_step': PerStepRNN,
}
MODEL_INPUTS = {
  'lstm': 'sequence',
  'cnn_lstm': 'frames',
  'encoder_decoder': 'sequence',
  'per_step': 'sequence',
}
MODEL_OUTPUTS = {
  'lstm': 'example',
  'cnn_lstm': 'example',
  'encoder_decoder': 'sequence',
  'per_step': 'per_step',
}
