"""Echo to 100% held-out accuracy in the least wall time.

The seed's task and model (configs/vanilla.py: LSTM(25) -> Dense(10)),
trained with 300 Adam updates of batch 64 at learning rate 3e-2 instead of
the seed's 2,000 batch-1 updates at 1e-3.  Evaluated on 1,000 fresh
sequences.

  python train.py --config=configs/vanilla_fast.py --workdir=/tmp/vanilla_fast

Expected: held-out accuracy 1.0 on every seed (see docs/experiments.md).
"""

from lstm_flax.configs import vanilla


def get_config():
  c = vanilla.get_config()
  with c.unlocked():
    c.name = 'vanilla_fast'
    c.optimizer.learning_rate = 3e-2
    c.train.steps = 300
    c.train.batch_size = 64
    c.train.steps_per_call = 300
  return c.lock()
