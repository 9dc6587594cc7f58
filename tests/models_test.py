"""Models: shapes, stacking, and the frame encoder against flax's own layers."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lstm_flax import data
from lstm_flax import models
from lstm_flax.lstm import LSTM


@pytest.mark.parametrize('layer_sizes', [(7,), (7, 5), (7, 5, 3)])
def test_stacked_output_shapes_and_layers(layer_sizes):
  model = models.StackedLSTM(layer_sizes, num_outputs=4)
  x = jnp.ones((2, 9, 3))
  params = model.init(jax.random.key(0), x)['params']
  assert model.apply({'params': params}, x).shape == (2, 4)
  assert sorted(params) == sorted(
    [f'lstm_{i}' for i in range(len(layer_sizes))] + ['dense']
  )
  fan_in = 3
  for i, units in enumerate(layer_sizes):
    assert params[f'lstm_{i}']['kernel'].shape == (fan_in, 4 * units)
    fan_in = units
  assert params['dense']['kernel'].shape == (layer_sizes[-1], 4)


def test_depth_two_first_layer_emits_a_sequence_the_second_consumes():
  model = models.StackedLSTM(
    (6, 4),
    num_outputs=2,
    recurrent=models.RecurrentOptions(layer_schedule='layerwise'),
  )
  x = jax.random.normal(jax.random.key(1), (3, 8, 1))
  params = model.init(jax.random.key(0), x)['params']
  _, state = model.apply({'params': params}, x, capture_intermediates=True)
  first = state['intermediates']['lstm_0']['__call__'][0]
  second = state['intermediates']['lstm_1']['__call__'][0]
  assert first.shape == (3, 8, 6)  # every time step
  assert second.shape == (3, 4)  # the last output only
  # The same computation by hand, layer by layer.
  seq = LSTM(6, return_sequences=True).apply({'params': params['lstm_0']}, x)
  last = LSTM(4).apply({'params': params['lstm_1']}, seq)
  np.testing.assert_allclose(first, seq, atol=1e-6)
  np.testing.assert_allclose(second, last, atol=1e-6)


def _reference_encoder(params, frames, pool):
  """flax.linen.Conv + relu + nn.max_pool + flatten, on the same weights."""
  conv = nn.Conv(
    params['kernel'].shape[-1], params['kernel'].shape[:2], padding='VALID'
  )
  y = nn.relu(conv.apply({'params': params}, frames))
  y = nn.max_pool(y, (pool, pool), strides=(pool, pool))
  return y.reshape(y.shape[0], -1)


@pytest.mark.parametrize('implementation', ['shifted_adds', 'conv'])
@pytest.mark.parametrize(
  'size,channels,features,kernel_size,pool',
  [(50, 1, 2, 2, 2), (11, 2, 3, 3, 2), (13, 1, 2, 2, 3)],
)
def test_encoder_equals_flax_conv_and_max_pool(
  implementation, size, channels, features, kernel_size, pool
):
  encoder = models.FrameEncoder(features, kernel_size, pool, implementation)
  frames = jax.random.normal(jax.random.key(0), (4, size, size, channels))
  params = encoder.init(jax.random.key(1), frames)['params']
  params = {**params, 'bias': jnp.linspace(-0.3, 0.3, features)}
  assert params['kernel'].shape == (
    kernel_size,
    kernel_size,
    channels,
    features,
  )
  out = encoder.apply({'params': params}, frames)
  side = models.pooled_size(size, kernel_size, pool)
  assert out.shape == (4, side * side * features)
  np.testing.assert_allclose(
    out, _reference_encoder(params, frames, pool), atol=1e-5
  )
  # Gradients too (random inputs: no ties in the pool).
  weights = jax.random.normal(jax.random.key(2), out.shape)
  ours = jax.grad(
    lambda p: (encoder.apply({'params': p}, frames) * weights).sum()
  )(params)
  ref = jax.jit(
    jax.grad(lambda p: (_reference_encoder(p, frames, pool) * weights).sum())
  )(params)
  for name in ('kernel', 'bias'):
    np.testing.assert_allclose(ours[name], ref[name], rtol=1e-4, atol=1e-4)


def test_encoder_gradient_on_moving_line_frames():
  """Binary frames make ties in the pool common; the gradient still matches."""
  frames = data.moving_line(jax.random.key(0), 2, size=20)[0].reshape(
    -1, 20, 20, 1
  )
  encoder = models.FrameEncoder()
  params = encoder.init(jax.random.key(1), frames)['params']
  params = {**params, 'bias': jnp.array([0.05, -0.02])}
  weights = jax.random.normal(jax.random.key(2), (frames.shape[0], 9 * 9 * 2))
  ours = jax.grad(
    lambda p: (encoder.apply({'params': p}, frames) * weights).sum()
  )(params)
  ref = jax.jit(
    jax.grad(lambda p: (_reference_encoder(p, frames, 2) * weights).sum())
  )(params)
  for name in ('kernel', 'bias'):
    np.testing.assert_allclose(ours[name], ref[name], rtol=1e-4, atol=1e-3)


def test_encoder_gradient_at_relu_zero_and_for_the_frames():
  """Zero bias (its initial value) makes every empty window exactly 0 before
  ReLU, whose gradient there is 0 as nn.relu's; the hand-written gradient must
  agree, and give the frames' own gradient when they are differentiated."""
  frames = data.moving_line(jax.random.key(3), 2, size=20)[0].reshape(
    -1, 20, 20, 1
  )
  encoder = models.FrameEncoder()
  params = encoder.init(jax.random.key(1), frames)['params']
  np.testing.assert_array_equal(params['bias'], 0.0)
  weights = jax.random.normal(jax.random.key(2), (frames.shape[0], 9 * 9 * 2))

  def loss(fn, p, x):
    return (fn(p, x) * weights).sum()

  ours = jax.jit(
    jax.grad(
      functools.partial(loss, lambda p, x: encoder.apply({'params': p}, x)),
      argnums=(0, 1),
    )
  )(params, frames)
  ref = jax.jit(
    jax.grad(
      functools.partial(loss, lambda p, x: _reference_encoder(p, x, 2)),
      argnums=(0, 1),
    )
  )(params, frames)
  for name in ('kernel', 'bias'):
    np.testing.assert_allclose(
      ours[0][name], ref[0][name], rtol=1e-4, atol=1e-3
    )
  np.testing.assert_allclose(ours[1], ref[1], atol=1e-5)
  assert np.abs(ref[1]).max() > 0


