"""PyTorch ``state_dict``s of ``nn.LSTM``, ``nn.GRU`` and ``nn.Linear`` to our
params and back, and ``(h_n, c_n)`` carries.  torch is never imported:
tensors are read by duck typing (``.detach().cpu().numpy()``).
"""

import re
from typing import Any, Dict, List, Mapping, Sequence

import numpy as np

from lstm_flax.interop._common import blocks
from lstm_flax.interop._common import check_dense
from lstm_flax.interop._common import check_gru_params
from lstm_flax.interop._common import check_lstm_params
from lstm_flax.interop._common import check_shape
from lstm_flax.interop._common import stacked_lstm_layers
from lstm_flax.interop._common import to_numpy


# --- nn.Linear ----------------------------------------------------------------


def linear_from_torch(
  state_dict: Mapping[str, Any], prefix: str = ''
) -> Dict[str, np.ndarray]:
  """``nn.Linear`` ``{prefix}weight`` (N, F), ``{prefix}bias`` (N,) -> ``nn.Dense`` params."""
  for key in (prefix + 'weight', prefix + 'bias'):
    if key not in state_dict:
      raise ValueError(
        f'state_dict has no {key!r} (an nn.Linear with bias); '
        f'keys: {sorted(state_dict)[:12]}'
      )
  weight = to_numpy(state_dict[prefix + 'weight'])
  check_shape(f'{prefix}weight', weight, (None, None))
  bias = to_numpy(state_dict[prefix + 'bias'])
  check_shape(
    f'{prefix}bias',
    bias,
    (weight.shape[0],),
    f'{prefix}weight has {weight.shape[0]} outputs',
  )
  return {'kernel': np.ascontiguousarray(weight.T), 'bias': bias}


def dense_to_torch(
  params: Mapping[str, Any], prefix: str = ''
) -> Dict[str, np.ndarray]:
  """``nn.Dense`` params -> ``{prefix}weight`` (N, F), ``{prefix}bias`` for ``nn.Linear``."""
  p = check_dense(params, 'Dense params')
  return {
    prefix + 'weight': np.ascontiguousarray(p['kernel'].T),
    prefix + 'bias': p['bias'],
  }


# --- nn.LSTM ------------------------------------------------------------------


TORCH_RNN_KEY = re.compile(
  r'(weight_ih|weight_hh|bias_ih|bias_hh|weight_hr)_l(\d+)(_reverse)?'
)


def _torch_rnn_layers(
  state_dict: Mapping[str, Any], prefix: str, gates: int, kind: str
):
  """Parses and checks an ``nn.LSTM``/``nn.GRU`` state_dict.

  Returns (num_layers, bidirectional, arrays) with ``arrays[(layer, suffix)][name]``.
  """
  found = _collect_rnn_tensors(state_dict, prefix, kind)
  num_layers = 1 + max(layer for layer, _ in found)
  bidirectional = any(suffix for _, suffix in found)
  suffixes = ('', '_reverse') if bidirectional else ('',)
  arrays = {}
  hidden = None
  for layer in range(num_layers):
    for suffix in suffixes:
      got = found.get((layer, suffix), {})
      tag = f'_l{layer}{suffix}'
      _check_layer_complete(got, prefix, tag, kind, num_layers, bidirectional)
      a = {k: to_numpy(v) for k, v in got.items()}
      if hidden is None:
        hidden = _hidden_size(
          a['weight_hh'], f'{prefix}weight_hh{tag}', gates, kind
        )
      in_width = None if layer == 0 else hidden * len(suffixes)
      _check_layer_shapes(a, prefix, tag, gates, hidden, in_width, kind)
      arrays[(layer, suffix)] = a
  return num_layers, bidirectional, arrays


