"""The LSTM layer against independent references."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lstm_flax.lstm import LSTM


def _sigmoid(x):
  return 1 / (1 + np.exp(-x))


def numpy_lstm(x, kernel, recurrent_kernel, bias, h0=None, c0=None):
  """The LSTM equations, step by step in float64.  x: (B, T, F) -> (B, T, H), h, c."""
  b, t, _ = x.shape
  hidden = recurrent_kernel.shape[0]
  h = np.zeros((b, hidden)) if h0 is None else np.asarray(h0, np.float64)
  c = np.zeros((b, hidden)) if c0 is None else np.asarray(c0, np.float64)
  outputs = []
  for step in range(t):
    z = x[:, step] @ kernel + h @ recurrent_kernel + bias
    zi, zf, zc, zo = (z[:, k * hidden : (k + 1) * hidden] for k in range(4))
    c = _sigmoid(zf) * c + _sigmoid(zi) * np.tanh(zc)
    h = _sigmoid(zo) * np.tanh(c)
    outputs.append(h)
  return np.stack(outputs, 1), h, c


def _random_params(key, features, hidden):
  k1, k2, k3 = jax.random.split(key, 3)
  return {
    'kernel': jax.random.normal(k1, (features, 4 * hidden)) * 0.5,
    'recurrent_kernel': jax.random.normal(k2, (hidden, 4 * hidden)) * 0.5,
    'bias': jax.random.normal(k3, (4 * hidden,)) * 0.5,
  }


@pytest.mark.parametrize('unroll', [1, 3])
def test_matches_numpy_equations(unroll):
  b, t, f, h = 3, 7, 4, 5
  params = _random_params(jax.random.key(0), f, h)
  x = jax.random.normal(jax.random.key(1), (b, t, f))
  layer = LSTM(h, return_sequences=True, return_state=True, unroll=unroll)
  outputs, (h_t, c_t) = layer.apply({'params': params}, x)
  ref_out, ref_h, ref_c = numpy_lstm(
    np.asarray(x, np.float64),
    *(
      np.asarray(params[k], np.float64)
      for k in ('kernel', 'recurrent_kernel', 'bias')
    ),
  )
  np.testing.assert_allclose(outputs, ref_out, atol=1e-5)
  np.testing.assert_allclose(h_t, ref_h, atol=1e-5)
  np.testing.assert_allclose(c_t, ref_c, atol=1e-5)
  # The last output alone, without stacking the sequence.
  last = LSTM(h, unroll=unroll).apply({'params': params}, x)
  np.testing.assert_allclose(last, ref_out[:, -1], atol=1e-5)


def test_initial_carry_continues_a_sequence():
  """Running T1 steps, then T2 steps from the returned (h, c), equals T1+T2 steps."""
  params = _random_params(jax.random.key(2), 3, 4)
  x = jax.random.normal(jax.random.key(3), (2, 9, 3))
  layer = LSTM(4, return_sequences=True, return_state=True)
  full, (h_full, c_full) = layer.apply({'params': params}, x)
  first, carry = layer.apply({'params': params}, x[:, :4])
  second, (h_2, c_2) = layer.apply({'params': params}, x[:, 4:], carry)
  np.testing.assert_allclose(
    jnp.concatenate([first, second], 1), full, atol=1e-6
  )
  np.testing.assert_allclose(h_2, h_full, atol=1e-6)
  np.testing.assert_allclose(c_2, c_full, atol=1e-6)
  # A non-zero initial carry matches the numpy equations too.
  h0 = np.full((2, 4), 0.3)
  c0 = np.full((2, 4), -0.2)
  out, _ = layer.apply({'params': params}, x, (h0, c0))
  ref, _, _ = numpy_lstm(
    np.asarray(x, np.float64),
    *(
      np.asarray(params[k], np.float64)
      for k in ('kernel', 'recurrent_kernel', 'bias')
    ),
    h0,
    c0,
  )
  np.testing.assert_allclose(out, ref, atol=1e-5)


def test_matches_flax_optimized_lstm_cell():
  """Same weights mapped onto flax's OptimizedLSTMCell (carry (c, h), per-gate Dense)."""
  b, t, f, h = 2, 6, 3, 4
  params = _random_params(jax.random.key(4), f, h)
  x = jax.random.normal(jax.random.key(5), (b, t, f))
  ours, (h_t, c_t) = LSTM(h, return_sequences=True, return_state=True).apply(
    {'params': params}, x
  )

  flax_params = {}
  for k, gate in enumerate('ifgo'):  # Keras' 'c' block is flax's 'g'.
    cols = slice(k * h, (k + 1) * h)
    flax_params['i' + gate] = {'kernel': params['kernel'][:, cols]}
    flax_params['h' + gate] = {
      'kernel': params['recurrent_kernel'][:, cols],
      'bias': params['bias'][cols],
    }
  rnn = nn.RNN(nn.OptimizedLSTMCell(h), return_carry=True)
  (c_ref, h_ref), ref = rnn.apply({'params': {'cell': flax_params}}, x)
  np.testing.assert_allclose(ours, ref, atol=1e-5)
  np.testing.assert_allclose(h_t, h_ref, atol=1e-5)
  np.testing.assert_allclose(c_t, c_ref, atol=1e-5)


