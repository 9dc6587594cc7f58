"""Weights that move between frameworks: Keras and PyTorch LSTM (and GRU) weights to and from ours.

Neither Keras nor PyTorch is needed here: arrays go in and out as numpy
(float32), torch tensors are read by duck typing (``.detach().cpu().numpy()``)
and Keras files are read with ``zipfile`` and ``h5py``.  Every conversion
checks names and shapes and raises a ``ValueError`` that names the offending
key or array, its shape, and what was expected.

LSTM layouts (B batch, T time, F features, H units)
---------------------------------------------------
- Ours (``lstm_flax.lstm.LSTM``) is Keras' ``LSTM`` layout exactly:
  ``kernel`` (F, 4H), ``recurrent_kernel`` (H, 4H), ``bias`` (4H,), gate
  blocks ordered input, forget, cell (candidate), output.  Keras'
  ``layer.get_weights()`` is ``[kernel, recurrent_kernel, bias]``
  (``[kernel, recurrent_kernel]`` for ``use_bias=False``).  Copies both ways,
  exact.
- PyTorch ``nn.LSTM``, layer k: ``weight_ih_l{k}`` (4H, F_k),
  ``weight_hh_l{k}`` (4H, H), ``bias_ih_l{k}`` (4H,), ``bias_hh_l{k}`` (4H,);
  gate blocks i, f, g, o (g is Keras' c: the same order).  The second
  direction of a bidirectional LSTM has the suffix ``_reverse``; layers after
  the first take F_k = H * num_directions.  Import: kernel = weight_ih.T,
  recurrent_kernel = weight_hh.T, bias = bias_ih + bias_hh (one float32 add).
  Export puts the whole bias in ``bias_ih`` and zeros in ``bias_hh``, so
  ours -> PyTorch -> ours is exact, and PyTorch -> ours -> PyTorch computes the
  same function with the bias split differently.  ``num_layers > 1`` maps onto
  our ``StackedLSTM`` (``lstm_0``, ``lstm_1``, ... then ``dense``); PyTorch
  needs every layer to have the same H.  ``proj_size`` (``weight_hr_l{k}``)
  and ``bias=False`` have no counterpart and are refused.

GRU layouts (array level; ``gru_*`` functions)
----------------------------------------------
- Keras ``GRU(reset_after=True)`` (Keras 3's default): ``kernel`` (F, 3H),
  ``recurrent_kernel`` (H, 3H), ``bias`` (2, 3H) = [input bias; recurrent
  bias], blocks z (update), r (reset), h (candidate)::

    z = sigmoid(x Wz + bz0 + h Uz + bz1)      r = sigmoid(x Wr + br0 + h Ur + br1)
    n = tanh(x Wh + bh0 + r * (h Uh + bh1))   h' = z * h + (1 - z) * n

- PyTorch ``nn.GRU``: ``weight_ih_l{k}`` (3H, F), ``weight_hh_l{k}`` (3H, H),
  ``bias_ih_l{k}``, ``bias_hh_l{k}`` (3H,), blocks r, z, n, with the same
  equations (the reset gate multiplies the recurrent matmul's result,
  ``r * (W_hn h + b_hn)``).  So Keras ``reset_after=True`` <-> PyTorch is an
  exact reordering of blocks, both ways, biases included.
- Keras ``GRU(reset_after=False)``: ``bias`` (3H,), and the candidate is
  ``tanh(x Wh + bh + (r * h) Uh)`` -- the reset gate applied *before* the
  recurrent matmul.  PyTorch has no such cell, so converting it to PyTorch
  raises ``ValueError``.

Our layers
----------
``lstm_flax.lstm.LSTM`` takes the LSTM params above, ``lstm_flax.lstm.GRU``
the GRU params in Keras layout (``reset_after=True``: bias (2, 3H);
``reset_after=False``: bias (3H,)), and ``lstm_flax.lstm.Bidirectional``
``{'forward': params, 'backward': params}`` -- the form every ``*_from_torch``
returns per layer for a bidirectional state_dict, and
:func:`bidirectional_from_keras` for Keras' ``Bidirectional`` (whose backward
layer reads time backwards and, like ours, returns its outputs in input
order).  A multi-layer bidirectional PyTorch RNN is a list of such layers, each
layer's merged (concatenated) outputs feeding the next.

Carries
-------
Ours and Keras: ``(h, c)`` per layer, each (B, H) (Keras' ``return_state``
returns ``[output, h, c]``).  PyTorch returns ``(h_n, c_n)``, each
(num_layers * num_directions, B, H), row ``layer * num_directions +
direction``; its GRU returns ``h_n`` alone.  Flax's own cells
(``nn.OptimizedLSTMCell``) carry ``(c, h)``.  :func:`carries_from_torch` and
:func:`carries_to_torch` convert.

Keras files
-----------
:func:`load_keras` reads a Keras 3 ``.keras`` archive (a zip holding
``config.json`` and ``model.weights.h5``), a bare ``.weights.h5``, or a legacy
Keras 2 / tf.keras HDF5 (``model.save('x.h5')``) of one of the seed models -- LSTM(25) -> Dense(10) (echo), LSTM(20, return_sequences) ->
LSTM(20) -> Dense(5) (damped sine), TimeDistributed(Conv2D(2, (2, 2), relu)) ->
TimeDistributed(MaxPooling2D) -> TimeDistributed(Flatten) -> LSTM(H) ->
Dense(1, sigmoid) (moving line) -- into our ``StackedLSTM`` / ``CNNLSTM`` and
its parameters.  Keras 3 stores a layer's weights at ``layers/<class>[_n]``
(snake-case class name, numbered in model order: ``lstm``, ``lstm_1``, ...)
as datasets ``vars/0``, ``vars/1``, ...; recurrent layers keep theirs under
``cell/vars``, TimeDistributed under ``layer/vars``.  Legacy files list the
layers in model order (attribute ``layer_names``) and each layer's datasets
(``weight_names``).  The other way, :func:`save_keras_weights` writes our
``StackedLSTM`` / ``CNNLSTM`` params as a Keras 3 ``.weights.h5`` that the
matching Keras model's ``load_weights`` reads, and :func:`keras_weights` gives
its ``set_weights`` list.
"""

import contextlib
import dataclasses
import functools
import io
import json
import re
import zipfile
import zlib
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import jax
import numpy as np

# --- small helpers -------------------------------------------------------------


def to_numpy(array, dtype=np.float32) -> np.ndarray:
  """A numpy copy of a numpy/JAX array or a torch tensor (never imports torch)."""
  if hasattr(array, 'detach'):  # a torch tensor
    array = array.detach().cpu()
    if 'bfloat16' in str(array.dtype):
      array = array.float()
    array = array.numpy()
  return np.array(array, dtype=dtype)


def _check_shape(name: str, array: np.ndarray, expected: Tuple[Optional[int], ...],
                 why: str = ''):
  """Raises ValueError unless ``array.shape`` matches ``expected`` (None: any)."""
  ok = array.ndim == len(expected) and all(
      e is None or e == s for s, e in zip(array.shape, expected))
  if not ok:
    shown = '(' + ', '.join('any' if e is None else str(e) for e in expected) + (
        ',)' if len(expected) == 1 else ')')
    raise ValueError(f'{name} has shape {tuple(array.shape)}; expected {shown}'
                     + (f' ({why})' if why else ''))


