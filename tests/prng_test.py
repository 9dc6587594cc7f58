"""lstm_flax.prng: the unrolled Threefry gives jax.random's default bits."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lstm_flax import data
from lstm_flax import prng


def _same(a, b):
  a, b = jax.tree.leaves(a), jax.tree.leaves(b)
  assert len(a) == len(b)
  for x, y in zip(a, b):
    if jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
      x, y = jax.random.key_data(x), jax.random.key_data(y)
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


DRAWS = {
  'seed': lambda k: k,
  'fold_in': lambda k: jax.random.fold_in(k, 7),
  'fold_in_large': lambda k: jax.random.fold_in(k, 2**32 - 1),
  'split': lambda k: jax.random.split(k, 3),
  'split_2d': lambda k: jax.random.split(k, (2, 3)),
  'bits_u32': lambda k: jax.random.bits(k, (5,)),
  'bits_u8': lambda k: jax.random.bits(k, (3, 4), jnp.uint8),
  'bits_u16': lambda k: jax.random.bits(k, (3,), jnp.uint16),
  'bits_scalar': lambda k: jax.random.bits(k, ()),
  'randint': lambda k: jax.random.randint(k, (7,), 0, 10),
  'uniform': lambda k: jax.random.uniform(k, (2, 3)),
  'normal': lambda k: jax.random.normal(k, (9,)),
  'permutation': lambda k: jax.random.permutation(k, 12),
  'echo': lambda k: data.echo(k, 4),
  'damped_sine': lambda k: data.damped_sine(k, 3),
  'moving_line': lambda k: data.moving_line(k, 2),
}


@pytest.mark.parametrize('draw', sorted(DRAWS))
@pytest.mark.parametrize('seed', [0, 2**31 - 1])
def test_same_bits_as_jax_default_threefry(draw, seed):
  f = DRAWS[draw]
  _same(f(jax.random.key(seed)), f(prng.key(seed)))


def test_same_bits_under_jit_and_vmap():
  def train_batch(root, step):
    return data.echo(jax.random.fold_in(jax.random.fold_in(root, 1), step), 8)

  def keys(seeds, make):
    return jax.vmap(
      lambda s: jax.random.key_data(jax.random.fold_in(make(s), 1))
    )(seeds)

  _same(
    jax.jit(train_batch)(jax.random.key(3), 5),
    jax.jit(train_batch)(prng.key(3), 5),
  )
  seeds = jnp.arange(4, dtype=jnp.uint32)
  _same(keys(seeds, jax.random.key), keys(seeds, prng.key))


def test_hash_matches_threefry_known_answer():
  # Known-answer vector of the Threefry-2x32 (20 rounds) reference: key and
  # counter all ones -> (0x1cb996fc, 0xbb002be7) (Salmon et al. 2011; also
  # JAX's random test).
  ones = np.uint32(0xFFFFFFFF)
  x1, x2 = prng.threefry2x32(
    ones, ones, jnp.full((1,), ones), jnp.full((1,), ones)
  )
  assert (int(x1[0]), int(x2[0])) == (0x1CB996FC, 0xBB002BE7)


def test_compiles_without_a_loop():
  hlo = (
    jax.jit(lambda k: jax.random.bits(jax.random.fold_in(k, 3), (4,)))
    .lower(prng.key(0))
    .as_text()
  )
  assert 'while' not in hlo
  default = (
    jax.jit(lambda k: jax.random.bits(jax.random.fold_in(k, 3), (4,)))
    .lower(jax.random.key(0))
    .as_text()
  )
  if jax.default_backend() == 'cpu':
    assert 'while' in default  # JAX's CPU lowering: what prng.py avoids


@pytest.mark.parametrize(
  'seeds', [0, 2**32 - 1, [3, 4, 5], [[0, 1], [2, 2**31]]]
)
def test_keys_on_host_equal_jax_random(seeds):
  def reference(seed):
    key = jax.random.key(seed)
    for fold in (2, 2**32 - 1):
      key = jax.random.fold_in(key, fold)
    return jax.random.key_data(key)

  got = prng.keys_on_host(np.asarray(seeds), 2, 2**32 - 1)
  assert got.shape == np.shape(seeds)
  assert got.dtype == prng.key(0).dtype
  want = np.vectorize(reference, signature='()->(2)')(
    np.asarray(seeds, np.uint32)
  )
  np.testing.assert_array_equal(jax.random.key_data(got), want)


@pytest.mark.parametrize(
  'seeds,folds', [(-1, ()), (2**32, ()), (1.5, ()), (0, (-2,)), (0, (2**32,))]
)
def test_keys_on_host_rejects_out_of_range(seeds, folds):
  with pytest.raises(ValueError, match=r'\[0, 2\*\*32\)'):
    prng.keys_on_host(np.asarray(seeds), *folds)
