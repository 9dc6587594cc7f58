"""A config made concrete: its task, model, optimizer, keys and compiled programs.

``build(config)`` is the one place where a config turns into things that
run.  It compiles from shapes alone (``jax.eval_shape``): nothing is
initialised or trained here.
"""

import concurrent.futures
import contextlib
import dataclasses
import functools
import time
from typing import Any, Callable, Dict, Optional, Sequence

import jax
import numpy as np

from lstm_flax import compile_plan
from lstm_flax import memory
from lstm_flax import models
from lstm_flax import optim
from lstm_flax import prng
from lstm_flax import programs
from lstm_flax import sharding
from lstm_flax import tasks
from lstm_flax import validation

# Streams folded from the run's seed (init, batches, dropout) and from
# ``eval.seed`` (the validation stream during training, the final eval).
_INIT, _TRAIN, _EVAL, _VALID, _DROPOUT = 0, 1, 2, 3, 4


@dataclasses.dataclass(frozen=True)
class RunKeys:
  """Every key of a run, derived from ``config.seed`` and ``config.eval.seed``.

  init, batch, dropout: (N,) one per replica, replica i's being exactly a
  single run's with seed ``seed + i``; valid, eval: shared by the replicas,
  so all are scored on the same held-out examples.
  """

  init: jax.Array
  batch: jax.Array
  dropout: jax.Array
  valid: jax.Array
  eval: jax.Array


def run_keys(
  seed: int,
  eval_seed: int,
  num_seeds: int = 1,
  unrolled_batch_keys: bool = False,
) -> RunKeys:
  """The keys of a run (derived on the host: no XLA program per key).

  ``unrolled_batch_keys``: batch keys of ``prng.UNROLLED_THREEFRY`` (same
  bits, another compiled hash; see compile_plan)."""
  seeds = np.arange(seed, seed + num_seeds, dtype=np.int64)
  on_host = functools.partial(prng.keys_on_host, unrolled=False)
  return RunKeys(
    init=on_host(seeds, _INIT),
    batch=prng.keys_on_host(seeds, _TRAIN, unrolled=unrolled_batch_keys),
    dropout=prng.keys_on_host(seeds, _DROPOUT, unrolled=unrolled_batch_keys),
    valid=on_host(np.int64(eval_seed), _VALID),
    eval=on_host(np.int64(eval_seed), _EVAL),
  )


@dataclasses.dataclass
class Experiment:
  """What ``build`` makes of a config; ``programs`` maps a name to a
  compiled program (init, train, eval, eval_valid, predict)."""

  config: Any
  task: tasks.Task
  model: Any
  tx: Any
  schedule: Callable[[int], float]
  plan: compile_plan.CompilePlan
  keys: RunKeys
  abstract_state: Any  # TrainState of ShapeDtypeStructs, (N, ...)
  programs: Dict[str, Any]
  steps_per_call: int
  kept_examples: int  # examples the eval program returns for the figure
  held_out: Optional[Dict[str, Any]]  # a file task's {'valid', 'test'} arrays
  compile_seconds: float
  compilation: Dict[str, int]  # programs compiled, persistent-cache hits/misses

  @property
  def num_seeds(self) -> int:
    return self.config.num_seeds

  def predict(self, params):
    """(inputs, targets, decoded predictions) of one model on the first
    held-out examples."""
    data = (self.keys.eval,) if self.held_out is None else self.held_out['test']
    return self.programs['predict'](params, *data)

  def init(self):
    """A fresh TrainState of N replicas."""
    return self.programs['init'](self.keys.init)

  def evaluate(self, params, part: str = 'test'):
    """(per-replica metrics, ensemble metrics, kept examples) on the
    validation stream/part ('valid') or the final held-out set ('test')."""
    if self.held_out is not None:
      name = 'eval' if part == 'test' else 'eval_valid'
      return self.programs[name](params, *self.held_out[part])
    key = self.keys.valid if part == 'valid' else self.keys.eval
    return self.programs['eval'](params, key)


