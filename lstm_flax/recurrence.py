"""The LSTM recurrence over precomputed input projections, with a hand-written gradient.

Given ``a_t = x_t @ kernel + bias`` for every step (one matmul before the
loop), each iteration computes, gates ordered i, f, c, o (``lstm.py``)::

  z_t = a_t + h_{t-1} @ matrix
  c_t = sigmoid(z_f) * c_{t-1} + sigmoid(z_i) * tanh(z_c)
  h_t = sigmoid(z_o) * tanh(c_t)

Autodiff of a ``lax.scan`` saves each intermediate as its own stacked array
and accumulates the gradient of ``matrix`` inside the backward loop, one tiny
matmul and add per step.  Here the forward loop saves one packed array per
step (the four activated gates, c and h), the backward loop carries
``(dh, dc)`` and emits ``dz_t`` — one fused update and one matmul per step —
and ``d matrix = sum_t h_{t-1}^T dz_t`` is a single matmul after the loop
(``dz`` is also the gradient of ``a``, so the input kernel's gradient is one
more matmul outside).

Forward-mode autodiff (``jax.jvp``, ``jax.jacfwd``) cannot use a
``jax.custom_vjp``; there ``lstm_recurrence`` runs the same loop with JAX's
own derivative (see its docstring for the two cases it cannot detect).

``matrix`` may hold several layers at once (``lstm.lstm_stack_wavefront``):
``layer_sizes`` then splits the state's S columns into layers, and layer l
stays idle (keeps its initial state) for the first l iterations.
"""

import functools
from typing import Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np


def _column_layers(layer_sizes):
  """(S,) layer index of each state column, or None for a single layer."""
  if layer_sizes is None or len(layer_sizes) < 2:
    return None
  return np.repeat(np.arange(len(layer_sizes)), layer_sizes)


def _forward(
  x, kernel, bias, matrix, h0, c0, layer_sizes, unroll, save, emit_sequence
):
  """The loop.  Returns (hs (T, B, S) or None, h_T, c_T, saved): ``saved``
  (with ``save``) is (T, B, 6S), per step the activated gates i, f, g, o,
  c_{t-1} and h_{t-1} — everything the backward loop reads."""
  size = h0.shape[-1]
  columns = _column_layers(layer_sizes)

  def step(carry, xs):
    h, c = carry
    x_t, t = xs
    if kernel is not None:
      x_t = jnp.dot(x_t, kernel, preferred_element_type=jnp.float32)
    z = (
      x_t
      + bias
      + jnp.dot(
        h.astype(matrix.dtype), matrix, preferred_element_type=jnp.float32
      )
    )
    i = jax.nn.sigmoid(z[:, :size])
    f = jax.nn.sigmoid(z[:, size : 2 * size])
    g = jnp.tanh(z[:, 2 * size : 3 * size])
    o = jax.nn.sigmoid(z[:, 3 * size :])
    new_c = f * c + i * g
    new_h = o * jnp.tanh(new_c)
    if columns is not None:
      active = jnp.asarray(columns) <= t
      new_h = jnp.where(active, new_h, h)
      new_c = jnp.where(active, new_c, c)
    out = {}
    if save:
      out['saved'] = jnp.concatenate([i, f, g, o, c, h], axis=1)
    if emit_sequence:
      out['h'] = new_h
    return (new_h, new_c), out

  steps = x.shape[0]
  (h_last, c_last), out = jax.lax.scan(
    step, (h0, c0), (x, jnp.arange(steps)), unroll=unroll
  )
  return out.get('h'), h_last, c_last, out.get('saved')


def lstm_recurrence(
  x,
  kernel,
  bias,
  matrix,
  h0,
  c0,
  layer_sizes: Optional[Sequence[int]] = None,
  unroll: int = 1,
  return_sequences: bool = True,
):
  """Runs the recurrence ``z_t = x_t @ kernel + bias + h_{t-1} @ matrix``.

  Args:
    x: (T, B, F) time-major inputs, in the matmul dtype; with ``kernel``
      None, (T, B, 4S) float32 input projections ``x_t @ kernel`` computed
      before the loop (hoisted).
    kernel: (F, 4S) input kernel, or None (``x`` is already projected).
    bias: (4S,) float32.
    matrix: (S, 4S) recurrent weights (float32 or the matmul dtype).
    h0, c0: (B, S) float32 initial state.
    layer_sizes: static; several layers side by side in the state (their
      sum is S), layer l idle for iterations t < l; None: one layer.
    unroll: static; steps per iteration of the loop.
    return_sequences: static; False returns None instead of ``hs``.
  Columns of ``kernel``, ``bias`` and ``matrix`` are gate-major (all i, then
  f, c, o: a single layer's Keras layout).
  Returns:
    ``(hs (T, B, S) every step's h, or None; h_T (B, S); c_T (B, S))``.

  Reverse mode (``jax.grad``, ``jax.vjp``, and forward-over-reverse such as
  ``jax.hessian``) uses the hand-written gradient.  A ``jax.custom_vjp`` has
  no forward mode, so under ``jax.jvp`` / ``jax.jacfwd`` (also inside
  ``jax.jit`` or ``jax.vmap``) the same loop runs with JAX's own derivative.
  Two cases cannot be told apart from reverse mode while tracing and raise
  JAX's "can't apply forward-mode autodiff (jvp) to a custom_vjp function":
  ``jax.jvp`` of a function jitted before the ``jvp`` (``jax.jvp(jax.jit(f),
  ...)``; jit the ``jvp`` instead) and calling the function that
  ``jax.linearize`` returns.  Use ``recurrence='scan'`` in the layers there.
  """
  args = (
    x,
    kernel,
    bias,
    matrix,
    h0,
    c0,
    layer_sizes,
    unroll,
    return_sequences,
  )
  if not _in_forward_mode(args):
    try:
      return _fused_recurrence(*args)
    except TypeError as e:  # forward mode that _in_forward_mode missed
      if 'forward-mode' not in str(e):
        raise
  return _plain_recurrence(*args)


