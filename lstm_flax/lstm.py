"""Recurrent layers: Keras' parameter layout, input projection first, `nn.scan` over time.

LSTM equations (Keras / PyTorch / Hochreiter & Schmidhuber with forget gate),
with ``z = x_t @ kernel + h_{t-1} @ recurrent_kernel + bias`` split into four
H-wide blocks in the order input, forget, cell (candidate), output::

  i = sigmoid(z_i)   f = sigmoid(z_f)   g = tanh(z_c)   o = sigmoid(z_o)
  c_t = f * c_{t-1} + i * g
  h_t = o * tanh(c_t)

Carries are ``(h, c)`` in that order, as Keras returns them (Flax's own cells
use ``(c, h)``).

GRU equations (Keras ``GRU(reset_after=True)``, the default here as in Keras,
PyTorch and cuDNN), three H-wide blocks in the order update z, reset r,
candidate h; ``bias`` is (2, 3H): row 0 the input bias, row 1 the recurrent
bias::

  x = x_t @ kernel + bias[0]            u = h_{t-1} @ recurrent_kernel + bias[1]
  z = sigmoid(x_z + u_z)   r = sigmoid(x_r + u_r)   n = tanh(x_h + r * u_h)
  h_t = z * h_{t-1} + (1 - z) * n

With ``reset_after=False`` (the original GRU, Keras' old default) ``bias`` is
(3H,) and the reset gate applies before the recurrent matmul:
``n = tanh(x_h + (r * h_{t-1}) @ recurrent_kernel[:, 2H:])``.  The GRU's carry
is ``h`` alone.  (PyTorch's ``nn.GRU`` is the reset_after form with gate order
r, z, n and ``h_t = (1 - z) * n + z * h_{t-1}`` — the same equations.)

Every layer takes ``reverse`` (process time backwards, outputs kept in input
order), ``seq_lengths`` (right-padded batches), and Keras-style ``dropout`` /
``recurrent_dropout`` (one mask per sequence, shared by all time steps and
gates, drawn from the ``'dropout'`` rng stream).

The LSTM's loop runs through ``recurrence.lstm_recurrence`` (a hand-written
gradient; forward-mode autodiff: see ``LSTM.recurrence``) with
``recurrence='fused'``, or ``'auto'`` (the default) for sequences too long
to unroll fully; padded batches, recurrent dropout, the
GRU and ``recurrence='scan'`` use ``nn.scan`` over the cells below.  ``lstm_stack_wavefront`` runs a stack of LSTM layers as one loop.
"""

from typing import Any, Callable, Optional, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from lstm_flax import recurrence

Array = jax.Array
Initializer = Callable[..., Array]

MERGE_MODES = ('concat', 'sum', 'mean', 'multiply')
RECURRENCES = ('auto', 'fused', 'scan')


def keras_lstm_bias_init(key, shape, dtype=jnp.float32):
  """Keras' ``unit_forget_bias``: zeros, with the forget gate's block set to 1."""
  del key
  (four_h,) = shape
  h = four_h // 4
  return jnp.zeros(shape, dtype).at[h : 2 * h].set(1.0)


def _mask_step(valid, new_carry, old_carry, output):
  """At a padded step (``valid`` False) keep the old carry and emit zeros."""
  if valid is None:
    return new_carry, output
  keep = valid[:, None]
  carry = jax.tree_util.tree_map(
    lambda n, o: jnp.where(keep, n, o), new_carry, old_carry
  )
  return carry, jnp.where(keep, output, 0.0)


def _recurrent_input(h, recurrent_mask, dtype):
  h = h if recurrent_mask is None else h * recurrent_mask
  return h.astype(dtype)


