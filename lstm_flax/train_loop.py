"""The one training loop every experiment shares.

Flow: config -> task (generator, loss, metrics) + model -> ``TrainState`` ->
``train_chunk``: one jitted ``lax.scan`` over K steps, each drawing its batch
on the device from ``fold_in(train_key, step)`` -> host logs every K steps ->
``evaluate`` (jitted, on keys disjoint from training) -> results.json.
"""

import concurrent.futures
import contextlib
import dataclasses
import json
import os
import signal
import sys
import threading
import time
from typing import Any, Dict, List, Tuple

from absl import logging
import flax.linen as nn
from flax.training import train_state
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from lstm_flax import checkpoints
from lstm_flax import models
from lstm_flax import prng
from lstm_flax import tasks
from lstm_flax import validation
from lstm_flax import workdir as workdir_lib

TrainState = train_state.TrainState

# Programs that run once and briefly (init, predict) compile with LLVM at -O0
# and without XLA's fusion emitters: on CPU 3-4x faster to compile (the
# emitters alone: init 0.31-0.38 s instead of 0.46-0.71), too short for the
# slower code to matter.  Train and eval compile with
# ``config.train.xla_options`` and ``config.eval.xla_options``.
_RUN_ONCE_OPTIONS = {'xla_backend_optimization_level': 0,
                     'xla_cpu_use_fusion_emitters': False}

# Streams folded from the run's seed: parameters, training batches, eval.
_INIT, _TRAIN, _EVAL = 0, 1, 2


def run_keys(seed: int, eval_seed: int, num_seeds: int = 1,
             unrolled_train_key: bool = True):
  """(init_key, train_key, eval_key).  Eval keys come from a separate fold of
  ``eval_seed``, so held-out data never equals a training batch.

  With ``num_seeds`` N > 1, init and train keys are stacked (N,): replica i
  gets exactly the keys of a single run with seed ``seed + i``.  The eval key
  is shared, so every replica is scored on the same held-out examples.
  ``unrolled_train_key``: the train key hashes as straight-line code
  (``prng.UNROLLED_THREEFRY``: faster steps, slower compiles); init and eval
  keys, which programs that run once use, hash in JAX's loop.  Either way
  the bits, hence the data, are the same.
  """
  # Derived on the host: eager jax.random calls would compile a program each.
  seeds = (np.int64(seed) if num_seeds == 1 else
           np.arange(seed, seed + num_seeds, dtype=np.int64))
  return (prng.keys_on_host(seeds, _INIT, unrolled=False),
          prng.keys_on_host(seeds, _TRAIN, unrolled=unrolled_train_key),
          prng.keys_on_host(eval_seed, _EVAL, unrolled=False))


def _replicas(key) -> int:
  """0 for a single key, N for a stack of N keys (one per seed replica)."""
  return key.shape[0] if key.ndim else 0


def data_mesh(devices=None) -> jax.sharding.Mesh:
  """A 1-D mesh over every device (all processes'), axis ``'data'``."""
  return jax.sharding.Mesh(np.asarray(devices or jax.devices()), ('data',))


def batch_sharding(mesh):
  """Examples split over the ``data`` axis; None on one device (no-op)."""
  if mesh is None or mesh.size == 1:
    return None
  return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec('data'))


def replicated(mesh):
  return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())


def shard_batch(batch, sharding):
  """Constrains every array of ``batch`` to be split along its first axis.

  Inside a jitted step this makes each device generate only its own slice:
  examples are drawn from per-example keys ``fold_in(key, index)``, so the
  global batch is the same whatever the number of devices.
  """
  if sharding is None:
    return batch
  return jax.lax.with_sharding_constraint(batch, sharding)