def _in_forward_mode(args) -> bool:
  """Whether forward-mode autodiff traces ``args``: a leaf is a JVP tracer,
  possibly under vmap's batch tracers (``jax.jacfwd`` vmaps a ``jvp``)."""
  for leaf in jax.tree_util.tree_leaves(args):
    while isinstance(leaf, jax.core.Tracer):
      kind = type(leaf).__name__
      if kind == 'JVPTracer':
        return True
      if kind != 'BatchTracer':
        break
      leaf = leaf.val
  return False


def _plain_recurrence(
  x, kernel, bias, matrix, h0, c0, layer_sizes, unroll, return_sequences
):
  """The loop alone, differentiated (if at all) by JAX's own rules."""
  hs, h_last, c_last, _ = _forward(
    x,
    kernel,
    bias,
    matrix,
    h0,
    c0,
    layer_sizes,
    unroll,
    False,
    return_sequences,
  )
  return hs, h_last, c_last


@functools.partial(jax.custom_vjp, nondiff_argnums=(6, 7, 8))
def _fused_recurrence(
  x, kernel, bias, matrix, h0, c0, layer_sizes, unroll, return_sequences
):
  """``lstm_recurrence`` with the hand-written gradient (no forward mode)."""
  return _plain_recurrence(
    x, kernel, bias, matrix, h0, c0, layer_sizes, unroll, return_sequences
  )


def _recurrence_fwd(
  x, kernel, bias, matrix, h0, c0, layer_sizes, unroll, return_sequences
):
  hs, h_last, c_last, saved = _forward(
    x, kernel, bias, matrix, h0, c0, layer_sizes, unroll, True, return_sequences
  )
  return (hs, h_last, c_last), (x, kernel, matrix, saved)


def _recurrence_bwd(
  layer_sizes, unroll, return_sequences, residuals, cotangents
):
  x, kernel, matrix, saved = residuals
  d_hs, d_h_last, d_c_last = cotangents
  size = d_h_last.shape[-1]
  columns = _column_layers(layer_sizes)
  transposed = matrix.T

  def step(carry, xs):
    dh, dc = carry
    saved_t, d_h_t, t = xs
    i = saved_t[:, :size]
    f = saved_t[:, size : 2 * size]
    g = saved_t[:, 2 * size : 3 * size]
    o = saved_t[:, 3 * size : 4 * size]
    c_prev = saved_t[:, 4 * size : 5 * size]
    if d_h_t is not None:
      dh = dh + d_h_t
    tanh_c = jnp.tanh(f * c_prev + i * g)
    dc_total = dc + dh * o * (1.0 - tanh_c * tanh_c)
    dz = jnp.concatenate(
      [
        dc_total * g * i * (1.0 - i),
        dc_total * c_prev * f * (1.0 - f),
        dc_total * i * (1.0 - g * g),
        dh * tanh_c * o * (1.0 - o),
      ],
      axis=1,
    )
    dc_prev = dc_total * f
    if columns is not None:
      active = jnp.asarray(columns) <= t
      dz = jnp.where(jnp.tile(active, 4), dz, 0.0)
      dc_prev = jnp.where(active, dc_prev, dc)
    dh_prev = jnp.dot(
      dz.astype(transposed.dtype),
      transposed,
      preferred_element_type=jnp.float32,
    )
    if columns is not None:
      dh_prev = jnp.where(active, dh_prev, dh_prev + dh)
    return (dh_prev, dc_prev), dz

  steps = saved.shape[0]
  (dh0, dc0), dz = jax.lax.scan(
    step,
    (d_h_last, d_c_last),
    (saved, d_hs if return_sequences else None, jnp.arange(steps)),
    reverse=True,
    unroll=unroll,
  )
  # The weights' gradients: one matmul each over all steps, after the loop.
  d_matrix = jnp.einsum(
    'tbs,tbg->sg',
    saved[..., 5 * size :].astype(matrix.dtype),
    dz.astype(matrix.dtype),
    preferred_element_type=jnp.float32,
  )
  d_bias = dz.sum(axis=(0, 1))
  if kernel is None:
    d_x, d_kernel = dz, None
  else:
    dz_low = dz.astype(kernel.dtype)
    d_x = jnp.einsum(
      'tbg,fg->tbf', dz_low, kernel, preferred_element_type=jnp.float32
    ).astype(x.dtype)
    d_kernel = jnp.einsum(
      'tbf,tbg->fg', x, dz_low, preferred_element_type=jnp.float32
    ).astype(kernel.dtype)
  return (d_x, d_kernel, d_bias, d_matrix.astype(matrix.dtype), dh0, dc0)


_fused_recurrence.defvjp(_recurrence_fwd, _recurrence_bwd)
