"""The seed book's bidirectional LSTM on the cumulative-sum threshold.

10 values uniform in [0, 1); the label of step t is 1 once their running sum
exceeds 10 / 4 = 2.5.  Bidirectional LSTM(50) (concat) returning sequences
-> Dense(1) sigmoid per step; binary cross-entropy, Adam 1e-3, 50,000
sequences in batches of 10 (5,000 updates).  Evaluated on 1,000 fresh
sequences: per-step accuracy and whole-sequence accuracy.

The forward-only LSTM of the same size, for comparison:
``--config.model.bidirectional=False`` (or ``configs/bidirectional.py:forward``).

  python train.py --config=configs/bidirectional.py --workdir=/tmp/bidirectional

Expected: per-step accuracy ~0.98-0.996 for both models; the bidirectional
one is ahead on average by less than the seed-to-seed spread, since the
label at t depends only on steps 1..t (see docs/experiments.md).
"""

from lstm_flax.config_base import base_config


def get_config(variant='bidirectional'):
  c = base_config()
  c.name = 'bidirectional'
  c.task.name = 'cumsum_threshold'
  c.task.length = 10
  c.task.limit_fraction = 0.25
  c.model.name = 'per_step'
  c.model.layer_sizes = (50,)
  c.model.bidirectional = True
  c.model.merge_mode = 'concat'
  c.model.cell = 'lstm'
  if variant == 'forward':
    c.name = 'bidirectional_forward_only'
    c.model.bidirectional = False
  elif variant != 'bidirectional':
    raise ValueError(
      f"configs/bidirectional.py:{variant}: use 'bidirectional' or 'forward'"
    )
  c.optimizer.learning_rate = 1e-3
  c.train.steps = 5000
  c.train.batch_size = 10
  c.train.steps_per_call = 1000
  c.train.checkpoint_every = 5000
  c.eval.num_examples = 1000
  c.eval.batch_size = 1000
  return c.lock()
