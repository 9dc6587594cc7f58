"""Trains, evaluates or predicts with one experiment.

  python train.py --config=configs/vanilla.py --workdir=/tmp/vanilla \
      --config.train.steps=500
  python train.py --config=configs/vanilla.py --workdir=/tmp/vanilla --mode=eval
  python train.py --config=configs/vanilla.py --workdir=/tmp/vanilla --mode=predict

--mode=train (default) writes <workdir>/config.json, metrics.jsonl (one JSON
object per logged step), checkpoints/ and results.json (held-out metrics of
the final model); a workdir that holds a checkpoint resumes from it.
--mode=eval evaluates the latest checkpoint on fresh held-out data and writes
eval.json; --mode=predict prints decoded predictions for a few held-out
examples (and writes them as JSON with --predict_out).
"""

import gc
import logging as logging_lib
import os
import re
import sys
import tempfile

from absl import app
from absl import flags
from absl import logging
import jax
from jax.experimental import multihost_utils
from ml_collections import config_flags

from lstm_flax import checkpoints
from lstm_flax import experiment
from lstm_flax import inference
from lstm_flax import runtime
from lstm_flax import train as train_lib
from lstm_flax import validation
from lstm_flax import workdir as workdir_lib

try:
  _CONFIG = config_flags.DEFINE_config_file(
      'config', os.path.join(os.path.dirname(os.path.abspath(__file__)),
                             'configs', 'vanilla.py'),
      'Experiment config file; override fields with --config.<path>=<value>.',
      lock_config=True)
except (KeyError, AttributeError) as e:
  # ml_collections applies --config.x=y overrides when the flag is defined:
  # a field that does not exist fails here (the configs are locked).
  message = str(e.args[0] if e.args else e)
  message = re.sub(r"\\n|\n|[\\']", ' ', message).strip()
  print(f'error: no such config field: {message}', file=sys.stderr)
  sys.exit(2)
_WORKDIR = flags.DEFINE_string(
    'workdir', None,
    'Directory for results, logs and checkpoints '
    '(default: <system temp dir>/lstm_flax/<config name>).')
_MODE = flags.DEFINE_enum(
    'mode', 'train', ['train', 'eval', 'predict'],
    'train (resumes from the latest checkpoint if any), eval (latest '
    'checkpoint -> eval.json) or predict (latest checkpoint -> printed '
    'predictions).')
_PREDICT_OUT = flags.DEFINE_string(
    'predict_out', None, '--mode=predict: also write the predictions to this '
    'JSON file.')
_OVERWRITE = flags.DEFINE_bool(
    'overwrite', False, '--mode=train in a workdir that holds a run of a '
    'different config: delete that run and start anew (without it, refuse).')
_COORDINATOR = flags.DEFINE_string(
    'coordinator_address', None,
    'Multi-host: host:port of process 0, which every process connects to '
    '(with --num_processes and --process_id; see the README).')
_NUM_PROCESSES = flags.DEFINE_integer(
    'num_processes', None, 'Multi-host: how many processes take part.')
_PROCESS_ID = flags.DEFINE_integer(
    'process_id', None, 'Multi-host: this process\'s index, 0 .. num_processes-1 '
    '(process 0 writes logs, metrics and results).')
_DISTRIBUTED = flags.DEFINE_bool(
    'distributed', False, 'Multi-host on a managed cluster (Slurm, Cloud TPU, '
    'Open MPI...): call jax.distributed.initialize() with the settings it '
    'reads from the environment.')
_CACHE_DIR = flags.DEFINE_string(
    'compilation_cache_dir',
    os.path.join(tempfile.gettempdir(), 'lstm_flax_xla_cache'),
    "JAX's persistent compilation cache: a rerun of the same program skips "
    "XLA compilation.  '' disables it.")


class _QuietOrbax(logging_lib.Filter):
  """orbax logs every step of every save at INFO; keep its warnings only."""

  def filter(self, record):
    return record.levelno >= logging_lib.WARNING or 'orbax' not in record.pathname


