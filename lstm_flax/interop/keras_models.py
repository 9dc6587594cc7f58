"""Keras seed models to ours: ``load_keras`` checks a file's model config
against what we compute and against its weights, and builds our
``StackedLSTM`` / ``CNNLSTM`` with those weights.

The seed models: LSTM(25) -> Dense(10) (echo), LSTM(20, return_sequences) ->
LSTM(20) -> Dense(5) (damped sine), TimeDistributed(Conv2D(2, (2, 2), relu))
-> TimeDistributed(MaxPooling2D) -> TimeDistributed(Flatten) -> LSTM(H) ->
Dense(1, sigmoid) (moving line); any sizes and any number of LSTMs.
"""

import dataclasses
import functools
import re
from typing import Any, Dict, Optional

import jax

from lstm_flax.interop._common import check_shape
from lstm_flax.interop._common import stacked_lstm_params
from lstm_flax.interop.keras import dense_from_keras
from lstm_flax.interop.keras import lstm_from_keras
from lstm_flax.interop.keras_files import as_str
from lstm_flax.interop.keras_files import keras3_layers
from lstm_flax.interop.keras_files import legacy_layers
from lstm_flax.interop.keras_files import legacy_weights_group
from lstm_flax.interop.keras_files import open_keras_file
from lstm_flax.interop.keras_files import parse_json
from lstm_flax.interop.keras_files import reading
from lstm_flax.interop.keras_files import weights_of


# --- the imported model -------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class KerasImport:
  """A Keras seed model read into ours.

  model: our ``StackedLSTM`` or ``CNNLSTM``, sized from the file.
  variables: ``{'params': ...}`` for ``model.apply``; raw outputs (logits).
  activation: the Keras head's activation, 'softmax', 'sigmoid' or 'linear'
    (from ``config.json`` or the ``activation`` argument); None if unknown.
  """

  model: Any
  variables: Dict[str, Any]
  activation: Optional[str]

  def predict(self, inputs):
    """What Keras' ``model.predict(inputs)`` returns: the head's activation applied."""
    if self.activation is None:
      raise ValueError(
        "the head's activation is unknown (a .weights.h5 has no config): "
        "pass activation='softmax' / 'sigmoid' / 'linear' to load_keras, or "
        'use model.apply(variables, inputs) for raw outputs'
      )
    return _predict(self.model, self.activation, self.variables, inputs)


@functools.partial(jax.jit, static_argnums=(0, 1))
def _predict(model, activation, variables, inputs):
  outputs = model.apply(variables, inputs)
  return {
    'softmax': jax.nn.softmax,
    'sigmoid': jax.nn.sigmoid,
    'linear': lambda x: x,
  }[activation](outputs)


# --- the model config ---------------------------------------------------------


_ACTIVATIONS = ('softmax', 'sigmoid', 'linear')
_OUR_ORDER = re.compile(
  r'(TimeDistributed\(Conv2D\) TimeDistributed\(MaxPooling2D\) '
  r'TimeDistributed\(Flatten\) )?(LSTM )+Dense'
)


def _entry(layer, where, path):
  """A model config's layer entry -> (class_name, config dict), checked."""
  if (
    not isinstance(layer, dict)
    or not isinstance(layer.get('class_name'), str)
    or not isinstance(layer.get('config'), dict)
  ):
    raise ValueError(
      f'{path}: {where} is not a layer entry with a class_name and a '
      f'config dict: {layer!r:.80}'
    )
  return layer['class_name'], layer['config']


def _config_layers(config, path):
  """A model config -> [(class, config, inner class, inner config)], InputLayers
  left out; the inner pair is a TimeDistributed's layer, else (None, None)."""
  body = config.get('config') if isinstance(config, dict) else None
  layers = (
    body
    if isinstance(body, list)
    # old Keras 2: a Sequential's config is its layers
    else (body.get('layers') if isinstance(body, dict) else None)
  )
  if not isinstance(layers, list):
    raise ValueError(
      f'{path}: the model config has no config.layers list (a Sequential '
      'or Functional model)'
    )
  out = []
  for i, layer in enumerate(layers):
    cls, cfg = _entry(layer, f'model config layers[{i}]', path)
    if cls != 'InputLayer':
      inner = (
        _entry(cfg.get('layer'), f'model config layers[{i}].config.layer', path)
        if cls == 'TimeDistributed'
        else (None, None)
      )
      out.append((cls, cfg) + inner)
  return out


def _need(cfg, cls, field, allowed, path):
  """cfg[field] (a list read as a tuple), if it is one of ``allowed``."""
  value = cfg.get(field)
  if isinstance(value, list):
    value = tuple(value)
  if value not in allowed:
    wanted = (
      f'computes {allowed[0]!r}'
      if len(allowed) == 1 or allowed[1] is None
      else f'supports {list(allowed)}'
    )
    raise ValueError(
      f'{path}: layer {cfg.get("name")!r} ({cls}) has {field}={value!r}; '
      f'our model {wanted}'
    )
  return value