def _collect_rnn_tensors(state_dict, prefix, kind):
  """``{(layer, suffix): {name: tensor}}`` of the state_dict's keys under
  ``prefix``; raises if a key there is not an RNN parameter or none is."""
  if not isinstance(state_dict, Mapping):
    raise ValueError(
      f'expected a state_dict (a mapping of names to arrays); got '
      f'{type(state_dict).__name__}'
    )
  found = {}
  unexpected = []
  for key, value in state_dict.items():
    if not key.startswith(prefix):
      continue
    m = TORCH_RNN_KEY.fullmatch(key[len(prefix) :])
    if m is None:
      unexpected.append(key)
      continue
    if m.group(1) == 'weight_hr':
      raise ValueError(
        f'{key!r}: nn.{kind}(proj_size > 0) projects h; our layer has no '
        'projection, so it cannot be converted'
      )
    found.setdefault((int(m.group(2)), m.group(3) or ''), {})[m.group(1)] = (
      value
    )
  guess = _prefix_guess(state_dict, prefix)
  if unexpected:
    raise ValueError(
      f'state_dict keys {unexpected[:6]} are not nn.{kind} parameters '
      f'(under prefix {prefix!r}); pass the prefix of the nn.{kind}, e.g. '
      f"prefix='lstm.' for keys 'lstm.weight_ih_l0'{guess}"
    )
  if not found:
    raise ValueError(
      f'state_dict has no nn.{kind} parameters under prefix {prefix!r} '
      f'(no {prefix}weight_ih_l0){guess}'
    )
  return found


def _prefix_guess(state_dict, prefix):
  """'; did you mean prefix=...?' for another prefix with a weight_ih_l0."""
  guesses = sorted(
    {
      k[: -len('weight_ih_l0')]
      for k in state_dict
      if k.endswith('weight_ih_l0')
    }
    - {prefix}
  )
  return f'; did you mean prefix={guesses[0]!r}?' if guesses else ''


def _check_layer_complete(got, prefix, tag, kind, num_layers, bidirectional):
  """Raises unless ``got`` has all four tensors of one layer; its keys end in
  ``tag`` (``_l{layer}{suffix}``)."""
  for name in ('weight_ih', 'weight_hh', 'bias_ih', 'bias_hh'):
    if name not in got:
      extra = (
        f' (nn.{kind}(bias=False) has no biases; ours always has one: add '
        'zero bias_ih/bias_hh)'
        if name.startswith('bias')
        else ''
      )
      raise ValueError(
        f'state_dict is missing {prefix}{name}{tag} '
        f'(found {num_layers} layer(s)'
        f'{", bidirectional" if bidirectional else ""}){extra}'
      )


def _hidden_size(w, name, gates, kind):
  """The hidden size of a (gates * hidden, hidden) ``weight_hh`` array."""
  if w.ndim != 2 or w.shape[0] != gates * w.shape[1]:
    other = 7 - gates  # 4 gate blocks (LSTM) <-> 3 (GRU)
    hint = (
      f': it has {other} x hidden rows, is this an nn.{"GRU" if other == 3 else "LSTM"}?'
      if w.ndim == 2 and w.shape[0] == other * w.shape[1]
      else ''
    )
    raise ValueError(
      f'{name} has shape {tuple(w.shape)}; expected '
      f'({gates}*hidden, hidden) for nn.{kind}{hint}'
    )
  return w.shape[1]


def _check_layer_shapes(a, prefix, tag, gates, hidden, in_width, kind):
  """Checks one layer's arrays ``a`` (keys ending in ``tag``); ``in_width`` is
  its input width (None: any, for layer 0)."""

  def key(name):
    return f'{prefix}{name}{tag}'

  check_shape(
    key('weight_hh'),
    a['weight_hh'],
    (gates * hidden, hidden),
    f'{gates}*hidden x hidden for nn.{kind}',
  )
  check_shape(
    key('weight_ih'),
    a['weight_ih'],
    (gates * hidden, in_width),
    f'{gates}*hidden x input for nn.{kind}, hidden={hidden}',
  )
  for b in ('bias_ih', 'bias_hh'):
    check_shape(
      key(b), a[b], (gates * hidden,), f'{gates}*hidden, hidden={hidden}'
    )


