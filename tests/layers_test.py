"""Layer features against references: reverse, seq_lengths, GRU, Bidirectional, dropout."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lstm_flax.lstm import GRU
from lstm_flax.lstm import LSTM
from lstm_flax.lstm import Bidirectional
from lstm_flax.lstm import reverse_valid

B, T, F, H = 3, 6, 4, 5
LENGTHS = np.array([6, 2, 4])


def _sigmoid(x):
  return 1 / (1 + np.exp(-x))


def _lstm_params(key, features=F, hidden=H):
  k1, k2, k3 = jax.random.split(key, 3)
  return {
    'kernel': jax.random.normal(k1, (features, 4 * hidden)) * 0.5,
    'recurrent_kernel': jax.random.normal(k2, (hidden, 4 * hidden)) * 0.5,
    'bias': jax.random.normal(k3, (4 * hidden,)) * 0.5,
  }


def _gru_params(key, reset_after=True, features=F, hidden=H):
  k1, k2, k3 = jax.random.split(key, 3)
  bias_shape = (2, 3 * hidden) if reset_after else (3 * hidden,)
  return {
    'kernel': jax.random.normal(k1, (features, 3 * hidden)) * 0.5,
    'recurrent_kernel': jax.random.normal(k2, (hidden, 3 * hidden)) * 0.5,
    'bias': jax.random.normal(k3, bias_shape) * 0.5,
  }


def _flax_lstm_params(params):
  """Keras-layout LSTM weights -> flax OptimizedLSTMCell's per-gate Dense."""
  hidden = params['recurrent_kernel'].shape[0]
  out = {}
  for k, gate in enumerate('ifgo'):  # Keras' 'c' block is flax's 'g'.
    cols = slice(k * hidden, (k + 1) * hidden)
    out['i' + gate] = {'kernel': params['kernel'][:, cols]}
    out['h' + gate] = {
      'kernel': params['recurrent_kernel'][:, cols],
      'bias': params['bias'][cols],
    }
  return out


def _flax_gru_params(params):
  """Keras reset_after GRU weights -> flax GRUCell.  Flax has one bias per
  gate for z and r (the sum of Keras' input and recurrent biases) and keeps
  the recurrent bias of the candidate inside r * (...), as Keras does."""
  hidden = params['recurrent_kernel'].shape[0]
  block = lambda a, k: a[..., k * hidden : (k + 1) * hidden]
  bias_in, bias_rec = params['bias'][0], params['bias'][1]
  return {
    'iz': {
      'kernel': block(params['kernel'], 0),
      'bias': block(bias_in, 0) + block(bias_rec, 0),
    },
    'ir': {
      'kernel': block(params['kernel'], 1),
      'bias': block(bias_in, 1) + block(bias_rec, 1),
    },
    'in': {'kernel': block(params['kernel'], 2), 'bias': block(bias_in, 2)},
    'hz': {'kernel': block(params['recurrent_kernel'], 0)},
    'hr': {'kernel': block(params['recurrent_kernel'], 1)},
    'hn': {
      'kernel': block(params['recurrent_kernel'], 2),
      'bias': block(bias_rec, 2),
    },
  }


def numpy_lstm(x, params, input_mask=None, recurrent_mask=None):
  """LSTM equations in float64, masks applied as Keras does. (B,T,F) -> (B,T,H), (h, c)."""
  p = {k: np.asarray(v, np.float64) for k, v in params.items()}
  hidden = p['recurrent_kernel'].shape[0]
  h = np.zeros((x.shape[0], hidden))
  c = np.zeros_like(h)
  outputs = []
  for t in range(x.shape[1]):
    x_t = x[:, t] if input_mask is None else x[:, t] * input_mask
    h_in = h if recurrent_mask is None else h * recurrent_mask
    z = x_t @ p['kernel'] + h_in @ p['recurrent_kernel'] + p['bias']
    zi, zf, zc, zo = np.split(z, 4, axis=-1)
    c = _sigmoid(zf) * c + _sigmoid(zi) * np.tanh(zc)
    h = _sigmoid(zo) * np.tanh(c)
    outputs.append(h)
  return np.stack(outputs, 1), (h, c)


