"""The fields every experiment config has, with their defaults.

A config file under ``configs/`` starts from :func:`base_config` and sets what
its experiment needs.  The returned ConfigDict is locked: overriding a field
that does not exist (``--config.train.stpes=5``) is an error.
"""

import ml_collections


def base_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.name = ''  # the experiment's name, written to results.json
  c.seed = 0  # parameters and training batches derive from it
  c.num_seeds = 1  # N > 1: train seeds seed..seed+N-1 as N replicas
  # in one compiled program (vmap over the state)

  # config.task.name picks the task; the other task fields go to its generator.
  c.task = ml_collections.ConfigDict()
  c.task.name = ''

  _add_model_fields(c)
  _add_optimizer_fields(c)
  _add_train_fields(c)
  _add_eval_fields(c)
  return c


# Each helper adds one section as `c.<section>.<field> = default  # meaning`:
# config_files.field_meanings reads the meanings (and the paths) from these.


def _add_model_fields(c):
  c.model = ml_collections.ConfigDict()
  c.model.name = 'lstm'  # 'lstm', 'cnn_lstm', 'per_step' or
  # 'encoder_decoder' (models.py)
  c.model.layer_sizes = (25,)  # LSTM units per layer, input side first
  c.model.unroll = 0  # time steps per iteration of the scan loop;
  # 0: auto (all of them for T <= 8, else 1)
  c.model.input_projection = 'auto'  # x @ kernel: 'hoisted' before the scan,
  # 'in_scan' per step, 'auto': hoisted if
  # F > H or B*T <= 64 (lstm.hoist_input_projection)
  c.model.dtype = 'float32'  # matmul dtype: 'float32' or 'bfloat16'
  c.model.recurrence = 'auto'  # LSTM loop: 'fused' (recurrence.py, hand-
  # written gradient), 'scan' (nn.scan, autodiff),
  # 'auto': fused unless fully unrolled (T <= 8)
  c.model.layer_schedule = 'wavefront'  # stacked fused LSTMs: 'wavefront' (one
  # loop; layer l runs step t - l while layer 0
  # runs step t) or 'layerwise' (a loop per layer)
  c.model.dropout = 0.0  # every LSTM layer's input dropout (training only)
  c.model.recurrent_dropout = 0.0  # every LSTM layer's recurrent dropout


def _add_optimizer_fields(c):
  c.optimizer = ml_collections.ConfigDict()
  c.optimizer.name = 'adam'  # 'adam', 'adamw' or 'sgd'
  c.optimizer.learning_rate = 1e-3
  c.optimizer.eps = 1e-7  # Adam's epsilon: Keras' default (optax's is 1e-8)
  c.optimizer.weight_decay = 1e-4  # adamw only
  c.optimizer.momentum = 0.0  # sgd only (0: none)
  c.optimizer.schedule = 'constant'  # 'constant' or 'cosine'
  c.optimizer.warmup_steps = 0  # linear warmup (cosine schedule only)
  c.optimizer.final_lr_fraction = 0.0  # cosine: final lr / peak lr
  c.optimizer.grad_clip_norm = 0.0  # > 0: clip gradients to this global norm


def _add_train_fields(c):
  c.train = ml_collections.ConfigDict()
  c.train.steps = 1000  # optimizer updates
  c.train.batch_size = 32
  c.train.steps_per_call = 500  # K: steps per compiled call
  c.train.checkpoint_every = (
    1000  # steps between checkpoints (0: only the last)
  )
  c.train.keep_checkpoints = (
    3  # newest checkpoints kept in <workdir>/checkpoints
  )
  c.train.optimize_for = 'auto'  # the train program's trade-off: 'step_time'
  # (short loops unrolled, xla_options as given),
  # 'compile_time' (model.unroll=0 means 1, XLA's
  # fusion emitters off, JAX's looped Threefry
  # keys for batches: faster to compile, slower
  # steps), 'auto': compile_time for runs of
  # < 40,000 examples (steps x batch x num_seeds),
  # where compiling dominates (compile_plan.py)
  c.train.log_every = 100  # steps per learning-curve record (loss, lr)
  c.train.log_grad_norm = False  # also record the gradient norm (slower steps)
  c.train.tensorboard = False  # also write TensorBoard events
  c.train.init_from = ''  # warm start: a workdir or a Keras/PyTorch file
  # XLA DebugOptions of the train program, on top of the compile plan's
  # defaults (lstm_flax/compile_plan.py; CPU-only ones apply on CPU only).
  c.train.xla_options = ml_collections.ConfigDict()


def _add_eval_fields(c):
  c.eval = ml_collections.ConfigDict()
  c.eval.num_examples = 1000  # fresh held-out examples
  c.eval.batch_size = 1000  # must divide num_examples
  c.eval.seed = 1  # eval data stream (disjoint from training)
  c.eval.figure_examples = 4  # examples drawn in the task's figure (0: none)
  c.eval.predict_examples = 10  # examples printed by --mode=predict
  c.eval.every_steps = 0  # validate every N steps during training (0: never)
  c.eval.best_metric = 'loss'  # the validation metric that picks best/
  c.eval.best_mode = 'min'  # 'min' or 'max': which way is better
  c.eval.final_from_best = False  # True: the final held-out eval scores the
  # best checkpoint, not the last state
  c.eval.xla_options = ml_collections.ConfigDict()  # as train.xla_options