def _units_of(recurrent_kernel: np.ndarray, gates: int, name: str) -> int:
  """H from a recurrent kernel (H, gates*H), checking it is 2-D and square-ish."""
  if recurrent_kernel.ndim != 2 or recurrent_kernel.shape[1] != gates * recurrent_kernel.shape[0]:
    other = {4: 3, 3: 4}[gates]
    hint = ''
    if recurrent_kernel.ndim == 2 and recurrent_kernel.shape[1] == other * recurrent_kernel.shape[0]:
      hint = f'; it is {other} x units wide: is this a{"n LSTM" if other == 4 else " GRU"}?'
    raise ValueError(
        f'{name} has shape {tuple(recurrent_kernel.shape)}; expected (H, {gates}*H) '
        f'for {"an LSTM" if gates == 4 else "a GRU"} ({gates} gate blocks){hint}')
  return recurrent_kernel.shape[0]


def _blocks(array: np.ndarray, order: Sequence[int], axis: int = -1) -> np.ndarray:
  """Reorders the equal gate blocks of ``array`` along ``axis``."""
  parts = np.split(array, len(order), axis=axis)
  return np.concatenate([parts[i] for i in order], axis=axis)


# --- LSTM: Keras arrays --------------------------------------------------------


def lstm_from_keras(weights: Sequence[Any], units: Optional[int] = None) -> Dict[str, np.ndarray]:
  """Keras ``LSTM.get_weights()`` -> our LSTM params.

  weights: ``[kernel (F, 4H), recurrent_kernel (H, 4H), bias (4H,)]``, or the
    first two for ``use_bias=False`` (the bias is then zeros).
  units: H, checked if given.
  Returns ``{'kernel', 'recurrent_kernel', 'bias'}`` (float32 numpy), exact copies.
  """
  if not isinstance(weights, (list, tuple)) or len(weights) not in (2, 3):
    got = len(weights) if isinstance(weights, (list, tuple)) else type(weights).__name__
    raise ValueError('Keras LSTM weights must be a list [kernel, recurrent_kernel, bias] '
                     f'(or [kernel, recurrent_kernel] for use_bias=False); got {got}'
                     + (' arrays' if isinstance(got, int) else ''))
  kernel, recurrent_kernel = to_numpy(weights[0]), to_numpy(weights[1])
  h = _units_of(recurrent_kernel, 4, 'Keras LSTM recurrent_kernel (weights[1])')
  if units is not None and h != units:
    raise ValueError(f'Keras LSTM recurrent_kernel (weights[1]) has shape '
                     f'{recurrent_kernel.shape}: {h} units; expected units={units}')
  _check_shape('Keras LSTM kernel (weights[0])', kernel, (None, 4 * h),
               f'F x 4*units, units={h} from the recurrent kernel')
  bias = to_numpy(weights[2]) if len(weights) == 3 else np.zeros(4 * h, np.float32)
  _check_shape('Keras LSTM bias (weights[2])', bias, (4 * h,), f'4*units, units={h}')
  return {'kernel': kernel, 'recurrent_kernel': recurrent_kernel, 'bias': bias}


def _check_lstm_params(params: Mapping[str, Any], where: str = 'LSTM params'
                       ) -> Dict[str, np.ndarray]:
  if not isinstance(params, Mapping):
    raise ValueError(f'{where} must be a dict with kernel, recurrent_kernel and bias; '
                     f'got {type(params).__name__}')
  wanted = {'kernel', 'recurrent_kernel', 'bias'}
  if set(params) != wanted:
    raise ValueError(f'{where} have keys {sorted(params)}; expected {sorted(wanted)}'
                     + (f' (missing {sorted(wanted - set(params))})'
                        if wanted - set(params) else ''))
  p = {k: to_numpy(v) for k, v in params.items()}
  h = _units_of(p['recurrent_kernel'], 4, f'{where}: recurrent_kernel')
  _check_shape(f'{where}: kernel', p['kernel'], (None, 4 * h), f'F x 4*units, units={h}')
  _check_shape(f'{where}: bias', p['bias'], (4 * h,), f'4*units, units={h}')
  return p


def lstm_to_keras(params: Mapping[str, Any]) -> List[np.ndarray]:
  """Our LSTM params -> ``[kernel, recurrent_kernel, bias]`` for Keras' ``set_weights``."""
  p = _check_lstm_params(params)
  return [p['kernel'], p['recurrent_kernel'], p['bias']]


# --- Dense heads -----------------------------------------------------------------


def dense_from_keras(weights: Sequence[Any]) -> Dict[str, np.ndarray]:
  """Keras ``Dense.get_weights()`` ``[kernel (F, N), bias (N,)]`` -> ``nn.Dense`` params."""
  if not isinstance(weights, (list, tuple)) or len(weights) not in (1, 2):
    raise ValueError('Keras Dense weights must be a list [kernel, bias] (or [kernel] '
                     'for use_bias=False)')
  kernel = to_numpy(weights[0])
  _check_shape('Keras Dense kernel (weights[0])', kernel, (None, None))
  n = kernel.shape[1]
  bias = to_numpy(weights[1]) if len(weights) == 2 else np.zeros(n, np.float32)
  _check_shape('Keras Dense bias (weights[1])', bias, (n,), f'the kernel has {n} outputs')
  return {'kernel': kernel, 'bias': bias}


def dense_to_keras(params: Mapping[str, Any]) -> List[np.ndarray]:
  """``nn.Dense`` params -> Keras ``[kernel, bias]``."""
  return list(_check_dense(params, 'Dense params').values())


def _check_dense(params, where):
  if not isinstance(params, Mapping) or set(params) != {'kernel', 'bias'}:
    keys = sorted(params) if isinstance(params, Mapping) else type(params).__name__
    raise ValueError(f'{where} must have keys [\'bias\', \'kernel\']; got {keys}')
  kernel, bias = to_numpy(params['kernel']), to_numpy(params['bias'])
  _check_shape(f'{where}: kernel', kernel, (None, None))
  _check_shape(f'{where}: bias', bias, (kernel.shape[1],),
               f'the kernel has {kernel.shape[1]} outputs')
  return {'kernel': kernel, 'bias': bias}


def linear_from_torch(state_dict: Mapping[str, Any], prefix: str = '') -> Dict[str, np.ndarray]:
  """``nn.Linear`` ``{prefix}weight`` (N, F), ``{prefix}bias`` (N,) -> ``nn.Dense`` params."""
  for key in (prefix + 'weight', prefix + 'bias'):
    if key not in state_dict:
      raise ValueError(f'state_dict has no {key!r} (an nn.Linear with bias); '
                       f'keys: {sorted(state_dict)[:12]}')
  weight = to_numpy(state_dict[prefix + 'weight'])
  _check_shape(f'{prefix}weight', weight, (None, None))
  bias = to_numpy(state_dict[prefix + 'bias'])
  _check_shape(f'{prefix}bias', bias, (weight.shape[0],), f'{prefix}weight has '
               f'{weight.shape[0]} outputs')
  return {'kernel': np.ascontiguousarray(weight.T), 'bias': bias}


def dense_to_torch(params: Mapping[str, Any], prefix: str = '') -> Dict[str, np.ndarray]:
  """``nn.Dense`` params -> ``{prefix}weight`` (N, F), ``{prefix}bias`` for ``nn.Linear``."""
  p = _check_dense(params, 'Dense params')
  return {prefix + 'weight': np.ascontiguousarray(p['kernel'].T),
          prefix + 'bias': p['bias']}


