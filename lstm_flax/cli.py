"""lstm-flax: train, evaluate or predict with one experiment.

  lstm-flax --config=vanilla --config.train.steps=500     train (a fresh workdir)
  lstm-flax --config=stacked --workdir=/tmp/stacked        train into a workdir
  lstm-flax eval --workdir=/tmp/stacked                    score its checkpoint
  lstm-flax predict --workdir=/tmp/stacked --checkpoint=best
  lstm-flax fields --config=stacked                        every field, its meaning
  lstm-flax plot /tmp/stacked                              learning curve

`python train.py` is the same program.  --config takes a packaged config's
name (NAME or NAME:VARIANT) or a config file's path (PATH[:VARIANT]); every
field can then be overridden with --config.<field>=<value>.

train (the default; also --mode=train) writes <workdir>/config.json,
metrics.jsonl, checkpoints/ and results.json, and resumes a workdir that holds
a checkpoint of the same run; without --workdir it writes to a new
<temp dir>/lstm_flax/<config name>-<date>-<time>.  eval scores a checkpoint
on fresh held-out data (eval.json); predict prints decoded predictions for a
few held-out examples (and writes them with --predict_out).  Without
--config, eval, predict and fields read <workdir>/config.json; a --config that
changes what the checkpoint means is refused.

Exit status: 0 done (or nothing left to do); 1 training or evaluation failed,
or the workdir holds another run; 2 the command cannot work as given (a config,
flag or path error, e.g. --config.train.steps=abc, said in one line before
anything is built); 128+N stopped by signal N (a checkpoint is saved).
"""

import difflib
import gc
import hashlib
import json
import logging as logging_lib
import os
import re
import sys
import tempfile
import time
from typing import Dict, List, Optional, Tuple

from absl import app
from absl import flags
from absl import logging
import ml_collections
from ml_collections import config_flags

from lstm_flax import checkpoints
from lstm_flax import config_files
from lstm_flax.config_files import config_from_spec
from lstm_flax.config_files import describe_fields
from lstm_flax.config_files import packaged_config_names
from lstm_flax import validation
from lstm_flax import workdir as workdir_lib

FLAGS = flags.FLAGS
COMMANDS = ('train', 'eval', 'predict', 'fields', 'plot')
DEFAULT_CONFIG = 'vanilla'

_WORKDIR = flags.DEFINE_string(
  'workdir',
  None,
  'Directory for results, logs and checkpoints.  train without it: a new '
  '<system temp dir>/lstm_flax/<config name>-<date>-<time>; eval and '
  'predict need it.',
)
_MODE = flags.DEFINE_enum(
  'mode',
  'train',
  list(COMMANDS),
  "train (resumes from the workdir's latest checkpoint if any), eval "
  '(a checkpoint -> eval.json), predict (a checkpoint -> printed '
  'predictions), fields (every config field, its value and meaning) or plot '
  "(the workdir's learning curve).  Also given as the first argument: "
  '`lstm-flax eval --workdir=DIR`.',
)
_CHECKPOINT = flags.DEFINE_string(
  'checkpoint',
  'latest',
  'eval/predict: which checkpoint of the workdir: latest, best (by '
  'config.eval.best_metric) or a step number.',
)
_INIT_FROM = flags.DEFINE_string(
  'init_from',
  None,
  'train: start a new run from these parameters: another workdir (its '
  'newest checkpoint) or a Keras (.keras/.h5) or PyTorch (.pt) file; a '
  'fresh optimizer.  Same as --config.train.init_from=PATH.',
)
_PREDICT_OUT = flags.DEFINE_string(
  'predict_out',
  None,
  'predict: also write the predictions to this JSON '
  'file (its directory must exist).',
)
_OVERWRITE = flags.DEFINE_bool(
  'overwrite',
  False,
  'train in a workdir that holds a run of a different '
  'config: delete that run and start anew (without it, refuse).',
)
_COORDINATOR = flags.DEFINE_string(
  'coordinator_address',
  None,
  'Multi-host: host:port of process 0, which every process connects to '
  '(with --num_processes and --process_id; see the README).',
)
_NUM_PROCESSES = flags.DEFINE_integer(
  'num_processes', None, 'Multi-host: how many processes take part.'
)
_PROCESS_ID = flags.DEFINE_integer(
  'process_id',
  None,
  "Multi-host: this process's index, 0 .. "
  'num_processes-1 (process 0 writes logs, metrics and results).',
)
_DISTRIBUTED = flags.DEFINE_bool(
  'distributed',
  False,
  'Multi-host on a managed cluster (Slurm, Cloud TPU, '
  'Open MPI...): call jax.distributed.initialize() with the settings it '
  'reads from the environment.',
)
_CACHE_DIR = flags.DEFINE_string(
  'compilation_cache_dir',
  os.path.join(tempfile.gettempdir(), 'lstm_flax_xla_cache'),
  "JAX's persistent compilation cache: a rerun of the same program skips "
  "XLA compilation.  '' disables it.",
)

