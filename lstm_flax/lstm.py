"""The LSTM layer: Keras' parameter layout, input projection first, `nn.scan` over time.

Equations (Keras / PyTorch / Hochreiter & Schmidhuber with forget gate), with
``z = x_t @ kernel + h_{t-1} @ recurrent_kernel + bias`` split into four
H-wide blocks in the order input, forget, cell (candidate), output::

  i = sigmoid(z_i)   f = sigmoid(z_f)   g = tanh(z_c)   o = sigmoid(z_o)
  c_t = f * c_{t-1} + i * g
  h_t = o * tanh(c_t)

Carries are ``(h, c)`` in that order, as Keras returns them (Flax's own cells
use ``(c, h)``).
"""

from typing import Any, Callable, Optional, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

Array = jax.Array
Initializer = Callable[..., Array]


def keras_lstm_bias_init(key, shape, dtype=jnp.float32):
  """Keras' ``unit_forget_bias``: zeros, with the forget gate's block set to 1."""
  del key
  (four_h,) = shape
  h = four_h // 4
  return jnp.zeros(shape, dtype).at[h:2 * h].set(1.0)


class LSTMCell(nn.Module):
  """One time step, given the input's projection ``x_t @ kernel + bias``.

  Parameter-free on purpose: the layer owns the weights (so they keep Keras'
  flat names) and passes the recurrent kernel in, broadcast over time.
  With ``emit_output=False`` the step outputs nothing to stack.
  """

  emit_output: bool = True

  @nn.compact
  def __call__(self, carry, projected_input, recurrent_kernel):
    h, c = carry
    z = projected_input + jnp.dot(h.astype(recurrent_kernel.dtype),
                                  recurrent_kernel,
                                  preferred_element_type=jnp.float32)
    z_i, z_f, z_c, z_o = jnp.split(z, 4, axis=-1)
    c = nn.sigmoid(z_f) * c + nn.sigmoid(z_i) * jnp.tanh(z_c)
    h = nn.sigmoid(z_o) * jnp.tanh(c)
    return (h, c), (h if self.emit_output else ())


class LSTM(nn.Module):
  """An LSTM layer over batch-major sequences.

  Attributes:
    units: H, the size of the hidden and cell states.
    return_sequences: return every step's output (B, T, H) instead of the last
      one (B, H).  When False the scan stacks nothing.
    return_state: also return the final carry ``(h, c)``, each (B, H).
    unroll: how many time steps each iteration of the scan's loop runs.
    dtype: computation dtype of the matmuls (e.g. ``jnp.bfloat16``); the gate
      math and the carry stay float32.
  Parameters (Keras layout): ``kernel`` (F, 4H), ``recurrent_kernel`` (H, 4H),
  ``bias`` (4H,), gates ordered i, f, c, o.
  """

  units: int
  return_sequences: bool = False
  return_state: bool = False
  unroll: int = 1
  dtype: Optional[Any] = None
  kernel_init: Initializer = nn.initializers.glorot_uniform()
  recurrent_kernel_init: Initializer = nn.initializers.orthogonal()
  bias_init: Initializer = keras_lstm_bias_init

  @nn.compact
  def __call__(self, inputs: Array,
               initial_carry: Optional[Tuple[Array, Array]] = None):
    """inputs: (B, T, F).  initial_carry: optional ``(h, c)``, each (B, H)."""
    if inputs.ndim != 3:
      raise ValueError(
          f'LSTM expects batch-major inputs of shape (B, T, F); got {inputs.shape}')
    batch, _, features = inputs.shape
    h4 = 4 * self.units
    kernel = self.param('kernel', self.kernel_init, (features, h4))
    recurrent_kernel = self.param('recurrent_kernel', self.recurrent_kernel_init,
                                  (self.units, h4))
    bias = self.param('bias', self.bias_init, (h4,))

    dtype = self.dtype or inputs.dtype
    # All time steps' input projections in one (B*T, F) x (F, 4H) matmul.
    projected = jnp.einsum('btf,fg->btg', inputs.astype(dtype),
                           kernel.astype(dtype),
                           preferred_element_type=jnp.float32) + bias
    if initial_carry is None:
      zeros = jnp.zeros((batch, self.units), jnp.float32)
      initial_carry = (zeros, zeros)
    initial_carry = tuple(jnp.asarray(x, jnp.float32) for x in initial_carry)

    scan = nn.scan(LSTMCell, variable_broadcast='params',
                   split_rngs={'params': False}, in_axes=(1, nn.broadcast),
                   out_axes=1, unroll=self.unroll)
    carry, outputs = scan(emit_output=self.return_sequences, name='cell')(
        initial_carry, projected, recurrent_kernel.astype(dtype))
    if not self.return_sequences:
      outputs = carry[0]
    return (outputs, carry) if self.return_state else outputs

