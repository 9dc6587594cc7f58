"""A model's layers, output shapes and parameter counts, as a text table.

``model_summary(model, inputs)`` traces ``model.init`` under
``jax.eval_shape`` (nothing is compiled or allocated) and records every
module call with ``nn.intercept_methods``.  Internal helpers of the recurrent
layers (the cells scanned over time, the in-scan projection, the weights-only
module of a wavefront stack) are not layers and are left out; their
parameters count towards the layer that owns them.  A stack of LSTM layers
that trains as one wavefront loop (``lstm.lstm_stack_wavefront``) is traced
layer by layer (``layer_schedule='layerwise'``: the same parameters) so that
each layer's output shape shows.  A module run under ``nn.vmap`` (the CNN
frame encoder, once per time step) shows its output for one step.
"""

import dataclasses
import math
from typing import Any, Dict, List, Tuple

import flax.linen as nn
import jax
import numpy as np

from lstm_flax import lstm

# Helper modules that are steps or pieces of a layer, not layers.
INTERNAL_MODULES = (
  lstm.LSTMCell,
  lstm.GRUCell,
  lstm._ProjectInScan,  # pylint: disable=protected-access
  lstm.LSTMWeights,
)


def _shapes(tree) -> str:
  """'(B, T, H)' for one array, '(B, H), (B, H)' for several; dtype when not float32."""
  parts = []
  for leaf in jax.tree_util.tree_leaves(tree):
    if not hasattr(leaf, 'shape'):
      continue
    shape = (
      '('
      + ', '.join(str(d) for d in leaf.shape)
      + (',)' if len(leaf.shape) == 1 else ')')
    )
    dtype = np.dtype(leaf.dtype)
    parts.append(shape if dtype == np.float32 else f'{shape} {dtype.name}')
  return ', '.join(parts) or '-'


def _count(tree) -> Tuple[int, int]:
  """(number of parameters, bytes) of a params (sub)tree."""
  leaves = jax.tree_util.tree_leaves(tree)
  return (
    sum(math.prod(x.shape) for x in leaves),
    sum(math.prod(x.shape) * np.dtype(x.dtype).itemsize for x in leaves),
  )


def _subtree(params, path):
  for name in path:
    if not isinstance(params, dict) or name not in params:
      return {}
    params = params[name]
  return params


def _bytes(n: int) -> str:
  for unit in ('B', 'KB', 'MB', 'GB'):
    if n < 1000 or unit == 'GB':
      return f'{n:.0f} {unit}' if unit == 'B' else f'{n:.1f} {unit}'
    n /= 1000
  return ''


def _layers_traced(model: nn.Module, inputs, call_kwargs):
  """(params shapes, [(path, module class name, output shapes)]) in call order."""
  if 'recurrent' in getattr(model, '__dataclass_fields__', {}):
    model = model.clone(
      recurrent=dataclasses.replace(model.recurrent, layer_schedule='layerwise')
    )  # same parameters
  rows: Dict[Tuple[str, ...], List[Any]] = {}
  hidden: List[Tuple[str, ...]] = []

  def interceptor(next_fun, args, kwargs, context):
    module = context.module
    if context.method_name != '__call__' or module.scope is None:
      return next_fun(*args, **kwargs)
    path = tuple(module.path)
    if isinstance(module, INTERNAL_MODULES):
      hidden.append(path)
    skip = path in rows or any(path[: len(h)] == h for h in hidden)
    if not skip:
      name = next(
        c.__name__
        for c in type(module).__mro__
        if c.__module__ != 'flax.linen.transforms'
      )
      rows[path] = [path, name, None]
    out = next_fun(*args, **kwargs)
    if not skip:
      rows[path][2] = _shapes(out)
      # Inside nn.vmap (the frame encoder over time) a module sees one slice.
      if any(
        type(x).__name__ == 'BatchTracer'
        for x in jax.tree_util.tree_leaves(out)
      ):
        rows[path][2] += ' per step (nn.vmap)'
    return out

  def init(x):
    return model.init(jax.random.key(0), x, **call_kwargs)

  with nn.intercept_methods(interceptor):
    variables = jax.eval_shape(init, inputs)
  return variables.get('params', {}), list(rows.values())


def model_summary(model: nn.Module, inputs, **call_kwargs) -> str:
  """A table of ``model``'s layers: path, module, output shape, parameters.

  Args:
    model: an unbound Flax Linen module.
    inputs: an example input (an array or ``jax.ShapeDtypeStruct``, e.g.
      (B, T, F)); shapes in the table are for this batch size.
    **call_kwargs: further arguments of ``model.__call__`` (e.g. ``train``).
  Returns:
    The table as text (one row per layer, nested layers by their full path
    in the params tree, e.g. ``rnn/lstm_0``), ending with the total number
    of parameters, which equals the sum over the params tree.
  """
  params, rows = _layers_traced(model, inputs, call_kwargs)
  table = [('layer', 'module', 'output shape', 'parameters')]
  for path, name, out in rows:
    count = _count(_subtree(params, path))[0]
    table.append(('/'.join(path) or '(model)', name, out or '-', f'{count:,}'))
  widths = [max(len(r[i]) for r in table) for i in range(4)]

  def line(r):
    return '  '.join(
      [
        r[0].ljust(widths[0]),
        r[1].ljust(widths[1]),
        r[2].ljust(widths[2]),
        r[3].rjust(widths[3]),
      ]
    ).rstrip()

  total, size = _count(params)
  rule = '  '.join('-' * w for w in widths)
  lines = (
    [f'{type(model).__name__}, inputs {_shapes(inputs)}', line(table[0]), rule]
    + [line(r) for r in table[1:]]
    + [rule, f'Total parameters: {total:,} ({_bytes(size)})']
  )
  return '\n'.join(lines) + '\n'