def make_optimizer(opt_config, total_steps: int) -> optax.GradientTransformation:
  """Adam / AdamW / SGD with a constant or (warmup-)cosine learning rate."""
  lr = opt_config.learning_rate
  if opt_config.schedule == 'constant':
    schedule = lr
  elif opt_config.schedule == 'cosine':
    schedule = optax.warmup_cosine_decay_schedule(
        0.0 if opt_config.warmup_steps else lr, lr, opt_config.warmup_steps,
        max(total_steps, opt_config.warmup_steps + 1),
        end_value=lr * opt_config.final_lr_fraction)
  else:
    raise ValueError(f"config.optimizer.schedule={opt_config.schedule!r}; "
                     f"known: ['constant', 'cosine']")
  optimizers = {
      'adam': lambda lr: optax.adam(lr, eps=opt_config.eps),
      'adamw': lambda lr: optax.adamw(lr, eps=opt_config.eps,
                                      weight_decay=opt_config.weight_decay),
      'sgd': lambda lr: optax.sgd(lr, momentum=opt_config.momentum or None),
  }
  if opt_config.name not in optimizers:
    raise ValueError(f'config.optimizer.name={opt_config.name!r}; known: '
                     f'{sorted(optimizers)}')
  tx = optimizers[opt_config.name](schedule)
  if opt_config.grad_clip_norm > 0:
    tx = optax.chain(optax.clip_by_global_norm(opt_config.grad_clip_norm), tx)
  # One flat vector instead of a pytree of small arrays: fewer ops per update
  # (echo at batch 1 trains ~1.1x faster); the arithmetic is the same.
  return optax.flatten(tx)


def make_init(model: nn.Module, task: tasks.Task, tx, num_seeds: int = 1,
              mesh=None):
  """A jitted ``init_key -> TrainState``: parameters from one generated
  example's shapes, and the optimizer state (eager init of a scanned model is
  slow).  With ``num_seeds`` N > 1 it takes (N,) keys and returns N replicas
  stacked on a leading axis.  With a ``mesh`` the state is replicated over it.
  """
  inputs, _ = jax.eval_shape(lambda: task.generate(jax.random.key(0), 1))

  def init(key):
    params = model.init(key, jnp.zeros(inputs.shape, inputs.dtype))['params']
    return TrainState.create(apply_fn=model.apply, params=params, tx=tx)

  if num_seeds > 1:
    init = jax.vmap(init)
  return jax.jit(init, out_shardings=None if mesh is None else replicated(mesh))


def create_train_state(model: nn.Module, task: tasks.Task, tx, init_key):
  return make_init(model, task, tx, max(1, _replicas(init_key)))(init_key)


def make_train_step(task: tasks.Task, batch_size: int, train_key,
                    sharding=None):
  """``state -> (state, loss)``: one update on the batch of step ``state.step``.

  With a stack of N train keys, the state holds N replicas (leading axis) and
  the step is vmapped over both: loss (N,).  ``sharding`` (see
  ``batch_sharding``) splits the batch over devices; the gradient's mean over
  the batch then becomes a cross-device reduction the compiler inserts.
  """

  def train_step(state: TrainState, key):
    inputs, targets = shard_batch(
        task.generate(jax.random.fold_in(key, state.step), batch_size),
        sharding)

    def loss_fn(params):
      return task.loss(state.apply_fn({'params': params}, inputs), targets)

    loss, grads = jax.value_and_grad(loss_fn)(state.params)
    return state.apply_gradients(grads=grads), loss

  if _replicas(train_key):
    return lambda state: jax.vmap(train_step)(state, train_key)
  return lambda state: train_step(state, train_key)


def make_train_chunk(train_step, steps_per_call: int, mesh=None):
  """A jitted ``(state, num_steps) -> (state, losses (K,) or (K, N))`` running
  ``num_steps <= K`` steps in one ``lax.scan`` of fixed length K.

  ``num_steps`` is a traced argument, so the last, shorter chunk reuses the
  same compiled program; skipped steps report a NaN loss.  With a ``mesh``,
  state and losses are replicated over it.  ``train_step`` returns one loss
  per replica: the shape of ``state.step`` (read from it rather than from an
  extra trace of the step, which cost 0.3 s of every stacked run's start).
  """

  def chunk(state, num_steps):
    loss_shape = jnp.shape(state.step)

    def body(state, i):
      return jax.lax.cond(
          i < num_steps, train_step,
          lambda s: (s, jnp.full(loss_shape, jnp.nan, jnp.float32)),
          state)

    return jax.lax.scan(body, state, jnp.arange(steps_per_call))

  if mesh is None:
    return jax.jit(chunk, donate_argnums=0)
  return jax.jit(chunk, donate_argnums=0, in_shardings=replicated(mesh),
                 out_shardings=replicated(mesh))


def make_predict(task: tasks.Task, num_examples: int, eval_key, mesh=None):
  """A jitted ``(apply_fn, params) -> (inputs, targets, predictions)`` on the
  first ``num_examples`` held-out examples (for figures and printouts) with
  the parameters of one model (replica 0's, for ``num_seeds`` > 1)."""

  def predict(apply_fn, params):
    inputs, targets = task.generate(eval_key, num_examples)
    return inputs, targets, task.decode(apply_fn({'params': params}, inputs))

  return jax.jit(predict, static_argnums=0,
                 out_shardings=None if mesh is None else replicated(mesh))


