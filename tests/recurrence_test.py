"""The fused LSTM recurrence and the wavefront schedule against references:
autodiff of the same loop, the layer-by-layer stack, and ``nn.scan``."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lstm_flax import models
from lstm_flax import recurrence
from lstm_flax.lstm import LSTM
from lstm_flax.lstm import lstm_stack_wavefront


def _reference(x, kernel, bias, matrix, h0, c0, layer_sizes):
  """The same forward loop, differentiated by JAX's autodiff of lax.scan."""
  hs, h, c, _ = recurrence._forward(  # pylint: disable=protected-access
    x, kernel, bias, matrix, h0, c0, layer_sizes, 1, False, True
  )
  return hs, h, c


@pytest.mark.parametrize('hoisted', [True, False])
@pytest.mark.parametrize('layer_sizes', [None, (3, 4), (2, 3, 4)])
def test_hand_written_gradient_equals_autodiff(hoisted, layer_sizes):
  size = 5 if layer_sizes is None else sum(layer_sizes)
  steps, batch, features = 7, 3, 2
  keys = jax.random.split(jax.random.key(0), 8)
  x = jax.random.normal(
    keys[0], (steps, batch, 4 * size if hoisted else features)
  )
  kernel = None if hoisted else jax.random.normal(keys[1], (features, 4 * size))
  bias = jax.random.normal(keys[2], (4 * size,))
  matrix = jax.random.normal(keys[3], (size, 4 * size)) * 0.5
  h0 = jax.random.normal(keys[4], (batch, size))
  c0 = jax.random.normal(keys[5], (batch, size))
  weights = jax.random.normal(keys[6], (steps, batch, size))
  weights_c = jax.random.normal(keys[7], (batch, size))
  args = (x, kernel, bias, matrix, h0, c0)

  def loss(run):
    def f(*args):
      hs, h, c = run(*args)
      return (
        (hs * weights).sum()
        + (hs**2).sum()
        + (h**3).sum()
        + (c * weights_c).sum()
      )

    return f

  fused = lambda *a: recurrence.lstm_recurrence(*a, layer_sizes, 1, True)
  reference = lambda *a: _reference(*a, layer_sizes)
  for a, b in zip(fused(*args), reference(*args)):
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)
  argnums = (0, 2, 3, 4, 5) if hoisted else (0, 1, 2, 3, 4, 5)
  ours = jax.jit(jax.grad(loss(fused), argnums))(*args)
  theirs = jax.grad(loss(reference), argnums)(*args)
  for a, b in zip(ours, theirs):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('layer_sizes', [None, (2, 3)])
def test_forward_mode_and_second_order_equal_autodiff(layer_sizes):
  """jax.jvp / jax.jacfwd (forward mode: JAX's derivative of the same loop)
  and forward-over-reverse (jax.jacfwd of the hand-written gradient) against
  autodiff of the plain loop."""
  size = 4 if layer_sizes is None else sum(layer_sizes)
  steps, batch, features = 5, 2, 3
  keys = jax.random.split(jax.random.key(3), 6)
  x = jax.random.normal(keys[0], (steps, batch, features))
  kernel = jax.random.normal(keys[1], (features, 4 * size)) * 0.5
  bias = jax.random.normal(keys[2], (4 * size,))
  matrix = jax.random.normal(keys[3], (size, 4 * size)) * 0.5
  h0 = jax.random.normal(keys[4], (batch, size))
  c0 = jax.random.normal(keys[5], (batch, size))
  args = (x, kernel, bias, matrix, h0, c0)
  tangents = tuple(jnp.cos(a) for a in args)
  fused = lambda *a: recurrence.lstm_recurrence(*a, layer_sizes, 1, True)
  reference = lambda *a: _reference(*a, layer_sizes)
  for run in (jax.jvp, jax.jit(jax.jvp, static_argnums=0)):
    ours = run(fused, args, tangents)[1]
    theirs = jax.jvp(reference, args, tangents)[1]
    for a, b in zip(ours, theirs):
      np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)

  def loss(run):
    return lambda matrix: (run(x, kernel, bias, matrix, h0, c0)[0] ** 2).sum()

  np.testing.assert_allclose(
    jax.jacfwd(fused, argnums=3)(*args)[1],
    jax.jacfwd(reference, argnums=3)(*args)[1],
    rtol=1e-5,
    atol=1e-5,
  )
  np.testing.assert_allclose(
    jax.hessian(loss(fused))(matrix),
    jax.hessian(loss(reference))(matrix),
    rtol=1e-4,
    atol=1e-4,
  )