def numpy_gru_reset_before(x, params):
  """Keras GRU(reset_after=False) in float64."""
  p = {k: np.asarray(v, np.float64) for k, v in params.items()}
  hidden = p['recurrent_kernel'].shape[0]
  u_zr, u_h = (
    p['recurrent_kernel'][:, : 2 * hidden],
    p['recurrent_kernel'][:, 2 * hidden :],
  )
  h = np.zeros((x.shape[0], hidden))
  outputs = []
  for t in range(x.shape[1]):
    x_z, x_r, x_h = np.split(x[:, t] @ p['kernel'] + p['bias'], 3, axis=-1)
    r_z, r_r = np.split(h @ u_zr, 2, axis=-1)
    z, r = _sigmoid(x_z + r_z), _sigmoid(x_r + r_r)
    n = np.tanh(x_h + (r * h) @ u_h)
    h = z * h + (1 - z) * n
    outputs.append(h)
  return np.stack(outputs, 1), h


def _inputs(key=1):
  return jax.random.normal(jax.random.key(key), (B, T, F))


def test_reverse_equals_flax_rnn_reverse_keep_order():
  params = _lstm_params(jax.random.key(0))
  x = _inputs()
  ours, (h, c) = LSTM(
    H, return_sequences=True, return_state=True, reverse=True
  ).apply({'params': params}, x)
  rnn = nn.RNN(
    nn.OptimizedLSTMCell(H), reverse=True, keep_order=True, return_carry=True
  )
  (c_ref, h_ref), ref = rnn.apply(
    {'params': {'cell': _flax_lstm_params(params)}}, x
  )
  np.testing.assert_allclose(ours, ref, atol=1e-5)
  np.testing.assert_allclose(h, h_ref, atol=1e-5)
  np.testing.assert_allclose(c, c_ref, atol=1e-5)
  # Also: the forward layer on the time-flipped input, flipped back.
  forward = LSTM(H, return_sequences=True).apply({'params': params}, x[:, ::-1])
  np.testing.assert_allclose(ours, forward[:, ::-1], atol=1e-5)
  # The "last output" of a reversed layer: after reading step 0.
  last = LSTM(H, reverse=True).apply({'params': params}, x)
  np.testing.assert_allclose(last, ours[:, 0], atol=1e-6)


def test_reverse_valid_flips_only_the_valid_part():
  x = jnp.arange(B * T).reshape(B, T)
  got = np.asarray(reverse_valid(x, jnp.asarray(LENGTHS)))
  for b, length in enumerate(LENGTHS):
    np.testing.assert_array_equal(
      got[b, :length], np.asarray(x)[b, :length][::-1]
    )
    np.testing.assert_array_equal(got[b, length:], np.asarray(x)[b, length:])
  np.testing.assert_array_equal(
    reverse_valid(jnp.asarray(got), jnp.asarray(LENGTHS)), x
  )


@pytest.mark.parametrize('layer_cls', [LSTM, GRU])
@pytest.mark.parametrize('reverse', [False, True])
def test_seq_lengths_equal_a_loop_over_unpadded_sequences(layer_cls, reverse):
  params = (_lstm_params if layer_cls is LSTM else _gru_params)(
    jax.random.key(2)
  )
  x = _inputs(3)
  layer = layer_cls(
    H, return_sequences=True, return_state=True, reverse=reverse
  )
  apply = jax.jit(layer.apply)
  # Padding holds garbage: it must not leak into anything.
  padded = jnp.where(
    jnp.arange(T)[None, :, None] < LENGTHS[:, None, None], x, 7.0
  )
  outputs, carry = apply({'params': params}, padded, None, jnp.asarray(LENGTHS))
  last = layer_cls(H, reverse=reverse).apply(
    {'params': params}, padded, None, jnp.asarray(LENGTHS)
  )
  carry_h = carry[0] if layer_cls is LSTM else carry
  np.testing.assert_allclose(last, carry_h, atol=1e-6)
  for b, length in enumerate(LENGTHS):
    alone, alone_carry = apply({'params': params}, x[b : b + 1, :length])
    np.testing.assert_allclose(outputs[b, :length], alone[0], atol=1e-5)
    np.testing.assert_array_equal(outputs[b, length:], 0.0)
    for got, want in zip(
      jax.tree_util.tree_leaves(carry), jax.tree_util.tree_leaves(alone_carry)
    ):
      np.testing.assert_allclose(got[b], want[0], atol=1e-5)


