"""Learning curves of a run: ``python -m lstm_flax.plot <workdir> [<workdir> ...]``.

Reads each ``<workdir>/metrics.jsonl`` and writes
``<workdir>/learning_curve.png``: the training loss (mean over each
``train.log_every`` window) and, when the run validated during training
(``eval.every_steps``), the validation loss against step, on a log scale
when positive; the final held-out metrics in the title.  Needs matplotlib
(``pip install -e '.[plot]'``).
"""

import json
import os
import sys

USAGE = __doc__.split('\n\n')[0] + '\n\n' + __doc__.split('\n\n')[1]


def read_metrics(workdir):
  """(train records, validation records, final record or None) from
  ``<workdir>/metrics.jsonl`` (a truncated last line is skipped)."""
  path = os.path.join(workdir, 'metrics.jsonl')
  if not os.path.exists(path):
    raise FileNotFoundError(
      f'{path} does not exist: is {workdir} a run workdir?'
    )
  records = []
  with open(path) as f:
    for line in f:
      try:
        records.append(json.loads(line))
      except ValueError:
        continue
  train = [r for r in records if r.get('train_loss') is not None]
  validation = [r for r in records if r.get('eval/loss') is not None]
  finals = [r for r in records if any(k.startswith('final/') for k in r)]
  return train, validation, (finals[-1] if finals else None)


def learning_curve(workdir):
  """Draws ``<workdir>/learning_curve.png``; returns its path."""
  from matplotlib.figure import Figure  # pylint: disable=g-import-not-at-top

  train, validation, final = read_metrics(workdir)
  fig = Figure(figsize=(7, 4))
  ax = fig.subplots()
  ax.plot(
    [r['step'] for r in train],
    [r['train_loss'] for r in train],
    '-',
    label='training loss (mean over each logged window)',
  )
  if validation:
    ax.plot(
      [r['step'] for r in validation],
      [r['eval/loss'] for r in validation],
      'o-',
      markersize=3,
      label='validation loss',
    )
  ax.set_xlabel('step')
  ax.set_ylabel('loss')
  losses = [r['train_loss'] for r in train] + [
    r['eval/loss'] for r in validation
  ]
  if losses and all(v > 0 for v in losses):
    ax.set_yscale('log')
  ax.grid(alpha=0.3, which='both')
  title = os.path.basename(os.path.normpath(workdir))
  if final:
    title += '  |  final: ' + ', '.join(
      f'{k[6:]}={v:.4g}'
      for k, v in final.items()
      if k.startswith('final/') and isinstance(v, (int, float))
    )
  ax.set_title(title, fontsize=9)
  ax.legend(fontsize=8)
  fig.tight_layout()
  path = os.path.join(workdir, 'learning_curve.png')
  fig.savefig(path, dpi=100)
  return path


def main(argv):
  if len(argv) < 2 or argv[1] in ('-h', '--help'):
    print(USAGE, file=sys.stderr if len(argv) < 2 else sys.stdout)
    return 2 if len(argv) < 2 else 0
  try:
    import matplotlib  # pylint: disable=g-import-not-at-top,unused-import  # noqa: F401
  except ImportError:
    print(
      "error: matplotlib is not installed: pip install -e '.[plot]'",
      file=sys.stderr,
    )
    return 2
  for workdir in argv[1:]:
    try:
      print(learning_curve(workdir))
    except FileNotFoundError as e:
      print(f'error: {e}', file=sys.stderr)
      return 2
  return 0


if __name__ == '__main__':
  sys.exit(main(sys.argv))