class LSTMCell(nn.Module):
  """One LSTM time step, given the input's projection ``x_t @ kernel + bias``.

  Parameter-free on purpose: the layer owns the weights (so they keep Keras'
  flat names) and passes them in, broadcast over time.
  ``step_inputs``: ``(projected (B, 4H), valid (B,) bool or None)``;
  ``weights``: ``(recurrent_kernel (H, 4H), recurrent dropout mask (B, H) or
  None)``.  With ``emit_output=False`` the step outputs nothing to stack.
  """

  emit_output: bool = True

  @nn.compact
  def __call__(self, carry, step_inputs, weights):
    projected, valid = step_inputs
    recurrent_kernel, recurrent_mask = weights
    h, c = carry
    z = projected + jnp.dot(
      _recurrent_input(h, recurrent_mask, recurrent_kernel.dtype),
      recurrent_kernel,
      preferred_element_type=jnp.float32,
    )
    z_i, z_f, z_c, z_o = jnp.split(z, 4, axis=-1)
    new_c = nn.sigmoid(z_f) * c + nn.sigmoid(z_i) * jnp.tanh(z_c)
    new_h = nn.sigmoid(z_o) * jnp.tanh(new_c)
    carry, output = _mask_step(valid, (new_h, new_c), carry, new_h)
    return carry, (output if self.emit_output else ())


class GRUCell(nn.Module):
  """One GRU time step, given ``x_t @ kernel + input bias`` (B, 3H).

  ``weights``: ``(recurrent_kernel (H, 3H), recurrent bias (3H,) or None
  (reset_after=False), recurrent dropout mask (B, H) or None)``.
  """

  emit_output: bool = True
  reset_after: bool = True

  @nn.compact
  def __call__(self, h, step_inputs, weights):
    projected, valid = step_inputs
    recurrent_kernel, recurrent_bias, recurrent_mask = weights
    x_z, x_r, x_h = jnp.split(projected, 3, axis=-1)
    h_in = _recurrent_input(h, recurrent_mask, recurrent_kernel.dtype)
    units = h.shape[-1]
    if self.reset_after:
      u = (
        jnp.dot(h_in, recurrent_kernel, preferred_element_type=jnp.float32)
        + recurrent_bias
      )
      u_z, u_r, u_h = jnp.split(u, 3, axis=-1)
      z, r = nn.sigmoid(x_z + u_z), nn.sigmoid(x_r + u_r)
      n = jnp.tanh(x_h + r * u_h)
    else:
      u = jnp.dot(
        h_in,
        recurrent_kernel[:, : 2 * units],
        preferred_element_type=jnp.float32,
      )
      u_z, u_r = jnp.split(u, 2, axis=-1)
      z, r = nn.sigmoid(x_z + u_z), nn.sigmoid(x_r + u_r)
      n = jnp.tanh(
        x_h
        + jnp.dot(
          (r * h_in).astype(recurrent_kernel.dtype),
          recurrent_kernel[:, 2 * units :],
          preferred_element_type=jnp.float32,
        )
      )
    new_h = z * h + (1.0 - z) * n
    new_h, output = _mask_step(valid, new_h, h, new_h)
    return new_h, (output if self.emit_output else ())


def reverse_valid(x, seq_lengths):
  """Reverses the time axis (1) of ``x`` (B, T, ...), only within each
  sequence's first ``seq_lengths[b]`` steps (the padding stays in place).
  It is its own inverse."""
  if seq_lengths is None:
    return jnp.flip(x, axis=1)
  t = jnp.arange(x.shape[1])
  lengths = seq_lengths[:, None]
  index = jnp.where(t[None] < lengths, lengths - 1 - t[None], t[None])  # (B, T)
  index = index.reshape(index.shape + (1,) * (x.ndim - 2))
  return jnp.take_along_axis(x, index, axis=1)


class _ProjectInScan(nn.Module):
  """Wraps a cell so that each step projects its own input:
  ``x_t @ kernel + bias`` inside the scan (see ``input_projection``)."""

  cell: Any
  cell_options: Tuple[Tuple[str, Any], ...] = ()

  @nn.compact
  def __call__(self, carry, step_inputs, weights):
    x, valid = step_inputs
    kernel, input_bias, *weights = weights
    projected = (
      jnp.dot(x, kernel, preferred_element_type=jnp.float32) + input_bias
    )
    return self.cell(**dict(self.cell_options))(
      carry, (projected, valid), tuple(weights)
    )


