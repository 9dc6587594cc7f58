"""What a run leaves in its workdir, and the rules for reusing one.

``<workdir>/`` holds config.json, metrics.jsonl, checkpoints/, results.json,
eval.json and figures.  JSON results are written atomically; a workdir is
reused only by the same run (resume), unless the user says --overwrite.
"""

import json
import os
import shutil
from typing import Any

from absl import logging

from lstm_flax import checkpoints
from lstm_flax import config_base


class WorkdirError(RuntimeError):
  """The workdir holds a run of a different config."""


def write_json(path: str, obj: Any):
  """Writes JSON atomically: a temp file in the same folder, then a rename."""
  tmp = f'{path}.tmp{os.getpid()}'
  with open(tmp, 'w') as f:
    json.dump(obj, f, indent=2, sort_keys=True)
    f.write('\n')
  os.replace(tmp, path)


def trim_metrics(path: str, step: int):
  """Keeps the training records of steps <= ``step`` (a resumed run redoes
  the steps after its checkpoint) and drops eval records."""
  if not os.path.exists(path):
    return
  with open(path) as f:
    records = [json.loads(line) for line in f if line.strip()]
  kept = [r for r in records if r['step'] <= step and 'train_loss' in r]
  with open(path, 'w') as f:
    f.writelines(json.dumps(r) + '\n' for r in kept)


# Fields that do not change what a run computes: a workdir can be resumed
# with other values of these.
_NOT_IDENTITY = {('train', 'steps_per_call'), ('train', 'checkpoint_every'),
                 ('train', 'keep_checkpoints')}


def _run_identity(config_dict):
  return {section: ({k: v for k, v in fields.items()
                     if (section, k) not in _NOT_IDENTITY}
                    if isinstance(fields, dict) else fields)
          for section, fields in config_dict.items() if section != 'eval'}


def _with_new_fields(previous, current):
  """``previous`` with the fields it lacks and ``current`` has set to their
  defaults: a config.json written before a field was added to config_base
  holds the same run as a config that leaves the field at its default."""
  defaults = _run_identity(json.loads(json.dumps(
      config_base.base_config().to_dict())))
  previous = {k: dict(v) if isinstance(v, dict) else v
              for k, v in previous.items()}
  for section, fields in current.items():
    if isinstance(fields, dict) and isinstance(previous.get(section), dict):
      for k in fields:
        if k not in previous[section] and k in (defaults.get(section) or {}):
          previous[section][k] = defaults[section][k]
  return previous


def check_workdir(config, workdir: str, overwrite: bool = False):
  """Refuses a workdir that holds checkpoints or results of a different run
  (its config.json differs beyond eval and checkpoint settings), unless
  ``overwrite``, which deletes that run's files.  The same config resumes."""
  path = os.path.join(workdir, 'config.json')
  if not os.path.exists(path):
    return
  with open(path) as f:
    previous = _run_identity(json.load(f))
  has_run = (checkpoints.saved_steps(workdir) or
             os.path.exists(os.path.join(workdir, 'results.json')))
  current = _run_identity(json.loads(json.dumps(config.to_dict())))
  previous = _with_new_fields(previous, current)
  if not has_run or previous == current:
    return
  if not overwrite:
    differences = sorted(
        {f'{section}.{k}' for section in set(current) | set(previous)
         for part in (current, previous)
         if isinstance(part.get(section), dict)
         for k in part[section]
         if (current.get(section) or {}).get(k) != (previous.get(section) or {}).get(k)}
        | {section for section in set(current) | set(previous)
           if not isinstance(current.get(section), dict)
           and current.get(section) != previous.get(section)})
    raise WorkdirError(
        f'{workdir} holds a run of a different config ({previous.get("name")!r}'
        f'; fields that differ: {", ".join(differences)}).  Use another '
        f'--workdir, or pass --overwrite to delete that run and start anew.')
  logging.warning('--overwrite: deleting the previous run in %s', workdir)
  shutil.rmtree(checkpoints.directory(workdir), ignore_errors=True)
  for name in ('results.json', 'metrics.jsonl', 'eval.json', 'config.json'):
    if os.path.exists(os.path.join(workdir, name)):
      os.remove(os.path.join(workdir, name))
