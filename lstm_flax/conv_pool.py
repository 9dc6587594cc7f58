"""Conv (stride 1, VALID) -> ReLU -> max-pool (p x p, stride p), computed on the pooled grid.

The maths is exactly ``nn.max_pool(nn.relu(nn.Conv(...)(x)), (p, p), (p, p))``,
gradients included: the pool's gradient goes to the first maximum of each
window, as XLA's does, and ReLU's gradient at 0 is 0, as ``nn.relu``'s.  The
formulation is what differs.  For a tiny kernel with few filters, XLA's CPU
convolution, its gradient and the pool's select-and-scatter cost far more than
the arithmetic (docs/performance.md has the measurements).  Here each
window position q = (a, c) of the pool is computed directly on the pooled grid,

  y_q[f, n, I, J] = bias[f] + sum_{di, dj, ch} kernel[di, dj, ch, f]
                    * x[n, p*I + a + di, p*J + c + dj, ch],

so the conv is k*k*C multiply-adds of strided views per window position and
filter, and the pool a running ``where`` over q (strictly greater wins, so a
tie keeps the first position).  Work is done on channel-first planes because
XLA on CPU handles minor dimensions of size 1 or 2 badly.

The gradient is written by hand (``jax.custom_vjp``): with g the output's
cotangent masked by ReLU, ``dkernel[di, dj, ch, f]`` is the sum of g times the
input each pooled cell's winning window read through that tap, and ``dbias[f]``
the sum of g.  All of these sums are one variadic ``lax.reduce``, so XLA reads
the frames once for the whole gradient; autodiff of the forward instead made
one pass over the frames per tap and filter plus select chains for the pool
(docs/performance.md has the timings).  The inputs' cotangent, which training never
asks for, is computed (by autodiff of the same formulation) only when the
inputs are differentiated.
"""

import functools

import jax
import jax.numpy as jnp


def _view(planes, u, v, rows, cols, p):
  """planes[..., u + p*I, v + p*J] for I < rows, J < cols."""
  return planes[
    ..., u : u + p * (rows - 1) + 1 : p, v : v + p * (cols - 1) + 1 : p
  ]


def _pooled_grid(x, kernel, pool_size):
  k = kernel.shape[0]
  return (x.shape[1] - k + 1) // pool_size, (x.shape[2] - k + 1) // pool_size


def _max_pool_conv(x, kernel, bias, pool_size):
  """Per filter f: the pool's maximum over window positions of the conv
  output (N, Hp, Wp) and the index a * p + c of the first position reaching
  it (int8, or int32 for pools over 127 positions)."""
  k, _, channels, features = kernel.shape
  p = pool_size
  rows, cols = _pooled_grid(x, kernel, p)
  planes = jnp.moveaxis(x, -1, 0)  # (C, N, H, W)
  index_dtype = jnp.int8 if p * p <= 127 else jnp.int32
  maxima, winners = [], []
  for f in range(features):
    best = winner = None
    for a in range(p):
      for c in range(p):
        y = bias[f]
        for di in range(k):
          for dj in range(k):
            view = _view(planes, a + di, c + dj, rows, cols, p)
            for ch in range(channels):
              y = y + view[ch] * kernel[di, dj, ch, f]
        if best is None:
          best, winner = y, jnp.zeros(y.shape, index_dtype)
        else:
          better = y > best
          best = jnp.where(better, y, best)
          winner = jnp.where(
            better, jnp.asarray(a * p + c, index_dtype), winner
          )
    maxima.append(best)
    winners.append(winner)
  return maxima, winners


def _autodiff_formulation(x, kernel, bias, pool_size):
  """The same forward left to autodiff (used for the inputs' cotangent)."""
  maxima, _ = _max_pool_conv(x, kernel, bias, pool_size)
  return jnp.stack([jax.nn.relu(m) for m in maxima], axis=-1)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def _conv_relu_pool(x, kernel, bias, pool_size):
  return _autodiff_formulation(x, kernel, bias, pool_size)


def _conv_relu_pool_fwd(x, kernel, bias, pool_size):
  maxima, winners = _max_pool_conv(x.value, kernel.value, bias.value, pool_size)
  out = jnp.stack([jax.nn.relu(m) for m in maxima], axis=-1)
  return out, (x.value, kernel.value, bias.value, out, winners, x.perturbed)


def _conv_relu_pool_bwd(p, residuals, g):
  x, kernel, bias, out, winners, x_perturbed = residuals
  k, _, channels, features = kernel.shape
  rows, cols = out.shape[1], out.shape[2]
  planes = jnp.moveaxis(x, -1, 0)
  # Filter-first planes, materialised (the barrier keeps XLA from fusing the
  # transpose into the reduction, which then read g two floats apart).
  g_planes = jax.lax.optimization_barrier(
    jnp.moveaxis(jnp.where(out > 0, g, 0.0), -1, 0)
  )  # ReLU's gradient
  terms, where = [], {}
  for f in range(features):
    g_f = g_planes[f]
    where['bias', f] = len(terms)
    terms.append(g_f)
    for di in range(k):
      for dj in range(k):
        for ch in range(channels):
          # The input the winning window position read through tap (di, dj).
          read = None
          for a in range(p):
            for c in range(p):
              view = _view(planes, a + di, c + dj, rows, cols, p)[ch]
              read = (
                view
                if read is None
                else jnp.where(winners[f] == a * p + c, view, read)
              )
          where[di, dj, ch, f] = len(terms)
          terms.append(g_f * read)
  sums = jax.lax.reduce(
    tuple(terms),
    tuple(jnp.zeros((), t.dtype) for t in terms),
    lambda u, v: tuple(a + b for a, b in zip(u, v)),
    tuple(range(terms[0].ndim)),
  )
  dkernel = jnp.stack(
    [
      sums[where[di, dj, ch, f]]
      for di in range(k)
      for dj in range(k)
      for ch in range(channels)
      for f in range(features)
    ]
  ).reshape(kernel.shape)
  dbias = jnp.stack([sums[where['bias', f]] for f in range(features)])
  dx = None
  if x_perturbed:
    dx = jax.vjp(lambda x_: _autodiff_formulation(x_, kernel, bias, p), x)[1](
      g
    )[0]
  return dx, dkernel.astype(kernel.dtype), dbias.astype(bias.dtype)


_conv_relu_pool.defvjp(
  _conv_relu_pool_fwd, _conv_relu_pool_bwd, symbolic_zeros=True
)


def conv_relu_pool(x, kernel, bias, pool_size):
  """x (N, H, W, C), kernel (k, k, C, F), bias (F,) -> (N, Hp, Wp, F).

  Hp = (H - k + 1) // pool_size, likewise Wp.
  """
  return _conv_relu_pool(x, kernel, bias, pool_size)
