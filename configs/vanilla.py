"""The seed's vanilla LSTM on echo: remember the value at position 2 of 5.

Five values uniform in [0, 10), one-hot; the label is the value at position
2 (10 classes).  LSTM(25) -> Dense(10), softmax cross-entropy, Adam 1e-3.
The seed's protocol: 2,000 updates, each on ONE fresh sequence (batch 1).
Evaluated on 1,000 fresh sequences.

  python train.py --config=configs/vanilla.py --workdir=/tmp/vanilla

Expected: held-out accuracy ~0.44-0.50 (see docs/experiments.md): 2,000
batch-1 updates stop short of 100%; configs/vanilla_fast.py reaches it.
"""

from lstm_flax.config_base import base_config


def get_config():
  c = base_config()
  c.name = 'vanilla'
  c.task.name = 'echo'
  c.task.length = 5
  c.task.n_features = 10
  c.task.out_index = 2
  c.model.name = 'lstm'
  c.model.layer_sizes = (25,)
  c.optimizer.learning_rate = 1e-3
  c.train.steps = 2000
  c.train.batch_size = 1
  c.train.steps_per_call = 500
  # The eval program runs once on short sequences: -O0 compiles fastest.
  c.eval.xla_options.xla_backend_optimization_level = 0
  c.eval.num_examples = 1000
  c.eval.batch_size = 1000
  return c.lock()
