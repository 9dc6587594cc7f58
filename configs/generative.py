"""The seed book's generative LSTM drawing rectangles corner by corner.

A rectangle of width and height uniform in [0, 1) is drawn from (0, 0):
(0,0) -> (w,0) -> (w,h) -> (0,h).  Each training example maps the previous
corner (a one-step sequence of 2 features) to the next; an update trains on
the 3 pairs of one rectangle (batch 3).  LSTM(10) -> Dense(2), MAE loss, Adam
1e-3, 25,000 updates.  Then generation: from (0, 0), each prediction is fed
back 3 times (and 1,000 completions of held-out first edges); the right-angle
and corner errors of the generated shapes (``lstm_flax/generation.py``) go to
results.json and rectangles.png.

``--config=configs/generative.py:sequence``: the natural extension, the whole
corner sequence per example (forward LSTM(10) returning sequences ->
Dense(2) per step), the carry kept across steps; 25,000 updates of batch 1
(one rectangle, the same 3 targets per update as the seed's).

  python train.py --config=configs/generative.py --workdir=/tmp/generative

Expected: mean right-angle error of 1,000 completions ~5-10 degrees for the
pairs model and ~1-3 degrees for the sequence variant (see
docs/experiments.md).
"""

from lstm_flax.config_base import base_config


def get_config(variant='pairs'):
  c = base_config()
  c.name = 'generative'
  c.task.name = 'rectangles'
  c.task.mode = 'pairs'
  c.model.name = 'lstm'
  c.model.layer_sizes = (10,)
  c.train.batch_size = 3
  if variant == 'sequence':
    c.name = 'generative_sequence'
    c.task.mode = 'sequence'
    c.model.name = 'per_step'
    c.model.bidirectional = False
    c.train.batch_size = 1
  elif variant != 'pairs':
    raise ValueError(
      f"configs/generative.py:{variant}: use 'pairs' or 'sequence'"
    )
  c.optimizer.learning_rate = 1e-3
  c.train.steps = 25000
  c.train.steps_per_call = 5000
  c.train.checkpoint_every = 25000
  c.eval.num_examples = 1000
  c.eval.batch_size = 1000
  return c.lock()
