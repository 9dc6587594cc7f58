"""Yearly sunspot numbers, one year ahead: the series task on a real series.

Data: statsmodels' bundled copy (``pip install -e '.[data]'``; nothing
downloads), 309 yearly values 1700-2008 of ``SUNACTIVITY``.  Any CSV with
the columns ``YEAR`` and ``SUNACTIVITY`` replaces it:
``--config.task.path=FILE``; every ``task.*`` field of ``configs/series.py``
applies.

Protocol, as a forecaster would set it:

- chronological split 1700-1920 train (221 years, ~20 solar cycles),
  1921-1960 validation (40 years, ~3.5 cycles), 1961-2008 test (48 years,
  ~4.5 cycles, among them the large cycles 19-22 that end the record); all
  choices (model, steps, input length) were made on the validation years;
- input: the previous 22 years, two ~11-year cycles, so every window holds
  a whole cycle and the rise of the one before; season 11 for the
  seasonal-naive baseline and MASE;
- one year ahead (``output_length=1``), the benchmark's usual horizon;
- the model: an LSTM beside a linear autoregressive highway on the same 22
  years (LSTNet's highway): a linear AR is the classical, strong model of
  this series, so the network only learns the nonlinear rest (the asymmetry
  between a cycle's fast rise and slow fall); on its own a small LSTM trained
  on ~200 windows stays above the linear model's error.
"""

from lstm_flax.config_base import base_config
from lstm_flax.series import DEFAULTS


def get_config():
  c = base_config()
  c.name = 'sunspots'
  c.task.name = 'series'
  for field, value in DEFAULTS.items():
    c.task[field] = value
  c.task.path = 'statsmodels:sunspots'
  c.task.columns = 'SUNACTIVITY'
  c.task.time_column = 'YEAR'
  c.task.input_length = 22
  c.task.output_length = 1
  c.task.split = (221, 261, 309)     # 1700-1920 | 1921-1960 | 1961-2008
  c.task.season = 11
  c.task.loss = 'mse'
  c.model.name = 'lstm'
  c.model.layer_sizes = (32,)
  c.model.highway = 22
  c.model.dropout = 0.0
  c.model.recurrent_dropout = 0.0
  c.optimizer.learning_rate = 1e-3
  c.train.steps = 2000
  c.train.batch_size = 32
  c.train.steps_per_call = 500
  return c.lock()