# --- StackedLSTM trees -------------------------------------------------------------


def stacked_lstm_params(layers: Sequence[Mapping[str, Any]],
                        dense: Optional[Mapping[str, Any]] = None) -> Dict[str, Any]:
  """Per-layer LSTM params (first layer first) and a Dense head -> our
  ``StackedLSTM`` params ``{'lstm_0': ..., 'lstm_1': ..., 'dense': ...}``.

  Checks that each layer's input width is the previous layer's units and the
  head's input width the last layer's.  Without ``dense`` the tree has no head.
  """
  if not layers:
    raise ValueError('stacked_lstm_params needs at least one LSTM layer')
  tree = {}
  previous = None
  for i, layer in enumerate(layers):
    p = _check_lstm_params(layer, f'LSTM layer {i}')
    if previous is not None and p['kernel'].shape[0] != previous:
      raise ValueError(f'LSTM layer {i} kernel has shape {p["kernel"].shape}; its input '
                       f'width must be layer {i - 1}\'s units, {previous}')
    previous = p['recurrent_kernel'].shape[0]
    tree[f'lstm_{i}'] = p
  if dense is not None:
    d = _check_dense(dense, 'Dense head')
    if d['kernel'].shape[0] != previous:
      raise ValueError(f'Dense head kernel has shape {d["kernel"].shape}; its input width '
                       f'must be the last LSTM layer\'s units, {previous}')
    tree['dense'] = d
  return tree


def stacked_lstm_layers(params: Mapping[str, Any]
                        ) -> Tuple[List[Dict[str, np.ndarray]], Optional[Dict[str, np.ndarray]]]:
  """Our ``StackedLSTM`` params -> (per-layer LSTM params, Dense head params or None)."""
  if 'params' in params and len(params) == 1:
    params = params['params']
  names = sorted((k for k in params if re.fullmatch(r'lstm_\d+', k)),
                 key=lambda k: int(k[5:]))
  unexpected = sorted(set(params) - set(names) - {'dense'})
  if not names or unexpected or names != [f'lstm_{i}' for i in range(len(names))]:
    raise ValueError(f'StackedLSTM params have keys {sorted(params)}; expected lstm_0, '
                     'lstm_1, ... (consecutive) and optionally dense')
  layers = [_check_lstm_params(params[n], f'StackedLSTM params[{n!r}]') for n in names]
  dense = _check_dense(params['dense'], "StackedLSTM params['dense']") if 'dense' in params else None
  return layers, dense


# --- PyTorch state_dicts -------------------------------------------------------------

_TORCH_KEY = re.compile(r'(weight_ih|weight_hh|bias_ih|bias_hh|weight_hr)_l(\d+)(_reverse)?')


def _torch_rnn_layers(state_dict: Mapping[str, Any], prefix: str, gates: int, kind: str):
  """Parses and checks an ``nn.LSTM``/``nn.GRU`` state_dict.

  Returns (num_layers, bidirectional, arrays) with ``arrays[(layer, suffix)][name]``.
  """
  if not isinstance(state_dict, Mapping):
    raise ValueError(f'expected a state_dict (a mapping of names to arrays); got '
                     f'{type(state_dict).__name__}')
  found = {}
  unexpected = []
  for key, value in state_dict.items():
    if not key.startswith(prefix):
      continue
    m = _TORCH_KEY.fullmatch(key[len(prefix):])
    if m is None:
      unexpected.append(key)
      continue
    if m.group(1) == 'weight_hr':
      raise ValueError(f'{key!r}: nn.{kind}(proj_size > 0) projects h; our layer has no '
                       'projection, so it cannot be converted')
    found.setdefault((int(m.group(2)), m.group(3) or ''), {})[m.group(1)] = value
  guesses = sorted({k[:-len('weight_ih_l0')] for k in state_dict
                    if k.endswith('weight_ih_l0')} - {prefix})
  guess = f'; did you mean prefix={guesses[0]!r}?' if guesses else ''
  if unexpected:
    raise ValueError(f'state_dict keys {unexpected[:6]} are not nn.{kind} parameters '
                     f'(under prefix {prefix!r}); pass the prefix of the nn.{kind}, e.g. '
                     f"prefix='lstm.' for keys 'lstm.weight_ih_l0'{guess}")
  if not found:
    raise ValueError(f'state_dict has no nn.{kind} parameters under prefix {prefix!r} '
                     f'(no {prefix}weight_ih_l0){guess}')
  num_layers = 1 + max(layer for layer, _ in found)
  bidirectional = any(suffix for _, suffix in found)
  suffixes = ('', '_reverse') if bidirectional else ('',)
  arrays = {}
  hidden = None
  for layer in range(num_layers):
    for suffix in suffixes:
      got = found.get((layer, suffix), {})
      for name in ('weight_ih', 'weight_hh', 'bias_ih', 'bias_hh'):
        if name not in got:
          extra = (f' (nn.{kind}(bias=False) has no biases; ours always has one: add '
                   'zero bias_ih/bias_hh)' if name.startswith('bias') else '')
          raise ValueError(f'state_dict is missing {prefix}{name}_l{layer}{suffix} '
                           f'(found {num_layers} layer(s)'
                           f'{", bidirectional" if bidirectional else ""}){extra}')
      a = {k: to_numpy(v) for k, v in got.items()}
      key = lambda n: f'{prefix}{n}_l{layer}{suffix}'  # pylint: disable=cell-var-from-loop
      if hidden is None:
        w = a['weight_hh']
        if w.ndim != 2 or w.shape[0] != gates * w.shape[1]:
          other = 7 - gates  # 4 gate blocks (LSTM) <-> 3 (GRU)
          hint = (f': it has {other} x hidden rows, is this an nn.{"GRU" if other == 3 else "LSTM"}?'
                  if w.ndim == 2 and w.shape[0] == other * w.shape[1] else '')
          raise ValueError(f'{key("weight_hh")} has shape {tuple(w.shape)}; expected '
                           f'({gates}*hidden, hidden) for nn.{kind}{hint}')
        hidden = w.shape[1]
      _check_shape(key('weight_hh'), a['weight_hh'], (gates * hidden, hidden),
                   f'{gates}*hidden x hidden for nn.{kind}')
      in_width = None if layer == 0 else hidden * len(suffixes)
      _check_shape(key('weight_ih'), a['weight_ih'], (gates * hidden, in_width),
                   f'{gates}*hidden x input for nn.{kind}, hidden={hidden}')
      for b in ('bias_ih', 'bias_hh'):
        _check_shape(key(b), a[b], (gates * hidden,), f'{gates}*hidden, hidden={hidden}')
      arrays[(layer, suffix)] = a
  return num_layers, bidirectional, arrays


def _per_layer(num_layers, bidirectional, convert):
  """[convert(layer, suffix)] or [{'forward': ..., 'backward': ...}] per layer."""
  if not bidirectional:
    return [convert(k, '') for k in range(num_layers)]
  return [{'forward': convert(k, ''), 'backward': convert(k, '_reverse')}
          for k in range(num_layers)]