def hoist_input_projection(
  mode: str, batch: int, steps: int, features: int, units: int
) -> bool:
  """Whether the input projection runs once for all steps, before the scan.

  ``'auto'`` hoists it when inputs are wider than the state (F > H: one
  big matmul beats T small ones) or the whole batch is tiny (B*T <= 64);
  otherwise each step projects its own input, which avoids writing and
  re-reading a (B, T, 4H) array and its gradient.  docs/performance.md has
  the measurements behind both thresholds.
  """
  if mode == 'auto':
    return features > units or batch * steps <= 64
  if mode not in ('hoisted', 'in_scan'):
    raise ValueError(
      f"input_projection={mode!r}: must be 'auto', 'hoisted' or 'in_scan'"
    )
  return mode == 'hoisted'


def use_fused_recurrence(recurrence: str, unroll: int, steps: int) -> bool:
  """Whether an LSTM loop runs through ``recurrence.lstm_recurrence``.
  ``'auto'``: yes unless the loop is fully unrolled (short sequences: then
  autodiff of straight-line code is as fast; long ones train faster fused,
  see docs/performance.md)."""
  if recurrence not in RECURRENCES:
    raise ValueError(
      f'recurrence={recurrence!r}: use one of {list(RECURRENCES)}'
    )
  if recurrence == 'auto':
    return scan_unroll(unroll, steps) < steps
  return recurrence == 'fused'


def scan_unroll(unroll: int, steps: int) -> int:
  """``unroll`` > 0 as given; 0 (auto): all steps for short sequences
  (T <= 8: a short loop runs faster unrolled), else 1 (long sequences run
  no faster unrolled and compile slower)."""
  if unroll < 0:
    raise ValueError(f'unroll={unroll}: must be >= 0 (0: auto)')
  return unroll or (steps if steps <= 8 else 1)


def time_major_inputs(inputs, kernel, hoisted):
  """(B, T, F) inputs -> ``(x, kernel)`` for ``recurrence.lstm_recurrence``:
  time-major (T, B, F) inputs and the kernel, or, ``hoisted``, the
  projections ``x @ kernel`` (T, B, G) float32 for all steps and None.
  Whichever of inputs or projections is narrower gets transposed (XLA's
  transposes of a (B, T, .) array cost more than the loop at batch 256)."""
  dtype = kernel.dtype
  if not hoisted:
    return jnp.swapaxes(inputs, 0, 1).astype(dtype), kernel
  features, gates = kernel.shape
  if gates < features:
    projected = jnp.einsum(
      'btf,fg->btg',
      inputs.astype(dtype),
      kernel,
      preferred_element_type=jnp.float32,
    )
    return jnp.swapaxes(projected, 0, 1), None
  return jnp.einsum(
    'tbf,fg->tbg',
    jnp.swapaxes(inputs, 0, 1).astype(dtype),
    kernel,
    preferred_element_type=jnp.float32,
  ), None


def _wavefront_matrix(weights):
  """The (S, 4S) recurrent matrix of a wavefront over layers of sizes H_l
  (S = sum H_l): rows are every layer's h, columns gate-major (all layers'
  i, then f, c, o).  Layer l's columns read its own h through its
  ``recurrent_kernel`` and layer l-1's h through its ``kernel``; every other
  block is zero."""
  sizes = [u.shape[0] for _, u, _ in weights]
  gates = []
  for g in range(4):
    for l, (kernel, recurrent_kernel, _) in enumerate(weights):
      h = sizes[l]
      block = slice(g * h, (g + 1) * h)
      rows = [
        recurrent_kernel[:, block]
        if r == l
        else kernel[:, block]
        if r == l - 1
        else jnp.zeros((size, h), kernel.dtype)
        for r, size in enumerate(sizes)
      ]
      gates.append(jnp.concatenate(rows, axis=0))
  return jnp.concatenate(gates, axis=1)