def check_config(config) -> tasks.Task:
  """Every check of ``config``, before anything compiles: the shared fields,
  the task's, the model's, the compile plan's XLA options, batch sizes over
  devices and the validation metric's name.  Raises
  ``validation.ConfigError``; returns the task."""
  validation.validate(config)
  task = tasks.make_task(config.task)
  models.check_model_config(
    config.model,
    config.task,
    task.input_kind,
    task.output_kind,
    task.output_steps,
  )
  compile_plan.make_plan(config)
  validation.check_batch_divides_devices(config)
  if not config.eval.every_steps:
    return task  # no validation during training: best_metric is unused
  names = metric_names(task, models.make_model(config.model, task.num_outputs))
  if config.eval.best_metric not in names:
    validation.fail(
      'eval.best_metric',
      config.eval.best_metric,
      f'task {task.name!r} reports {names}',
    )
  return task


def metric_names(task: tasks.Task, model) -> list:
  """The names of the task's held-out metrics (from shapes alone)."""
  inputs, targets = jax.eval_shape(lambda: task.generate(jax.random.key(0), 2))
  params = jax.eval_shape(model.init, jax.random.key(0), inputs)
  outputs = jax.eval_shape(model.apply, params, inputs)
  metrics = jax.eval_shape(task.metrics, outputs, targets)
  return sorted(task.summarize({name: 0.0 for name in metrics}))


def build(
  config,
  names: Sequence[str] = ('train', 'eval'),
  kept_examples: int = 0,
  while_compiling: Callable[[tasks.Task], None] = lambda task: None,
) -> Experiment:
  """Builds ``config``'s task, model, optimizer and keys, and compiles the
  programs ``names`` (from 'init', 'train', 'eval', 'eval_valid', 'predict';
  'init' always) with the compile plan's options; ``while_compiling(task)``
  runs while they compile (see ``compile_in_parallel``)."""
  start = time.perf_counter()
  task = tasks.make_task(config.task)
  plan = compile_plan.make_plan(config)
  model = models.make_model(plan.model_config(config.model), task.num_outputs)
  tx, schedule = optim.make_optimizer(config.optimizer, config.train.steps)
  memory.check_fits(model, task, tx, config)  # before anything compiles
  keys = run_keys(
    config.seed, config.eval.seed, config.num_seeds, plan.unrolled_batch_keys
  )
  init = programs.make_init(model, task, tx)
  abstract = jax.eval_shape(init, keys.init)
  held_out = None
  if task.held_out is not None:
    held_out = {
      part: jax.device_put(task.held_out(part)) for part in ('valid', 'test')
    }
    kept_examples = min(kept_examples, len(held_out['test'][1]))
  else:
    kept_examples = (
      kept_examples if kept_examples <= config.eval.batch_size else 0
    )
  lowerings = _lowerings(
    config, task, model, plan, init, abstract, keys, held_out, kept_examples
  )
  wanted = [
    n
    for n in names  # the synthetic eval program serves both streams
    if n != 'init' and not (n == 'eval_valid' and held_out is None)
  ] + ['init']
  with _counting_compilations() as compilation:
    compiled = compile_in_parallel(
      {name: lowerings[name] for name in wanted}, lambda: while_compiling(task)
    )
    compilation['programs'] = len(compiled)
  return Experiment(
    config=config,
    task=task,
    model=model,
    tx=tx,
    schedule=schedule,
    plan=plan,
    keys=keys,
    abstract_state=abstract,
    programs=compiled,
    steps_per_call=min(config.train.steps_per_call, config.train.steps),
    kept_examples=kept_examples,
    held_out=held_out,
    compile_seconds=time.perf_counter() - start,
    compilation=compilation,
  )


