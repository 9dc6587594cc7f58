"""Data parallelism: a 1-D ``data`` mesh over every device, batches split over it.

Parameters and optimizer state are replicated; each device generates only
its slice of a batch (examples come from per-example keys), so the global
batch is the same whatever the number of devices.
"""

import jax
import numpy as np


def data_mesh(devices=None) -> jax.sharding.Mesh:
  """A 1-D mesh over every device (all processes'), axis ``'data'``."""
  return jax.sharding.Mesh(np.asarray(devices or jax.devices()), ('data',))


def batch_sharding(mesh):
  """Examples split over the ``data`` axis; None on one device (no-op)."""
  if mesh is None or mesh.size == 1:
    return None
  return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec('data'))


def replicated(mesh):
  """Every device holds the whole array; None without a mesh."""
  if mesh is None:
    return None
  return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())


def shard_batch(batch, sharding):
  """Constrains every array of ``batch`` to be split along its first axis
  (inside a jitted program: each device then generates its own slice)."""
  if sharding is None:
    return batch
  return jax.lax.with_sharding_constraint(batch, sharding)


def to_host(tree):
  """numpy copies of a pytree of replicated (or single-device) arrays; works
  in multi-process runs, where a global array is not fully addressable."""

  def one(x):
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
      x = x.addressable_data(0)
    return np.asarray(x)

  return jax.tree_util.tree_map(one, tree)
