"""What every conversion shares: array copies, shape checks, the checked
layouts of one LSTM / GRU / Dense layer, and our ``StackedLSTM`` trees.
"""

import re
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np


# --- arrays and shapes --------------------------------------------------------


def to_numpy(array, dtype=np.float32) -> np.ndarray:
  """A numpy copy of a numpy/JAX array or a torch tensor (never imports torch)."""
  if hasattr(array, 'detach'):  # a torch tensor
    array = array.detach().cpu()
    if 'bfloat16' in str(array.dtype):
      array = array.float()
    array = array.numpy()
  return np.array(array, dtype=dtype)


def check_shape(
  name: str,
  array: np.ndarray,
  expected: Tuple[Optional[int], ...],
  why: str = '',
):
  """Raises ValueError unless ``array.shape`` matches ``expected`` (None: any)."""
  ok = array.ndim == len(expected) and all(
    e is None or e == s for s, e in zip(array.shape, expected)
  )
  if not ok:
    shown = (
      '('
      + ', '.join('any' if e is None else str(e) for e in expected)
      + (',)' if len(expected) == 1 else ')')
    )
    raise ValueError(
      f'{name} has shape {tuple(array.shape)}; expected {shown}'
      + (f' ({why})' if why else '')
    )


def units_of(recurrent_kernel: np.ndarray, gates: int, name: str) -> int:
  """H from a recurrent kernel (H, gates*H), checking it is 2-D and square-ish."""
  if (
    recurrent_kernel.ndim != 2
    or recurrent_kernel.shape[1] != gates * recurrent_kernel.shape[0]
  ):
    other = {4: 3, 3: 4}[gates]
    hint = ''
    if (
      recurrent_kernel.ndim == 2
      and recurrent_kernel.shape[1] == other * recurrent_kernel.shape[0]
    ):
      hint = f'; it is {other} x units wide: is this a{"n LSTM" if other == 4 else " GRU"}?'
    raise ValueError(
      f'{name} has shape {tuple(recurrent_kernel.shape)}; expected (H, {gates}*H) '
      f'for {"an LSTM" if gates == 4 else "a GRU"} ({gates} gate blocks){hint}'
    )
  return recurrent_kernel.shape[0]


def blocks(
  array: np.ndarray, order: Sequence[int], axis: int = -1
) -> np.ndarray:
  """Reorders the equal gate blocks of ``array`` along ``axis``."""
  parts = np.split(array, len(order), axis=axis)
  return np.concatenate([parts[i] for i in order], axis=axis)


# --- one layer, checked -------------------------------------------------------


def check_lstm_params(
  params: Mapping[str, Any], where: str = 'LSTM params'
) -> Dict[str, np.ndarray]:
  if not isinstance(params, Mapping):
    raise ValueError(
      f'{where} must be a dict with kernel, recurrent_kernel and bias; '
      f'got {type(params).__name__}'
    )
  wanted = {'kernel', 'recurrent_kernel', 'bias'}
  if set(params) != wanted:
    raise ValueError(
      f'{where} have keys {sorted(params)}; expected {sorted(wanted)}'
      + (
        f' (missing {sorted(wanted - set(params))})'
        if wanted - set(params)
        else ''
      )
    )
  p = {k: to_numpy(v) for k, v in params.items()}
  h = units_of(p['recurrent_kernel'], 4, f'{where}: recurrent_kernel')
  check_shape(
    f'{where}: kernel', p['kernel'], (None, 4 * h), f'F x 4*units, units={h}'
  )
  check_shape(f'{where}: bias', p['bias'], (4 * h,), f'4*units, units={h}')
  return p


def check_dense(params, where):
  if not isinstance(params, Mapping) or set(params) != {'kernel', 'bias'}:
    keys = (
      sorted(params) if isinstance(params, Mapping) else type(params).__name__
    )
    raise ValueError(f"{where} must have keys ['bias', 'kernel']; got {keys}")
  kernel, bias = to_numpy(params['kernel']), to_numpy(params['bias'])
  check_shape(f'{where}: kernel', kernel, (None, None))
  check_shape(
    f'{where}: bias',
    bias,
    (kernel.shape[1],),
    f'the kernel has {kernel.shape[1]} outputs',
  )
  return {'kernel': kernel, 'bias': bias}


def check_gru_params(params, where, units=None):
  wanted = {'kernel', 'recurrent_kernel', 'bias'}
  if not isinstance(params, Mapping) or set(params) != wanted:
    keys = (
      sorted(params) if isinstance(params, Mapping) else type(params).__name__
    )
    raise ValueError(f'{where} must have keys {sorted(wanted)}; got {keys}')
  p = {k: to_numpy(v) for k, v in params.items()}
  h = units_of(p['recurrent_kernel'], 3, f'{where}: recurrent_kernel')
  if units is not None and h != units:
    raise ValueError(
      f'{where}: recurrent_kernel has shape {p["recurrent_kernel"].shape}: '
      f'{h} units; expected units={units}'
    )
  check_shape(
    f'{where}: kernel', p['kernel'], (None, 3 * h), f'F x 3*units, units={h}'
  )
  if p['bias'].shape not in ((2, 3 * h), (3 * h,)):
    raise ValueError(
      f'{where}: bias has shape {p["bias"].shape}; expected (2, {3 * h}) '
      f'(reset_after=True) or ({3 * h},) (reset_after=False), units={h}'
    )
  return p


# --- StackedLSTM trees --------------------------------------------------------


def stacked_lstm_params(
  layers: Sequence[Mapping[str, Any]], dense: Optional[Mapping[str, Any]] = None
) -> Dict[str, Any]:
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
    p = check_lstm_params(layer, f'LSTM layer {i}')
    if previous is not None and p['kernel'].shape[0] != previous:
      raise ValueError(
        f'LSTM layer {i} kernel has shape {p["kernel"].shape}; its input '
        f"width must be layer {i - 1}'s units, {previous}"
      )
    previous = p['recurrent_kernel'].shape[0]
    tree[f'lstm_{i}'] = p
  if dense is not None:
    d = check_dense(dense, 'Dense head')
    if d['kernel'].shape[0] != previous:
      raise ValueError(
        f'Dense head kernel has shape {d["kernel"].shape}; its input width '
        f"must be the last LSTM layer's units, {previous}"
      )
    tree['dense'] = d
  return tree


def stacked_lstm_layers(
  params: Mapping[str, Any],
) -> Tuple[List[Dict[str, np.ndarray]], Optional[Dict[str, np.ndarray]]]:
  """Our ``StackedLSTM`` params -> (per-layer LSTM params, Dense head params or None)."""
  if 'params' in params and len(params) == 1:
    params = params['params']
  names = sorted(
    (k for k in params if re.fullmatch(r'lstm_\d+', k)),
    key=lambda k: int(k[5:]),
  )
  unexpected = sorted(set(params) - set(names) - {'dense'})
  if (
    not names or unexpected or names != [f'lstm_{i}' for i in range(len(names))]
  ):
    raise ValueError(
      f'StackedLSTM params have keys {sorted(params)}; expected lstm_0, '
      'lstm_1, ... (consecutive) and optionally dense'
    )
  layers = [
    check_lstm_params(params[n], f'StackedLSTM params[{n!r}]') for n in names
  ]
  dense = (
    check_dense(params['dense'], "StackedLSTM params['dense']")
    if 'dense' in params
    else None
  )
  return layers, dense