def compile_in_parallel(
  lowerings: Dict[str, Callable], while_compiling: Callable = lambda: None
) -> Dict[str, Any]:
  """{name: () -> (lowered program, XLA options)} -> {name: compiled}.

  Each program is traced and lowered here, in order (Python, one at a time),
  and handed to a thread to compile right away: XLA's compiler releases the
  GIL, so the first (longest) program compiles while the next are lowered,
  and the small ones compile beside it on other cores.  Then
  ``while_compiling()`` runs on this thread before the results are awaited.
  """
  with concurrent.futures.ThreadPoolExecutor(len(lowerings)) as pool:
    futures = {}
    for name, lower in lowerings.items():
      program, options = lower()
      futures[name] = pool.submit(program.compile, options)
    while_compiling()
  return {name: future.result() for name, future in futures.items()}


@contextlib.contextmanager
def _counting_compilations():
  """Counts the persistent compilation cache's hits and misses (a miss is
  a program XLA compiled) while the block runs."""
  counts = {'cache_hits': 0, 'cache_misses': 0}
  events = {
    '/jax/compilation_cache/cache_hits': 'cache_hits',
    '/jax/compilation_cache/cache_misses': 'cache_misses',
  }

  def listener(event, **kwargs):
    del kwargs
    if event in events:
      counts[events[event]] += 1

  jax.monitoring.register_event_listener(listener)
  try:
    yield counts
  finally:
    jax.monitoring.unregister_event_listener(listener)


def _lowerings(
  config, task, model, plan, init, abstract, keys, held_out, kept_examples
) -> Dict[str, Callable]:
  """name -> () -> (lowered program, XLA options)."""
  mesh = sharding.data_mesh()
  everywhere = sharding.replicated(mesh)
  jit = functools.partial(
    jax.jit, in_shardings=everywhere, out_shardings=everywhere
  )
  steps_per_call = min(config.train.steps_per_call, config.train.steps)

  def train():
    grad_norm = config.train.log_grad_norm
    step = programs.make_train_step(
      task, config.train.batch_size, sharding.batch_sharding(mesh), grad_norm
    )
    chunk = programs.make_train_chunk(
      step, steps_per_call, programs.step_metric_names(grad_norm)
    )
    donate = (0,) if plan.donate_state else ()
    return (
      jit(chunk, donate_argnums=donate).lower(
        abstract, keys.batch, keys.dropout, 0
      ),
      plan.train_xla_options,
    )

  def evaluate():
    fn = programs.make_evaluate(
      task,
      config.eval.num_examples,
      config.eval.batch_size,
      sharding.batch_sharding(mesh),
      kept_examples,
    )
    return (
      jit(functools.partial(fn, model.apply)).lower(abstract.params, keys.eval),
      plan.eval_xla_options,
    )

  def evaluate_part(part):
    fn = programs.make_evaluate_arrays(
      task, kept_examples if part == 'test' else 0
    )
    inputs, targets = held_out[part]
    return (
      jit(functools.partial(fn, model.apply)).lower(
        abstract.params, inputs, targets
      ),
      plan.eval_xla_options,
    )

  def predict():
    n = max(1, config.eval.figure_examples, config.eval.predict_examples)
    one_model = programs.replica(abstract.params)
    if held_out is None:
      fn, data = programs.make_predict(task, n), (keys.eval,)
    else:
      fn, data = programs.make_predict_arrays(task, n), held_out['test']
    return (
      jit(functools.partial(fn, model.apply)).lower(one_model, *data),
      plan.run_once_xla_options,
    )

  lowerings = {
    'init': lambda: (jit(init).lower(keys.init), plan.run_once_xla_options),
    'train': train,
    'predict': predict,
  }
  if held_out is None:
    lowerings['eval'] = evaluate
  else:
    lowerings['eval'] = lambda: evaluate_part('test')
    lowerings['eval_valid'] = lambda: evaluate_part('valid')
  return lowerings