def make_evaluate(task: tasks.Task, num_examples: int, batch_size: int,
                  eval_key, num_seeds: int = 1, mesh=None,
                  keep_examples: int = 0):
  """A jitted ``(apply_fn, params) -> {metric: mean}`` over the first
  ``num_examples`` examples of the eval stream, ``batch_size`` at a time
  (split over the mesh's devices).  With ``num_seeds`` N > 1 the parameters
  hold N replicas and each metric is (N,).

  With ``keep_examples`` n (1 <= n <= ``batch_size``) it returns
  ``(metrics, (inputs, targets, predictions))``: also the first n held-out
  examples with replica 0's decoded predictions — what ``make_predict``
  gives, for a figure, without compiling a second program.
  """
  if num_examples % batch_size:
    raise ValueError(f'config.eval.num_examples={num_examples} must be a '
                     f'multiple of config.eval.batch_size={batch_size}')
  if not 0 <= keep_examples <= batch_size:
    raise ValueError(f'keep_examples={keep_examples} must be in [0, '
                     f'batch_size={batch_size}]')
  sharding = batch_sharding(mesh)

  def evaluate(apply_fn, params):

    def one_batch(i):
      inputs, targets = shard_batch(
          task.generate(eval_key, batch_size, offset=i * batch_size), sharding)
      outputs = apply_fn({'params': params}, inputs)
      metrics = task.metrics(outputs, targets)
      if not keep_examples:
        return metrics, ()
      first = lambda tree: jax.tree_util.tree_map(
          lambda a: a[:keep_examples], tree)
      return metrics, first((inputs, targets, task.decode(first(outputs))))

    per_batch, kept = jax.lax.map(one_batch,
                                  jnp.arange(num_examples // batch_size))
    metrics = jax.tree_util.tree_map(jnp.mean, per_batch)
    if not keep_examples:
      return metrics
    return metrics, jax.tree_util.tree_map(lambda a: a[0], kept)  # batch 0's

  if num_seeds > 1:
    single = evaluate

    def evaluate(apply_fn, params):  # pylint: disable=function-redefined
      out = jax.vmap(lambda p: single(apply_fn, p))(params)
      if not keep_examples:
        return out
      metrics, kept = out
      return metrics, jax.tree_util.tree_map(lambda a: a[0], kept)  # replica 0

  return jax.jit(evaluate, static_argnums=0,
                 out_shardings=None if mesh is None else replicated(mesh))


def to_host(tree):
  """numpy copies of a pytree of replicated (or single-device) arrays; works
  in multi-process runs, where a global array is not fully addressable."""
  def one(x):
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
      x = x.addressable_data(0)
    return np.asarray(x)
  return jax.tree_util.tree_map(one, tree)


def state_step(state) -> int:
  """The state's step (replicas train in lockstep: their common step)."""
  return int(np.max(to_host(state.step)))


def replica(tree, index: int = 0):
  """Replica ``index`` of a stacked pytree (``num_seeds`` > 1)."""
  def one(x):
    if isinstance(x, jax.ShapeDtypeStruct):
      return jax.ShapeDtypeStruct(x.shape[1:], x.dtype, sharding=x.sharding)
    return x[index]
  return jax.tree_util.tree_map(one, tree)


def _format_eta(seconds: float) -> str:
  seconds = int(round(seconds))
  return f'{seconds // 60}m{seconds % 60:02d}s'


class _CompiledLater:
  """A program being compiled in a background thread: calling it waits for
  the compilation (and re-raises its error, if any), then runs it."""

  def __init__(self, future, name):
    self._future, self._name = future, name

  def __call__(self, *args):
    return self._future.result()[0][self._name](*args)


@dataclasses.dataclass
class Experiment:
  """Everything a config builds: the initial state and the compiled programs
  (a program that ``build`` was not asked for is None)."""
  config: Any
  task: tasks.Task
  state: TrainState     # with num_seeds > 1: N replicas on a leading axis
  train_chunk: Any      # compiled (state, num_steps) -> (state, losses)
  evaluate: Any         # compiled params -> {metric: mean}
  predict: Any          # compiled params of one replica -> (inputs, targets, predictions)
  steps_per_call: int
  compile_seconds: float  # init + the first program, before build returned
  mesh: Any = None      # the 'data' mesh over all devices
  background: Any = None  # the other programs' compilation, if any
  eval_examples: int = 0  # evaluate also returns this many examples (figure)

  @property
  def num_seeds(self) -> int:
    return self.config.num_seeds

  def total_compile_seconds(self) -> float:
    """Compilation time of every program, including those compiled in the
    background (waits for them)."""
    extra = self.background.result()[1] if self.background is not None else 0.
    return self.compile_seconds + extra


def build(config, programs=('train', 'eval', 'predict'),
          after_lowering=None, eval_examples: int = 0) -> Experiment:
  """Builds the task, model and optimizer of ``config``, the initial state,
  and compiles the ``programs`` asked for (others are None) from shapes
  alone.  Train and eval compile with ``config.train.xla_options`` and
  ``config.eval.xla_options``; init and predict, which run once and
  briefly, at -O0.

  The first program compiles on the calling thread while a background
  thread compiles and runs init, then compiles the others (tracing is
  Python, XLA's compiler one thread): on 2 CPU cores that took init's ~1 s
  off the start and hid eval's and predict's ~2 s of compilation behind
  training.  Calling a program compiled in the background waits for it.
  ``after_lowering`` (e.g. starting slow imports in a thread) is called once
  the first program is lowered, while XLA compiles it.  ``eval_examples``:
  see ``make_evaluate``'s ``keep_examples``.

  Every program runs on a 1-D ``data`` mesh over all devices: batches split
  over it, parameters and optimizer state replicated.
  """
  task = validation.validate(config)
  goal = validation.optimize_for(config)   # 'step_time' or 'compile_time'
  model_config = dict(config.model)
  if goal == 'compile_time' and not model_config['unroll']:
    model_config['unroll'] = 1  # one loop body to compile, not T copies
  model = models.make_model(model_config, task.num_outputs)
  steps = config.train.steps
  steps_per_call = min(config.train.steps_per_call, steps)
  num_seeds = config.num_seeds
  init_key, train_key, eval_key = run_keys(
      config.seed, config.eval.seed, num_seeds,
      unrolled_train_key=goal == 'step_time')
  mesh = data_mesh()
  tx = make_optimizer(config.optimizer, steps)
  init = make_init(model, task, tx, num_seeds, mesh)
  abstract = jax.eval_shape(init, init_key)

  def lower(name):
    if name == 'train':
      return make_train_chunk(
          make_train_step(task, config.train.batch_size, train_key,
                          batch_sharding(mesh)),
          steps_per_call, mesh).lower(abstract, 0)
    if name == 'eval':
      return make_evaluate(task, config.eval.num_examples,
                           config.eval.batch_size, eval_key, num_seeds, mesh,
                           eval_examples
                           ).lower(abstract.apply_fn, abstract.params)
    if name == 'predict':
      return make_predict(
          task, max(1, config.eval.figure_examples,
                    config.eval.predict_examples), eval_key, mesh).lower(
              abstract.apply_fn, abstract.params if num_seeds == 1 else
              replica(abstract.params))
    raise ValueError(f'unknown program {name!r}: expected train, eval or predict')

  def compile_program(name, lowered):
    if name in ('train', 'eval'):
      return lowered.compile(validation.xla_options(config, name))
    return lowered.compile(validation.for_backend(_RUN_ONCE_OPTIONS))

  def compile_later(names):
    start = time.perf_counter()
    done = {name: compile_program(name, lower(name)) for name in names}
    return done, time.perf_counter() - start

  start = time.perf_counter()
  # Tracing and lowering hold Python's GIL; XLA's compiler does not.  So the
  # main thread lowers the first program (from the state's shapes alone),
  # then compiles it while a background thread lowers, compiles and runs
  # init, then lowers and compiles the other programs (and
  # ``after_lowering`` runs).
  first = lower(programs[0]) if programs else None
  executor = concurrent.futures.ThreadPoolExecutor(
      1, thread_name_prefix='lstm_flax_compile')
  initialized = executor.submit(
      lambda: compile_program('init', init.lower(init_key))(init_key))
  background = None
  compiled = {}
  if programs[1:]:
    background = executor.submit(compile_later, programs[1:])
    for name in programs[1:]:
      compiled[name] = _CompiledLater(background, name)
  executor.shutdown(wait=False)
  if after_lowering is not None:
    after_lowering()
  if first is not None:
    compiled[programs[0]] = compile_program(programs[0], first)
  state = initialized.result()
  compile_seconds = time.perf_counter() - start
  return Experiment(config, task, state, compiled.get('train'),
                    compiled.get('eval'), compiled.get('predict'),
                    steps_per_call, compile_seconds, mesh, background,
                    eval_examples)


def _import_tensorboardx():
  """tensorboardX, or None if it is not installed.

  Where PyTorch is installed, tensorboardX imports it (~2 s) only to
  recognise torch tensors in what it logs; we log Python floats, so torch is
  hidden from that one import unless something imported it already.
  """
  hide_torch = 'torch' not in sys.modules
  if hide_torch:
    sys.modules['torch'] = None  # makes `import torch` raise ImportError
  try:
    import tensorboardX  # pylint: disable=g-import-not-at-top
    return tensorboardX
  except ImportError:
    return None
  finally:
    if hide_torch and sys.modules.get('torch', 0) is None:
      del sys.modules['torch']


def _import_slow_modules(plots: bool):
  checkpoints._ocp()  # pylint: disable=protected-access
  _import_tensorboardx()
  if plots:
    try:
      from lstm_flax import plots  # pylint: disable=g-import-not-at-top,unused-import,redefined-outer-name
    except ImportError:
      pass


def _start_orbax_import(plots: bool = False):
  """orbax takes 1-2 s to import, tensorboardX 4 s where PyTorch is
  installed (it imports torch), matplotlib ~1 s; let that happen while XLA
  compiles."""
  thread = threading.Thread(target=_import_slow_modules, args=(plots,),
                            daemon=True)
  thread.start()
  return thread


def evaluate_per_seed(experiment: Experiment, state) -> List[Dict[str, float]]:
  """Held-out metrics of each replica (one dict for ``num_seeds`` = 1)."""
  return _evaluate(experiment, state)[0]


def _evaluate(experiment: Experiment, state):
  """(per-seed metrics, the eval program's examples for the figure or None)."""
  metrics, examples = to_host(experiment.evaluate(state.params)), None
  if experiment.eval_examples:
    metrics, examples = metrics
  if experiment.num_seeds == 1:
    metrics = {k: v[None] for k, v in metrics.items()}
  per_seed = [experiment.task.summarize({k: float(v[i])
                                         for k, v in metrics.items()})
              for i in range(experiment.num_seeds)]
  return per_seed, examples


def seed_statistics(per_seed: List[Dict[str, float]]) -> Dict[str, Dict[str, float]]:
  """``{metric: {mean, std, min, max}}`` over replicas."""
  stats = {}
  for name in per_seed[0]:
    values = np.array([m[name] for m in per_seed])
    stats[name] = {'mean': float(values.mean()), 'std': float(values.std()),
                   'min': float(values.min()), 'max': float(values.max())}
  return stats


def evaluate_state(experiment: Experiment, state) -> Dict[str, float]:
  """Held-out metrics; with ``num_seeds`` > 1, their means over replicas."""
  return mean_over_seeds(evaluate_per_seed(experiment, state))


def mean_over_seeds(per_seed: List[Dict[str, float]]) -> Dict[str, float]:
  if len(per_seed) == 1:
    return per_seed[0]
  return {k: v['mean'] for k, v in seed_statistics(per_seed).items()}


def _evaluate_and_report(exp: Experiment, state, workdir: str):
  """Per-seed eval metrics, each joined by those of the task's ``report``
  (e.g. generation by feeding predictions back) if it has one; the report's
  details (replica 0's) or None; the eval program's figure examples or None.

  The report runs on the host-local parameters of each replica, in the
  writing process only (it may draw a figure into ``workdir``).  Reports
  without metrics (printouts) run for replica 0 alone.
  """
  per_seed, examples = _evaluate(exp, state)
  if exp.task.report is None or not is_writer():
    return per_seed, None, examples
  config = exp.config
  eval_key = run_keys(config.seed, config.eval.seed)[2]
  details = None
  others = ml_collections.ConfigDict(config.eval.to_dict())
  others.figure_examples = 0     # the figure shows replica 0
  host_params = to_host(state.params)   # one copy; replicas indexed in numpy
  for i in range(exp.num_seeds):
    params = host_params if exp.num_seeds == 1 else replica(host_params, i)
    report_metrics, report_details = exp.task.report(
        state.apply_fn, params, eval_key, config.eval if i == 0 else others,
        workdir)
    if i == 0:
      details = report_details
    if not report_metrics:
      break
    per_seed[i] = {**per_seed[i], **report_metrics}
  return per_seed, details, examples


class _LazyManager:
  """orbax's CheckpointManager, made on first use: a fresh run starts
  training while orbax (1-2 s) is still being imported in the background."""

  def __init__(self, workdir: str, keep: int, import_thread):
    self._workdir, self._keep, self._import = workdir, keep, import_thread
    self._manager = None

  def get(self):
    if self._manager is None:
      self._import.join()
      self._manager = checkpoints.manager(self._workdir, self._keep)
    return self._manager

  def wait_until_finished(self):
    if self._manager is not None:
      self._manager.wait_until_finished()

  def close(self):
    if self._manager is not None:
      self._manager.close()
      self._manager = None


class TrainingError(RuntimeError):
  """Training cannot go on (a non-finite loss, a workdir of another run)."""


class Interrupted(Exception):
  """SIGINT/SIGTERM arrived; the state was checkpointed.  ``signum`` says which."""

  def __init__(self, signum, step):
    super().__init__(f'interrupted by signal {signum} at step {step}')
    self.signum = signum


class _SignalCatcher:
  """Turns SIGINT/SIGTERM into a flag the loop checks between calls."""

  def __init__(self):
    self.signum = None
    self._previous = {}

  def __enter__(self):
    if threading.current_thread() is threading.main_thread():
      for sig in (signal.SIGINT, signal.SIGTERM):
        self._previous[sig] = signal.signal(sig, self._catch)
    return self

  def _catch(self, signum, frame):
    del frame
    if self.signum is not None:  # a second signal: stop at once
      raise KeyboardInterrupt
    logging.warning('signal %d: checkpointing after the current call, then '
                    'stopping (send it again to stop at once)', signum)
    self.signum = signum

  def __exit__(self, *exc):
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)


class _TensorBoard:
  """Scalars to TensorBoard event files in ``<workdir>/tensorboard`` through
  tensorboardX (the optional ``tensorboard`` extra; no TensorFlow needed).
  Without it: one log line, and nothing is written."""

  def __init__(self, workdir):
    self._writer = None
    if workdir is None:  # not the writing process
      return
    tensorboardx = _import_tensorboardx()
    if tensorboardx is None:
      logging.info('tensorboardX is not installed: no TensorBoard events '
                   "(pip install -e '.[tensorboard]'); metrics.jsonl has it all")
      self._writer = None
      return
    self._writer = tensorboardx.SummaryWriter(os.path.join(workdir, 'tensorboard'))

  def write(self, step, scalars):
    if self._writer is not None:
      for name, value in scalars.items():
        self._writer.add_scalar(name, value, step)

  def close(self):
    if self._writer is not None:
      self._writer.close()


def is_writer() -> bool:
  """Only process 0 writes logs, metrics, results and figures (every process
  takes part in computing, and in orbax's checkpoint saves)."""
  return jax.process_index() == 0


def train_and_evaluate(config, workdir: str) -> Dict[str, Any]:
  """Trains ``config`` in ``workdir``, resuming from its latest checkpoint if
  it has one; writes config.json, metrics.jsonl, checkpoints/, results.json
  and the task's figure.  With ``config.num_seeds`` N > 1 it trains N
  replicas at once and results.json reports each seed's metrics, their mean
  (under ``eval``) and their spread."""
  start = time.perf_counter()
  writer = is_writer()
  os.makedirs(workdir, exist_ok=True)
  wants_figure = (config.eval.figure_examples > 0 and
                  tasks.make_task(config.task).figure is not None)
  # The figure's examples come out of the eval program when they fit in one
  # eval batch (no predict program to compile: ~0.8 s of CPU on stacked.py).
  eval_examples = (config.eval.figure_examples if wants_figure and
                   config.eval.figure_examples <= config.eval.batch_size else 0)
  imports = []
  exp = build(config, ('train', 'eval') + (
      ('predict',) if wants_figure and not eval_examples else ()),
              after_lowering=lambda: imports.append(_start_orbax_import(
                  plots=wants_figure and is_writer())),
              eval_examples=eval_examples)
  orbax_import = imports[0]
  state = exp.state
  steps = config.train.steps
  num_seeds = config.num_seeds
  logging.info('%s: %s on %d %s device(s) in %d process(es), %d steps of '
               'batch %d, %d per call%s; init and train (optimized for %s) '
               'compiled in %.2fs (the rest compiles in the background)',
               config.name, exp.task.name, jax.device_count(),
               jax.devices()[0].platform, jax.process_count(), steps,
               config.train.batch_size, exp.steps_per_call,
               f', {num_seeds} seeds at once' if num_seeds > 1 else '',
               validation.optimize_for(config).replace('_', ' '),
               exp.compile_seconds)
  if writer:
    workdir_lib.write_json(os.path.join(workdir, 'config.json'),
                           config.to_dict())

  manager = _LazyManager(workdir, config.train.keep_checkpoints, orbax_import)
  metrics_path = os.path.join(workdir, 'metrics.jsonl')
  saved = checkpoints.saved_steps(workdir)
  if saved:
    restored = checkpoints.restore_latest(manager.get(), state)
    if restored is not None:
      state = restored
    unreadable = [s for s in saved
                  if restored is None or s > state_step(restored)]
    if unreadable:
      manager.close()
      if writer:
        checkpoints.set_aside(workdir, unreadable)
  step = state_step(state)
  if step:
    logging.info('resuming at step %d of %d', step, steps)
  if writer:
    workdir_lib.trim_metrics(metrics_path, step)

  train_start = time.perf_counter()
  last_saved = step
  last_loss = np.full((num_seeds,), np.nan)
  with open(metrics_path if writer else os.devnull, 'a') as metrics_file, \
      _SignalCatcher() as signals, \
      contextlib.closing(_TensorBoard(workdir if writer else None)
                         ) as tensorboard:
    while step < steps:
      num = min(exp.steps_per_call, steps - step)
      chunk_start = time.perf_counter()
      new_state, losses = exp.train_chunk(state, num)
      # (num, N): blocks until the chunk is done.
      losses = to_host(losses)[:num].reshape(num, num_seeds)
      if not np.isfinite(losses).all():
        bad_row = int(np.argmin(np.isfinite(losses).all(axis=1)))
        bad_seeds = [config.seed + i for i in
                     np.flatnonzero(~np.isfinite(losses[bad_row]))]
        manager.wait_until_finished()
        good = checkpoints.saved_steps(workdir)
        raise TrainingError(
            f'non-finite training loss ({losses[bad_row].tolist()}) at step '
            f'{step + 1 + bad_row}' + (f' (seeds {bad_seeds})' if num_seeds > 1
                                       else '') +
            '; stopped without saving.  Last good checkpoint: '
            + (f'step {good[0]} in {checkpoints.directory(workdir)}' if good
               else 'none') + '.  Try a lower config.optimizer.learning_rate '
            'or config.optimizer.grad_clip_norm > 0.')
      state = new_state
      now = time.perf_counter()
      step += num
      last_loss = losses[-1]
      steps_per_second = num / (now - chunk_start)
      record = {'step': step, 'train_loss': float(losses.mean()),
                'steps_per_second': steps_per_second,
                'elapsed_seconds': now - train_start}
      if num_seeds > 1:
        record['train_loss_per_seed'] = losses.mean(axis=0).tolist()
      metrics_file.write(json.dumps(record) + '\n')
      metrics_file.flush()
      tensorboard.write(step, {'train/loss': record['train_loss'],
                               'train/steps_per_second': steps_per_second})
      logging.info('step %d/%d  loss %.4f  %.0f steps/s  ETA %s', step, steps,
                   record['train_loss'], steps_per_second,
                   _format_eta((steps - step) / steps_per_second))
      if signals.signum is not None:
        checkpoints.save(manager.get(), state, step, wait=True)
        manager.close()
        logging.warning('checkpoint saved at step %d in %s; rerun the same '
                        'command to resume', step, checkpoints.directory(workdir))
        raise Interrupted(signals.signum, step)
      every = config.train.checkpoint_every
      if every > 0 and step - last_saved >= every and step < steps:
        checkpoints.save(manager.get(), state, step)
        last_saved = step
    train_seconds = time.perf_counter() - train_start
    if manager.get().latest_step() != step:
      checkpoints.save(manager.get(), state, step)  # written while we eval

    per_seed, report, figure_examples = _evaluate_and_report(exp, state,
                                                             workdir)
    eval_metrics = mean_over_seeds(per_seed)
    record = {'step': step, **{f'eval/{k}': v for k, v in eval_metrics.items()}}
    if num_seeds > 1:
      record['eval_per_seed'] = per_seed
    metrics_file.write(json.dumps(record) + '\n')
    tensorboard.write(step, {f'eval/{k}': v for k, v in eval_metrics.items()})
  logging.info('eval on %d held-out examples%s: %s', config.eval.num_examples,
               f' (mean of {num_seeds} seeds)' if num_seeds > 1 else '',
               ', '.join(f'{k}={v:.5g}' for k, v in eval_metrics.items()))

  if wants_figure:
    draw_figure(exp, state, workdir, figure_examples)
  manager.wait_until_finished()
  manager.close()

  results = {
      'config': config.name,
      'task': exp.task.name,
      'model': config.model.name,
      'seed': config.seed,
      'steps': steps,
      'batch_size': config.train.batch_size,
      'train_seconds': train_seconds,
      'compile_seconds': exp.total_compile_seconds(),
      'total_seconds': time.perf_counter() - start,
      'final_train_loss': float(last_loss.mean()),
      'eval': {'num_examples': config.eval.num_examples, **eval_metrics},
      'platform': jax.devices()[0].platform,
      'num_devices': jax.device_count(),
      'num_processes': jax.process_count(),
  }
  if num_seeds > 1:
    results.update({
        'num_seeds': num_seeds,
        'seeds': list(range(config.seed, config.seed + num_seeds)),
        'final_train_loss_per_seed': last_loss.tolist(),
        'eval_per_seed': per_seed,
        'eval_stats': seed_statistics(per_seed),
    })
  if report is not None:
    results['report'] = report
  if writer:
    workdir_lib.write_json(os.path.join(workdir, 'results.json'), results)
  return results


def _restore_for_inference(config, workdir: str, program: str
                           ) -> Tuple[Experiment, TrainState]:
  steps = checkpoints.saved_steps(workdir)
  if not steps:
    raise FileNotFoundError(
        f'no checkpoint in {checkpoints.directory(workdir)}: train first '
        f'(python train.py --config=... --workdir={workdir})')
  orbax_import = _start_orbax_import()
  exp = build(config, (program,))
  orbax_import.join()
  manager = checkpoints.manager(workdir, config.train.keep_checkpoints)
  state = checkpoints.restore_latest(manager, exp.state)
  manager.close()
  if state is None:
    raise RuntimeError(f'no checkpoint in {checkpoints.directory(workdir)} '
                       f'could be restored (steps {steps})')
  return exp, state


def evaluate_checkpoint(config, workdir: str) -> Dict[str, Any]:
  """Evaluates the latest checkpoint on fresh held-out data; writes eval.json."""
  exp, state = _restore_for_inference(config, workdir, 'eval')
  per_seed, report, _ = _evaluate_and_report(exp, state, workdir)
  metrics = mean_over_seeds(per_seed)
  result = {'config': config.name, 'task': exp.task.name,
            'step': state_step(state), 'eval_seed': config.eval.seed,
            'eval': {'num_examples': config.eval.num_examples, **metrics}}
  if config.num_seeds > 1:
    result.update(eval_per_seed=per_seed, eval_stats=seed_statistics(per_seed))
  if report is not None:
    result['report'] = report
  if is_writer():
    workdir_lib.write_json(os.path.join(workdir, 'eval.json'), result)
  logging.info('eval of step %d on %d held-out examples: %s', state_step(state),
               config.eval.num_examples,
               ', '.join(f'{k}={v:.5g}' for k, v in metrics.items()))
  return result


def predict_from_checkpoint(config, workdir: str):
  """Decoded predictions of the latest checkpoint on the first
  ``config.eval.predict_examples`` held-out examples: a list of dicts."""
  exp, state = _restore_for_inference(config, workdir, 'predict')
  inputs, targets, predictions = (
      to_host(a) for a in exp.predict(_one_model(exp, state)))
  return [exp.task.describe(inputs[i], targets[i], predictions[i])
          for i in range(config.eval.predict_examples)]


def _one_model(exp: Experiment, state):
  """The parameters figures and printouts show: replica 0's (the run's
  ``config.seed``) when there are several."""
  return state.params if exp.num_seeds == 1 else replica(state.params)


def draw_figure(exp: Experiment, state, workdir: str, examples=None):
  """Draws the task's figure of the first few held-out examples, if matplotlib
  is installed; otherwise logs one line and goes on.  ``examples``: (inputs,
  targets, predictions) from the eval program, or None to run predict."""
  try:
    import matplotlib  # pylint: disable=g-import-not-at-top,unused-import
  except ImportError:
    logging.info('matplotlib is not installed: figure skipped '
                 "(pip install -e '.[plot]' to draw it)")
    return None
  n = exp.config.eval.figure_examples
  if examples is None:
    examples = exp.predict(_one_model(exp, state))
  inputs, targets, predictions = (to_host(a)[:n] for a in examples)
  if not is_writer():
    return None
  path = exp.task.figure(workdir, inputs, targets, predictions)
  logging.info('figure: %s', path)
  return path
