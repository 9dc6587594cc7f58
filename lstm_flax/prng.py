"""Threefry-2x32 keys whose hash compiles to straight-line code on CPU.

``UNROLLED_THREEFRY`` gives exactly the bits of ``jax.random``'s default
implementation (``threefry2x32`` with ``jax_threefry_partitionable``, JAX's
default): same seed, split, fold_in and random bits (``prng_test.py``
compares them).  The difference is how it compiles.  On CPU, JAX lowers the
Threefry hash as a 5-iteration while loop, to keep programs small; a train
step that draws its batch on the device hashes 5 times (fold_in of the step,
of each example, randint's split and two draws), and each loop iteration is
its own handful of kernel launches.  Written out as 20 rounds of adds,
rotates and xors it becomes one fused kernel, a clearly faster step for
small models.

Straight-line code is not always the cheaper program: it costs more to
compile, and where XLA fuses a hash into an elementwise consumer it is
recomputed per element (the stacked model's damped sines).  So runs compiled
for compile time (``config.train.optimize_for``, resolved in
``compile_plan.py``) and programs that run once (init, eval) use JAX's keys,
and only train programs compiled for step time use these
(docs/performance.md has the measurements).

Keys are made with :func:`key`; ``jax.random.*`` accepts them like any key.
"""

import jax
from jax import lax
from jax.extend import random as jex_random
import jax.numpy as jnp
import numpy as np

_ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))
_PARITY = np.uint32(0x1BD11BDA)


def threefry2x32(k1, k2, x1, x2):
  """Threefry-2x32 (20 rounds) of the counters (x1, x2) under the key (k1, k2).

  All uint32, numpy or JAX (only +, ^, | and shifts, which wrap mod 2**32 on
  either); k1, k2 scalars, x1, x2 arrays of one shape.  Returns the two
  hashed uint32 arrays, as JAX's ``threefry2x32_p`` does.
  """
  ks = (k1, k2, k1 ^ k2 ^ _PARITY)
  x1, x2 = x1 + ks[0], x2 + ks[1]
  for group in range(5):
    for rotation in _ROTATIONS[group % 2]:
      x1 = x1 + x2
      x2 = ((x2 << np.uint32(rotation)) | (x2 >> np.uint32(32 - rotation))) ^ x1
    x1 = x1 + ks[(group + 1) % 3]
    x2 = x2 + ks[(group + 2) % 3] + np.uint32(group + 1)
  return x1, x2


def _hash_iota(key, shape):
  """The hash of a 64-bit iota of ``shape`` (row-major) under ``key``: JAX's
  counters for split and random_bits, as (high, low) uint32 halves."""
  shape = tuple(shape)
  size = int(np.prod(shape, dtype=np.int64))
  if size >= 2**32:
    raise NotImplementedError(
      f'{size} random values at once (at most 2**32 - 1)'
    )
  low = lax.iota(np.uint32, size).reshape(shape)
  return threefry2x32(key[0], key[1], jnp.zeros(shape, np.uint32), low)


def _split(key, shape):
  bits1, bits2 = _hash_iota(key, shape)
  return jnp.stack([bits1, bits2], axis=bits1.ndim)


def _fold_in(key, data):
  counter = jex_random.threefry_prng_impl.seed(jnp.asarray(data, np.uint32))
  bits1, bits2 = threefry2x32(key[0], key[1], counter[0], counter[1])
  return jnp.stack([bits1, bits2])


def _random_bits(key, bit_width, shape):
  if bit_width not in (8, 16, 32, 64):
    raise TypeError(f'bit_width {bit_width}: expected 8, 16, 32 or 64')
  bits1, bits2 = _hash_iota(key, shape)
  dtype = {8: np.uint8, 16: np.uint16, 32: np.uint32, 64: np.uint64}[bit_width]
  if bit_width == 64:
    return lax.shift_left(
      bits1.astype(dtype), jnp.asarray(32, dtype)
    ) | bits2.astype(dtype)
  return lax.convert_element_type(bits1 ^ bits2, dtype)


UNROLLED_THREEFRY = jex_random.define_prng_impl(
  key_shape=(2,),
  seed=jex_random.threefry_prng_impl.seed,
  split=_split,
  random_bits=_random_bits,
  fold_in=_fold_in,
  name='threefry2x32_unrolled',
  tag='fru',
)


def key(seed) -> jax.Array:
  """A typed PRNG key of ``UNROLLED_THREEFRY`` (same bits as ``jax.random.key``)."""
  return jax.random.key(seed, impl=UNROLLED_THREEFRY)


def keys_on_host(seeds, *folds: int, unrolled: bool = True) -> jax.Array:
  """``fold_in(... fold_in(key(s), folds[0]) ..., folds[-1])`` for each seed.

  Computed with numpy and wrapped as typed keys of ``seeds``' shape: the same
  keys as with ``jax.random``, without the XLA programs its eager calls
  compile at a run's start.  Seeds and folds are integers in
  [0, 2**32).  ``unrolled``: keys of ``UNROLLED_THREEFRY``, else of JAX's
  default implementation (the same bits either way; the module docstring
  says when each compiles to the cheaper program).
  """
  seeds = np.asarray(seeds)
  if (
    not np.issubdtype(seeds.dtype, np.integer)
    or ((seeds < 0) | (seeds >= 2**32)).any()
  ):
    raise ValueError(f'seeds {seeds}: expected integers in [0, 2**32)')
  # A seed s < 2**32 is the key (0, s); fold_in(k, d) hashes the counter
  # (0, d).  (1-D arrays: numpy warns when a uint32 scalar wraps around.)
  k1 = np.zeros(seeds.size, np.uint32)
  k2 = seeds.astype(np.uint32).reshape(-1)
  for fold in folds:
    if not 0 <= fold < 2**32:
      raise ValueError(f'fold {fold}: expected an integer in [0, 2**32)')
    zero = np.zeros(seeds.size, np.uint32)
    k1, k2 = threefry2x32(k1, k2, zero, zero + np.uint32(fold))
  data = np.stack([k1, k2], -1).reshape(seeds.shape + (2,))
  return jax.random.wrap_key_data(
    data, impl=UNROLLED_THREEFRY if unrolled else 'threefry2x32'
  )