def _ints(cfg, cls, field, path, count=1):
  """cfg[field] as ``count`` positive ints (an int stands for all of them)."""
  value = cfg.get(field)
  value = [value] * count if isinstance(value, int) and count > 1 else value
  values = value if isinstance(value, list) else [value]
  if len(values) != count or not all(
    isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in values
  ):
    raise ValueError(
      f'{path}: layer {cfg.get("name")!r} ({cls}) has {field}={value!r}; '
      f'expected {"a positive integer" if count == 1 else f"{count} of them"}'
    )
  return values[0] if count == 1 else tuple(values)


def _check_keras_config(config, path):
  """Checks a model config describes a model we compute -> (the head's
  activation, the pool size, the weighted layers as 'LSTM(20)' etc.)."""
  layers = _config_layers(config, path)
  order = ' '.join(
    f'TimeDistributed({inner})' if inner else cls for cls, _, inner, _ in layers
  )
  if not _OUR_ORDER.fullmatch(order):
    raise ValueError(
      f"{path}: the model's layers are {order!r}; ours are [Conv2D "
      'MaxPooling2D Flatten (TimeDistributed)] LSTM ... LSTM Dense'
    )
  activation, pool_size, described = None, None, []
  last_lstm = max(i for i, layer in enumerate(layers) if layer[0] == 'LSTM')
  for i, (cls, cfg, inner, inner_cfg) in enumerate(layers):
    if cls == 'LSTM':
      _need(cfg, cls, 'activation', ('tanh',), path)
      _need(cfg, cls, 'recurrent_activation', ('sigmoid',), path)
      _need(cfg, cls, 'go_backwards', (False,), path)
      _need(cfg, cls, 'return_sequences', (i != last_lstm,), path)
      described.append(f'LSTM({_ints(cfg, cls, "units", path)})')
    elif cls == 'Dense':
      activation = _need(cfg, cls, 'activation', _ACTIVATIONS, path)
      described.append(f'Dense({_ints(cfg, cls, "units", path)})')
    elif inner == 'Conv2D':
      _need(inner_cfg, inner, 'activation', ('relu',), path)
      for field, allowed in (
        ('strides', (1, 1)),
        ('dilation_rate', (1, 1)),
        ('padding', 'valid'),
        ('data_format', 'channels_last'),
      ):
        _need(
          inner_cfg,
          inner,
          field,
          (allowed,) + ((None,) if field == 'data_format' else ()),
          path,
        )
      k = _ints(inner_cfg, inner, 'kernel_size', path, count=2)
      described.append(
        f'Conv2D({_ints(inner_cfg, inner, "filters", path)}, {k[0]}x{k[1]})'
      )
    elif inner == 'MaxPooling2D':
      size = _ints(inner_cfg, inner, 'pool_size', path, count=2)
      _need(inner_cfg, inner, 'strides', (size, None), path)
      _need(inner_cfg, inner, 'padding', ('valid',), path)
      if size[0] != size[1]:
        raise ValueError(
          f'{path}: MaxPooling2D pool_size={size}; ours is square'
        )
      pool_size = size[0]
  return activation, pool_size, described


# --- the weights --------------------------------------------------------------


def _kind_of(arrays) -> str:
  """'conv', 'lstm' or 'dense' from a layer's arrays, '?' if none fits."""
  shapes = [a.shape for a in arrays]
  if len(shapes) == 2 and len(shapes[0]) == 4:
    return 'conv'
  if (
    len(shapes) in (2, 3)
    and len(shapes[0]) == 2
    and len(shapes[1]) == 2
    and shapes[1][1] == 4 * shapes[1][0]
  ):
    return 'lstm'
  if (
    len(shapes) in (1, 2)
    and len(shapes[0]) == 2
    and all(len(s) == 1 for s in shapes[1:])
  ):
    return 'dense'
  return '?'


def _describe(name, arrays) -> str:
  """A layer's arrays as the model config would name it: 'LSTM(20)', 'Dense(5)'."""
  kind, shapes = _kind_of(arrays), [a.shape for a in arrays]
  if kind == 'conv':
    return f'Conv2D({shapes[0][3]}, {shapes[0][0]}x{shapes[0][1]})'
  if kind in ('lstm', 'dense'):
    return (
      f'LSTM({shapes[1][0]})' if kind == 'lstm' else f'Dense({shapes[0][1]})'
    )
  return f'{name} {shapes}'


