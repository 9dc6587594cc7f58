"""What a run leaves in its workdir, and the rules for reusing one.

``<workdir>/`` holds config.json, metrics.jsonl, checkpoints/, best/ (and
best.json, its record), results.json, eval.json, tensorboard/ and figures.
One process at a time writes there (``lock``).  JSON files are written atomically, as strict JSON.
A workdir is reused only by the run whose config.json it holds (resume, or
continue with more steps), unless the user says --overwrite.
"""

import contextlib
import datetime
import errno
import fcntl
import json
import math
import os
import shutil
import socket
import time
from typing import Any, Iterator

from absl import logging
import ml_collections
import numpy as np

from lstm_flax import config_base


class WorkdirError(RuntimeError):
  """The workdir cannot be used: another process holds it, it holds a run of
  another config, or it cannot be written.  The message is one sentence."""


# --- the lock -------------------------------------------------------------------


def _prepare(path: str):
  """Creates the workdir folder; WorkdirError if it cannot be one."""
  if os.path.exists(path) and not os.path.isdir(path):
    raise WorkdirError(
      f'{path} is a file, not a folder: pass a folder (or a '
      f'path that does not exist yet) as --workdir'
    )
  try:
    os.makedirs(path, exist_ok=True)
  except OSError as e:
    raise WorkdirError(
      f'cannot create the workdir {path} ({e.strerror}): pass another --workdir'
    ) from e
  if not os.access(path, os.W_OK | os.X_OK):
    raise WorkdirError(
      f'cannot write to the workdir {path} (permission '
      f'denied): pass another --workdir'
    )


def _holder(lock_path: str) -> str:
  """Who holds the lock, from what it wrote into the file (it writes right
  after taking the lock, so an empty file is retried briefly)."""
  for _ in range(25):
    try:
      with open(lock_path) as f:
        info = json.load(f)
      return f'pid {info["pid"]} on {info["host"]} (started {info["started"]})'
    except (OSError, ValueError, KeyError, TypeError):
      time.sleep(0.02)
  return 'another process'


# Workdirs this process holds, with how deep: a nested lock() of the same
# workdir (the CLI around the check, the loop around the run) is a no-op.
_HELD = {}


@contextlib.contextmanager
def lock(path: str) -> Iterator[str]:
  """Holds ``<path>/.lock`` exclusively while the block runs; yields the path.

  Creates the workdir if needed.  The lock is ``flock(LOCK_EX | LOCK_NB)``:
  the kernel releases it when the process ends, however it ends (kill -9
  included), so a lock file left by a dead process does not block.  The file
  holds the holder's pid, host and start time for the message others get.
  Nested in one process, the inner ``lock`` of the same workdir only waits
  for the outer one to release it.  Where the file system has no flock (some
  network file systems), a warning is logged and the run goes on unlocked.

  Raises:
    WorkdirError: another process holds the workdir (the message names its
      pid), or the workdir is a file or cannot be written.
  """
  _prepare(path)
  key = os.path.realpath(path)
  if key in _HELD:
    _HELD[key] += 1
    try:
      yield path
    finally:
      _HELD[key] -= 1
    return
  lock_path = os.path.join(path, '.lock')
  try:
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
  except OSError as e:
    raise WorkdirError(
      f'cannot create the lock file {lock_path} '
      f'({e.strerror}): pass another --workdir'
    ) from e
  try:
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
      locked = True
    except BlockingIOError:
      raise WorkdirError(
        f'{path} is in use by {_holder(lock_path)}; wait for it or use '
        f'another --workdir'
      ) from None
    except OSError as e:
      if e.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
        raise WorkdirError(f'cannot lock {lock_path} ({e.strerror})') from e
      logging.warning(
        'the file system of %s does not lock files (%s): two '
        'runs in this workdir would overwrite each other',
        path,
        e.strerror,
      )
      locked = False
    started = datetime.datetime.now(datetime.timezone.utc)
    info = {
      'pid': os.getpid(),
      'host': socket.gethostname(),
      'started': started.strftime('%Y-%m-%d %H:%M:%S UTC'),
    }
    os.ftruncate(fd, 0)
    os.pwrite(fd, (json.dumps(info) + '\n').encode(), 0)
    _HELD[key] = 1
    try:
      yield path
    finally:
      del _HELD[key]
      # Emptied, not deleted: deleting would let a process that opened the
      # old file and one that creates a new one both hold "the" lock.
      os.ftruncate(fd, 0)
      if locked:
        fcntl.flock(fd, fcntl.LOCK_UN)
  finally:
    os.close(fd)


