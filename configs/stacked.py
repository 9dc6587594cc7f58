"""The seed's stacked LSTM on the damped sine: 10,000 sequences, one epoch of batch 10.

LSTM(20, whole sequence) -> LSTM(20, last output) -> Dense(5), linear; MAE
loss, Adam 1e-3, 1,000 updates.  Input: 50 samples of
0.5 + 0.5 sin(2 pi i / period) exp(-i decay), period an integer in [10, 20],
decay in [0.01, 0.1]; target: the next 5.  Evaluated (MAE, RMSE) on 1,000
fresh sequences.
"""

from lstm_flax.config_base import base_config


def get_config():
  c = base_config()
  c.name = 'stacked'
  c.task.name = 'damped_sine'
  c.task.length = 50
  c.task.output = 5
  c.task.period_min = 10
  c.task.period_max = 20
  c.task.decay_min = 0.01
  c.task.decay_max = 0.1
  c.task.a = 0.5
  c.task.b = 0.5
  c.model.name = 'lstm'
  c.model.layer_sizes = (20, 20)
  c.optimizer.learning_rate = 1e-3
  c.train.steps = 1000
  c.train.batch_size = 10
  c.train.steps_per_call = 250
  c.eval.num_examples = 1000
  c.eval.batch_size = 1000
  return c.lock()