def lstm_stack_wavefront(
  inputs,
  weights,
  return_sequences=False,
  unroll=0,
  dtype=None,
  input_projection='auto',
):
  """A stack of LSTM layers run as a wavefront: iteration i of one loop
  computes step i - l of every layer l at once, so L layers over T steps take
  T + L - 1 sequential iterations instead of L * T, each one matmul of all
  layers' states and one fused gate update (``recurrence.py``).  Same
  equations and, up to float rounding, the same results as running the
  layers one after another.

  inputs (B, T, F); ``weights``: per layer, input side first, its Keras
  ``(kernel (F_l, 4H_l), recurrent_kernel (H_l, 4H_l), bias (4H_l,))``.
  ``input_projection``: layer 0's, as for :class:`LSTM`.
  Returns the last layer's outputs: (B, T, H_last) with
  ``return_sequences``, else its final output (B, H_last).
  """
  batch, steps, features = inputs.shape
  dtype = dtype or inputs.dtype
  sizes = tuple(u.shape[0] for _, u, _ in weights)
  total, layers = sum(sizes), len(sizes)
  matrix = _wavefront_matrix(weights).astype(dtype)
  bias = jnp.concatenate(
    [b.reshape(4, -1)[g] for g in range(4) for _, _, b in weights]
  )
  # Layer 0's kernel in its columns of each gate, zeros in the others'.
  kernel = (
    jnp.pad(
      weights[0][0].reshape(features, 4, sizes[0]),
      ((0, 0), (0, 0), (0, total - sizes[0])),
    )
    .reshape(features, 4 * total)
    .astype(dtype)
  )
  x, kernel = time_major_inputs(
    inputs,
    kernel,
    hoist_input_projection(input_projection, batch, steps, features, sizes[0]),
  )
  # L - 1 more steps of zeros: the iterations that finish the upper layers.
  x = jnp.pad(x, ((0, layers - 1), (0, 0), (0, 0)))
  zeros = jnp.zeros((batch, total), jnp.float32)
  hs, h_last, _ = recurrence.lstm_recurrence(
    x,
    kernel,
    bias,
    matrix,
    zeros,
    zeros,
    sizes,
    scan_unroll(unroll, steps + layers - 1),
    return_sequences,
  )
  if not return_sequences:
    return h_last[:, total - sizes[-1] :]
  return jnp.swapaxes(hs[layers - 1 :, :, total - sizes[-1] :], 0, 1)


