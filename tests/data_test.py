"""Generator invariants and statistics."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lstm_flax import data


# --- echo --------------------------------------------------------------------


def test_echo_shapes_labels_and_values():
  inputs, labels = data.echo(
    jax.random.key(0), 512, length=5, n_features=10, out_index=2
  )
  assert inputs.shape == (512, 5, 10) and inputs.dtype == jnp.float32
  assert labels.shape == (512,) and labels.dtype == jnp.int32
  inputs, labels = np.asarray(inputs), np.asarray(labels)
  np.testing.assert_array_equal(inputs.sum(-1), 1)  # one-hot
  assert set(np.unique(inputs)) == {0.0, 1.0}
  np.testing.assert_array_equal(labels, inputs[:, 2].argmax(-1))
  assert labels.min() >= 0 and labels.max() < 10


def test_echo_values_are_roughly_uniform():
  inputs, _ = data.echo(jax.random.key(1), 4000, length=5, n_features=10)
  counts = np.asarray(inputs).sum((0, 1))  # 20,000 draws
  expected = 2000
  # Chi-square with 9 d.o.f.: 27.9 is its 0.999 quantile.
  assert ((counts - expected) ** 2 / expected).sum() < 27.9


def test_echo_deterministic_per_key_and_keys_differ():
  a = data.echo(jax.random.key(3), 64)
  b = data.echo(jax.random.key(3), 64)
  c = data.echo(jax.random.key(4), 64)
  np.testing.assert_array_equal(a[0], b[0])
  assert not np.array_equal(a[0], c[0])


def test_echo_jit_vmap_and_batch_split_invariance():
  key = jax.random.key(5)
  direct = data.echo(key, 8)
  jitted = jax.jit(data.echo, static_argnums=1)(key, 8)
  np.testing.assert_array_equal(direct[0], jitted[0])
  # Example i does not depend on how the batch is split.
  halves = [data.echo(key, 4, offset=o) for o in (0, 4)]
  np.testing.assert_array_equal(
    np.concatenate([h[0] for h in halves]), direct[0]
  )
  # vmap over keys gives each key's own batch.
  keys = jax.random.split(key, 3)
  batched = jax.vmap(lambda k: data.echo(k, 2))(keys)
  np.testing.assert_array_equal(batched[0][1], data.echo(keys[1], 2)[0])


# --- damped sine -------------------------------------------------------------


def test_damped_sine_equals_numpy_formula():
  key = jax.random.key(0)
  inputs, targets = data.damped_sine(key, 16, length=50, output=5)
  assert inputs.shape == (16, 50, 1) and inputs.dtype == jnp.float32
  assert targets.shape == (16, 5) and targets.dtype == jnp.float32
  period, decay = data.damped_sine_parameters(key, 16)
  i = np.arange(55, dtype=np.float64)
  for n in range(16):
    f = 0.5 + 0.5 * np.sin(2 * np.pi * i / float(period[n])) * np.exp(
      -i * float(decay[n])
    )
    np.testing.assert_allclose(inputs[n, :, 0], f[:50], atol=2e-6)
    np.testing.assert_allclose(targets[n], f[50:], atol=2e-6)


def test_damped_sine_parameter_ranges():
  period, decay = data.damped_sine_parameters(jax.random.key(1), 20000)
  period, decay = np.asarray(period), np.asarray(decay)
  assert set(np.unique(period)) == set(range(10, 21))  # integers, inclusive
  counts = np.bincount(period)[10:]
  assert counts.min() > 0.8 * 20000 / 11
  assert decay.min() >= 0.01 and decay.max() < 0.1
  assert decay.min() < 0.0105 and decay.max() > 0.0995
  assert abs(decay.mean() - 0.055) < 0.002
  # Every range is configurable.
  period, decay = data.damped_sine_parameters(
    jax.random.key(2),
    1000,
    period_min=3,
    period_max=4,
    decay_min=0.5,
    decay_max=0.6,
  )
  assert set(np.unique(period)) == {3, 4}
  assert decay.min() >= 0.5 and decay.max() < 0.6


def test_damped_sine_deterministic_per_key():
  a = data.damped_sine(jax.random.key(7), 8)
  b = data.damped_sine(jax.random.key(7), 8)
  c = data.damped_sine(jax.random.key(8), 8)
  np.testing.assert_array_equal(a[0], b[0])
  assert not np.array_equal(a[0], c[0])
  assert np.asarray(a[0]).min() >= 0 and np.asarray(a[0]).max() <= 1


# --- moving line -------------------------------------------------------------


@pytest.fixture(scope='module')
def lines():
  size = 12
  frames, labels = data.moving_line(jax.random.key(0), 400, size=size)
  return size, np.asarray(frames), np.asarray(labels)


def test_moving_line_shapes(lines):
  size, frames, labels = lines
  assert (
    frames.shape == (400, size, size, size, 1) and frames.dtype == np.float32
  )
  assert labels.shape == (400,) and labels.dtype == np.int32
  full = data.moving_line(jax.random.key(0), 2)[0]
  assert full.shape == (2, 50, 50, 50, 1)


def test_moving_line_invariants(lines):
  size, frames, labels = lines
  frames = frames[..., 0]
  assert set(np.unique(frames)) <= {0.0, 1.0}
  for n in range(frames.shape[0]):
    right = labels[n] == 1
    rows = []
    for t in range(size):
      frame = frames[n, t]
      assert frame.sum() == t + 1  # t+1 pixels set
      col = t if right else size - 1 - t
      visited = range(0, t + 1) if right else range(size - 1 - t, size)
      assert frame[:, [c for c in range(size) if c not in visited]].sum() == 0
      assert frame[:, col].sum() == 1  # the new pixel's column
      rows.append(int(frame[:, col].argmax()))
      if t:
        # Cumulative: every earlier pixel kept.
        assert np.all(frame >= frames[n, t - 1])
    steps = np.diff(rows)
    assert set(steps) <= {-1, 0, 1}
  assert 0.4 < labels.mean() < 0.6


def test_moving_line_label_balance_and_start_rows():
  rows, right = jax.vmap(lambda k: data.moving_line_rows(k, 50))(
    data.example_keys(jax.random.key(1), 20000)
  )
  rows, right = np.asarray(rows), np.asarray(right)
  assert abs(right.mean() - 0.5) < 0.015
  assert rows.min() == 0 and rows.max() == 49
  counts = np.bincount(rows[:, 0], minlength=50)
  assert counts.min() > 0.6 * 400  # start row uniform


def test_moving_line_steps_match_seed_probabilities():
  """Inside the image each step is -1/0/+1 w.p. 1/3; at a border 1/2 each
  for the two rows left, as the seed's randint(max(0,r-1), min(size-1,r+1))."""
  rows, _ = jax.vmap(lambda k: data.moving_line_rows(k, 8))(
    data.example_keys(jax.random.key(2), 20000)
  )
  rows = np.asarray(rows)
  prev, step = rows[:, :-1].ravel(), np.diff(rows, axis=1).ravel()
  inner = step[(prev > 0) & (prev < 7)]
  for s in (-1, 0, 1):
    assert abs((inner == s).mean() - 1 / 3) < 0.01
  top = step[prev == 0]
  assert set(np.unique(top)) == {0, 1}
  assert abs((top == 0).mean() - 0.5) < 0.02
  bottom = step[prev == 7]
  assert set(np.unique(bottom)) == {-1, 0}
  assert abs((bottom == 0).mean() - 0.5) < 0.02
