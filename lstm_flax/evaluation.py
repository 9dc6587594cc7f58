"""Held-out metrics on the host: per seed, their ensemble, their spread."""

import dataclasses
from typing import Any, Dict, List, Optional

import ml_collections
import numpy as np

from lstm_flax import programs
from lstm_flax import runtime
from lstm_flax import sharding

Metrics = Dict[str, float]


@dataclasses.dataclass
class Evaluation:
  per_seed: List[Metrics]  # one dict per replica
  ensemble: Optional[Metrics]  # the replicas' mean output (num_seeds > 1)
  kept: Any  # (inputs, targets, predictions) or ()
  report: Any = None  # the task's report details, if any

  @property
  def mean(self) -> Metrics:
    """Each metric's mean over the replicas."""
    return mean_over_seeds(self.per_seed)


def evaluate(exp, state, part: str = 'test') -> Evaluation:
  """Runs the eval program on ``part`` ('valid' or 'test') and summarises."""
  metrics, ensemble, kept = sharding.to_host(exp.evaluate(state.params, part))
  summarize = exp.task.summarize
  per_seed = [
    summarize({k: float(v[i]) for k, v in metrics.items()})
    for i in range(exp.num_seeds)
  ]
  ensemble = (
    summarize({k: float(v) for k, v in ensemble.items()})
    if exp.num_seeds > 1
    else None
  )
  return Evaluation(per_seed, ensemble, kept)


def add_report(exp, state, result: Evaluation, workdir: str) -> Evaluation:
  """Joins the task's host-side ``report`` (generation by feedback,
  printouts) to each replica's metrics; its details are replica 0's.  Runs
  in the writing process only; reports without metrics run for replica 0."""
  if exp.task.report is None or not runtime.is_writer():
    return result
  others = ml_collections.ConfigDict(exp.config.eval.to_dict())
  others.figure_examples = 0  # the figure shows replica 0
  host_params = sharding.to_host(state.params)
  for i in range(exp.num_seeds):
    metrics, details = exp.task.report(
      state.apply_fn,
      programs.replica(host_params, i),
      exp.keys.eval,
      exp.config.eval if i == 0 else others,
      workdir,
    )
    if i == 0:
      result.report = details
    if not metrics:
      break
    result.per_seed[i] = {**result.per_seed[i], **metrics}
  return result


def seed_statistics(per_seed: List[Metrics]) -> Dict[str, Metrics]:
  """``{metric: {mean, std, min, max}}`` over replicas."""
  stats = {}
  for name in per_seed[0]:
    values = np.array([m[name] for m in per_seed])
    stats[name] = {
      'mean': float(values.mean()),
      'std': float(values.std()),
      'min': float(values.min()),
      'max': float(values.max()),
    }
  return stats


def mean_over_seeds(per_seed: List[Metrics]) -> Metrics:
  if len(per_seed) == 1:
    return dict(per_seed[0])
  return {k: v['mean'] for k, v in seed_statistics(per_seed).items()}


def all_finite(metrics: Metrics) -> bool:
  return all(
    np.isfinite(v) for v in metrics.values() if isinstance(v, (int, float))
  )


def describe(metrics: Metrics) -> str:
  """``name=value`` pairs, 5 significant digits."""
  return ', '.join(
    f'{k}={v:.5g}' for k, v in metrics.items() if isinstance(v, (int, float))
  )