def lstm_from_torch(state_dict: Mapping[str, Any], prefix: str = '') -> List[Any]:
  """``nn.LSTM`` state_dict -> our LSTM params, one entry per layer.

  state_dict: torch tensors or numpy arrays; keys ``{prefix}weight_ih_l{k}`` etc.
    (``prefix='lstm.'`` for a module whose LSTM is ``self.lstm``).
  Returns a list (layer 0 first) of ``{'kernel', 'recurrent_kernel', 'bias'}``;
  for a bidirectional LSTM each entry is ``{'forward': ..., 'backward': ...}``.
  Feed a unidirectional list to :func:`stacked_lstm_params` for ``StackedLSTM``.
  """
  num_layers, bidirectional, arrays = _torch_rnn_layers(state_dict, prefix, 4, 'LSTM')

  def convert(layer, suffix):
    a = arrays[(layer, suffix)]
    return {'kernel': np.ascontiguousarray(a['weight_ih'].T),
            'recurrent_kernel': np.ascontiguousarray(a['weight_hh'].T),
            'bias': a['bias_ih'] + a['bias_hh']}

  return _per_layer(num_layers, bidirectional, convert)


def _layers_for_torch(layers, check, kind):
  """Normalises export input to a list of per-layer entries, checks nesting."""
  if isinstance(layers, Mapping):
    if 'forward' in layers or 'kernel' in layers:
      layers = [layers]
    else:
      layers = stacked_lstm_layers(layers)[0]
  if not layers:
    raise ValueError(f'no {kind} layers to export')
  bidirectional = isinstance(layers[0], Mapping) and 'forward' in layers[0]
  checked = []
  for k, layer in enumerate(layers):
    if bidirectional:
      if not isinstance(layer, Mapping) or set(layer) != {'forward', 'backward'}:
        raise ValueError(f'layer {k}: a bidirectional layer must be a dict with keys '
                         f'forward and backward (like layer 0); got {layer!r:.80}')
      checked.append({d: check(layer[d], f'layer {k} {d}') for d in ('forward', 'backward')})
    else:
      checked.append({'forward': check(layer, f'layer {k}')})
  hidden = checked[0]['forward']['recurrent_kernel'].shape[0]
  features = checked[0]['forward']['kernel'].shape[0]
  directions = len(checked[0])
  for k, layer in enumerate(checked):
    for d, p in layer.items():
      h = p['recurrent_kernel'].shape[0]
      if h != hidden:
        raise ValueError(f'nn.{kind} needs every layer to have the same hidden size; '
                         f'layer 0 has {hidden}, layer {k} {d} has {h}')
      if k == 0 and p['kernel'].shape[0] != features:
        raise ValueError(f'layer 0 {d} kernel has shape {p["kernel"].shape}; both '
                         f'directions read the same {features} input features')
      if k > 0 and p['kernel'].shape[0] != hidden * directions:
        raise ValueError(f'layer {k} {d} kernel has shape {p["kernel"].shape}; nn.{kind} '
                         f'feeds layer {k} the previous layer\'s {hidden * directions} '
                         'outputs')
  return checked


def lstm_to_torch(layers: Any, prefix: str = '') -> Dict[str, np.ndarray]:
  """Our LSTM params -> an ``nn.LSTM`` state_dict of float32 numpy arrays.

  layers: one layer's params, a list of them (``StackedLSTM`` order), a
    ``StackedLSTM`` params tree (its ``dense`` head is left out: see
    :func:`dense_to_torch`), or entries ``{'forward', 'backward'}`` for a
    bidirectional LSTM.  The whole bias goes to ``bias_ih_l{k}`` and
    ``bias_hh_l{k}`` is zeros.  Load with
    ``module.load_state_dict({k: torch.from_numpy(v) for k, v in sd.items()})``
    into ``nn.LSTM(F, H, num_layers=len(layers), batch_first=True)``.
  """
  checked = _layers_for_torch(layers, _check_lstm_params, 'LSTM')
  out = {}
  for k, layer in enumerate(checked):
    for d, p in layer.items():
      s = f'_l{k}' + ('_reverse' if d == 'backward' else '')
      out[f'{prefix}weight_ih{s}'] = np.ascontiguousarray(p['kernel'].T)
      out[f'{prefix}weight_hh{s}'] = np.ascontiguousarray(p['recurrent_kernel'].T)
      out[f'{prefix}bias_ih{s}'] = p['bias'].copy()
      out[f'{prefix}bias_hh{s}'] = np.zeros_like(p['bias'])
  return out


# --- GRU -----------------------------------------------------------------------------

_KERAS_TO_TORCH_GRU = (1, 0, 2)  # Keras blocks z, r, h -> PyTorch r, z, n (and back).


def gru_from_keras(weights: Sequence[Any], units: Optional[int] = None) -> Dict[str, np.ndarray]:
  """Keras ``GRU.get_weights()`` -> ``{'kernel', 'recurrent_kernel', 'bias'}`` (Keras layout, checked).

  weights: ``[kernel (F, 3H), recurrent_kernel (H, 3H), bias]`` with bias
    (2, 3H) for ``reset_after=True`` or (3H,) for ``reset_after=False``; blocks
    z, r, h.  Exact copies.
  """
  if not isinstance(weights, (list, tuple)) or len(weights) != 3:
    raise ValueError('Keras GRU weights must be a list [kernel, recurrent_kernel, bias] '
                     '(GRU(use_bias=False) is not supported: its variant cannot be told '
                     'from the arrays)')
  return _check_gru_params(dict(zip(('kernel', 'recurrent_kernel', 'bias'), weights)),
                           'Keras GRU weights', units)


def _check_gru_params(params, where, units=None):
  wanted = {'kernel', 'recurrent_kernel', 'bias'}
  if not isinstance(params, Mapping) or set(params) != wanted:
    keys = sorted(params) if isinstance(params, Mapping) else type(params).__name__
    raise ValueError(f'{where} must have keys {sorted(wanted)}; got {keys}')
  p = {k: to_numpy(v) for k, v in params.items()}
  h = _units_of(p['recurrent_kernel'], 3, f'{where}: recurrent_kernel')
  if units is not None and h != units:
    raise ValueError(f'{where}: recurrent_kernel has shape {p["recurrent_kernel"].shape}: '
                     f'{h} units; expected units={units}')
  _check_shape(f'{where}: kernel', p['kernel'], (None, 3 * h), f'F x 3*units, units={h}')
  if p['bias'].shape not in ((2, 3 * h), (3 * h,)):
    raise ValueError(f'{where}: bias has shape {p["bias"].shape}; expected (2, {3 * h}) '
                     f'(reset_after=True) or ({3 * h},) (reset_after=False), units={h}')
  return p


def gru_to_keras(params: Mapping[str, Any]) -> List[np.ndarray]:
  """GRU params in Keras layout -> ``[kernel, recurrent_kernel, bias]`` for ``set_weights``."""
  p = _check_gru_params(params, 'GRU params')
  return [p['kernel'], p['recurrent_kernel'], p['bias']]