def test_reverse_seq_lengths_equal_flax_rnn():
  params = _lstm_params(jax.random.key(4))
  x = _inputs(5)
  lengths = jnp.asarray(LENGTHS)
  ours, (h, c) = LSTM(
    H, return_sequences=True, return_state=True, reverse=True
  ).apply({'params': params}, x, None, lengths)
  rnn = nn.RNN(
    nn.OptimizedLSTMCell(H), reverse=True, keep_order=True, return_carry=True
  )
  (c_ref, h_ref), ref = rnn.apply(
    {'params': {'cell': _flax_lstm_params(params)}}, x, seq_lengths=lengths
  )
  valid = np.arange(T)[None, :] < LENGTHS[:, None]
  np.testing.assert_allclose(
    np.asarray(ours)[valid], np.asarray(ref)[valid], atol=1e-5
  )
  np.testing.assert_allclose(h, h_ref, atol=1e-5)
  np.testing.assert_allclose(c, c_ref, atol=1e-5)


@pytest.mark.parametrize('reverse', [False, True])
def test_gru_reset_after_equals_flax_gru_cell(reverse):
  params = _gru_params(jax.random.key(6))
  x = _inputs(7)
  ours, h = GRU(
    H, return_sequences=True, return_state=True, reverse=reverse
  ).apply({'params': params}, x)
  rnn = nn.RNN(
    nn.GRUCell(H), reverse=reverse, keep_order=True, return_carry=True
  )
  h_ref, ref = rnn.apply({'params': {'cell': _flax_gru_params(params)}}, x)
  np.testing.assert_allclose(ours, ref, atol=1e-5)
  np.testing.assert_allclose(h, h_ref, atol=1e-5)


def test_gru_reset_before_equals_numpy_equations():
  params = _gru_params(jax.random.key(8), reset_after=False)
  x = _inputs(9)
  ours, h = GRU(
    H, return_sequences=True, return_state=True, reset_after=False
  ).apply({'params': params}, x)
  ref, h_ref = numpy_gru_reset_before(np.asarray(x, np.float64), params)
  np.testing.assert_allclose(ours, ref, atol=1e-5)
  np.testing.assert_allclose(h, h_ref, atol=1e-5)


def test_gru_keras_parameter_layout_and_initialisers():
  x = jnp.zeros((1, 3, F))
  params = GRU(H).init(jax.random.key(0), x)['params']
  assert {k: v.shape for k, v in params.items()} == {
    'kernel': (F, 3 * H),
    'recurrent_kernel': (H, 3 * H),
    'bias': (2, 3 * H),
  }
  np.testing.assert_array_equal(params['bias'], 0.0)
  u = np.asarray(params['recurrent_kernel'], np.float64)
  np.testing.assert_allclose(u @ u.T, np.eye(H), atol=1e-5)
  old = GRU(H, reset_after=False).init(jax.random.key(0), x)['params']
  assert old['bias'].shape == (3 * H,)


@pytest.mark.parametrize(
  'merge_mode,merge_fn',
  [
    ('concat', lambda a, b: jnp.concatenate([a, b], -1)),
    ('sum', lambda a, b: a + b),
    ('mean', lambda a, b: (a + b) / 2),
    ('multiply', lambda a, b: a * b),
  ],
)
def test_bidirectional_equals_flax_bidirectional(merge_mode, merge_fn):
  forward, backward = (
    _lstm_params(jax.random.key(10)),
    _lstm_params(jax.random.key(11)),
  )
  x = _inputs(12)
  lengths = jnp.asarray(LENGTHS)
  layer = Bidirectional(H, merge_mode=merge_mode, return_sequences=True)
  variables = {'params': {'forward': forward, 'backward': backward}}
  assert jax.tree_util.tree_structure(
    layer.init(jax.random.key(0), x)['params']
  ) == jax.tree_util.tree_structure(variables['params'])
  ours = layer.apply(variables, x, None, lengths)
  ref_layer = nn.Bidirectional(
    nn.RNN(nn.OptimizedLSTMCell(H)),
    nn.RNN(nn.OptimizedLSTMCell(H)),
    merge_fn=merge_fn,
  )
  ref = ref_layer.apply(
    {
      'params': {
        'forward_rnn': {'cell': _flax_lstm_params(forward)},
        'backward_rnn': {'cell': _flax_lstm_params(backward)},
      }
    },
    x,
    seq_lengths=lengths,
  )
  valid = np.arange(T)[None, :] < LENGTHS[:, None]
  np.testing.assert_allclose(
    np.asarray(ours)[valid], np.asarray(ref)[valid], atol=1e-5
  )
  np.testing.assert_array_equal(
    np.asarray(ours)[~valid], merge_fn(jnp.zeros(1), jnp.zeros(1))[0]
  )
  # The last outputs: each direction's final h, merged.
  last, (fw_carry, bw_carry) = Bidirectional(
    H, merge_mode=merge_mode, return_state=True
  ).apply(variables, x, None, lengths)
  np.testing.assert_allclose(
    last, merge_fn(fw_carry[0], bw_carry[0]), atol=1e-6
  )
  fw_seq = LSTM(H, return_sequences=True).apply(
    {'params': forward}, x, None, lengths
  )
  np.testing.assert_allclose(
    fw_carry[0], fw_seq[np.arange(B), LENGTHS - 1], atol=1e-5
  )


