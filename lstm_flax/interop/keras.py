"""Keras ``get_weights()`` lists to our params and back: LSTM, Dense, GRU,
Bidirectional, and whole seed models (``keras_weights``,
``save_keras_weights``).  Keras itself is never imported.
"""

from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from lstm_flax.interop._common import check_dense
from lstm_flax.interop._common import check_gru_params
from lstm_flax.interop._common import check_lstm_params
from lstm_flax.interop._common import check_shape
from lstm_flax.interop._common import stacked_lstm_layers
from lstm_flax.interop._common import to_numpy
from lstm_flax.interop._common import units_of


# --- LSTM ---------------------------------------------------------------------


def lstm_from_keras(
  weights: Sequence[Any], units: Optional[int] = None
) -> Dict[str, np.ndarray]:
  """Keras ``LSTM.get_weights()`` -> our LSTM params.

  weights: ``[kernel (F, 4H), recurrent_kernel (H, 4H), bias (4H,)]``, or the
    first two for ``use_bias=False`` (the bias is then zeros).
  units: H, checked if given.
  Returns ``{'kernel', 'recurrent_kernel', 'bias'}`` (float32 numpy), exact copies.
  """
  if not isinstance(weights, (list, tuple)) or len(weights) not in (2, 3):
    got = (
      len(weights)
      if isinstance(weights, (list, tuple))
      else type(weights).__name__
    )
    raise ValueError(
      'Keras LSTM weights must be a list [kernel, recurrent_kernel, bias] '
      f'(or [kernel, recurrent_kernel] for use_bias=False); got {got}'
      + (' arrays' if isinstance(got, int) else '')
    )
  kernel, recurrent_kernel = to_numpy(weights[0]), to_numpy(weights[1])
  h = units_of(recurrent_kernel, 4, 'Keras LSTM recurrent_kernel (weights[1])')
  if units is not None and h != units:
    raise ValueError(
      f'Keras LSTM recurrent_kernel (weights[1]) has shape '
      f'{recurrent_kernel.shape}: {h} units; expected units={units}'
    )
  check_shape(
    'Keras LSTM kernel (weights[0])',
    kernel,
    (None, 4 * h),
    f'F x 4*units, units={h} from the recurrent kernel',
  )
  bias = (
    to_numpy(weights[2]) if len(weights) == 3 else np.zeros(4 * h, np.float32)
  )
  check_shape(
    'Keras LSTM bias (weights[2])', bias, (4 * h,), f'4*units, units={h}'
  )
  return {'kernel': kernel, 'recurrent_kernel': recurrent_kernel, 'bias': bias}


def lstm_to_keras(params: Mapping[str, Any]) -> List[np.ndarray]:
  """Our LSTM params -> ``[kernel, recurrent_kernel, bias]`` for Keras' ``set_weights``."""
  p = check_lstm_params(params)
  return [p['kernel'], p['recurrent_kernel'], p['bias']]


# --- Dense --------------------------------------------------------------------


def dense_from_keras(weights: Sequence[Any]) -> Dict[str, np.ndarray]:
  """Keras ``Dense.get_weights()`` ``[kernel (F, N), bias (N,)]`` -> ``nn.Dense`` params."""
  if not isinstance(weights, (list, tuple)) or len(weights) not in (1, 2):
    raise ValueError(
      'Keras Dense weights must be a list [kernel, bias] (or [kernel] '
      'for use_bias=False)'
    )
  kernel = to_numpy(weights[0])
  check_shape('Keras Dense kernel (weights[0])', kernel, (None, None))
  n = kernel.shape[1]
  bias = to_numpy(weights[1]) if len(weights) == 2 else np.zeros(n, np.float32)
  check_shape(
    'Keras Dense bias (weights[1])', bias, (n,), f'the kernel has {n} outputs'
  )
  return {'kernel': kernel, 'bias': bias}


def dense_to_keras(params: Mapping[str, Any]) -> List[np.ndarray]:
  """``nn.Dense`` params -> Keras ``[kernel, bias]``."""
  return list(check_dense(params, 'Dense params').values())


# --- GRU ----------------------------------------------------------------------


def gru_from_keras(
  weights: Sequence[Any], units: Optional[int] = None
) -> Dict[str, np.ndarray]:
  """Keras ``GRU.get_weights()`` -> ``{'kernel', 'recurrent_kernel', 'bias'}`` (Keras layout, checked).

  weights: ``[kernel (F, 3H), recurrent_kernel (H, 3H), bias]`` with bias
    (2, 3H) for ``reset_after=True`` or (3H,) for ``reset_after=False``; blocks
    z, r, h.  Exact copies.
  """
  if not isinstance(weights, (list, tuple)) or len(weights) != 3:
    raise ValueError(
      'Keras GRU weights must be a list [kernel, recurrent_kernel, bias] '
      '(GRU(use_bias=False) is not supported: its variant cannot be told '
      'from the arrays)'
    )
  return check_gru_params(
    dict(zip(('kernel', 'recurrent_kernel', 'bias'), weights)),
    'Keras GRU weights',
    units,
  )


def gru_to_keras(params: Mapping[str, Any]) -> List[np.ndarray]:
  """GRU params in Keras layout -> ``[kernel, recurrent_kernel, bias]`` for ``set_weights``."""
  p = check_gru_params(params, 'GRU params')
  return [p['kernel'], p['recurrent_kernel'], p['bias']]