def gru_from_torch(state_dict: Mapping[str, Any], prefix: str = '') -> List[Any]:
  """``nn.GRU`` state_dict -> Keras ``reset_after=True`` layout, one entry per layer.

  Blocks r, z, n are reordered to z, r, h; ``bias`` is
  ``stack([bias_ih, bias_hh])`` (2, 3H).  Exact (no arithmetic).  Bidirectional
  entries are ``{'forward': ..., 'backward': ...}``.
  """
  num_layers, bidirectional, arrays = _torch_rnn_layers(state_dict, prefix, 3, 'GRU')
  order = _KERAS_TO_TORCH_GRU

  def convert(layer, suffix):
    a = arrays[(layer, suffix)]
    return {'kernel': np.ascontiguousarray(_blocks(a['weight_ih'], order, 0).T),
            'recurrent_kernel': np.ascontiguousarray(_blocks(a['weight_hh'], order, 0).T),
            'bias': np.stack([_blocks(a['bias_ih'], order), _blocks(a['bias_hh'], order)])}

  return _per_layer(num_layers, bidirectional, convert)


def _check_gru_for_torch(params, where):
  p = _check_gru_params(params, where)
  if p['bias'].ndim == 1:
    raise ValueError(
        f'{where}: bias has shape {p["bias"].shape}, a Keras GRU(reset_after=False): it '
        'applies the reset gate before the recurrent matmul, tanh(x W + (r * h) U + b), '
        "and PyTorch's nn.GRU after it, tanh(x W + b_in + r * (h U + b_hn)); no exact "
        'mapping exists.  Use GRU(reset_after=True) (Keras 3\'s default)')
  return p


def gru_to_torch(layers: Any, prefix: str = '') -> Dict[str, np.ndarray]:
  """GRU params in Keras ``reset_after=True`` layout -> an ``nn.GRU`` state_dict (exact).

  layers: one layer's params, a list of them, or ``{'forward', 'backward'}``
  entries.  Raises ValueError for ``reset_after=False`` params (bias (3H,)).
  """
  checked = _layers_for_torch(layers, _check_gru_for_torch, 'GRU')
  order = _KERAS_TO_TORCH_GRU  # the permutation is its own inverse
  out = {}
  for k, layer in enumerate(checked):
    for d, p in layer.items():
      s = f'_l{k}' + ('_reverse' if d == 'backward' else '')
      out[f'{prefix}weight_ih{s}'] = np.ascontiguousarray(_blocks(p['kernel'], order).T)
      out[f'{prefix}weight_hh{s}'] = np.ascontiguousarray(_blocks(p['recurrent_kernel'], order).T)
      out[f'{prefix}bias_ih{s}'] = _blocks(p['bias'][0], order)
      out[f'{prefix}bias_hh{s}'] = _blocks(p['bias'][1], order)
  return out


# --- Bidirectional (Keras arrays) ------------------------------------------------------

_FROM_KERAS = {'lstm': lstm_from_keras, 'gru': gru_from_keras}
_TO_KERAS = {'lstm': lstm_to_keras, 'gru': gru_to_keras}


def bidirectional_from_keras(weights: Sequence[Any], cell: str = 'lstm') -> Dict[str, Any]:
  """Keras ``Bidirectional(LSTM|GRU).get_weights()`` (the forward layer's arrays,
  then the backward layer's) -> our ``Bidirectional`` params ``{'forward', 'backward'}``."""
  if cell not in _FROM_KERAS:
    raise ValueError(f'cell={cell!r}; expected one of {sorted(_FROM_KERAS)}')
  if not isinstance(weights, (list, tuple)) or len(weights) % 2:
    raise ValueError('Keras Bidirectional weights must be a list: the forward layer\'s '
                     'arrays then the backward layer\'s (an even number); got '
                     f'{len(weights) if isinstance(weights, (list, tuple)) else weights!r:.40}')
  half = len(weights) // 2
  return {'forward': _FROM_KERAS[cell](list(weights[:half])),
          'backward': _FROM_KERAS[cell](list(weights[half:]))}


def bidirectional_to_keras(params: Mapping[str, Any], cell: str = 'lstm') -> List[np.ndarray]:
  """Our ``Bidirectional`` params -> Keras ``Bidirectional.set_weights`` arrays."""
  if cell not in _TO_KERAS:
    raise ValueError(f'cell={cell!r}; expected one of {sorted(_TO_KERAS)}')
  if not isinstance(params, Mapping) or set(params) != {'forward', 'backward'}:
    keys = sorted(params) if isinstance(params, Mapping) else type(params).__name__
    raise ValueError(f'Bidirectional params must have keys [\'backward\', \'forward\']; '
                     f'got {keys}')
  return _TO_KERAS[cell](params['forward']) + _TO_KERAS[cell](params['backward'])


# --- carries -------------------------------------------------------------------------


def carries_from_torch(h_n: Any, c_n: Any = None, bidirectional: bool = False) -> List[Any]:
  """PyTorch's final state -> ours, per layer.

  h_n, c_n: (num_layers * num_directions, B, H); c_n is None for a GRU.
  Returns per layer ``(h, c)`` (LSTM) or ``h`` (GRU), each (B, H); for a
  bidirectional RNN ``{'forward': ..., 'backward': ...}`` per layer.
  """
  h_n = to_numpy(h_n)
  _check_shape('h_n', h_n, (None, None, None), '(num_layers * num_directions, B, H)')
  if c_n is not None:
    c_n = to_numpy(c_n)
    _check_shape('c_n', c_n, h_n.shape, 'the shape of h_n')
  directions = 2 if bidirectional else 1
  if h_n.shape[0] % directions:
    raise ValueError(f'h_n has shape {h_n.shape}: {h_n.shape[0]} rows cannot be '
                     'num_layers * 2 directions')
  one = lambda row: h_n[row] if c_n is None else (h_n[row], c_n[row])
  rows = range(0, h_n.shape[0], directions)
  if not bidirectional:
    return [one(r) for r in rows]
  return [{'forward': one(r), 'backward': one(r + 1)} for r in rows]


def carries_to_torch(carries: Sequence[Any]) -> Any:
  """Per-layer carries as :func:`carries_from_torch` returns them -> ``(h_n, c_n)`` or ``h_n``."""
  rows = []
  for c in carries:
    rows.extend([c['forward'], c['backward']] if isinstance(c, Mapping) else [c])
  if isinstance(rows[0], tuple):
    return (np.stack([to_numpy(h) for h, _ in rows]),
            np.stack([to_numpy(c) for _, c in rows]))
  return np.stack([to_numpy(h) for h in rows])


# --- Keras files ---------------------------------------------------------------------

_HDF5_SIGNATURE = b'\x89HDF\r\n\x1a\n'
# Bounds on what one Keras file may make us inflate and read: far above any
# LSTM here, far below what would exhaust a machine.
MAX_FILE_BYTES = 4 << 30
MAX_COMPRESSION_RATIO = 1000
_RATIO_FLOOR = 1 << 20  # members under 1 MiB are never refused for their ratio
# What zipfile, h5py and indexing raise on a damaged or hand-made file.
_DAMAGE = (OSError, EOFError, KeyError, IndexError, TypeError, AttributeError,
           RuntimeError, UnicodeDecodeError, zipfile.BadZipFile, zlib.error)


@contextlib.contextmanager
def _reading(path):
  """Re-raises a damaged or malformed file's low-level error as a ValueError
  naming the file (a missing file stays a FileNotFoundError)."""
  try:
    yield
  except FileNotFoundError:
    raise
  except _DAMAGE as e:
    raise ValueError(f'{path}: not a readable Keras file (damaged, truncated or '
                     f'malformed): {type(e).__name__}: {e}') from e


