"""The seed's CNN-LSTM on the moving line: which way a line crosses 50 frames.

Per frame Conv(2, 2x2, VALID, ReLU) -> max-pool 2x2 -> flatten (1152), vmapped
over 50 frames of 50x50 -> LSTM(70) -> Dense(1) -> sigmoid; binary
cross-entropy, Adam 1e-3.  The seed's protocol: 5,000 examples, one epoch of
batch 32 (ceil(5000 / 32) = 157 updates).  Batches are generated inside the
compiled step; the 5,000 examples are never stored.  Evaluated (accuracy)
on 1,000 fresh examples, 100 at a time.

One deviation from the seed: gradients are clipped to global norm 1; without
it some seeds collapse to chance late in training (docs/experiments.md).

  python train.py --config=configs/cnn_lstm.py --workdir=/tmp/cnn_lstm

Expected: held-out accuracy ~0.99-1.0 (see docs/experiments.md); writes
moving_line.png.
"""

from lstm_flax.config_base import base_config


def get_config():
  c = base_config()
  c.name = 'cnn_lstm'
  c.task.name = 'moving_line'
  c.task.size = 50
  c.model.name = 'cnn_lstm'
  c.model.layer_sizes = (70,)
  c.model.conv_features = 2
  c.model.kernel_size = 2
  c.model.pool_size = 2
  c.model.encoder_implementation = 'auto'  # shifted adds on CPU, else lax.conv
  c.optimizer.learning_rate = 1e-3
  c.optimizer.grad_clip_norm = 1.0
  c.train.steps = 157
  c.train.batch_size = 32
  c.train.steps_per_call = 40
  # Without XLA's fusion emitters this model compiles and steps faster on CPU.
  c.train.xla_options.xla_cpu_use_fusion_emitters = False
  c.eval.num_examples = 1000
  c.eval.batch_size = 100
  return c.lock()
