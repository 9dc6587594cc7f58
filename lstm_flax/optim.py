"""The optimizer and learning-rate schedule of ``config.optimizer``."""

from typing import Callable, Tuple

import optax

OPTIMIZERS = ('adam', 'adamw', 'sgd')
SCHEDULES = ('constant', 'cosine')


def make_schedule(opt_config, total_steps: int) -> Callable[[int], float]:
  """step -> learning rate: constant, or linear warmup then cosine decay to
  ``final_lr_fraction`` of the peak at ``total_steps`` (so raising
  ``train.steps`` to continue a run stretches the remaining decay)."""
  lr = opt_config.learning_rate
  if opt_config.schedule == 'constant':
    return optax.constant_schedule(lr)
  if opt_config.schedule == 'cosine':
    return optax.warmup_cosine_decay_schedule(
      0.0 if opt_config.warmup_steps else lr,
      lr,
      opt_config.warmup_steps,
      max(total_steps, opt_config.warmup_steps + 1),
      end_value=lr * opt_config.final_lr_fraction,
    )
  raise ValueError(
    f'config.optimizer.schedule={opt_config.schedule!r}; '
    f'known: {list(SCHEDULES)}'
  )


def make_optimizer(
  opt_config, total_steps: int
) -> Tuple[optax.GradientTransformation, Callable]:
  """(Adam / AdamW / SGD with optional global-norm clipping, its schedule)."""
  schedule = make_schedule(opt_config, total_steps)
  if opt_config.schedule == 'constant':
    schedule_arg = opt_config.learning_rate  # a float keeps the update lean
  else:
    schedule_arg = schedule
  makers = {
    'adam': lambda lr: optax.adam(lr, eps=opt_config.eps),
    'adamw': lambda lr: optax.adamw(
      lr, eps=opt_config.eps, weight_decay=opt_config.weight_decay
    ),
    'sgd': lambda lr: optax.sgd(lr, momentum=opt_config.momentum or None),
  }
  if opt_config.name not in makers:
    raise ValueError(
      f'config.optimizer.name={opt_config.name!r}; known: {list(OPTIMIZERS)}'
    )
  tx = makers[opt_config.name](schedule_arg)
  # Always a chain of two: turning clipping on or off leaves the optimizer
  # state's structure as it was, so a run can resume with either.
  clip = (
    optax.clip_by_global_norm(opt_config.grad_clip_norm)
    if opt_config.grad_clip_norm > 0
    else optax.identity()
  )
  tx = optax.chain(clip, tx)
  # One flat vector instead of a pytree of small arrays: fewer ops per
  # update, the same arithmetic.
  return optax.flatten(tx), schedule