@pytest.mark.parametrize('reverse', [False, True])
@pytest.mark.parametrize('input_projection', ['hoisted', 'in_scan'])
def test_fused_layer_equals_scanned_layer(reverse, input_projection):
  """Outputs, final carry and gradients, from a given initial carry."""
  x = jax.random.normal(jax.random.key(0), (3, 6, 4))
  carry = tuple(
    jax.random.normal(k, (3, 5)) for k in jax.random.split(jax.random.key(1))
  )
  layers = {
    r: LSTM(
      5,
      return_sequences=True,
      return_state=True,
      reverse=reverse,
      input_projection=input_projection,
      recurrence=r,
    )
    for r in ('fused', 'scan')
  }
  params = layers['scan'].init(jax.random.key(2), x, carry)

  def loss(params, r):
    outputs, (h, c) = layers[r].apply(params, x, carry)
    return (outputs**2).sum() + (h * c).sum()

  for a, b in zip(
    jax.tree_util.tree_leaves(layers['fused'].apply(params, x, carry)),
    jax.tree_util.tree_leaves(layers['scan'].apply(params, x, carry)),
  ):
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)
  grads = [jax.grad(loss)(params, r) for r in ('fused', 'scan')]
  for a, b in zip(*map(jax.tree_util.tree_leaves, grads)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize('layer_sizes', [(6, 4), (7, 5, 3)])
@pytest.mark.parametrize('input_projection', ['hoisted', 'in_scan'])
def test_wavefront_equals_layer_by_layer(layer_sizes, input_projection):
  """The same parameters (names, shapes, initial values), outputs and
  gradients as the layers one after another."""
  x = jax.random.normal(jax.random.key(1), (3, 8, 2))
  stacks = {
    s: models.StackedLSTM(
      layer_sizes,
      2,
      models.RecurrentOptions(
        layer_schedule=s, input_projection=input_projection, recurrence='fused'
      ),
    )
    for s in models.LAYER_SCHEDULES
  }
  params = {s: m.init(jax.random.key(0), x) for s, m in stacks.items()}
  assert jax.tree_util.tree_structure(
    params['wavefront']
  ) == jax.tree_util.tree_structure(params['layerwise'])
  for a, b in zip(*map(jax.tree_util.tree_leaves, params.values())):
    np.testing.assert_array_equal(a, b)
  params = params['layerwise']

  def loss(params, schedule):
    return (stacks[schedule].apply(params, x) ** 2).sum()

  np.testing.assert_allclose(
    stacks['wavefront'].apply(params, x),
    stacks['layerwise'].apply(params, x),
    rtol=1e-5,
    atol=1e-6,
  )
  grads = [jax.grad(loss)(params, s) for s in ('wavefront', 'layerwise')]
  for a, b in zip(*map(jax.tree_util.tree_leaves, grads)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_wavefront_returns_the_last_layers_whole_sequence():
  x = jax.random.normal(jax.random.key(1), (2, 5, 3))
  weights, features = [], 3
  for i, units in enumerate((4, 6)):
    k1, k2, k3 = jax.random.split(jax.random.key(10 + i), 3)
    weights.append(
      (
        jax.random.normal(k1, (features, 4 * units)),
        jax.random.normal(k2, (units, 4 * units)) * 0.5,
        jax.random.normal(k3, (4 * units,)),
      )
    )
    features = units
  sequence = x
  for kernel, recurrent_kernel, bias in weights:
    sequence = LSTM(recurrent_kernel.shape[0], return_sequences=True).apply(
      {
        'params': {
          'kernel': kernel,
          'recurrent_kernel': recurrent_kernel,
          'bias': bias,
        }
      },
      sequence,
    )
  ours = lstm_stack_wavefront(x, weights, return_sequences=True)
  assert ours.shape == (2, 5, 6)
  np.testing.assert_allclose(ours, sequence, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(
    lstm_stack_wavefront(x, weights), sequence[:, -1], rtol=1e-5, atol=1e-6
  )


def test_unknown_recurrence_and_schedule_are_named():
  x = jnp.zeros((1, 3, 2))
  with pytest.raises(ValueError, match="recurrence='cudnn'"):
    LSTM(3, recurrence='cudnn').init(jax.random.key(0), x)
  with pytest.raises(ValueError, match="layer_schedule='diagonal'"):
    models.StackedLSTM(
      (3, 3), 1, models.RecurrentOptions(layer_schedule='diagonal')
    ).init(jax.random.key(0), x)


def test_auto_recurrence_is_fused_unless_fully_unrolled():
  from lstm_flax.lstm import use_fused_recurrence  # pylint: disable=g-import-not-at-top

  assert use_fused_recurrence('auto', 0, 50)  # stacked, cnn_lstm: T=50
  assert not use_fused_recurrence('auto', 0, 5)  # echo: T=5, fully unrolled
  assert not use_fused_recurrence('auto', 9, 9)
  assert use_fused_recurrence('auto', 2, 9)
  assert use_fused_recurrence('fused', 0, 5)
  assert not use_fused_recurrence('scan', 0, 50)
  # The default StackedLSTM on 50 steps runs one wavefront loop: no
  # per-layer 'cell' scan in its parameters' call tree, one while loop.
  model = models.StackedLSTM((4, 3), 1)
  x = jnp.zeros((2, 50, 1))
  params = model.init(jax.random.key(0), x)
  text = jax.jit(model.apply).lower(params, x).as_text()
  assert text.count('stablehlo.while') == 1
