"""Learning curves of a run: ``python -m lstm_flax.plot <workdir> [<workdir> ...]``.

Reads each ``<workdir>/metrics.jsonl`` and writes ``<workdir>/learning_curve.png``
(training loss per logged call against step, log scale, with the final eval
metrics in the title).  Needs matplotlib (``pip install -e '.[plot]'``).
"""

import json
import os
import sys


def read_metrics(workdir):
  """(train records, eval record or None) from ``<workdir>/metrics.jsonl``."""
  path = os.path.join(workdir, 'metrics.jsonl')
  if not os.path.exists(path):
    raise FileNotFoundError(f'{path} does not exist: is {workdir} a run workdir?')
  with open(path) as f:
    records = [json.loads(line) for line in f if line.strip()]
  train = [r for r in records if 'train_loss' in r]
  evals = [r for r in records if any(k.startswith('eval/') for k in r)]
  return train, (evals[-1] if evals else None)


def learning_curve(workdir):
  from matplotlib.figure import Figure  # pylint: disable=g-import-not-at-top

  train, final = read_metrics(workdir)
  fig = Figure(figsize=(7, 4))
  ax = fig.subplots()
  ax.plot([r['step'] for r in train], [r['train_loss'] for r in train], 'o-',
          markersize=3, label='training loss (mean over each logged call)')
  ax.set_xlabel('step')
  ax.set_ylabel('loss')
  if all(r['train_loss'] > 0 for r in train):
    ax.set_yscale('log')
  ax.grid(alpha=0.3, which='both')
  title = os.path.basename(os.path.normpath(workdir))
  if final:
    title += '  |  eval: ' + ', '.join(
        f'{k[5:]}={v:.4g}' for k, v in final.items() if k.startswith('eval/'))
  ax.set_title(title, fontsize=9)
  ax.legend(fontsize=8)
  fig.tight_layout()
  path = os.path.join(workdir, 'learning_curve.png')
  fig.savefig(path, dpi=100)
  return path


def main(argv):
  if len(argv) < 2:
    print(__doc__, file=sys.stderr)
    return 2
  try:
    import matplotlib  # pylint: disable=g-import-not-at-top,unused-import
  except ImportError:
    print("error: matplotlib is not installed: pip install -e '.[plot]'",
          file=sys.stderr)
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