def test_bidirectional_gru_and_bad_names():
  x = _inputs(13)
  params = Bidirectional(H, cell='gru').init(jax.random.key(0), x)['params']
  assert params['forward']['bias'].shape == (2, 3 * H)
  assert set(params) == {'forward', 'backward'}
  with pytest.raises(
    ValueError,
    match=r"merge_mode='avg' is unknown; use one of "
    r"\['concat', 'sum', 'mean', 'multiply'\]",
  ):
    Bidirectional(H, merge_mode='avg').init(jax.random.key(0), x)
  with pytest.raises(
    ValueError,
    match=r"cell='rnn' is unknown; use one of "
    r"\['gru', 'lstm'\]",
  ):
    Bidirectional(H, cell='rnn').init(jax.random.key(0), x)


def test_dropout_masks_once_per_sequence_match_numpy():
  params = _lstm_params(jax.random.key(14))
  x = _inputs(15)
  layer = LSTM(H, return_sequences=True, dropout=0.5, recurrent_dropout=0.25)
  outputs, state = layer.apply(
    {'params': params},
    x,
    deterministic=False,
    rngs={'dropout': jax.random.key(16)},
    mutable=['intermediates'],
  )
  masks = state['intermediates']
  input_mask = np.asarray(masks['input_dropout_mask'][0])
  recurrent_mask = np.asarray(masks['recurrent_dropout_mask'][0])
  assert input_mask.shape == (B, F) and recurrent_mask.shape == (B, H)
  assert set(np.unique(input_mask)) <= {0.0, 2.0}
  assert set(np.unique(recurrent_mask)) <= {0.0, np.float32(1 / 0.75)}
  ref, _ = numpy_lstm(
    np.asarray(x, np.float64), params, input_mask, recurrent_mask
  )
  np.testing.assert_allclose(outputs, ref, atol=1e-5)
  # Deterministic: exactly the layer without dropout; no rng needed.
  plain = LSTM(H, return_sequences=True).apply({'params': params}, x)
  np.testing.assert_array_equal(
    layer.apply({'params': params}, x, deterministic=True), plain
  )
  with pytest.raises(Exception, match='deterministic'):
    layer.apply({'params': params}, x)


def test_dropout_rate_statistics_and_range():
  x = jnp.ones((400, 2, 50))
  layer = GRU(4, dropout=0.3, recurrent_dropout=0.6, deterministic=False)
  params = layer.init(
    {'params': jax.random.key(0), 'dropout': jax.random.key(1)}, x
  )
  _, state = layer.apply(
    params, x, rngs={'dropout': jax.random.key(2)}, mutable=['intermediates']
  )
  dropped_in = (
    np.asarray(state['intermediates']['input_dropout_mask'][0]) == 0
  ).mean()
  dropped_rec = (
    np.asarray(state['intermediates']['recurrent_dropout_mask'][0]) == 0
  ).mean()
  assert abs(dropped_in - 0.3) < 0.02  # 20,000 draws: sd 0.003
  assert abs(dropped_rec - 0.6) < 0.05  # 1,600 draws: sd 0.012
  with pytest.raises(
    ValueError, match=r'recurrent_dropout=1.0: must be in \[0, 1\)'
  ):
    LSTM(3, recurrent_dropout=1.0).init(jax.random.key(0), x)