def _per_layer(num_layers, bidirectional, convert):
  """[convert(layer, suffix)] or [{'forward': ..., 'backward': ...}] per layer."""
  if not bidirectional:
    return [convert(k, '') for k in range(num_layers)]
  return [
    {'forward': convert(k, ''), 'backward': convert(k, '_reverse')}
    for k in range(num_layers)
  ]


def lstm_from_torch(
  state_dict: Mapping[str, Any], prefix: str = ''
) -> List[Any]:
  """``nn.LSTM`` state_dict -> our LSTM params, one entry per layer.

  state_dict: torch tensors or numpy arrays; keys ``{prefix}weight_ih_l{k}`` etc.
    (``prefix='lstm.'`` for a module whose LSTM is ``self.lstm``).
  Returns a list (layer 0 first) of ``{'kernel', 'recurrent_kernel', 'bias'}``;
  for a bidirectional LSTM each entry is ``{'forward': ..., 'backward': ...}``.
  Feed a unidirectional list to :func:`stacked_lstm_params` for ``StackedLSTM``.
  """
  num_layers, bidirectional, arrays = _torch_rnn_layers(
    state_dict, prefix, 4, 'LSTM'
  )

  def convert(layer, suffix):
    a = arrays[(layer, suffix)]
    return {
      'kernel': np.ascontiguousarray(a['weight_ih'].T),
      'recurrent_kernel': np.ascontiguousarray(a['weight_hh'].T),
      'bias': a['bias_ih'] + a['bias_hh'],
    }

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
      if not isinstance(layer, Mapping) or set(layer) != {
        'forward',
        'backward',
      }:
        raise ValueError(
          f'layer {k}: a bidirectional layer must be a dict with keys '
          f'forward and backward (like layer 0); got {layer!r:.80}'
        )
      checked.append(
        {d: check(layer[d], f'layer {k} {d}') for d in ('forward', 'backward')}
      )
    else:
      checked.append({'forward': check(layer, f'layer {k}')})
  hidden = checked[0]['forward']['recurrent_kernel'].shape[0]
  features = checked[0]['forward']['kernel'].shape[0]
  directions = len(checked[0])
  for k, layer in enumerate(checked):
    for d, p in layer.items():
      h = p['recurrent_kernel'].shape[0]
      if h != hidden:
        raise ValueError(
          f'nn.{kind} needs every layer to have the same hidden size; '
          f'layer 0 has {hidden}, layer {k} {d} has {h}'
        )
      if k == 0 and p['kernel'].shape[0] != features:
        raise ValueError(
          f'layer 0 {d} kernel has shape {p["kernel"].shape}; both '
          f'directions read the same {features} input features'
        )
      if k > 0 and p['kernel'].shape[0] != hidden * directions:
        raise ValueError(
          f'layer {k} {d} kernel has shape {p["kernel"].shape}; nn.{kind} '
          f"feeds layer {k} the previous layer's {hidden * directions} "
          'outputs'
        )
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
  checked = _layers_for_torch(layers, check_lstm_params, 'LSTM')
  out = {}
  for k, layer in enumerate(checked):
    for d, p in layer.items():
      s = f'_l{k}' + ('_reverse' if d == 'backward' else '')
      out[f'{prefix}weight_ih{s}'] = np.ascontiguousarray(p['kernel'].T)
      out[f'{prefix}weight_hh{s}'] = np.ascontiguousarray(
        p['recurrent_kernel'].T
      )
      out[f'{prefix}bias_ih{s}'] = p['bias'].copy()
      out[f'{prefix}bias_hh{s}'] = np.zeros_like(p['bias'])
  return out


# --- nn.GRU -------------------------------------------------------------------


_KERAS_TO_TORCH_GRU = (
  1,
  0,
  2,
)  # Keras blocks z, r, h -> PyTorch r, z, n (and back).