# Set by run() once it knows which config the command starts from.
_CONFIG = None
_CONFIG_SOURCE = {'given': None, 'from': None}


class CommandError(Exception):
  """The command cannot work as given; its message is one line for the user."""

  def __init__(self, message: str, exit_code: int = 2):
    super().__init__(message)
    self.exit_code = exit_code


def _fail(message: str, exit_code: int):
  print(f'error: {message}', file=sys.stderr)
  sys.exit(exit_code)


def _os_error(e: OSError) -> str:
  """'Permission denied: /path' rather than '[Errno 13] ...'."""
  if e.strerror and e.filename:
    return f'{e.strerror}: {e.filename}'
  return str(e)


def _workdir_config(workdir: str) -> ml_collections.ConfigDict:
  """The config a workdir was trained with, from its config.json."""
  try:
    config = workdir_lib.load_config(workdir)
  except workdir_lib.WorkdirError as e:  # a sentence of its own
    raise CommandError(str(e)) from e
  except (OSError, ValueError, TypeError, KeyError) as e:
    message = _os_error(e) if isinstance(e, OSError) else str(e)
    raise CommandError(
      f'cannot use {os.path.join(workdir, "config.json")}: {message}'
    ) from e
  config.lock()
  return config


def _override_paths(argv: List[str]) -> List[Tuple[str, str]]:
  """(token, field path) of every --config.<path>[=value] in argv."""
  found = []
  for token in argv[1:]:
    if token == '--':
      break
    match = re.match(r'^--?(?:no)?config\.([^=]+)', token)
    if match:
      found.append((token, match.group(1)))
  return found


def _check_overrides(config: ml_collections.ConfigDict, argv: List[str]):
  """Every --config.<path> names a field of ``config``: else one line naming
  the nearest field names."""
  for token, path in _override_paths(argv):
    node, done = config, []
    for part in path.split('.'):
      if not isinstance(node, ml_collections.ConfigDict):
        raise CommandError(
          f'{token}: config.{".".join(done)} is a value, '
          f'not a section with fields'
        )
      if part not in node:
        where = 'config' + ''.join(f'.{p}' for p in done)
        close = difflib.get_close_matches(part, list(node.keys()), n=1)
        hint = (
          f'Did you mean "{close[0]}"?'
          if close
          else f'Its fields: {", ".join(sorted(node.keys()))}.'
        )
        raise CommandError(
          f'{token}: {where} has no field {part!r}.  {hint}  '
          f'(lstm-flax fields lists every field)'
        )
      node = node[part]
      done.append(part)


# --- The command line before absl parses it ---------------------------------


def _flag_value(argv: List[str], name: str) -> Optional[str]:
  """The value of --name=V or --name V in argv (the last one), as absl reads
  it; None if absent."""
  value = None
  for i, token in enumerate(argv[1:], 1):
    if token == '--':
      break
    match = re.match(rf'^--?{name}(?:=(.*))?$', token, re.S)
    if match:
      if match.group(1) is not None:
        value = match.group(1)
      elif i + 1 < len(argv):
        value = argv[i + 1]
  return value


_BOOLEAN_FLAGS = (
  'overwrite',
  'distributed',
  'help',
  'helpfull',
  'helpshort',
  'alsologtostderr',
  'logtostderr',
  'showprefixforinfo',
)