class _Recurrent(nn.Module):
  """What LSTM and GRU share: input dropout, the hoisted input projection,
  reversal, padding masks, recurrent dropout and the scan over time."""

  units: int
  return_sequences: bool = False
  return_state: bool = False
  unroll: int = 1
  dtype: Optional[Any] = None
  input_projection: str = 'auto'

  def _check(self, inputs):
    if inputs.ndim != 3:
      raise ValueError(
        f'{type(self).__name__} expects batch-major inputs of '
        f'shape (B, T, F); got {inputs.shape}'
      )
    for name in ('dropout', 'recurrent_dropout'):
      rate = getattr(self, name)
      if not 0.0 <= rate < 1.0:
        raise ValueError(
          f'{type(self).__name__}.{name}={rate!r}: must be in [0, 1)'
        )

  def _dropout_mask(self, rate, shape, deterministic):
    """A (B, n) mask of 0 and 1/(1 - rate), one per sequence, or None."""
    if rate == 0.0:
      return None
    deterministic = nn.merge_param(
      'deterministic', self.deterministic, deterministic
    )
    if deterministic:
      return None
    keep = jax.random.bernoulli(self.make_rng('dropout'), 1.0 - rate, shape)
    return keep.astype(jnp.float32) / (1.0 - rate)

  def _run(
    self,
    cell,
    inputs,
    kernel,
    input_bias,
    weights,
    initial_carry,
    seq_lengths,
    deterministic,
  ):
    """Projects inputs, scans ``cell`` over time; returns (outputs, carry)."""
    inputs, recurrent_mask = self._apply_dropout(inputs, deterministic)
    steps = inputs.shape[1]
    if self._fused(steps) and seq_lengths is None and recurrent_mask is None:
      return self._run_fused(
        inputs, kernel, input_bias, weights[0], initial_carry
      )
    scanned_cell, options, projected, weights = self._project_inputs(
      cell, inputs, kernel, input_bias, weights
    )
    return self._scan_over_time(
      scanned_cell,
      options,
      projected,
      tuple(weights) + (recurrent_mask,),
      initial_carry,
      seq_lengths,
    )

  def _apply_dropout(self, inputs, deterministic):
    """Inputs (B, T, F) times the input-dropout mask, and the (B, units)
    recurrent-dropout mask or None; both masks are sown as intermediates."""
    batch, _, features = inputs.shape
    input_mask = self._dropout_mask(
      self.dropout, (batch, features), deterministic
    )
    if input_mask is not None:
      self.sow('intermediates', 'input_dropout_mask', input_mask)
      inputs = inputs * input_mask[:, None, :]
    recurrent_mask = self._dropout_mask(
      self.recurrent_dropout, (batch, self.units), deterministic
    )
    if recurrent_mask is not None:
      self.sow('intermediates', 'recurrent_dropout_mask', recurrent_mask)
    return inputs, recurrent_mask

  def _project_inputs(self, cell, inputs, kernel, input_bias, weights):
    """(scanned cell, its options, scanned inputs, its weights): the input
    projection hoisted before the scan, or ``cell`` wrapped to do it per step
    (``hoist_input_projection`` decides)."""
    batch, steps, features = inputs.shape
    dtype = self.dtype or inputs.dtype
    if hoist_input_projection(
      self.input_projection, batch, steps, features, self.units
    ):
      # All time steps' input projections in one (B*T, F) x (F, G) matmul.
      projected = (
        jnp.einsum(
          'btf,fg->btg',
          inputs.astype(dtype),
          kernel.astype(dtype),
          preferred_element_type=jnp.float32,
        )
        + input_bias
      )
      options = dict(self._cell_options(), emit_output=self.return_sequences)
      return cell, options, projected, weights
    projected = inputs.astype(dtype)  # each step projects its own x_t
    weights = (kernel.astype(dtype), input_bias) + tuple(weights)
    options = {
      'cell': cell,
      'cell_options': tuple(
        sorted(
          dict(self._cell_options(), emit_output=self.return_sequences).items()
        )
      ),
    }
    return _ProjectInScan, options, projected, weights

  def _scan_over_time(
    self, scanned_cell, options, projected, weights, initial_carry, seq_lengths
  ):
    """Scans ``scanned_cell`` over the time axis of ``projected`` (B, T, ...):
    steps past ``seq_lengths`` keep the carry, and ``reverse`` reverses only
    each sequence's valid steps.  Returns (outputs, carry)."""
    steps = projected.shape[1]
    valid = None
    if seq_lengths is not None:
      seq_lengths = jnp.asarray(seq_lengths, jnp.int32)
      valid = jnp.arange(steps)[None, :] < seq_lengths[:, None]  # (B, T)
    if self.reverse:
      projected = reverse_valid(projected, seq_lengths)
    scan = nn.scan(
      scanned_cell,
      variable_broadcast='params',
      split_rngs={'params': False},
      in_axes=(1, nn.broadcast),
      out_axes=1,
      unroll=scan_unroll(self.unroll, steps),
    )
    carry, outputs = scan(name='cell', **options)(
      initial_carry, (projected, valid), weights
    )
    if self.return_sequences and self.reverse:
      outputs = reverse_valid(outputs, seq_lengths)
    if not self.return_sequences:
      outputs = carry[0] if isinstance(carry, tuple) else carry
    return outputs, carry

  def _cell_options(self):
    return {}

  def _fused(self, steps):
    """Whether to run ``_run_fused`` (an LSTM-only path) instead of the scan."""
    del steps
    return False

  def _run_fused(
    self, inputs, kernel, input_bias, recurrent_kernel, initial_carry
  ):
    """The LSTM through ``recurrence.lstm_recurrence`` (no padding masks, no
    recurrent dropout): same results as the scan, a hand-written gradient."""
    batch, steps, features = inputs.shape
    dtype = self.dtype or inputs.dtype
    hoisted = hoist_input_projection(
      self.input_projection, batch, steps, features, self.units
    )
    x, kernel = time_major_inputs(inputs, kernel.astype(dtype), hoisted)
    if self.reverse:
      x = jnp.flip(x, axis=0)
    h0, c0 = initial_carry
    hs, h, c = recurrence.lstm_recurrence(
      x,
      kernel,
      input_bias,
      recurrent_kernel,
      h0,
      c0,
      None,
      scan_unroll(self.unroll, steps),
      self.return_sequences,
    )
    if not self.return_sequences:
      return h, (h, c)
    if self.reverse:
      hs = jnp.flip(hs, axis=0)
    return jnp.swapaxes(hs, 0, 1), (h, c)


