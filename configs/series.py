"""Forecasting a series from your own file (CSV, .npy or .npz).

    python train.py --config=configs/series.py --workdir=/tmp/my_series \
      --config.task.path=my.csv --config.task.columns=NAME

Rows are split in time order by ``task.split`` = (train_end, valid_end,
test_end), row counts or fractions: the model trains on windows wholly in
the training rows, is evaluated during training on every validation window
and, at the end, on every test window (inputs may reach back into the
previous part, targets never).  Each column is standardised with the
training rows' mean and standard deviation; metrics (MAE, MSE, RMSE, MASE
against the seasonal-naive forecast of period ``task.season``) are in the
data's own units, beside three baselines on the same test windows
(persistence, seasonal naive, a least-squares linear autoregression of the
same input length).  Every ``task.*`` field is listed in
``lstm_flax/series.py`` (``DEFAULTS``).  There is no default file: without
``task.path`` the run stops with a message saying to set it.

The model is small on purpose (one LSTM of 32 units): most files are
short.  ``--config.model.highway=N`` adds a linear autoregression on the last
N input steps beside it (LSTNet's highway), so that the network only learns
what a linear model misses; ``model.dropout`` / ``model.recurrent_dropout``
regularise it (see ``configs/sunspots.py`` for a tuned example).
"""

from lstm_flax.config_base import base_config
from lstm_flax.series import DEFAULTS


def get_config():
  c = base_config()
  c.name = 'series'
  c.task.name = 'series'
  for field, value in DEFAULTS.items():
    c.task[field] = value
  c.model.name = 'lstm'
  c.model.layer_sizes = (32,)
  c.model.highway = 0
  c.model.dropout = 0.0
  c.model.recurrent_dropout = 0.0
  c.optimizer.learning_rate = 1e-3
  c.train.steps = 2000
  c.train.batch_size = 32
  c.train.steps_per_call = 500
  return c.lock()