def _is_our_flag(token: str) -> bool:
  match = re.match(r'^--?(?:no)?([A-Za-z_][\w.]*)', token)
  return bool(match) and match.group(1) in FLAGS


def _take_command(argv: List[str]) -> Tuple[Optional[str], List[str]]:
  """(the command word or None, argv without it).  The command is the first
  word that is not a flag's value: first, or after --flag=value flags."""
  for i, token in enumerate(argv[1:], 1):
    if token == '--':
      break
    if token.startswith('-'):
      continue
    previous = argv[i - 1]
    if (
      i == 1
      or '=' in previous
      or re.sub(r'^--?(no)?', '', previous) in (_BOOLEAN_FLAGS)
    ):
      if token in COMMANDS:
        return token, argv[:i] + argv[i + 1 :]
    break
  return None, argv


def _take_config_flag(argv: List[str]) -> Tuple[Optional[str], List[str]]:
  """(--config's value or None, argv without it): the cli loads the config
  itself, so that a bad name, file or variant is one clear line."""
  spec, rest, i = None, [argv[0]], 1
  while i < len(argv):
    token = argv[i]
    if token == '--':
      rest.extend(argv[i:])
      break
    match = re.match(r'^--?config(?:=(.*))?$', token, re.S)
    if match:
      if match.group(1) is not None:
        spec = match.group(1)
      elif i + 1 < len(argv):
        spec = argv[i + 1]
        i += 1
      else:
        raise CommandError('--config needs a value: --config=NAME or PATH')
      i += 1
      continue
    rest.append(token)
    i += 1
  return spec, rest


def _require_checkpoint(workdir: str, mode: str):
  if not any(
    checkpoints.saved_steps(checkpoints.directory(workdir, name))
    for name in ('checkpoints', 'best')
  ):
    raise CommandError(
      f'--mode={mode} needs a checkpoint, and there is none in '
      f'{checkpoints.directory(workdir)}: train first with the same '
      f'--workdir'
    )


def _starting_config(
  spec, mode, workdir
) -> Tuple[ml_collections.ConfigDict, str]:
  """The config the command starts from, before --config.* overrides, and
  where it came from."""
  if spec is not None:
    return config_from_spec(spec), f'--config={spec}'
  if mode in ('eval', 'predict') or (mode == 'fields' and workdir):
    if not workdir:
      raise CommandError(
        f'--mode={mode} needs --workdir=DIR, the directory of a training run'
      )
    if mode != 'fields':
      _require_checkpoint(workdir, mode)
    path = os.path.join(workdir, 'config.json')
    if not os.path.exists(path):
      raise CommandError(
        f'{workdir} has no config.json: pass the --config it was trained with'
      )
    return _workdir_config(workdir), path
  return config_from_spec(DEFAULT_CONFIG), f'--config={DEFAULT_CONFIG}'


def _config_help() -> str:
  names = packaged_config_names()
  return (
    "The experiment: a packaged config's name ("
    + (', '.join(names) or 'none found')
    + "), optionally NAME:VARIANT, or a config file's path "
    f'(PATH[:VARIANT]; a .py file with get_config()).  Default: '
    f'{DEFAULT_CONFIG}; eval, predict and fields without --config use '
    '<workdir>/config.json.  Override any field with '
    '--config.<field>=<value> (lstm-flax fields lists them); an unknown '
    'field or a value of the wrong type (--config.train.steps=abc) is an '
    'error: exit 2.'
  )