def _parse_json(text, where):
  try:
    return json.loads(text)
  except ValueError as e:  # JSONDecodeError and UnicodeDecodeError
    raise ValueError(f'{where} is not valid JSON: {e}') from e


def check_zip_sizes(path, infos) -> None:
  """Refuses, by the sizes in a zip's directory and before inflating anything,
  members ``infos`` (``zipfile.ZipInfo``) that would inflate past
  ``MAX_FILE_BYTES`` together or by more than ``MAX_COMPRESSION_RATIO``."""
  total = sum(i.file_size for i in infos)
  if total > MAX_FILE_BYTES:
    raise ValueError(f'{path}: its zip directory says {[i.filename for i in infos][:8]} '
                     f'inflate to {total:,} bytes; refusing more than {MAX_FILE_BYTES:,}')
  for i in infos:
    if i.file_size > _RATIO_FLOOR and i.file_size > MAX_COMPRESSION_RATIO * i.compress_size:
      raise ValueError(f'{path}: {i.filename} would inflate from {i.compress_size:,} to '
                       f'{i.file_size:,} bytes (over {MAX_COMPRESSION_RATIO}x); refusing '
                       'a likely zip bomb')


def _read_member(z, info, path) -> bytes:
  if info.flag_bits & 0x1:
    raise ValueError(f'{path}: {info.filename} is encrypted')
  with z.open(info) as f:
    data = f.read(info.file_size + 1)  # never more than the directory promised
  if len(data) != info.file_size:
    raise ValueError(f'{path}: {info.filename} holds {len(data):,} bytes; its zip '
                     f'directory says {info.file_size:,}')
  return data


def _read_keras_zip(path):
  """A ``.keras`` archive -> (model.weights.h5 bytes, config.json dict or None)."""
  with zipfile.ZipFile(path) as z:
    infos = {i.filename: i for i in z.infolist()}
    if 'model.weights.h5' not in infos:
      raise ValueError(f'{path} is a zip archive without model.weights.h5 (has '
                       f'{sorted(infos)[:8]}); expected a Keras 3 .keras file')
    wanted = [infos[n] for n in ('config.json', 'model.weights.h5') if n in infos]
    check_zip_sizes(path, wanted)
    data = {i.filename: _read_member(z, i, path) for i in wanted}
  config = (_parse_json(data['config.json'], f'{path}: config.json')
            if 'config.json' in data else None)
  return data['model.weights.h5'], config


def _check_hdf5(h5, path) -> None:
  """Refuses what would make h5py read outside the file -- links to other
  files, external storage, virtual datasets -- or more than MAX_FILE_BYTES."""
  import h5py  # pylint: disable=g-import-not-at-top
  total = 0

  def problem(name, link):  # h5py's visit stops at a non-None return
    nonlocal total
    if isinstance(link, h5py.ExternalLink):
      return f'{name!r} links to another file ({link.filename!r})'
    obj = h5.get(name) if isinstance(link, h5py.HardLink) else None  # soft: seen as hard
    if isinstance(obj, h5py.Dataset):
      if obj.is_virtual:
        return f'dataset {name!r} is a virtual dataset (it maps other files)'
      if obj.external:
        return (f'dataset {name!r} keeps its data outside the file (external storage '
                f'in {_text(obj.external[0][0])!r})')
      total += (obj.size or 0) * obj.dtype.itemsize
    return None

  found = h5.visititems_links(problem)
  if found:
    raise ValueError(f'{path}: {found}; a Keras file holds its own weights, refusing it')
  if total > MAX_FILE_BYTES:
    raise ValueError(f'{path}: its datasets hold {total:,} bytes; refusing more than '
                     f'{MAX_FILE_BYTES:,}')


def _open_keras_file(path):
  """-> (h5py.File of the weights, config dict or None), checked safe to read."""
  import h5py  # pylint: disable=g-import-not-at-top
  with open(path, 'rb') as f:
    head = f.read(8)
  with _reading(path):
    if zipfile.is_zipfile(path):
      data, config = _read_keras_zip(path)
      h5 = h5py.File(io.BytesIO(data), 'r')
    elif head == _HDF5_SIGNATURE:
      h5, config = h5py.File(path, 'r'), None
    else:
      hint = ' (a truncated or damaged zip?)' if head.startswith(b'PK') else ''
      raise ValueError(f'{path} is neither a zip archive (.keras) nor an HDF5 file '
                       f'(.weights.h5): it starts with {head!r}{hint}')
    try:
      _check_hdf5(h5, path)
    except BaseException:
      h5.close()
      raise
  return h5, config


def read_keras_weights(path) -> Dict[str, List[np.ndarray]]:
  """Every weighted object in a Keras file, as float32 numpy; needs h5py, not Keras.

  Keras 3 ``.keras`` / ``.weights.h5``: ``{group path: [vars/0, vars/1, ...]}``,
  e.g. ``{'layers/lstm/cell': [kernel, recurrent_kernel, bias], 'layers/dense':
  [kernel, bias]}`` (a compiled model's file also has ``optimizer``).  Legacy
  HDF5 (Keras 2 / tf.keras): ``{layer name: [arrays in weight_names order]}``
  in model order.  Each list is what the layer's ``get_weights()`` returns.
  A damaged or malformed file, or one that points outside itself, raises
  ValueError naming it.
  """
  h5, _ = _open_keras_file(path)
  with h5, _reading(path):
    legacy = _legacy_weights_group(h5)
    if legacy is not None:
      return dict(_legacy_layers(legacy, path))
    return _weights_of(h5, path)


def _array(obj, where, path) -> np.ndarray:
  """A float32 copy of the numeric HDF5 dataset ``obj``, else a ValueError."""
  import h5py  # pylint: disable=g-import-not-at-top
  if not isinstance(obj, h5py.Dataset) or obj.dtype.kind not in 'fiub':
    what = (f'a dataset of {obj.dtype}' if isinstance(obj, h5py.Dataset)
            else type(obj).__name__ if obj is not None else 'missing')
    raise ValueError(f'{path}: {where} is {what}; expected a dataset of numbers')
  return np.asarray(obj, np.float32)


def _weights_of(h5, path) -> Dict[str, List[np.ndarray]]:
  import h5py  # pylint: disable=g-import-not-at-top
  groups = []  # raising inside h5py's visit would garble the error: collect, then read
  h5.visititems(lambda name, obj: groups.append(name) if (
      isinstance(obj, h5py.Group) and name.split('/')[-1] == 'vars' and len(obj)) else None)
  found = {}
  for name in groups:
    keys = sorted(h5[name], key=lambda k: int(k) if k.isdigit() else -1)
    if keys != [str(i) for i in range(len(keys))]:
      raise ValueError(f'{path}: {name} holds {keys}; expected datasets 0, 1, ... '
                       '(Keras 3 layout)')
    found[name[:-len('/vars')] if '/' in name else ''] = [
        _array(h5[name].get(k), f'{name}/{k}', path) for k in keys]
  return found


def _layer_name_key(name):
  """'lstm' -> ('lstm', 0), 'lstm_2' -> ('lstm', 2): Keras 3's numbering in model order."""
  m = re.fullmatch(r'(.*?)(?:_(\d+))?', name)
  return m.group(1), int(m.group(2) or 0)


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
      raise ValueError('the head\'s activation is unknown (a .weights.h5 has no config): '
                       "pass activation='softmax' / 'sigmoid' / 'linear' to load_keras, or "
                       'use model.apply(variables, inputs) for raw outputs')
    return _predict(self.model, self.activation, self.variables, inputs)


