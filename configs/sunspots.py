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
- the model: one LSTM of 32 units beside a linear autoregressive highway on
  the same 22 years (LSTNet's highway): a linear AR is the classical, strong
  model of this series, so the network only has to learn the nonlinear rest
  (a cycle rises faster than it falls);
- regularisation: ~200 overlapping training windows are few for even a small
  LSTM, which overfits them within a few hundred steps; input and recurrent
  dropout of 0.4 on the LSTM (not on the highway) and a cosine-decayed
  learning rate let it train for 3,000 steps without drifting off the
  validation years;
- the best checkpoint by validation MSE (``eval.every_steps``), and
  ``--config.num_seeds=5`` for replicas whose mean forecast is the ensemble.

The numbers these settings give are in README.md (one-year-ahead test MAE and
MSE against persistence, seasonal naive and the linear AR).
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
  c.task.split = (221, 261, 309)  # 1700-1920 | 1921-1960 | 1961-2008
  c.task.season = 11
  c.task.loss = 'mse'
  c.model.name = 'lstm'
  c.model.layer_sizes = (32,)
  c.model.highway = 22  # the whole input window
  c.model.dropout = 0.4
  c.model.recurrent_dropout = 0.4
  c.optimizer.learning_rate = 3e-3
  c.optimizer.schedule = 'cosine'
  c.optimizer.warmup_steps = 100
  c.train.steps = 3000
  c.train.batch_size = 32
  c.train.steps_per_call = 250
  c.eval.every_steps = 250  # validation MSE picks the best checkpoint
  c.eval.best_metric = 'mse'
  c.eval.final_from_best = True  # the test years score the best checkpoint
  c.eval.figure_examples = 48  # every test year (48 windows)
  return c.lock()