# --- Bidirectional ------------------------------------------------------------


_FROM_KERAS = {'lstm': lstm_from_keras, 'gru': gru_from_keras}
_TO_KERAS = {'lstm': lstm_to_keras, 'gru': gru_to_keras}


def bidirectional_from_keras(
  weights: Sequence[Any], cell: str = 'lstm'
) -> Dict[str, Any]:
  """Keras ``Bidirectional(LSTM|GRU).get_weights()`` (the forward layer's arrays,
  then the backward layer's) -> our ``Bidirectional`` params ``{'forward', 'backward'}``."""
  if cell not in _FROM_KERAS:
    raise ValueError(f'cell={cell!r}; expected one of {sorted(_FROM_KERAS)}')
  if not isinstance(weights, (list, tuple)) or len(weights) % 2:
    raise ValueError(
      "Keras Bidirectional weights must be a list: the forward layer's "
      "arrays then the backward layer's (an even number); got "
      f'{len(weights) if isinstance(weights, (list, tuple)) else weights!r:.40}'
    )
  half = len(weights) // 2
  return {
    'forward': _FROM_KERAS[cell](list(weights[:half])),
    'backward': _FROM_KERAS[cell](list(weights[half:])),
  }


def bidirectional_to_keras(
  params: Mapping[str, Any], cell: str = 'lstm'
) -> List[np.ndarray]:
  """Our ``Bidirectional`` params -> Keras ``Bidirectional.set_weights`` arrays."""
  if cell not in _TO_KERAS:
    raise ValueError(f'cell={cell!r}; expected one of {sorted(_TO_KERAS)}')
  if not isinstance(params, Mapping) or set(params) != {'forward', 'backward'}:
    keys = (
      sorted(params) if isinstance(params, Mapping) else type(params).__name__
    )
    raise ValueError(
      f"Bidirectional params must have keys ['backward', 'forward']; got {keys}"
    )
  return _TO_KERAS[cell](params['forward']) + _TO_KERAS[cell](
    params['backward']
  )


# --- our seed models -> Keras -------------------------------------------------


def _keras_layer_groups(params) -> List[Tuple[str, List[np.ndarray]]]:
  """Our StackedLSTM / CNNLSTM params -> [(Keras 3 weights-file group, arrays)] in model order."""
  if isinstance(params, Mapping) and set(params) == {'params'}:
    params = params['params']
  if not isinstance(params, Mapping):
    raise ValueError(
      f'expected StackedLSTM or CNNLSTM params (a dict); got '
      f'{type(params).__name__}'
    )
  groups = []
  if 'encoder' in params or 'rnn' in params:
    if set(params) != {'encoder', 'rnn'}:
      raise ValueError(
        f"CNNLSTM params have keys {sorted(params)}; expected ['encoder', "
        "'rnn']"
      )
    encoder = params['encoder']
    if not isinstance(encoder, Mapping) or set(encoder) != {'kernel', 'bias'}:
      raise ValueError(
        "CNNLSTM params['encoder'] must have keys ['bias', 'kernel']"
      )
    kernel, bias = to_numpy(encoder['kernel']), to_numpy(encoder['bias'])
    check_shape(
      "CNNLSTM params['encoder']: kernel",
      kernel,
      (None, None, None, None),
      '(k, k, channels, filters)',
    )
    check_shape("CNNLSTM params['encoder']: bias", bias, (kernel.shape[3],))
    groups.append(('layers/time_distributed/layer', [kernel, bias]))
    params = params['rnn']
  layers, dense = stacked_lstm_layers(params)
  if dense is None:
    raise ValueError(
      'StackedLSTM params have no dense head; the Keras seed models end in '
      'a Dense layer'
    )
  for i, layer in enumerate(layers):
    groups.append(
      (f'layers/lstm{"" if i == 0 else f"_{i}"}/cell', lstm_to_keras(layer))
    )
  groups.append(('layers/dense', dense_to_keras(dense)))
  return groups


def keras_weights(params) -> List[np.ndarray]:
  """Our ``StackedLSTM`` / ``CNNLSTM`` params -> the matching Keras seed model's
  ``get_weights()`` list (Conv2D kernel and bias; each LSTM's kernel,
  recurrent_kernel, bias; the Dense kernel and bias), for ``set_weights``."""
  return [a for _, arrays in _keras_layer_groups(params) for a in arrays]


def save_keras_weights(path, params) -> None:
  """Writes our ``StackedLSTM`` / ``CNNLSTM`` params as a Keras 3 ``.weights.h5``
  (with h5py; Keras not needed) that ``keras_model.load_weights(path)`` loads
  into the matching Keras Sequential seed model (see :func:`load_keras`)."""
  if not str(path).endswith('.weights.h5'):
    raise ValueError(
      f'{path}: Keras 3 loads weights only from a file named *.weights.h5'
    )
  import h5py  # pylint: disable=g-import-not-at-top

  groups = _keras_layer_groups(params)
  with h5py.File(path, 'w') as h5:
    for group, arrays in groups:
      target = h5.create_group(group).create_group('vars')
      for i, array in enumerate(arrays):
        target[str(i)] = array
