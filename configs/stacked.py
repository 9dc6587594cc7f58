"""The seed's stacked LSTM on the damped sine: 50 values in, the next 5 out.

Input: 50 samples of 0.5 + 0.5 sin(2 pi i / period) exp(-i decay), period an
integer in [10, 20], decay in [0.01, 0.1]; target: the next 5.  LSTM(20,
whole sequence) -> LSTM(20, last output) -> Dense(5), linear; MAE loss, Adam
1e-3.  The seed's protocol: 10,000 sequences, one epoch of batch 10 (1,000
updates).  Evaluated (MAE, RMSE) on 1,000 fresh sequences.

  python train.py --config=configs/stacked.py --workdir=/tmp/stacked

Expected: held-out MAE ~0.02 (see docs/experiments.md); writes forecast.png.
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
  # A short run dominated by compiling: no fusion emitters in the train
  # program, and the eval program (run once) at -O0 (docs/performance.md).
  c.train.xla_options.xla_cpu_use_fusion_emitters = False
  c.eval.xla_options.xla_backend_optimization_level = 0
  c.eval.num_examples = 1000
  c.eval.batch_size = 1000
  return c.lock()