# --- JSON files -------------------------------------------------------------------


def strict(obj):
  """``obj`` as plain JSON values: numpy scalars and arrays as Python ones,
  tuples as lists, and NaN and infinities as None (JSON has no NaN).  For
  ``json.dumps(strict(record), allow_nan=False)`` of a metrics line."""
  if isinstance(obj, dict):
    return {k: strict(v) for k, v in obj.items()}
  if isinstance(obj, (list, tuple)):
    return [strict(v) for v in obj]
  if isinstance(obj, np.ndarray):
    return strict(obj.tolist())
  if isinstance(obj, np.generic):
    return strict(obj.item())
  if isinstance(obj, float) and not math.isfinite(obj):
    return None
  return obj


def write_json(path: str, obj: Any):
  """Writes ``obj`` to ``path`` as strict JSON (non-finite floats become
  null), atomically: a temp file in the same folder, synced, then renamed
  over ``path``; the temp file is removed if anything fails.

  Raises:
    WorkdirError: the file cannot be written (a missing folder, no
      permission, a full disk); the message names ``path``.
  """
  tmp = f'{path}.tmp{os.getpid()}'
  try:
    with open(tmp, 'w') as f:
      json.dump(strict(obj), f, indent=2, sort_keys=True, allow_nan=False)
      f.write('\n')
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException as e:
    with contextlib.suppress(OSError):
      os.remove(tmp)
    if isinstance(e, OSError):
      raise WorkdirError(f'cannot write {path} ({e.strerror or e})') from e
    raise


def trim_metrics(path: str, step: int):
  """Keeps the records of ``metrics.jsonl`` that a run resumed at ``step``
  still stands behind: training records (``train_loss``) and validation
  records (``eval/...`` keys) of steps <= ``step``; the steps after it, and
  the final evaluation (``final/...``), are redone.  A line that is not a JSON object with a step (the partial last line
  of a killed run) is dropped with a warning.  Rewritten atomically."""
  if not os.path.exists(path):
    return
  with open(path, 'rb') as f:
    lines = f.read().decode('utf-8', errors='replace').splitlines()
  kept, dropped = [], []
  for number, line in enumerate(lines, 1):
    if not line.strip():
      continue
    try:
      record = json.loads(line)
    except ValueError:
      record = None
    if not isinstance(record, dict) or not isinstance(record.get('step'), int):
      dropped.append(number)
      continue
    if record['step'] <= step and (
      'train_loss' in record or any(k.startswith('eval/') for k in record)
    ):
      kept.append(record)
  if dropped:
    logging.warning(
      '%s: dropped line(s) %s, not JSON records (a partial '
      'line of a run that was killed while writing)',
      path,
      ', '.join(map(str, dropped)),
    )
  tmp = f'{path}.tmp{os.getpid()}'
  try:
    with open(tmp, 'w') as f:
      f.writelines(json.dumps(strict(r), allow_nan=False) + '\n' for r in kept)
    os.replace(tmp, path)
  except BaseException:
    with contextlib.suppress(OSError):
      os.remove(tmp)
    raise


# --- which run a workdir holds -----------------------------------------------------

# What a run leaves: a workdir holding any of these holds a run.
RUN_FILES = (
  'checkpoints',
  'best',
  'best.json',
  'metrics.jsonl',
  'results.json',
  'eval.json',
  'tensorboard',
)