def _read_keras_layers(path):
  """A Keras file -> ([(layer, arrays)] in model order, the config's head
  activation, its pool size), the config (if any) checked against the weights."""
  h5, config = open_keras_file(path)
  with h5, reading(path):
    legacy = legacy_weights_group(h5)
    if legacy is not None and config is None and 'model_config' in h5.attrs:
      config = parse_json(
        as_str(h5.attrs['model_config']), f'{path}: model_config'
      )
    activation, pool_size, described = (
      (None, None, None)
      if config is None
      else (_check_keras_config(config, path))
    )
    if legacy is not None:
      layers = legacy_layers(legacy, path)
    else:
      layers = keras3_layers(weights_of(h5, path), path)
  held = [_describe(name, arrays) for name, arrays in layers]
  if described is not None and held != described:
    raise ValueError(
      f'{path}: its model config describes [{", ".join(described)}], but '
      f'its weights hold [{", ".join(held)}]; the file contradicts itself'
    )
  kinds = ' '.join(_kind_of(arrays) for _, arrays in layers)
  if not re.fullmatch(r'(conv )?(lstm )+dense', kinds):
    raise ValueError(
      f'{path}: the layers with weights are [{", ".join(held)}]; our models '
      'have an optional Conv2D (kernel, bias), one or more LSTMs (kernel, '
      'recurrent_kernel, bias) and a Dense head (kernel, bias), in that order'
    )
  return layers, activation, pool_size


def _our_model(layers, pool_size, path):
  """[(layer, arrays)] of a seed model -> (our StackedLSTM / CNNLSTM, its params)."""
  from lstm_flax import models  # pylint: disable=g-import-not-at-top

  lstms = [
    lstm_from_keras(arrays)
    for _, arrays in layers
    if _kind_of(arrays) == 'lstm'
  ]
  dense = dense_from_keras(layers[-1][1])
  num_outputs = dense['kernel'].shape[1]
  sizes = tuple(p['recurrent_kernel'].shape[0] for p in lstms)
  if _kind_of(layers[0][1]) != 'conv':
    return (
      models.StackedLSTM(layer_sizes=sizes, num_outputs=num_outputs),
      stacked_lstm_params(lstms, dense),
    )
  name, (kernel, bias) = layers[0]
  if kernel.shape[0] != kernel.shape[1]:
    raise ValueError(
      f'{path}: {name} (Conv2D) kernel has shape {kernel.shape}; ours is '
      'square (k, k, channels, filters)'
    )
  check_shape(f'{path}: {name} (Conv2D) bias', bias, (kernel.shape[3],))
  model = models.CNNLSTM(
    layer_sizes=sizes,
    num_outputs=num_outputs,
    conv_features=kernel.shape[3],
    kernel_size=kernel.shape[0],
    pool_size=pool_size,
  )
  return model, {
    'encoder': {'kernel': kernel, 'bias': bias},
    'rnn': stacked_lstm_params(lstms, dense),
  }


def load_keras(
  path, activation: Optional[str] = None, pool_size: Optional[int] = None
) -> KerasImport:
  """A Keras file of a seed model -> our model and params.

  Files: Keras 3 ``.keras`` (zip) and ``.weights.h5``, and the legacy HDF5
  that Keras 2 / tf.keras ``model.save('x.h5')`` / ``save_weights('x.h5')``
  wrote (``layer_names`` and ``weight_names`` attributes; Keras 3 still writes
  it for ``model.save('x.h5')``).  Read with zipfile and h5py only (Keras is
  not imported).  The model is ``StackedLSTM(layer_sizes, num_outputs)`` for
  LSTM(s) -> Dense, or ``CNNLSTM`` with a TimeDistributed Conv2D ->
  MaxPooling2D -> Flatten in front.  A model config (a ``.keras``' config.json,
  a legacy model file's ``model_config``) is checked -- layer order,
  activations (an old Keras' ``hard_sigmoid`` is refused: ours is sigmoid),
  return_sequences, conv strides and padding, pool size, and that its layers
  and sizes are those the weights hold -- and gives the head's activation; a
  weights-only file has none, so it is assumed to be such a model with Keras'
  defaults, the activation is ``activation`` (or unknown) and the pool is
  ``pool_size`` (default 2).  A compiled model's optimizer state in the file
  is not read.

  Hostile files are refused with a ValueError naming the file: a zip whose
  directory promises more than ``MAX_FILE_BYTES`` (or a compression ratio
  over ``MAX_COMPRESSION_RATIO``), HDF5 links to other files, external or
  virtual datasets, and damaged, truncated or malformed files.
  """
  if activation not in (None,) + _ACTIVATIONS:
    raise ValueError(
      f'activation={activation!r}; expected one of {_ACTIVATIONS}'
    )
  layers, config_activation, config_pool = _read_keras_layers(path)
  if activation is not None and config_activation not in (None, activation):
    raise ValueError(
      f'activation={activation!r}, but {path} says its Dense head uses '
      f'{config_activation!r}'
    )
  activation = activation or config_activation
  if pool_size is not None and config_pool not in (None, pool_size):
    raise ValueError(
      f'pool_size={pool_size!r}, but {path} says {config_pool!r}'
    )
  model, params = _our_model(layers, pool_size or config_pool or 2, path)
  return KerasImport(
    model=model, variables={'params': params}, activation=activation
  )
