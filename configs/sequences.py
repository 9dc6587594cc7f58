"""Labelled sequences from your own .npz file: a classifier or a regressor.

    python train.py --config=configs/sequences.py --workdir=/tmp/my_seqs \
      --config.task.path=my.npz

The file holds ``x`` (N, T, F) and ``y``: (N,) integer classes (softmax
cross-entropy, accuracy) or (N,) / (N, K) float targets (MSE; MAE, MSE, RMSE
in y's units); ``--config.task.kind=classes|regression`` overrides the
guess from y's dtype.  The examples are shuffled with ``task.seed`` and cut
at ``task.split`` = (train_end, valid_end, test_end), fractions (or counts)
of the examples, within each class for classes; the loop trains on the
first part, evaluates every validation example during training and every
test example at the end.  Inputs (and regression targets) are standardised
with the training part's statistics.  Right-padded sequences: an optional
``lengths`` (N,) array of valid steps, which the LSTM layers respect.  There
is no default file: without ``task.path`` the
run stops with a message saying to set it.
"""

from lstm_flax.config_base import base_config
from lstm_flax.sequences import DEFAULTS


def get_config():
  c = base_config()
  c.name = 'sequences'
  c.task.name = 'sequences'
  for field, value in DEFAULTS.items():
    c.task[field] = value
  c.model.name = 'lstm'
  c.model.layer_sizes = (32,)
  c.model.dropout = 0.0
  c.model.recurrent_dropout = 0.0
  c.optimizer.learning_rate = 1e-3
  c.train.steps = 2000
  c.train.batch_size = 32
  c.train.steps_per_call = 500
  return c.lock()
