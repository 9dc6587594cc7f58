"""Pure-function data generators: a PRNG key in, a batch of arrays out.

Every generator has the signature ``(key, batch_size, **task_options) ->
(inputs, targets)``, uses ``jax.random`` only (no numpy, no global state), and
is jit- and vmap-able.  A batch is built from one key per example, folded from
the batch key and the example's index (:func:`example_keys`), so example ``i``
of a batch is the same whatever the batch is split into (for instance across
devices).
"""

import jax
import jax.numpy as jnp


def example_keys(key, batch_size, offset=0):
  """Keys for examples ``offset .. offset + batch_size - 1`` of the batch ``key``."""
  indices = offset + jnp.arange(batch_size, dtype=jnp.uint32)
  return jax.vmap(jax.random.fold_in, in_axes=(None, 0))(key, indices)


def _batched(one_example, key, batch_size, offset=0):
  return jax.vmap(one_example)(example_keys(key, batch_size, offset))


# --- 1. echo: memorise the value at a fixed position -------------------------


def echo(key, batch_size, length=5, n_features=10, out_index=2, offset=0):
  """Random integer sequences, one-hot, with the value at ``out_index`` as label.

  Values are uniform in ``[0, n_features)``.

  Returns:
    inputs: (B, length, n_features) float32 one-hot.
    labels: (B,) int32, ``argmax(inputs[:, out_index])``.
  """

  def one(k):
    values = jax.random.randint(k, (length,), 0, n_features, dtype=jnp.int32)
    return jax.nn.one_hot(values, n_features, dtype=jnp.float32), values[out_index]

  return _batched(one, key, batch_size, offset)


# --- 2. damped sine: multi-step regression ------------------------------------


def damped_sine(key, batch_size, length=50, output=5, period_min=10,
                period_max=20, decay_min=0.01, decay_max=0.1, a=0.5, b=0.5,
                offset=0):
  """Samples of f(i) = a + b sin(2 pi i / period) exp(-i decay), i = 0 .. length+output-1.

  Per sequence ``period`` is a uniform integer in ``[period_min, period_max]``
  (inclusive) and ``decay`` is uniform in ``[decay_min, decay_max)``.

  Returns:
    inputs: (B, length, 1) float32, the first ``length`` values.
    targets: (B, output) float32, the next ``output`` values.
  """

  def one(k):
    period, decay = _sine_parameters(k, period_min, period_max, decay_min,
                                     decay_max)
    i = jnp.arange(length + output, dtype=jnp.float32)
    f = a + b * jnp.sin(2 * jnp.pi * i / period) * jnp.exp(-i * decay)
    return f[:length, None], f[length:]

  return _batched(one, key, batch_size, offset)


def damped_sine_parameters(key, batch_size, period_min=10, period_max=20,
                           decay_min=0.01, decay_max=0.1, offset=0, **unused):
  """The (period, decay) that :func:`damped_sine` draws for the same key: (B,), (B,)."""

  return _batched(
      lambda k: _sine_parameters(k, period_min, period_max, decay_min, decay_max),
      key, batch_size, offset)


def _sine_parameters(key, period_min, period_max, decay_min, decay_max):
  k_period, k_decay = jax.random.split(key)
  period = jax.random.randint(k_period, (), period_min, period_max + 1)
  decay = jax.random.uniform(k_decay, (), minval=decay_min, maxval=decay_max)
  return period, decay


# --- 3. moving line: direction of motion across frames ------------------------


def moving_line_rows(key, size=50):
  """The seed's random walk for one example.

  Returns:
    rows: (size,) int32, the row of the pixel drawn at step t (t = 0 .. size-1).
      Row 0 is uniform in ``[0, size)``; each next row is uniform over
      ``{r-1, r, r+1}`` clipped to the image, exactly as the seed's
      ``randint(max(0, r-1), min(size-1, r+1))`` (so at a border the two
      remaining rows each have probability 1/2).
    right: () int32, 1 if the line moves right (starts in column 0), else 0.
  """
  k_start, k_dir, k_steps = jax.random.split(key, 3)
  start = jax.random.randint(k_start, (), 0, size, dtype=jnp.int32)
  right = jax.random.bernoulli(k_dir, 0.5).astype(jnp.int32)
  u = jax.random.uniform(k_steps, (size - 1,))

  def step(r, u_t):
    lo = jnp.maximum(0, r - 1)
    hi = jnp.minimum(size - 1, r + 1)
    r = lo + jnp.minimum(jnp.floor(u_t * (hi - lo + 1)).astype(jnp.int32), hi - lo)
    return r, r

  _, rest = jax.lax.scan(step, start, u)
  return jnp.concatenate([start[None], rest]), right


def moving_line(key, batch_size, size=50, offset=0):
  """Frames of a line drawn one column per frame, left-to-right or right-to-left.

  Frame t holds the pixels of steps 0..t (frames are cumulative); step t sets
  column t when moving right, column size-1-t when moving left.

  Returns:
    frames: (B, size, size, size, 1) float32 in {0, 1}: (batch, time, row, col, channel).
    labels: (B,) int32, 1 for right, 0 for left.
  """
  t = jnp.arange(size)

  def one(k):
    rows, right = moving_line_rows(k, size)
    # step_of_col[c]: the step at which column c is drawn.
    step_of_col = jnp.where(right == 1, t, size - 1 - t)
    row_of_col = rows[step_of_col]
    pixel = row_of_col[None, :] == t[:, None]                     # (row, col)
    visible = step_of_col[None, None, :] <= t[:, None, None]      # (time, 1, col)
    frames = (pixel[None] & visible).astype(jnp.float32)
    return frames[..., None], right

  return _batched(one, key, batch_size, offset)