def test_cnn_lstm_vmapped_encoder_equals_frame_by_frame():
  model = models.CNNLSTM(layer_sizes=(8,), num_outputs=1)
  frames = data.moving_line(jax.random.key(0), 3, size=12)[0]
  params = model.init(jax.random.key(1), frames)['params']
  assert model.apply({'params': params}, frames).shape == (3, 1)
  # Parameters are shared across time: one kernel, not one per frame.
  assert params['encoder']['kernel'].shape == (2, 2, 1, 2)
  encoder = models.FrameEncoder()
  encode = jax.jit(encoder.apply)
  by_frame = jnp.stack(
    [
      encode({'params': params['encoder']}, frames[:, t])
      for t in range(frames.shape[1])
    ],
    axis=1,
  )
  assert by_frame.shape == (3, 12, 5 * 5 * 2)
  expected = models.StackedLSTM((8,), 1).apply(
    {'params': params['rnn']}, by_frame
  )
  np.testing.assert_allclose(
    model.apply({'params': params}, frames), expected, atol=1e-6
  )


def test_make_model_rejects_unknown_names():
  with pytest.raises(
    ValueError,
    match="known values are \\['cnn_lstm', "
    "'encoder_decoder', 'lstm', 'per_step'\\]",
  ):
    models.make_model({'name': 'gru', 'layer_sizes': (3,)}, 2)
