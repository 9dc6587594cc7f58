"""Echo to 100% held-out accuracy in the least wall time we found.

The seed's model (LSTM(25) -> Dense(10)) with 300 Adam updates of batch 64 at
learning rate 3e-2.  Measured on a 2-core CPU: every one of 20 seeds reached
accuracy 1.0 on 1,000 fresh sequences (so did 200 updates; 300 is the
margin), training takes about 0.25-0.5 s, and the end-to-end wall time,
process start to exit, is 5.3-5.8 s with an empty XLA compilation cache and
4.6 s with a warm one (2026-11-28; the rest is imports and compiling: as a
short run, 19,200 examples, its train program is compiled for compile time,
see config.train.optimize_for).
"""

from configs import vanilla


def get_config():
  c = vanilla.get_config()
  with c.unlocked():
    c.name = 'vanilla_fast'
    c.optimizer.learning_rate = 3e-2
    c.train.steps = 300
    c.train.batch_size = 64
    c.train.steps_per_call = 300
  return c.lock()
