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
    return jax.nn.one_hot(values, n_features, dtype=jnp.float32), values[
      out_index
    ]

  return _batched(one, key, batch_size, offset)


# --- 2. damped sine: multi-step regression ------------------------------------


def damped_sine(
  key,
  batch_size,
  length=50,
  output=5,
  period_min=10,
  period_max=20,
  decay_min=0.01,
  decay_max=0.1,
  a=0.5,
  b=0.5,
  offset=0,
):
  """Samples of f(i) = a + b sin(2 pi i / period) exp(-i decay), i = 0 .. length+output-1.

  Per sequence ``period`` is a uniform integer in ``[period_min, period_max]``
  (inclusive) and ``decay`` is uniform in ``[decay_min, decay_max)``.

  Returns:
    inputs: (B, length, 1) float32, the first ``length`` values.
    targets: (B, output) float32, the next ``output`` values.
  """

  def one(k):
    period, decay = _sine_parameters(
      k, period_min, period_max, decay_min, decay_max
    )
    i = jnp.arange(length + output, dtype=jnp.float32)
    f = a + b * jnp.sin(2 * jnp.pi * i / period) * jnp.exp(-i * decay)
    return f[:length, None], f[length:]

  return _batched(one, key, batch_size, offset)


def damped_sine_parameters(
  key,
  batch_size,
  period_min=10,
  period_max=20,
  decay_min=0.01,
  decay_max=0.1,
  offset=0,
  **unused,
):
  """The (period, decay) that :func:`damped_sine` draws for the same key: (B,), (B,)."""

  return _batched(
    lambda k: _sine_parameters(k, period_min, period_max, decay_min, decay_max),
    key,
    batch_size,
    offset,
  )


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
    r = lo + jnp.minimum(
      jnp.floor(u_t * (hi - lo + 1)).astype(jnp.int32), hi - lo
    )
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
    pixel = row_of_col[None, :] == t[:, None]  # (row, col)
    visible = step_of_col[None, None, :] <= t[:, None, None]  # (time, 1, col)
    frames = (pixel[None] & visible).astype(jnp.float32)
    return frames[..., None], right

  return _batched(one, key, batch_size, offset)


# --- 4. addition: sums written as text (encoder-decoder) ----------------------

ALPHABET = '0123456789+ '  # index = symbol: digits 0-9, then '+' and ' '
PLUS, SPACE = 10, 11


def num_digits(n):
  """Decimal digits of the positive integer(s) ``n`` (1 for 1..9, 2 for 10..99)."""
  n = jnp.asarray(n)
  return 1 + sum((n >= 10**k).astype(jnp.int32) for k in range(1, 10))