# Fields a run may change when it resumes and stay the same run: more steps
# continue it; how often it logs, saves and validates, how many checkpoints it
# keeps, whether it writes TensorBoard events, and every eval.* field do not
# change what it trains; a lower learning
# rate or clipping is the advice after a NaN stop, to follow from the last good
# checkpoint.
_CADENCE_FIELDS = (  # how long and how often; not what one step computes
  'train.steps',
  'train.steps_per_call',
  'train.checkpoint_every',
  'train.keep_checkpoints',
  'train.log_every',
  'train.log_grad_norm',
  'train.tensorboard',
  'eval.',
)
RESUMABLE_FIELDS = _CADENCE_FIELDS + (
  'optimizer.learning_rate',
  'optimizer.grad_clip_norm',
)

# Fields that do not change what a checkpoint holds (for --mode=eval|predict).
NOT_MODEL_FIELDS = _CADENCE_FIELDS + ('optimizer.',)


def _flat(tree, prefix=''):
  """{'a.b.c': leaf} of nested dicts (ConfigDicts through to_dict)."""
  out = {}
  for k, v in tree.items():
    if isinstance(v, dict):
      out.update(_flat(v, f'{prefix}{k}.'))
    else:
      out[f'{prefix}{k}'] = v
  return out


def _as_json(config) -> dict:
  """The config as config.json holds it (tuples as lists)."""
  config = config.to_dict() if hasattr(config, 'to_dict') else config
  return json.loads(json.dumps(strict(config)))


def _ignored(name: str, patterns) -> bool:
  return any(
    name == p or (p.endswith('.') and name.startswith(p)) for p in patterns
  )


def _differences(previous: dict, current: dict, ignore) -> dict:
  """{field: (previous value, current value)} of the fields that differ,
  outside ``ignore``.  A field ``previous`` lacks (a config.json written
  before it was added to config_base) counts as its default."""
  previous, current = _flat(previous), _flat(current)
  defaults = _flat(_as_json(config_base.base_config()))
  missing = object()
  out = {}
  for name in sorted(set(previous) | set(current)):
    if _ignored(name, ignore):
      continue
    old = previous.get(name, defaults.get(name, missing))
    new = current.get(name, missing)
    if old != new:
      out[name] = (old, new)
  return out


def _read_config_json(workdir: str):
  """(the dict in config.json, None) or (None, why it is not a config)."""
  path = os.path.join(workdir, 'config.json')
  try:
    with open(path) as f:
      data = json.load(f)
  except FileNotFoundError:
    return None, 'it has no config.json'
  except (OSError, ValueError) as e:
    return None, f'its config.json cannot be read ({str(e).splitlines()[0]})'
  if not isinstance(data, dict) or not isinstance(data.get('task'), dict):
    return None, (
      f'its config.json is not a config of this code (a JSON '
      f'{type(data).__name__} without a task section)'
    )
  return data, None


def load_config(workdir: str) -> ml_collections.ConfigDict:
  """The config of the run in ``workdir``, from its config.json (lists as
  tuples, as config files write them; fields added to config_base since at
  their defaults), locked like a config file's.

  Raises:
    WorkdirError: config.json is missing, unreadable or not a config.
  """
  data, problem = _read_config_json(workdir)
  if problem:
    raise WorkdirError(
      f'{workdir} holds no config to use: {problem}; pass --config'
    )

  def tuples(x):
    if isinstance(x, dict):
      return {k: tuples(v) for k, v in x.items()}
    if isinstance(x, list):
      return tuple(tuples(v) for v in x)
    return x

  merged = _as_json(config_base.base_config())
  for section, fields in tuples(data).items():
    if isinstance(fields, dict) and isinstance(merged.get(section), dict):
      merged[section] = {**merged[section], **fields}
    else:
      merged[section] = fields
  return ml_collections.ConfigDict(tuples(merged)).lock()