@functools.partial(jax.jit, static_argnums=(0, 1))
def _predict(model, activation, variables, inputs):
  outputs = model.apply(variables, inputs)
  return {'softmax': jax.nn.softmax, 'sigmoid': jax.nn.sigmoid,
          'linear': lambda x: x}[activation](outputs)


_ACTIVATIONS = ('softmax', 'sigmoid', 'linear')
_SUPPORTED = "LSTM, Dense, and TimeDistributed Conv2D / MaxPooling2D / Flatten"
_OUR_ORDER = re.compile(r'(TimeDistributed\(Conv2D\) TimeDistributed\(MaxPooling2D\) '
                        r'TimeDistributed\(Flatten\) )?(LSTM )+Dense')


def _entry(layer, where, path):
  """A model config's layer entry -> (class_name, config dict), checked."""
  if (not isinstance(layer, dict) or not isinstance(layer.get('class_name'), str)
      or not isinstance(layer.get('config'), dict)):
    raise ValueError(f'{path}: {where} is not a layer entry with a class_name and a '
                     f'config dict: {layer!r:.80}')
  return layer['class_name'], layer['config']


def _config_layers(config, path):
  """A model config -> [(class, config, inner class, inner config)], InputLayers
  left out; the inner pair is a TimeDistributed's layer, else (None, None)."""
  body = config.get('config') if isinstance(config, dict) else None
  layers = body if isinstance(body, list) else (  # old Keras 2: a Sequential's config is its layers
      body.get('layers') if isinstance(body, dict) else None)
  if not isinstance(layers, list):
    raise ValueError(f'{path}: the model config has no config.layers list (a Sequential '
                     'or Functional model)')
  out = []
  for i, layer in enumerate(layers):
    cls, cfg = _entry(layer, f'model config layers[{i}]', path)
    if cls != 'InputLayer':
      inner = (_entry(cfg.get('layer'), f'model config layers[{i}].config.layer', path)
               if cls == 'TimeDistributed' else (None, None))
      out.append((cls, cfg) + inner)
  return out


def _need(cfg, cls, field, allowed, path):
  """cfg[field] (a list read as a tuple), if it is one of ``allowed``."""
  value = cfg.get(field)
  if isinstance(value, list):
    value = tuple(value)
  if value not in allowed:
    wanted = (f'computes {allowed[0]!r}' if len(allowed) == 1 or allowed[1] is None
              else f'supports {list(allowed)}')
    raise ValueError(f"{path}: layer {cfg.get('name')!r} ({cls}) has {field}={value!r}; "
                     f'our model {wanted}')
  return value


def _ints(cfg, cls, field, path, count=1):
  """cfg[field] as ``count`` positive ints (an int stands for all of them)."""
  value = cfg.get(field)
  value = [value] * count if isinstance(value, int) and count > 1 else value
  values = value if isinstance(value, list) else [value]
  if len(values) != count or not all(
      isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in values):
    raise ValueError(f"{path}: layer {cfg.get('name')!r} ({cls}) has {field}={value!r}; "
                     f'expected {"a positive integer" if count == 1 else f"{count} of them"}')
  return values[0] if count == 1 else tuple(values)


def _check_keras_config(config, path):
  """Checks a model config describes a model we compute -> (the head's
  activation, the pool size, the weighted layers as 'LSTM(20)' etc.)."""
  layers = _config_layers(config, path)
  order = ' '.join(f'TimeDistributed({inner})' if inner else cls
                   for cls, _, inner, _ in layers)
  if not _OUR_ORDER.fullmatch(order):
    raise ValueError(f'{path}: the model\'s layers are {order!r}; ours are [Conv2D '
                     'MaxPooling2D Flatten (TimeDistributed)] LSTM ... LSTM Dense')
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
      for field, allowed in (('strides', (1, 1)), ('dilation_rate', (1, 1)),
                             ('padding', 'valid'), ('data_format', 'channels_last')):
        _need(inner_cfg, inner, field, (allowed,) + ((None,) if field == 'data_format' else ()),
              path)
      k = _ints(inner_cfg, inner, 'kernel_size', path, count=2)
      described.append(f'Conv2D({_ints(inner_cfg, inner, "filters", path)}, {k[0]}x{k[1]})')
    elif inner == 'MaxPooling2D':
      size = _ints(inner_cfg, inner, 'pool_size', path, count=2)
      _need(inner_cfg, inner, 'strides', (size, None), path)
      _need(inner_cfg, inner, 'padding', ('valid',), path)
      if size[0] != size[1]:
        raise ValueError(f'{path}: MaxPooling2D pool_size={size}; ours is square')
      pool_size = size[0]
  return activation, pool_size, described


def _legacy_weights_group(h5):
  """The group of a legacy (Keras 2 / tf.keras) HDF5 file holding ``layer_names``, or None."""
  import h5py  # pylint: disable=g-import-not-at-top
  if 'layer_names' in h5.attrs:
    return h5  # model.save_weights('x.h5')
  group = h5.get('model_weights')
  if isinstance(group, h5py.Group) and 'layer_names' in group.attrs:
    return group  # model.save('x.h5')
  return None


def _text(value):
  return value.decode('utf-8') if isinstance(value, bytes) else str(value)


def _names(obj, attr, path) -> List[str]:
  """A legacy file's list-of-names attribute (``layer_names``, ``weight_names``)."""
  value = obj.attrs.get(attr, [])
  if np.ndim(value) != 1:
    raise ValueError(f'{path}: {obj.name} has {attr}={value!r:.60}; expected a list of names')
  return [_text(v) for v in value]


def _legacy_layers(group, path) -> List[Tuple[str, List[np.ndarray]]]:
  """[(layer name, arrays)] in model order, layers with weights only."""
  import h5py  # pylint: disable=g-import-not-at-top
  layers = []
  for name in _names(group, 'layer_names', path):
    layer = group.get(name)
    if not isinstance(layer, h5py.Group):
      raise ValueError(f'{path}: layer_names lists {name!r}, but the file has no such group')
    weight_names = _names(layer, 'weight_names', path)
    missing = [w for w in weight_names if w not in layer]
    if missing:
      raise ValueError(f'{path}: layer {name!r} lists weights {missing} it does not hold')
    if weight_names:
      layers.append((name, [_array(layer.get(w), f'{name}/{w}', path) for w in weight_names]))
  return layers


def _keras3_layers(weights, path) -> List[Tuple[str, List[np.ndarray]]]:
  """[(layer path, arrays)] of a Keras 3 file in our models' order: the
  TimeDistributed conv, the LSTMs (Keras numbers them in model order), the Dense."""
  by_class = {}
  for group, arrays in weights.items():
    parts = group.split('/')
    if parts[0] != 'layers':
      continue  # the optimizer's state (a compiled model's file), not the model
    if len(parts) < 2:
      raise ValueError(f'{path}: weights at {group!r} are not a layer\'s ({_SUPPORTED})')
    cls, index = _layer_name_key(parts[1])
    by_class.setdefault(cls, []).append((index, group, arrays))
  unknown = sorted(set(by_class) - {'lstm', 'dense', 'time_distributed'})
  if unknown:
    raise ValueError(f'{path}: layers {unknown} are not part of our models ({_SUPPORTED})')
  for _, group, _ in by_class.get('lstm', []):
    if not group.endswith('/cell'):
      raise ValueError(f'{path}: LSTM weights at {group!r}; expected layers/lstm*/cell')
  return [(group, arrays) for cls in ('time_distributed', 'lstm', 'dense')
          for _, group, arrays in sorted(by_class.get(cls, []), key=lambda e: e[0])]