def test_keras_parameter_layout_and_initialisers():
  f, h = 6, 8
  params = LSTM(h).init(jax.random.key(0), jnp.zeros((1, 3, f)))['params']
  assert set(params) == {'kernel', 'recurrent_kernel', 'bias'}
  assert params['kernel'].shape == (f, 4 * h)
  assert params['recurrent_kernel'].shape == (h, 4 * h)
  assert params['bias'].shape == (4 * h,)
  # Bias: zeros except the forget gate's block (second), which is 1.
  expected_bias = np.zeros(4 * h)
  expected_bias[h : 2 * h] = 1
  np.testing.assert_array_equal(params['bias'], expected_bias)
  # Orthogonal recurrent kernel: its rows are orthonormal (H <= 4H).
  u = np.asarray(params['recurrent_kernel'], np.float64)
  np.testing.assert_allclose(u @ u.T, np.eye(h), atol=1e-5)
  # Glorot uniform: bounded by sqrt(6 / (fan_in + fan_out)), and not degenerate.
  limit = np.sqrt(6 / (f + 4 * h))
  k = np.asarray(params['kernel'])
  assert np.abs(k).max() <= limit
  assert np.abs(k).max() > 0.8 * limit


def test_bfloat16_matmuls_stay_close():
  params = _random_params(jax.random.key(6), 5, 8)
  x = jax.random.normal(jax.random.key(7), (4, 10, 5))
  full = LSTM(8, return_sequences=True).apply({'params': params}, x)
  half = LSTM(8, return_sequences=True, dtype=jnp.bfloat16).apply(
    {'params': params}, x
  )
  assert half.dtype == jnp.float32
  np.testing.assert_allclose(half, full, atol=5e-2)


def test_rejects_unbatched_input():
  with pytest.raises(ValueError, match=r'\(B, T, F\)'):
    LSTM(3).init(jax.random.key(0), jnp.zeros((5, 4)))