class LSTM(_Recurrent):
  """An LSTM layer over batch-major sequences.

  Attributes:
    units: H, the size of the hidden and cell states.
    return_sequences: return every step's output (B, T, H) instead of the last
      one (B, H).  When False the scan stacks nothing.
    return_state: also return the final carry ``(h, c)``, each (B, H).
    unroll: how many time steps each iteration of the scan's loop runs
      (0: auto, see ``scan_unroll``).
    dtype: computation dtype of the matmuls (e.g. ``jnp.bfloat16``); the gate
      math and the carry stay float32.
    input_projection: ``'hoisted'`` (``x @ kernel`` for all steps in one
      matmul before the scan), ``'in_scan'`` (each step projects its ``x_t``)
      or ``'auto'`` (see ``hoist_input_projection``).
      Same parameters and results either way.
    reverse: process time backwards (last valid step first); outputs are
      returned in input order (``nn.RNN(reverse=True, keep_order=True)``,
      Keras' ``go_backwards`` followed by a flip).  The "last output" is then
      the one after reading the first step.
    dropout: fraction of the input features dropped, one mask per sequence
      (B, F) for all steps and gates (Keras' ``dropout``).
    recurrent_dropout: fraction of ``h_{t-1}`` dropped before the recurrent
      matmul, one mask per sequence (B, H), sampled outside the scan.
    deterministic: no dropout; may also be given to ``__call__``.  Needed
      (one of the two) only when a dropout rate is > 0.
    recurrence: ``'fused'`` (``recurrence.lstm_recurrence``: a hand-written
      gradient, the weights' gradients one matmul after the loop),
      ``'scan'`` (``nn.scan`` of :class:`LSTMCell`, autodiff) or ``'auto'``
      (fused unless fully unrolled, see ``use_fused_recurrence``).  Same
      results; padded batches (``seq_lengths``) and recurrent dropout always
      scan.
      Forward-mode autodiff (``jax.jvp``, ``jax.jacfwd``, also under
      ``jax.jit`` / ``jax.vmap``) works with every setting: the fused loop's
      hand-written gradient is reverse-mode only, so under forward mode it
      runs with JAX's own derivative.  Two cases cannot be detected and
      raise JAX's "can't apply forward-mode autodiff (jvp) to a custom_vjp
      function" with 'fused'/'auto': ``jax.jvp(jax.jit(f), ...)`` (write
      ``jax.jit(lambda x, t: jax.jvp(f, (x,), (t,)))`` instead) and calling
      the function ``jax.linearize`` returns.  For those, set
      ``recurrence='scan'`` (``model.recurrence='scan'`` in a config).
  Parameters (Keras layout): ``kernel`` (F, 4H), ``recurrent_kernel`` (H, 4H),
  ``bias`` (4H,), gates ordered i, f, c, o.
  """

  kernel_init: Initializer = nn.initializers.glorot_uniform()
  recurrent_kernel_init: Initializer = nn.initializers.orthogonal()
  bias_init: Initializer = keras_lstm_bias_init
  reverse: bool = False
  dropout: float = 0.0
  recurrent_dropout: float = 0.0
  deterministic: Optional[bool] = None
  recurrence: str = 'auto'

  def _fused(self, steps):
    return use_fused_recurrence(self.recurrence, self.unroll, steps)

  @nn.compact
  def __call__(
    self,
    inputs: Array,
    initial_carry: Optional[Tuple[Array, Array]] = None,
    seq_lengths: Optional[Array] = None,
    deterministic: Optional[bool] = None,
  ):
    """inputs: (B, T, F).  initial_carry: optional ``(h, c)``, each (B, H).

    seq_lengths: optional (B,) int, the number of valid (leading) steps of each
    right-padded sequence: outputs at padded steps are 0 and the final carry is
    the one at each sequence's last valid step (for ``reverse``, after reading
    its first step; only the valid part is reversed).
    """
    self._check(inputs)
    batch, _, features = inputs.shape
    h4 = 4 * self.units
    kernel = self.param('kernel', self.kernel_init, (features, h4))
    recurrent_kernel = self.param(
      'recurrent_kernel', self.recurrent_kernel_init, (self.units, h4)
    )
    bias = self.param('bias', self.bias_init, (h4,))
    if initial_carry is None:
      zeros = jnp.zeros((batch, self.units), jnp.float32)
      initial_carry = (zeros, zeros)
    initial_carry = tuple(jnp.asarray(x, jnp.float32) for x in initial_carry)
    dtype = self.dtype or inputs.dtype
    outputs, carry = self._run(
      LSTMCell,
      inputs,
      kernel,
      bias,
      (recurrent_kernel.astype(dtype),),
      initial_carry,
      seq_lengths,
      deterministic,
    )
    return (outputs, carry) if self.return_state else outputs


