"""Conv (stride 1, VALID) -> ReLU -> max-pool (p x p, stride p), computed on the pooled grid.

The maths is exactly ``nn.max_pool(nn.relu(nn.Conv(...)(x)), (p, p), (p, p))``,
gradients included: the pool's gradient goes to the first maximum of each
window, as XLA's does.  The formulation is what differs.  For a tiny kernel
with few filters, XLA's CPU convolution, its gradient and the pool's
select-and-scatter cost far more than the arithmetic (measured on the
moving-line model: see bench/).  Here each window position q = (a, c) of the
pool is computed directly on the pooled grid,

  y_q[f, n, I, J] = bias[f] + sum_{di, dj, ch} kernel[di, dj, ch, f]
                    * x[n, p*I + a + di, p*J + c + dj, ch],

so the conv is k*k*C multiply-adds of strided views per window position and
filter, and the pool a running ``where`` over q (strictly greater wins, so a
tie keeps the first position and autodiff routes the gradient there).  Work
is done on channel-first planes because XLA on CPU handles minor dimensions of
size 1 or 2 badly.
"""

import jax.numpy as jnp


def _view(planes, u, v, rows, cols, p):
  """planes[..., u + p*I, v + p*J] for I < rows, J < cols."""
  return planes[..., u:u + p * (rows - 1) + 1:p, v:v + p * (cols - 1) + 1:p]


def conv_relu_pool(x, kernel, bias, pool_size):
  """x (N, H, W, C), kernel (k, k, C, F), bias (F,) -> (N, Hp, Wp, F).

  Hp = (H - k + 1) // pool_size, likewise Wp.
  """
  k, _, channels, features = kernel.shape
  p = pool_size
  rows, cols = (x.shape[1] - k + 1) // p, (x.shape[2] - k + 1) // p
  planes = jnp.moveaxis(x, -1, 0)                     # (C, N, H, W)
  outputs = []
  for f in range(features):
    best = None
    for a in range(p):
      for c in range(p):
        y = bias[f]
        for di in range(k):
          for dj in range(k):
            view = _view(planes, a + di, c + dj, rows, cols, p)
            for ch in range(channels):
              y = y + view[ch] * kernel[di, dj, ch, f]
        best = y if best is None else jnp.where(y > best, y, best)
    outputs.append(jnp.maximum(best, 0.0))
  return jnp.stack(outputs, axis=-1)
