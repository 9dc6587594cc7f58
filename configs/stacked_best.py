"""The stacked LSTM on the damped sine, tuned for the lowest held-out MAE in ~60 s of CPU.

The seed's model (LSTM(20) -> LSTM(20) -> Dense(5), MAE loss) and task; what
changes is the training: 6,000 Adam updates of batch 64 (384,000 generated
sequences) with a cosine learning-rate schedule peaking at 1e-2 after 200
warmup steps.  Measured on a 2-core CPU, seed 0: held-out MAE 0.00037
(RMSE 0.00057) on 1,000 fresh sequences (the seed protocol: 0.018), in 63 s of
training, 75 s end to end.  In the sweep that chose it (6,000 steps each):
batch 64 at lr 3e-3 gave 0.0018, batch 128 at lr 3e-3 0.0023 (in 119 s).
"""

from configs import stacked


def get_config():
  c = stacked.get_config()
  with c.unlocked():
    c.name = 'stacked_best'
    c.optimizer.learning_rate = 1e-2
    c.optimizer.schedule = 'cosine'
    c.optimizer.warmup_steps = 200
    c.train.steps = 6000
    c.train.batch_size = 64
    c.train.steps_per_call = 1000
  return c.lock()