def gru_from_torch(
  state_dict: Mapping[str, Any], prefix: str = ''
) -> List[Any]:
  """``nn.GRU`` state_dict -> Keras ``reset_after=True`` layout, one entry per layer.

  Blocks r, z, n are reordered to z, r, h; ``bias`` is
  ``stack([bias_ih, bias_hh])`` (2, 3H).  Exact (no arithmetic).  Bidirectional
  entries are ``{'forward': ..., 'backward': ...}``.
  """
  num_layers, bidirectional, arrays = _torch_rnn_layers(
    state_dict, prefix, 3, 'GRU'
  )
  order = _KERAS_TO_TORCH_GRU

  def convert(layer, suffix):
    a = arrays[(layer, suffix)]
    return {
      'kernel': np.ascontiguousarray(blocks(a['weight_ih'], order, 0).T),
      'recurrent_kernel': np.ascontiguousarray(
        blocks(a['weight_hh'], order, 0).T
      ),
      'bias': np.stack(
        [blocks(a['bias_ih'], order), blocks(a['bias_hh'], order)]
      ),
    }

  return _per_layer(num_layers, bidirectional, convert)


def _check_gru_for_torch(params, where):
  p = check_gru_params(params, where)
  if p['bias'].ndim == 1:
    raise ValueError(
      f'{where}: bias has shape {p["bias"].shape}, a Keras GRU(reset_after=False): it '
      'applies the reset gate before the recurrent matmul, tanh(x W + (r * h) U + b), '
      "and PyTorch's nn.GRU after it, tanh(x W + b_in + r * (h U + b_hn)); no exact "
      "mapping exists.  Use GRU(reset_after=True) (Keras 3's default)"
    )
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
      out[f'{prefix}weight_ih{s}'] = np.ascontiguousarray(
        blocks(p['kernel'], order).T
      )
      out[f'{prefix}weight_hh{s}'] = np.ascontiguousarray(
        blocks(p['recurrent_kernel'], order).T
      )
      out[f'{prefix}bias_ih{s}'] = blocks(p['bias'][0], order)
      out[f'{prefix}bias_hh{s}'] = blocks(p['bias'][1], order)
  return out


# --- carries ------------------------------------------------------------------


def carries_from_torch(
  h_n: Any, c_n: Any = None, bidirectional: bool = False
) -> List[Any]:
  """PyTorch's final state -> ours, per layer.

  h_n, c_n: (num_layers * num_directions, B, H); c_n is None for a GRU.
  Returns per layer ``(h, c)`` (LSTM) or ``h`` (GRU), each (B, H); for a
  bidirectional RNN ``{'forward': ..., 'backward': ...}`` per layer.
  """
  h_n = to_numpy(h_n)
  check_shape(
    'h_n', h_n, (None, None, None), '(num_layers * num_directions, B, H)'
  )
  if c_n is not None:
    c_n = to_numpy(c_n)
    check_shape('c_n', c_n, h_n.shape, 'the shape of h_n')
  directions = 2 if bidirectional else 1
  if h_n.shape[0] % directions:
    raise ValueError(
      f'h_n has shape {h_n.shape}: {h_n.shape[0]} rows cannot be '
      'num_layers * 2 directions'
    )
  one = lambda row: h_n[row] if c_n is None else (h_n[row], c_n[row])
  rows = range(0, h_n.shape[0], directions)
  if not bidirectional:
    return [one(r) for r in rows]
  return [{'forward': one(r), 'backward': one(r + 1)} for r in rows]


def carries_to_torch(carries: Sequence[Any]) -> Any:
  """Per-layer carries as :func:`carries_from_torch` returns them -> ``(h_n, c_n)`` or ``h_n``."""
  rows = []
  for c in carries:
    rows.extend(
      [c['forward'], c['backward']] if isinstance(c, Mapping) else [c]
    )
  if isinstance(rows[0], tuple):
    return (
      np.stack([to_numpy(h) for h, _ in rows]),
      np.stack([to_numpy(c) for _, c in rows]),
    )
  return np.stack([to_numpy(h) for h in rows])