def _kind_of(arrays) -> str:
  """'conv', 'lstm' or 'dense' from a layer's arrays, '?' if none fits."""
  shapes = [a.shape for a in arrays]
  if len(shapes) == 2 and len(shapes[0]) == 4:
    return 'conv'
  if (len(shapes) in (2, 3) and len(shapes[0]) == 2 and len(shapes[1]) == 2
      and shapes[1][1] == 4 * shapes[1][0]):
    return 'lstm'
  if len(shapes) in (1, 2) and len(shapes[0]) == 2 and all(len(s) == 1 for s in shapes[1:]):
    return 'dense'
  return '?'


def _describe(name, arrays) -> str:
  """A layer's arrays as the model config would name it: 'LSTM(20)', 'Dense(5)'."""
  kind, shapes = _kind_of(arrays), [a.shape for a in arrays]
  if kind == 'conv':
    return f'Conv2D({shapes[0][3]}, {shapes[0][0]}x{shapes[0][1]})'
  if kind in ('lstm', 'dense'):
    return f'LSTM({shapes[1][0]})' if kind == 'lstm' else f'Dense({shapes[0][1]})'
  return f'{name} {shapes}'


def _read_keras_layers(path):
  """A Keras file -> ([(layer, arrays)] in model order, the config's head
  activation, its pool size), the config (if any) checked against the weights."""
  h5, config = _open_keras_file(path)
  with h5, _reading(path):
    legacy = _legacy_weights_group(h5)
    if legacy is not None and config is None and 'model_config' in h5.attrs:
      config = _parse_json(_text(h5.attrs['model_config']), f'{path}: model_config')
    activation, pool_size, described = (None, None, None) if config is None else (
        _check_keras_config(config, path))
    if legacy is not None:
      layers = _legacy_layers(legacy, path)
    else:
      layers = _keras3_layers(_weights_of(h5, path), path)
  held = [_describe(name, arrays) for name, arrays in layers]
  if described is not None and held != described:
    raise ValueError(f'{path}: its model config describes [{", ".join(described)}], but '
                     f'its weights hold [{", ".join(held)}]; the file contradicts itself')
  kinds = ' '.join(_kind_of(arrays) for _, arrays in layers)
  if not re.fullmatch(r'(conv )?(lstm )+dense', kinds):
    raise ValueError(f'{path}: the layers with weights are [{", ".join(held)}]; our models '
                     'have an optional Conv2D (kernel, bias), one or more LSTMs (kernel, '
                     'recurrent_kernel, bias) and a Dense head (kernel, bias), in that order')
  return layers, activation, pool_size


def _our_model(layers, pool_size, path):
  """[(layer, arrays)] of a seed model -> (our StackedLSTM / CNNLSTM, its params)."""
  from lstm_flax import models  # pylint: disable=g-import-not-at-top
  lstms = [lstm_from_keras(arrays) for _, arrays in layers if _kind_of(arrays) == 'lstm']
  dense = dense_from_keras(layers[-1][1])
  num_outputs = dense['kernel'].shape[1]
  sizes = tuple(p['recurrent_kernel'].shape[0] for p in lstms)
  if _kind_of(layers[0][1]) != 'conv':
    return (models.StackedLSTM(layer_sizes=sizes, num_outputs=num_outputs),
            stacked_lstm_params(lstms, dense))
  name, (kernel, bias) = layers[0]
  if kernel.shape[0] != kernel.shape[1]:
    raise ValueError(f'{path}: {name} (Conv2D) kernel has shape {kernel.shape}; ours is '
                     'square (k, k, channels, filters)')
  _check_shape(f'{path}: {name} (Conv2D) bias', bias, (kernel.shape[3],))
  model = models.CNNLSTM(layer_sizes=sizes, num_outputs=num_outputs,
                         conv_features=kernel.shape[3], kernel_size=kernel.shape[0],
                         pool_size=pool_size)
  return model, {'encoder': {'kernel': kernel, 'bias': bias},
                 'rnn': stacked_lstm_params(lstms, dense)}


def load_keras(path, activation: Optional[str] = None,
               pool_size: Optional[int] = None) -> KerasImport:
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
    raise ValueError(f'activation={activation!r}; expected one of {_ACTIVATIONS}')
  layers, config_activation, config_pool = _read_keras_layers(path)
  if activation is not None and config_activation not in (None, activation):
    raise ValueError(f'activation={activation!r}, but {path} says its Dense head uses '
                     f'{config_activation!r}')
  activation = activation or config_activation
  if pool_size is not None and config_pool not in (None, pool_size):
    raise ValueError(f'pool_size={pool_size!r}, but {path} says {config_pool!r}')
  model, params = _our_model(layers, pool_size or config_pool or 2, path)
  return KerasImport(model=model, variables={'params': params}, activation=activation)


# --- our models -> Keras ---------------------------------------------------------------


def _keras_layer_groups(params) -> List[Tuple[str, List[np.ndarray]]]:
  """Our StackedLSTM / CNNLSTM params -> [(Keras 3 weights-file group, arrays)] in model order."""
  if isinstance(params, Mapping) and set(params) == {'params'}:
    params = params['params']
  if not isinstance(params, Mapping):
    raise ValueError(f'expected StackedLSTM or CNNLSTM params (a dict); got '
                     f'{type(params).__name__}')
  groups = []
  if 'encoder' in params or 'rnn' in params:
    if set(params) != {'encoder', 'rnn'}:
      raise ValueError(f'CNNLSTM params have keys {sorted(params)}; expected [\'encoder\', '
                       "'rnn']")
    encoder = params['encoder']
    if not isinstance(encoder, Mapping) or set(encoder) != {'kernel', 'bias'}:
      raise ValueError("CNNLSTM params['encoder'] must have keys ['bias', 'kernel']")
    kernel, bias = to_numpy(encoder['kernel']), to_numpy(encoder['bias'])
    _check_shape("CNNLSTM params['encoder']: kernel", kernel, (None, None, None, None),
                 '(k, k, channels, filters)')
    _check_shape("CNNLSTM params['encoder']: bias", bias, (kernel.shape[3],))
    groups.append(('layers/time_distributed/layer', [kernel, bias]))
    params = params['rnn']
  layers, dense = stacked_lstm_layers(params)
  if dense is None:
    raise ValueError('StackedLSTM params have no dense head; the Keras seed models end in '
                     'a Dense layer')
  for i, layer in enumerate(layers):
    groups.append((f'layers/lstm{"" if i == 0 else f"_{i}"}/cell', lstm_to_keras(layer)))
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
    raise ValueError(f'{path}: Keras 3 loads weights only from a file named *.weights.h5')
  import h5py  # pylint: disable=g-import-not-at-top
  groups = _keras_layer_groups(params)
  with h5py.File(path, 'w') as h5:
    for group, arrays in groups:
      target = h5.create_group(group).create_group('vars')
      for i, array in enumerate(arrays):
        target[str(i)] = array