def model_differences(config, workdir: str) -> list[str]:
  """Fields of ``config`` that differ from the workdir's config.json and
  change what its checkpoints mean (everything but eval.*, optimizer.* and
  train.steps / steps_per_call / checkpoint_every / keep_checkpoints /
  log_every / tensorboard), sorted; [] if none.  For --mode=eval|predict.

  Raises:
    WorkdirError: config.json is missing, unreadable or not a config.
  """
  data, problem = _read_config_json(workdir)
  if problem:
    raise WorkdirError(
      f'cannot tell which model the checkpoints in {workdir} hold: {problem}'
    )
  return list(_differences(data, _as_json(config), NOT_MODEL_FIELDS))


def _run_files(workdir: str) -> list[str]:
  """RUN_FILES present in ``workdir`` (an empty folder does not count)."""
  present = []
  for name in RUN_FILES:
    path = os.path.join(workdir, name)
    if os.path.isdir(path):
      if os.listdir(path):
        present.append(f'{name}/')
    elif os.path.exists(path):
      present.append(name)
  return present


def _shown(value) -> str:
  return (
    'unset'
    if not isinstance(value, (str, int, float, bool, list, dict, type(None)))
    else repr(value)
  )


def check_workdir(config, workdir: str, overwrite: bool = False) -> list[str]:
  """Refuses a workdir holding a run this config cannot prove is its own.

  A run is anything of RUN_FILES; it is this config's if config.json is a
  config that equals ``config`` outside RESUMABLE_FIELDS (more steps, other
  log/checkpoint/eval settings, a lower learning rate or clipping after a
  NaN stop).  A missing, unreadable or foreign config.json proves nothing; a
  config.json that is not a config is refused even without a run (it is
  someone else's file).  Nothing is written or deleted unless the check
  fails and ``overwrite`` is set: then the run's files and config.json are
  deleted (unreadable_checkpoints/ and figures stay).  Call it holding
  ``lock(workdir)``.

  Returns:
    The RESUMABLE_FIELDS that differ ('optimizer.learning_rate: 0.001 ->
    0.0001'), also logged; [] for a new workdir or an unchanged config.

  Raises:
    WorkdirError: naming the fields that differ, or why config.json proves
      nothing, and how to go on.
  """
  if not os.path.isdir(workdir):
    return []
  run = _run_files(workdir)
  previous, problem = _read_config_json(workdir)
  if problem is None:
    differences = _differences(previous, _as_json(config), ())
    changed = {
      k: v for k, v in differences.items() if _ignored(k, RESUMABLE_FIELDS)
    }
    different = [
      f'{k} ({_shown(a)} there, {_shown(b)} here)'
      for k, (a, b) in differences.items()
      if k not in changed
    ]
    if not run or not different:
      notes = [
        f'{k}: {_shown(a)} -> {_shown(b)}' for k, (a, b) in changed.items()
      ]
      if run and notes:
        logging.warning(
          '%s: resuming its run with %s', workdir, '; '.join(notes)
        )
      return notes if run else []
    problem = (
      f'holds a run of a different config ({previous.get("name")!r}; '
      f'fields that differ: {", ".join(different)})'
    )
  elif problem == 'it has no config.json':
    if not run:
      return []  # an empty or unrelated folder: nothing to lose
    problem = (
      f'holds a run ({", ".join(run)}) without config.json, so '
      f'nothing shows it is a run of this config'
    )
  else:
    problem = f'cannot be used: {problem}'
  if not overwrite:
    raise WorkdirError(
      f'{workdir} {problem}.  Use another --workdir, or pass '
      f'--overwrite to delete that run and start anew.'
    )
  logging.warning(
    '--overwrite: deleting the previous run in %s (it %s)', workdir, problem
  )
  for name in RUN_FILES + ('config.json',):
    path = os.path.join(workdir, name)
    if os.path.isdir(path) and not os.path.islink(path):
      shutil.rmtree(path)
    elif os.path.lexists(path):
      os.remove(path)
  return []