def _prepare(argv: List[str]) -> List[str]:
  """Reads the command and --config from argv, loads the config and defines
  the --config flag (its --config.* overrides) from it; returns the argv absl
  parses next."""
  global _CONFIG
  argv = FLAGS.read_flags_from_files(argv, force_gnu=False)
  command, argv = _take_command(argv)
  if command:
    given = _flag_value(argv, 'mode')
    if given is not None and given != command:
      raise CommandError(f'the command says {command} but --mode={given}')
    argv.insert(1, f'--mode={command}')
  spec, argv = _take_config_flag(argv)
  mode = _flag_value(argv, 'mode') or 'train'
  config, source = _starting_config(spec, mode, _flag_value(argv, 'workdir'))
  _check_overrides(config, argv)
  try:
    _CONFIG = config_flags.DEFINE_config_dict(
      'config', config, _config_help(), lock_config=True, sys_argv=argv
    )
  except (KeyError, AttributeError) as e:  # what _check_overrides missed
    raise CommandError(f'no such config field: {e}') from e
  FLAGS['config'].default_as_str = repr(DEFAULT_CONFIG)  # not the whole dict
  _CONFIG_SOURCE.update(given=spec, source=source)
  for name in (
    'config',
    'workdir',
    'mode',
    'checkpoint',
    'init_from',
    'predict_out',
    'overwrite',
    'compilation_cache_dir',
    'coordinator_address',
    'num_processes',
    'process_id',
    'distributed',
  ):
    # absl's --help shows the main module's key flags: make these ours.
    FLAGS.register_key_flag_for_module(argv[0], FLAGS[name])
  return argv


# --- What each command does ------------------------------------------------


def _format_value(value) -> str:
  if isinstance(value, float):
    return f'{value:.4g}'
  return str(value)


def format_metrics(metrics: Dict[str, float]) -> str:
  """'accuracy=0.998 loss=0.01234': metrics rounded to 4 significant digits."""
  return ' '.join(
    f'{k}={_format_value(v)}' for k, v in metrics.items() if k != 'num_examples'
  )


def default_workdir(name: str, now: Optional[float] = None) -> str:
  """<temp dir>/lstm_flax/<name>-YYYYmmdd-HHMMSS: a new directory per run.
  Long or odd names are shortened to a readable prefix and a hash."""
  safe = re.sub(r'[^A-Za-z0-9._-]+', '_', name or 'run').strip('._') or 'run'
  if len(safe) > 48:
    safe = f'{safe[:39]}-{hashlib.sha1(name.encode()).hexdigest()[:8]}'
  stamp = time.strftime('%Y%m%d-%H%M%S', time.localtime(now))
  return os.path.join(tempfile.gettempdir(), 'lstm_flax', f'{safe}-{stamp}')


def _new_directory(path: str) -> str:
  """Creates ``path`` (or ``path-2``, ``-3``... if taken) and returns it."""
  os.makedirs(os.path.dirname(path), exist_ok=True)
  candidate, n = path, 1
  while True:
    try:
      os.mkdir(candidate)
      return candidate
    except FileExistsError:
      n += 1
      candidate = f'{path}-{n}'


def _usable_workdir(workdir: str, write: bool = True):
  """Raises CommandError unless ``workdir`` is (or can be made) a directory
  this process can write to."""
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise CommandError(f'--workdir={workdir} is a file, not a directory')
  if write and not os.path.exists(workdir):
    try:
      os.makedirs(workdir)
    except OSError as e:
      raise CommandError(
        f'--workdir={workdir} cannot be created: {_os_error(e)}'
      ) from e
  if write and not os.access(workdir, os.W_OK | os.X_OK):
    raise CommandError(
      f'--workdir={workdir} is not writable (permission '
      f'denied): choose another --workdir'
    )


def _finished(config, workdir: str) -> Optional[dict]:
  """results.json of ``workdir`` if it holds this exact config, trained for
  config.train.steps: there is nothing left to do."""
  try:
    with open(os.path.join(workdir, 'results.json')) as f:
      results = json.load(f)
    with open(os.path.join(workdir, 'config.json')) as f:
      saved = json.load(f)
  except (OSError, ValueError):
    return None
  current = json.loads(json.dumps(config.to_dict()))
  if (
    saved == current
    and isinstance(results, dict)
    and results.get('steps') == config.train.steps
    and 'eval' in results
  ):
    return results
  return None


def _checkpoint_choice():
  """'latest', 'best' or a step (int), from --checkpoint."""
  value = _CHECKPOINT.value
  if value in ('latest', 'best'):
    return value
  if value.isdigit():
    return int(value)
  raise CommandError(
    f'--checkpoint={value} is invalid: use latest, best or a step number'
  )


