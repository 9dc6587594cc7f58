"""Trains and evaluates one experiment.

  python train.py --config=configs/vanilla.py --workdir=/tmp/vanilla \
      --config.train.steps=500

Writes <workdir>/results.json (held-out metrics of the final model) and
<workdir>/metrics.jsonl (one JSON object per logged step).
"""

import os
import tempfile

from absl import app
from absl import flags
from absl import logging
import jax
from ml_collections import config_flags

from lstm_flax import train_loop

_CONFIG = config_flags.DEFINE_config_file(
    'config', os.path.join(os.path.dirname(os.path.abspath(__file__)),
                           'configs', 'vanilla.py'),
    'Experiment config file; override fields with --config.<path>=<value>.',
    lock_config=True)
_WORKDIR = flags.DEFINE_string(
    'workdir', None,
    'Directory for results.json and metrics.jsonl '
    '(default: <system temp dir>/lstm_flax/<config name>).')
_CACHE_DIR = flags.DEFINE_string(
    'compilation_cache_dir',
    os.path.join(tempfile.gettempdir(), 'lstm_flax_xla_cache'),
    "JAX's persistent compilation cache: a rerun of the same program skips "
    "XLA compilation.  '' disables it.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  config = _CONFIG.value
  if _CACHE_DIR.value:
    jax.config.update('jax_compilation_cache_dir', _CACHE_DIR.value)
    jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.0)
  workdir = _WORKDIR.value or os.path.join(tempfile.gettempdir(), 'lstm_flax',
                                           config.name or 'run')
  logging.info('workdir: %s', workdir)
  results = train_loop.train_and_evaluate(config, workdir)
  print(f"{results['config']}: eval {results['eval']} "
        f"(train {results['train_seconds']:.2f}s) -> "
        f"{os.path.join(workdir, 'results.json')}")


if __name__ == '__main__':
  logging.set_verbosity(logging.INFO)
  app.run(main)