class LSTMWeights(LSTM):
  """An LSTM layer's parameters alone — same names, shapes and initialisers
  as :class:`LSTM` (same values from the same key) — for code that runs the
  layer itself (``lstm_stack_wavefront``).  ``features`` -> ``(kernel,
  recurrent_kernel, bias)``."""

  @nn.compact
  def __call__(self, features: int):  # pylint: disable=arguments-differ
    h4 = 4 * self.units
    return (
      self.param('kernel', self.kernel_init, (features, h4)),
      self.param(
        'recurrent_kernel', self.recurrent_kernel_init, (self.units, h4)
      ),
      self.param('bias', self.bias_init, (h4,)),
    )


class GRU(_Recurrent):
  """A GRU layer over batch-major sequences (Keras ``GRU``; equations above).

  Attributes: as :class:`LSTM`, plus ``reset_after`` (default True: Keras',
  PyTorch's and cuDNN's form).  The carry is ``h`` (B, H);
  ``return_state=True`` returns ``(outputs, h)``.
  Parameters (Keras layout): ``kernel`` (F, 3H), ``recurrent_kernel`` (H, 3H),
  ``bias`` (2, 3H) (row 0 input, row 1 recurrent) or (3H,) without
  ``reset_after``; gates ordered z, r, h.  Initialisers: Glorot-uniform,
  orthogonal, zeros (Keras').
  """

  kernel_init: Initializer = nn.initializers.glorot_uniform()
  recurrent_kernel_init: Initializer = nn.initializers.orthogonal()
  bias_init: Initializer = nn.initializers.zeros
  reverse: bool = False
  dropout: float = 0.0
  recurrent_dropout: float = 0.0
  deterministic: Optional[bool] = None
  reset_after: bool = True

  @nn.compact
  def __call__(
    self,
    inputs: Array,
    initial_carry: Optional[Array] = None,
    seq_lengths: Optional[Array] = None,
    deterministic: Optional[bool] = None,
  ):
    """inputs: (B, T, F); initial_carry: optional ``h`` (B, H); seq_lengths:
    as :meth:`LSTM.__call__`."""
    self._check(inputs)
    batch, _, features = inputs.shape
    h3 = 3 * self.units
    kernel = self.param('kernel', self.kernel_init, (features, h3))
    recurrent_kernel = self.param(
      'recurrent_kernel', self.recurrent_kernel_init, (self.units, h3)
    )
    if self.reset_after:
      bias = self.param('bias', self.bias_init, (2, h3))
      input_bias, recurrent_bias = bias[0], bias[1]
    else:
      input_bias = self.param('bias', self.bias_init, (h3,))
      recurrent_bias = None
    if initial_carry is None:
      initial_carry = jnp.zeros((batch, self.units), jnp.float32)
    initial_carry = jnp.asarray(initial_carry, jnp.float32)
    dtype = self.dtype or inputs.dtype
    outputs, carry = self._run(
      GRUCell,
      inputs,
      kernel,
      input_bias,
      (recurrent_kernel.astype(dtype), recurrent_bias),
      initial_carry,
      seq_lengths,
      deterministic,
    )
    return (outputs, carry) if self.return_state else outputs

  def _cell_options(self):
    return {'reset_after': self.reset_after}