def _check_predict_out(path: str):
  """--predict_out must be writable before predicting (no stray files)."""
  directory = os.path.dirname(os.path.abspath(path))
  if os.path.isdir(path):
    raise CommandError(f'--predict_out={path} is a directory; give a file name')
  if not os.path.isdir(directory):
    raise CommandError(
      f'--predict_out={path}: the directory {directory} does not exist'
    )
  if not os.access(directory, os.W_OK | os.X_OK):
    raise CommandError(
      f'--predict_out={path}: the directory {directory} is not writable'
    )


def _model_differences(config, workdir: str) -> List[str]:
  if not os.path.exists(os.path.join(workdir, 'config.json')):
    return []  # a workdir of older code: nothing to compare with
  try:
    return list(workdir_lib.model_differences(config, workdir))
  except workdir_lib.WorkdirError as e:  # a sentence of its own
    raise CommandError(str(e)) from e
  except (OSError, ValueError, TypeError) as e:
    message = _os_error(e) if isinstance(e, OSError) else str(e)
    raise CommandError(
      f'cannot use {os.path.join(workdir, "config.json")}: {message}'
    ) from e


# The loop's entry points, imported here only (jax and the loop are slow to
# import; --help and fields need neither).


def _check_config(config):
  from lstm_flax import experiment  # pylint: disable=g-import-not-at-top

  experiment.check_config(config)


def _train_and_evaluate(config, workdir: str):
  from lstm_flax import train  # pylint: disable=g-import-not-at-top

  return train.train_and_evaluate(config, workdir)


def _evaluate_checkpoint(config, workdir: str, checkpoint: str):
  from lstm_flax import inference  # pylint: disable=g-import-not-at-top

  return inference.evaluate_checkpoint(config, workdir, checkpoint=checkpoint)


def _predict_from_checkpoint(config, workdir: str, checkpoint: str):
  from lstm_flax import inference  # pylint: disable=g-import-not-at-top

  return inference.predict_from_checkpoint(
    config, workdir, checkpoint=checkpoint
  )


def _runtime():
  """The module of TrainingError and Interrupted."""
  from lstm_flax import runtime  # pylint: disable=g-import-not-at-top

  return runtime


def _warm_start():
  from lstm_flax import warm_start  # pylint: disable=g-import-not-at-top

  return warm_start


def _checkpoints():
  from lstm_flax import checkpoints  # pylint: disable=g-import-not-at-top

  return checkpoints


def _check_workdir(config, workdir: str, overwrite: bool):
  """workdir.check_workdir holding the workdir's lock: a run that holds it
  is refused (naming its pid) before --overwrite could delete its files.
  The loop takes the lock again for the run itself."""
  with workdir_lib.lock(workdir):
    workdir_lib.check_workdir(config, workdir, overwrite)


def _train(config):
  runtime = _runtime()
  import jax  # pylint: disable=g-import-not-at-top
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top

  workdir = _WORKDIR.value
  if workdir is None:
    if jax.process_count() > 1:
      raise CommandError(
        'a multi-host run needs --workdir=DIR, a directory '
        'every process can reach'
      )
    try:
      workdir = _new_directory(default_workdir(config.name))
    except OSError as e:
      raise CommandError(
        f'cannot create a workdir: {_os_error(e)}; pass --workdir=DIR'
      ) from e
    print(
      f'{config.name}: writing to {workdir} (choose with --workdir=DIR)',
      flush=True,
    )
  _usable_workdir(workdir)
  done = _finished(config, workdir)
  if done is not None:
    print(
      f'{config.name}: already trained for {done["steps"]} steps in '
      f'{workdir}, nothing to do: eval {format_metrics(done["eval"])} -> '
      f'{os.path.join(workdir, "results.json")} (raise '
      f'--config.train.steps to continue)'
    )
    return
  logging.info('workdir: %s', workdir)
  try:
    # Process 0 checks (and with --overwrite clears) the shared workdir; the
    # others wait for it.
    if jax.process_index() == 0:
      _check_workdir(config, workdir, _OVERWRITE.value)
    if jax.process_count() > 1:
      multihost_utils.sync_global_devices('lstm_flax: workdir checked')
    results = _train_and_evaluate(config, workdir)
  except (runtime.TrainingError, workdir_lib.WorkdirError) as e:
    _fail(str(e), 1)
  except (
    _warm_start().WarmStartError,
    _checkpoints().CheckpointMismatchError,
  ) as e:
    _fail(str(e), 2)
  except json.JSONDecodeError as e:
    _fail(
      f'{workdir} holds a file that is not valid JSON (truncated?): {e}; '
      f'use another --workdir, or --overwrite to start anew',
      1,
    )
  except runtime.Interrupted as e:
    sys.exit(128 + e.signum)
  except OSError as e:
    _fail(_os_error(e), 1)
  if jax.process_index() == 0:
    print(
      f'{results["config"]}: eval {format_metrics(results["eval"])} on '
      f'{results["eval"].get("num_examples", "?")} held-out examples '
      f'(train {results["train_seconds"]:.2f} s) -> '
      f'{os.path.join(workdir, "results.json")}'
    )