def _initialize_distributed():
  """jax.distributed.initialize() from the flags; must run before anything
  touches a device.  Returns False (and changes nothing) for one process."""
  given = {'coordinator_address': _COORDINATOR.value,
           'num_processes': _NUM_PROCESSES.value,
           'process_id': _PROCESS_ID.value}
  if not _DISTRIBUTED.value and all(v is None for v in given.values()):
    return False
  if not _DISTRIBUTED.value:
    missing = [f'--{k}' for k, v in given.items() if v is None]
    if missing:
      raise app.UsageError(
          f'multi-host needs --coordinator_address, --num_processes and '
          f'--process_id together; missing {missing} (or use --distributed on '
          f'a cluster whose environment sets them)')
    if _NUM_PROCESSES.value < 1 or not (
        0 <= _PROCESS_ID.value < _NUM_PROCESSES.value):
      raise app.UsageError(
          f'--process_id={_PROCESS_ID.value} must be in [0, --num_processes='
          f'{_NUM_PROCESSES.value})')
  jax.distributed.initialize(**{k: v for k, v in given.items() if v is not None})
  logging.info('process %d of %d; %d local / %d global devices',
               jax.process_index(), jax.process_count(),
               jax.local_device_count(), jax.device_count())
  return True


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  _initialize_distributed()
  try:
    config = _CONFIG.value
    config.name  # pylint: disable=pointless-statement  (loads the file)
  except OSError as e:  # the config file is missing or fails to load
    print(f'error: {e}', file=sys.stderr)
    sys.exit(2)
  try:
    experiment.check_config(config)
  except validation.ConfigError as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(2)
  if _CACHE_DIR.value:
    jax.config.update('jax_compilation_cache_dir', _CACHE_DIR.value)
    jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.0)
  workdir = _WORKDIR.value or os.path.join(tempfile.gettempdir(), 'lstm_flax',
                                           config.name or 'run')
  logging.info('workdir: %s', workdir)

  if _MODE.value == 'train':
    try:
      if jax.process_count() > 1 and _OVERWRITE.value:
        # One process clears the workdir; the others wait for it.
        if jax.process_index() == 0:
          workdir_lib.check_workdir(config, workdir, True)
        multihost_utils.sync_global_devices('lstm_flax: workdir checked')
      else:
        workdir_lib.check_workdir(config, workdir, _OVERWRITE.value)
      results = train_lib.train_and_evaluate(config, workdir)
    except (runtime.TrainingError, workdir_lib.WorkdirError) as e:
      print(f'error: {e}', file=sys.stderr)
      sys.exit(1)
    except runtime.Interrupted as e:
      sys.exit(128 + e.signum)
    if jax.process_index() == 0:
      print(f"{results['config']}: eval {results['eval']} "
            f"(train {results['train_seconds']:.2f}s) -> "
            f"{os.path.join(workdir, 'results.json')}")
    return
  if not checkpoints.saved_steps(workdir):
    sys.exit(f'error: --mode={_MODE.value} needs a checkpoint, and there is '
             f'none in {checkpoints.directory(workdir)}: train first with '
             f'--mode=train and the same --workdir')
  if _MODE.value == 'eval':
    result = inference.evaluate_checkpoint(config, workdir)
    print(f"{result['config']} step {result['step']}: eval {result['eval']} -> "
          f"{os.path.join(workdir, 'eval.json')}")
  else:
    predictions = inference.predict_from_checkpoint(config, workdir)
    for p in predictions:
      print('  '.join(f'{k}: {v}' for k, v in p.items()))
    if _PREDICT_OUT.value:
      workdir_lib.write_json(_PREDICT_OUT.value, predictions)


if __name__ == '__main__':
  logging.set_verbosity(logging.INFO)
  logging.get_absl_handler().addFilter(_QuietOrbax())
  try:
    app.run(main)
  finally:
    # Everything is written and closed by now: skip the interpreter's final
    # garbage collection of the ~10^6 objects jax, orbax and matplotlib
    # leave behind (measured 0.8-0.9 s of every run's exit).
    gc.freeze()