RECURRENT_LAYERS = {'lstm': LSTM, 'gru': GRU}


def merge(mode, forward, backward):
  """Keras' Bidirectional merge of two (B, ..., H) outputs."""
  if mode == 'concat':
    return jnp.concatenate([forward, backward], axis=-1)
  if mode == 'sum':
    return forward + backward
  if mode == 'mean':
    return (forward + backward) / 2
  if mode == 'multiply':
    return forward * backward
  raise ValueError(
    f'merge_mode={mode!r} is unknown; use one of {list(MERGE_MODES)}'
  )


class Bidirectional(nn.Module):
  """A forward and a reversed recurrent layer over the same inputs, merged
  (Keras' ``Bidirectional``; flax's ``nn.Bidirectional``).

  Attributes:
    units: H of each direction.
    cell: 'lstm' or 'gru'.
    merge_mode: 'concat' (outputs (..., 2H)), 'sum', 'mean' or 'multiply'
      (outputs (..., H)).
    return_sequences: merge every step's outputs (B, T, .) or only the last
      outputs (B, .): the forward layer's after the last valid step, the
      backward layer's after the first step (both layers' final carries).
    return_state: also return ``(forward carry, backward carry)``.
    layer_options: other attributes of both layers (``unroll``, ``dtype``,
      ``dropout``, ``recurrent_dropout``, ``reset_after``, ...).
  Parameters: two submodules, ``forward`` and ``backward``, each with the
  Keras layout of its cell (``kernel``, ``recurrent_kernel``, ``bias``) —
  Keras names them ``forward_lstm`` / ``backward_lstm``.
  """

  units: int
  cell: str = 'lstm'
  merge_mode: str = 'concat'
  return_sequences: bool = False
  return_state: bool = False
  layer_options: Optional[dict] = None

  @nn.compact
  def __call__(
    self, inputs, initial_carry=None, seq_lengths=None, deterministic=None
  ):
    """inputs (B, T, F); initial_carry: optional (forward, backward) carries."""
    if self.merge_mode not in MERGE_MODES:
      raise ValueError(
        f'Bidirectional.merge_mode={self.merge_mode!r} is '
        f'unknown; use one of {list(MERGE_MODES)}'
      )
    if self.cell not in RECURRENT_LAYERS:
      raise ValueError(
        f'Bidirectional.cell={self.cell!r} is unknown; use one '
        f'of {sorted(RECURRENT_LAYERS)}'
      )
    layer = RECURRENT_LAYERS[self.cell]
    options = dict(self.layer_options or {})
    carries = (None, None) if initial_carry is None else initial_carry
    results = []
    for name, reverse, carry in zip(
      ('forward', 'backward'), (False, True), carries
    ):
      results.append(
        layer(
          self.units,
          return_sequences=self.return_sequences,
          return_state=True,
          reverse=reverse,
          name=name,
          **options,
        )(inputs, carry, seq_lengths, deterministic=deterministic)
      )
    (forward, forward_carry), (backward, backward_carry) = results
    outputs = merge(self.merge_mode, forward, backward)
    if self.return_state:
      return outputs, (forward_carry, backward_carry)
    return outputs