def _right_aligned_text(numbers, width):
  """``'+'.join(numbers)`` left-padded with spaces to ``width`` symbols, as
  alphabet indices, built with integer arithmetic only.

  numbers: (N,) positive int32.  Returns (width,) int32.  Symbols are written
  from the right end: the i-th least significant digit of term j sits
  ``offset_j + i`` places from the right, where ``offset_j`` counts the
  symbols (digits and '+') of the terms after it.
  """
  digits = num_digits(numbers)  # (N,)
  after = jnp.cumsum((digits + 1)[::-1])[::-1] - (
    digits + 1
  )  # symbols right of term j
  max_digits = 10
  i = jnp.arange(max_digits)
  digit_values = (numbers[:, None] // 10 ** i[None]) % 10  # (N, D)
  position = width - 1 - (after[:, None] + i[None])  # (N, D)
  # Digits a number does not have go to index `width`, past the end, and are
  # dropped (a negative index would wrap around instead).
  position = jnp.where(i[None] < digits[:, None], position, width)
  text = jnp.full((width,), SPACE, jnp.int32)
  text = text.at[position].set(digit_values, mode='drop')
  plus_position = width - after[:-1]  # '+' right after each term but the last
  return text.at[plus_position].set(PLUS, mode='drop')


def addition(
  key,
  batch_size,
  n_terms=3,
  max_value=10,
  input_width=8,
  answer_width=2,
  offset=0,
):
  """ "a+b+c" -> "sum" as text: ``n_terms`` integers uniform in [1, max_value].

  The question is the terms joined by '+', left-padded with spaces to
  ``input_width`` symbols ("10+3+7" -> "  10+3+7"); the answer their sum,
  left-padded to ``answer_width``.  Symbols are indices into ``ALPHABET``.

  Returns:
    inputs: (B, input_width, 12) float32, one-hot.
    targets: (B, answer_width) int32, alphabet indices.
  """

  def one(k):
    numbers = jax.random.randint(
      k, (n_terms,), 1, max_value + 1, dtype=jnp.int32
    )
    question = _right_aligned_text(numbers, input_width)
    answer = _right_aligned_text(numbers.sum()[None], answer_width)
    return jax.nn.one_hot(question, len(ALPHABET), dtype=jnp.float32), answer

  return _batched(one, key, batch_size, offset)


def decode_text(symbols):
  """Host-side: alphabet indices (..., T) int, or one-hot / logits (..., T, 12),
  to a string (or nested lists of strings)."""
  import numpy as np  # pylint: disable=g-import-not-at-top

  symbols = np.asarray(symbols)
  if symbols.dtype.kind == 'f':
    symbols = symbols.argmax(-1)
  if symbols.ndim == 1:
    return ''.join(ALPHABET[int(s)] for s in symbols)
  return [decode_text(s) for s in symbols]


# --- 5. cumulative-sum threshold (bidirectional) -------------------------------


def cumsum_threshold(key, batch_size, length=10, limit_fraction=0.25, offset=0):
  """Values uniform in [0, 1); the label of step t is 1 once their running sum
  exceeds ``length * limit_fraction`` (2.5 for the seed's 10 / 4), else 0.

  Returns:
    inputs: (B, length, 1) float32.
    labels: (B, length) int32, non-decreasing along time.
  """
  limit = length * limit_fraction

  def one(k):
    values = jax.random.uniform(k, (length,))
    return values[:, None], (jnp.cumsum(values) > limit).astype(jnp.int32)

  return _batched(one, key, batch_size, offset)


# --- 6. rectangles drawn corner by corner (generative) -------------------------


def rectangle_corners(width, height):
  """(..., ) width and height -> (..., 4, 2): (0,0), (w,0), (w,h), (0,h)."""
  zeros = jnp.zeros_like(width)
  return jnp.stack(
    [
      jnp.stack([zeros, zeros], -1),
      jnp.stack([width, zeros], -1),
      jnp.stack([width, height], -1),
      jnp.stack([zeros, height], -1),
    ],
    -2,
  )


def rectangle_size(key):
  """The width and height, uniform in [0, 1), of the rectangle of ``key``."""
  width, height = jax.random.uniform(key, (2,))
  return width, height


def rectangles(key, batch_size, mode='pairs', offset=0):
  """Rectangles with width and height uniform in [0, 1), drawn from (0, 0).

  mode='pairs' (the seed): example i is pair ``(offset + i) % 3`` (previous
  corner -> next corner) of rectangle ``(offset + i) // 3``, whose size comes
  from ``fold_in(key, rectangle)``; a batch of 3 at a multiple-of-3 offset is
  the three pairs of one rectangle.
    inputs: (B, 1, 2) float32, the previous corner (a one-step sequence).
    targets: (B, 2) float32, the next corner.
  mode='sequence': example i is rectangle ``offset + i`` whole.
    inputs: (B, 3, 2), corners 0..2; targets: (B, 3, 2), corners 1..3.
  """
  if mode == 'pairs':
    index = offset + jnp.arange(batch_size, dtype=jnp.uint32)

    def pair(i):
      corners = rectangle_corners(
        *rectangle_size(jax.random.fold_in(key, i // 3))
      )
      return corners[i % 3][None], corners[i % 3 + 1]

    return jax.vmap(pair)(index)
  if mode == 'sequence':

    def whole(k):
      corners = rectangle_corners(*rectangle_size(k))
      return corners[:3], corners[1:]

    return _batched(whole, key, batch_size, offset)
  raise ValueError(f"rectangles: mode={mode!r}; use 'pairs' or 'sequence'")