def _evaluate_or_predict(config, mode: str):
  workdir = _WORKDIR.value
  if workdir is None:
    raise CommandError(
      f'--mode={mode} needs --workdir=DIR, the directory of a training run'
    )
  _usable_workdir(workdir, write=False)
  _require_checkpoint(workdir, mode)
  differences = _model_differences(config, workdir)
  if differences:
    shown = ', '.join(differences[:8]) + (
      f' and {len(differences) - 8} more' if len(differences) > 8 else ''
    )
    drop = (
      '--config and those --config.* overrides'
      if _CONFIG_SOURCE['given']
      else 'those --config.* overrides'
    )
    raise CommandError(
      f'the config differs from the one {workdir} was trained with in '
      f'fields that change what its checkpoint means: {shown}; drop {drop} '
      f'to use {os.path.join(workdir, "config.json")}'
    )
  checkpoint = _checkpoint_choice()
  if mode == 'eval':
    if not os.access(workdir, os.W_OK | os.X_OK):
      raise CommandError(
        f'--workdir={workdir} is not writable: eval writes '
        f'eval.json there (copy the workdir somewhere '
        f'writable)'
      )
    try:
      with workdir_lib.lock(workdir):  # eval.json: one writer at a time
        result = _evaluate_checkpoint(config, workdir, checkpoint)
    except OSError as e:
      _fail(_os_error(e), 1)
    except workdir_lib.WorkdirError as e:
      _fail(str(e), 1)
    except _checkpoints().CheckpointMismatchError as e:
      _fail(str(e), 2)
    print(
      f'{result["config"]} step {result["step"]}: eval '
      f'{format_metrics(result["eval"])} -> '
      f'{os.path.join(workdir, "eval.json")}'
    )
    return
  out = _PREDICT_OUT.value
  if out:
    _check_predict_out(out)
  try:
    predictions = _predict_from_checkpoint(config, workdir, checkpoint)
  except OSError as e:
    _fail(_os_error(e), 1)
  except _checkpoints().CheckpointMismatchError as e:
    _fail(str(e), 2)
  for p in predictions:
    print('  '.join(f'{k}: {v}' for k, v in p.items()))
  if out:
    try:
      workdir_lib.write_json(out, predictions)
    except OSError as e:
      _fail(_os_error(e), 1)


def _plot(args: List[str]) -> int:
  from lstm_flax import plot  # pylint: disable=g-import-not-at-top

  return plot.main(['lstm-flax plot'] + args)


# --- Entry points ------------------------------------------------------------


def _initialize_distributed():
  """jax.distributed.initialize() from the flags; must run before anything
  touches a device.  Returns False (and changes nothing) for one process."""
  import jax  # pylint: disable=g-import-not-at-top

  given = {
    'coordinator_address': _COORDINATOR.value,
    'num_processes': _NUM_PROCESSES.value,
    'process_id': _PROCESS_ID.value,
  }
  if not _DISTRIBUTED.value and all(v is None for v in given.values()):
    return False
  if not _DISTRIBUTED.value:
    missing = [f'--{k}' for k, v in given.items() if v is None]
    if missing:
      raise CommandError(
        f'multi-host needs --coordinator_address, --num_processes and '
        f'--process_id together; missing {missing} (or use --distributed on '
        f'a cluster whose environment sets them)'
      )
    if _NUM_PROCESSES.value < 1 or not (
      0 <= _PROCESS_ID.value < _NUM_PROCESSES.value
    ):
      raise CommandError(
        f'--process_id={_PROCESS_ID.value} must be in [0, --num_processes='
        f'{_NUM_PROCESSES.value})'
      )
  jax.distributed.initialize(
    **{k: v for k, v in given.items() if v is not None}
  )
  logging.info(
    'process %d of %d; %d local / %d global devices',
    jax.process_index(),
    jax.process_count(),
    jax.local_device_count(),
    jax.device_count(),
  )
  return True


