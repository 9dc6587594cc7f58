"""Rectangles drawn by a trained model, corner by corner, and how rectangular they are.

Generation feeds each predicted corner back as the next input.  Measures, on
generated corners (N, 4, 2) in drawing order p0 (0,0), p1, p2, p3:

- right-angle error: at each corner the angle between its two edges (to the
  previous and to the next corner, the polygon closed p3 -> p0), ``|angle -
  90|`` in degrees, averaged over the 4 corners.  0 for any rectangle.
- corner error: the mean Euclidean distance of the 4 corners to those of the
  nearest axis-aligned rectangle drawn the same way from (0, 0) — the least-
  squares fit, width ``(x1 + x2) / 2`` and height ``(y2 + y3) / 2``.  0 for a
  rectangle drawn as the training data are; in the units of the data (width
  and height are in [0, 1)).
"""

import jax
import jax.numpy as jnp
import numpy as np


def feed_back(apply_fn, params, prefix, mode, total=4):
  """Completes ``prefix`` (N, k, 2) to (N, total, 2) corners.

  mode='pairs' (the seed's model, trained on one-step sequences): each next
  corner is predicted from the last corner alone, from a fresh carry, as the
  seed's stateless ``model.predict`` does.  mode='sequence' (trained on whole
  corner sequences): each next corner is the last output after reading every
  corner so far — for a forward (causal) LSTM the same as keeping the carry
  across steps and feeding one corner at a time.
  """
  corners = prefix
  for _ in range(total - prefix.shape[1]):
    if mode == 'pairs':
      following = apply_fn({'params': params}, corners[:, -1:])
    else:
      following = apply_fn({'params': params}, corners)[:, -1]
    corners = jnp.concatenate([corners, following[:, None]], axis=1)
  return corners


feed_back_jit = jax.jit(feed_back, static_argnums=(0, 3, 4))


def right_angle_error(corners):
  """(N, 4, 2) -> (N,) mean |corner angle - 90| in degrees."""
  corners = np.asarray(corners, np.float64)
  to_previous = np.roll(corners, 1, axis=1) - corners
  to_next = np.roll(corners, -1, axis=1) - corners
  norms = np.linalg.norm(to_previous, axis=-1) * np.linalg.norm(
    to_next, axis=-1
  )
  cos = (to_previous * to_next).sum(-1) / np.maximum(norms, 1e-12)
  angles = np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))
  return np.abs(angles - 90.0).mean(-1)


def nearest_rectangle(corners):
  """(N, 4, 2) -> (N, 4, 2): the least-squares axis-aligned rectangle from (0, 0)."""
  corners = np.asarray(corners, np.float64)
  width = (corners[:, 1, 0] + corners[:, 2, 0]) / 2
  height = (corners[:, 2, 1] + corners[:, 3, 1]) / 2
  zeros = np.zeros_like(width)
  return np.stack(
    [
      np.stack([zeros, zeros], -1),
      np.stack([width, zeros], -1),
      np.stack([width, height], -1),
      np.stack([zeros, height], -1),
    ],
    axis=1,
  )


def corner_error(corners):
  """(N, 4, 2) -> (N,) mean distance of the corners to the nearest rectangle's."""
  corners = np.asarray(corners, np.float64)
  return np.linalg.norm(corners - nearest_rectangle(corners), axis=-1).mean(-1)