@pytest.mark.parametrize('layer', ['lstm', 'gru'])
@pytest.mark.parametrize('features', [1, 12])
def test_input_projection_in_scan_equals_hoisted(layer, features):
  """Both placements of ``x @ kernel`` give the same outputs, final carry and
  gradients, with padding, reversal and dropout in play."""
  from lstm_flax.lstm import GRU  # pylint: disable=g-import-not-at-top

  cls = {'lstm': LSTM, 'gru': GRU}[layer]
  x = jax.random.normal(jax.random.key(0), (3, 7, features))
  lengths = jnp.array([7, 4, 1])
  layers = {
    mode: cls(
      5,
      return_sequences=True,
      return_state=True,
      reverse=True,
      dropout=0.2,
      recurrent_dropout=0.3,
      input_projection=mode,
    )
    for mode in ('hoisted', 'in_scan')
  }
  params = layers['hoisted'].init(
    jax.random.key(1), x, seq_lengths=lengths, deterministic=True
  )

  def run(mode, params):
    return layers[mode].apply(
      params,
      x,
      seq_lengths=lengths,
      deterministic=False,
      rngs={'dropout': jax.random.key(2)},
    )

  def loss(params, mode):
    outputs, carry = run(mode, params)
    return (outputs**2).sum() + sum(
      (c**2).sum() for c in jax.tree_util.tree_leaves(carry)
    )

  for a, b in zip(
    jax.tree_util.tree_leaves(run('hoisted', params)),
    jax.tree_util.tree_leaves(run('in_scan', params)),
  ):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
  grads = [jax.grad(loss)(params, mode) for mode in ('hoisted', 'in_scan')]
  for a, b in zip(*map(jax.tree_util.tree_leaves, grads)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_auto_input_projection_hoists_wide_inputs_and_tiny_batches():
  from lstm_flax.lstm import hoist_input_projection  # pylint: disable=g-import-not-at-top

  assert hoist_input_projection('auto', 32, 50, 1152, 70)  # wide inputs
  assert hoist_input_projection('auto', 1, 5, 10, 25)  # a tiny batch
  assert not hoist_input_projection('auto', 32, 5, 10, 25)
  assert not hoist_input_projection('auto', 256, 50, 1, 20)
  assert not hoist_input_projection('auto', 32, 50, 20, 20)
  assert hoist_input_projection('hoisted', 256, 50, 1, 20)
  assert not hoist_input_projection('in_scan', 32, 50, 1152, 70)
  with pytest.raises(ValueError, match="input_projection='fused'"):
    hoist_input_projection('fused', 3, 3, 3, 3)


def _forward_mode_case(recurrence, layers=(5,)):
  """A stacked model (a wavefront loop for two fused layers) and inputs."""
  from lstm_flax import models  # pylint: disable=g-import-not-at-top

  model = models.StackedLSTM(
    layers, 2, models.RecurrentOptions(recurrence=recurrence)
  )
  x = jax.random.normal(jax.random.key(0), (2, 12, 3))
  params = model.init(jax.random.key(1), x)
  return (lambda x: model.apply(params, x)), x


@pytest.mark.parametrize('layers', [(5,), (4, 3)])
@pytest.mark.parametrize('recurrence', ['fused', 'auto', 'scan'])
def test_forward_mode_autodiff_matches_reverse_mode_and_differences(
  recurrence, layers
):
  """jax.jvp (eager and jitted) and jax.jacfwd through every LSTM path."""
  f, x = _forward_mode_case(recurrence, layers)
  tangent = jax.random.normal(jax.random.key(2), x.shape)
  _, ours = jax.jvp(f, (x,), (tangent,))
  _, jitted = jax.jit(lambda x, t: jax.jvp(f, (x,), (t,)))(x, tangent)
  jacobian = jax.jacrev(f)(x)  # reverse mode: the fused gradient
  expected = jnp.einsum('bkctf,ctf->bk', jacobian, tangent)
  np.testing.assert_allclose(ours, expected, rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(jitted, expected, rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(jax.jacfwd(f)(x), jacobian, rtol=1e-4, atol=1e-6)
  eps = 1e-2  # central differences, float64
  f64 = lambda x: np.asarray(f(jnp.asarray(x, jnp.float32)), np.float64)
  x64 = np.asarray(x, np.float64)
  t64 = np.asarray(tangent, np.float64)
  differences = (f64(x64 + eps * t64) - f64(x64 - eps * t64)) / (2 * eps)
  np.testing.assert_allclose(ours, differences, rtol=0, atol=2e-3)


def test_forward_mode_of_a_jitted_fused_layer_names_the_setting():
  """jax.jvp of an already jitted function cannot be detected while it is
  traced: the fused path fails, and recurrence='scan' (what the LSTM
  docstring tells) works."""
  from lstm_flax import lstm  # pylint: disable=g-import-not-at-top

  assert "recurrence='scan'" in lstm.LSTM.__doc__
  assert 'jax.jvp(jax.jit(f)' in lstm.LSTM.__doc__
  f, x = _forward_mode_case('fused')
  with pytest.raises(TypeError, match='forward-mode'):
    jax.jvp(jax.jit(f), (x,), (x,))
  scan, _ = _forward_mode_case('scan')
  _, ours = jax.jvp(jax.jit(scan), (x,), (x,))
  _, expected = jax.jvp(f, (x,), (x,))
  np.testing.assert_allclose(ours, expected, rtol=1e-5, atol=1e-6)