def main(argv):
  """absl main: runs the command --mode names with the --config flag that
  run() defined."""
  if len(argv) > 1:
    _fail(
      f'unexpected arguments {argv[1:]}: a command ({", ".join(COMMANDS)})'
      f' comes first, flags after (lstm-flax --help)',
      2,
    )
  config = _CONFIG.value
  mode = _MODE.value
  try:
    if mode == 'fields':
      print(describe_fields(config, _CONFIG_SOURCE['source']))
      return
    if mode == 'plot':
      if not _WORKDIR.value:
        raise CommandError(
          'plot needs --workdir=DIR (or: lstm-flax plot DIR [DIR ...])'
        )
      sys.exit(_plot([_WORKDIR.value]))
    if _INIT_FROM.value:
      config.train.init_from = _INIT_FROM.value
    _initialize_distributed()  # before anything touches a device
    _check_config(config)
    if _CACHE_DIR.value:
      import jax  # pylint: disable=g-import-not-at-top

      jax.config.update('jax_compilation_cache_dir', _CACHE_DIR.value)
      jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.0)
    if mode == 'train':
      _train(config)
    else:
      _evaluate_or_predict(config, mode)
  except (CommandError, config_files.ConfigFileError) as e:
    _fail(str(e), e.exit_code)
  except validation.ConfigError as e:
    _fail(str(e), 2)
  except KeyboardInterrupt:
    _fail('interrupted', 130)


class _QuietOrbax(logging_lib.Filter):
  """orbax logs every step of every save at INFO; keep its warnings only."""

  def filter(self, record):
    return (
      record.levelno >= logging_lib.WARNING or 'orbax' not in record.pathname
    )


class _QuietBackendProbe(logging_lib.Filter):
  """JAX tries every backend it knows and logs, at INFO, each one that is not
  there ("Unable to initialize backend 'tpu': ... libtpu.so ..."): on a
  machine without TPUs that is not news.  Shown with --verbosity=1."""

  def filter(self, record):
    return (
      record.levelno > logging_lib.INFO
      or not record.getMessage().startswith('Unable to initialize backend')
      or logging.get_verbosity() >= logging.DEBUG
    )


def _parse_flags(argv):
  """absl's flag parsing, its errors in one line (exit 2): an unknown flag, a
  value of the wrong type (--config.train.steps=abc)."""
  try:
    return FLAGS(argv)
  except flags.Error as e:
    _fail(f'{e}  (lstm-flax --help lists the flags)', 2)
  except (KeyError, AttributeError) as e:
    _fail(f'no such config field: {e}', 2)


def run(argv=None):
  """The ``lstm-flax`` console script (and ``python train.py``)."""
  argv = list(sys.argv if argv is None else argv)
  logging.set_verbosity(logging.INFO)
  logging.get_absl_handler().addFilter(_QuietOrbax())
  logging_lib.getLogger('jax._src.xla_bridge').addFilter(_QuietBackendProbe())
  sys.modules['__main__'].__doc__ = __doc__  # what absl's --help prints
  command, rest = _take_command(argv)
  if command == 'plot':  # its own arguments: lstm-flax plot DIR [DIR ...]
    sys.exit(_plot([a for a in rest[1:] if not _is_our_flag(a)]))
  try:
    argv = _prepare(argv)
  except (CommandError, config_files.ConfigFileError) as e:
    _fail(str(e), e.exit_code)
  try:
    app.run(main, argv=argv, flags_parser=_parse_flags)
  finally:
    # Everything is written and closed by now: skip the interpreter's final
    # garbage collection of the objects jax, orbax and matplotlib leave
    # behind (most of a second at every exit).
    gc.freeze()


if __name__ == '__main__':
  run()
