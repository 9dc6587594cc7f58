"""End to end: process start to held-out results, lstm_flax against plain Flax.

  python bench/end_to_end.py                          # all three seed protocols
  python bench/end_to_end.py --models=echo,stacked --repeats=3
  python bench/end_to_end.py --sections=seeds         # num_seeds=8 vs 8 runs

Each measurement is a fresh process, timed from its start to its exit, with
its peak resident memory (``ru_maxrss`` from ``os.wait4``):
- lstm_flax ``python train.py --config=configs/<c>.py`` twice: with the
  persistent compilation cache disabled (cold) and with a warmed-up cache
  (warm, what a rerun of a config costs);
- plain Flax ``python bench/plain_flax.py --model=<m>``: the same seed
  protocol the ordinary way (bench/plain_flax.py).
The runs alternate, ``--repeats`` times; tables give medians (min-max) and the
median of the per-repeat ratios plain / lstm_flax.

``--sections=seeds`` times ``configs/stacked.py`` (``--seeds_model``) with
``--config.num_seeds=8`` against one run and against 8 sequential
single-seed runs.
"""

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from absl import app
from absl import flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_MODELS = flags.DEFINE_list(
  'models', ['echo', 'stacked', 'cnn_lstm'], 'Seed protocols to time.'
)
_SECTIONS = flags.DEFINE_list(
  'sections',
  ['e2e', 'seeds'],
  'e2e: end to end vs plain Flax; seeds: --replicas seeds as one program.',
)
_REPEATS = flags.DEFINE_integer('repeats', 3, 'Alternating repeats.')
_NUM_SEEDS = flags.DEFINE_integer(
  'replicas', 8, 'Seeds trained as one program for --sections=seeds.'
)
_SEEDS_MODEL = flags.DEFINE_enum(
  'seeds_model',
  'stacked',
  ['echo', 'stacked', 'cnn_lstm'],
  'Seed protocol for --sections=seeds.',
)
_STEPS = flags.DEFINE_integer(
  'steps',
  0,
  "Override every protocol's number "
  'of steps (a smoke test); 0: the seed protocol.',
)

CONFIG_FILES = {'echo': 'vanilla', 'stacked': 'stacked', 'cnn_lstm': 'cnn_lstm'}


def timed_with_memory(command):
  """(wall seconds, peak RSS GB, stdout) of one process, measured by wait4."""
  env = dict(os.environ, JAX_PLATFORMS=os.environ.get('JAX_PLATFORMS', 'cpu'))
  with tempfile.TemporaryFile('w+') as out, tempfile.TemporaryFile('w+') as err:
    start = time.perf_counter()
    proc = subprocess.Popen(
      command, cwd=ROOT, env=env, stdout=out, stderr=err, text=True
    )
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    out.seek(0)
    err.seek(0)
    if proc.returncode:
      raise RuntimeError(
        f'{command} failed ({proc.returncode}):\n{err.read()[-3000:]}'
      )
    return wall, usage.ru_maxrss / 2**20, out.read()  # ru_maxrss is in KB


def ours(model, workdir, cache_dir, *flags_):
  # A fresh workdir: a finished run of the same config would resume and
  # train nothing.
  shutil.rmtree(workdir, ignore_errors=True)
  command = [
    sys.executable,
    'train.py',
    f'--config=configs/{CONFIG_FILES[model]}.py',
    f'--workdir={workdir}',
    f'--compilation_cache_dir={cache_dir}',
    *flags_,
  ]
  if _STEPS.value:
    command.append(f'--config.train.steps={_STEPS.value}')
  wall, rss, _ = timed_with_memory(command)
  with open(os.path.join(workdir, 'results.json')) as f:
    results = json.load(f)
  return wall, rss, results


def plain(model):
  wall, rss, out = timed_with_memory(
    [
      sys.executable,
      os.path.join('bench', 'plain_flax.py'),
      f'--model={model}',
      f'--steps={_STEPS.value}',
    ]
  )
  return wall, rss, json.loads(out.strip().splitlines()[-1])


def fmt(values, unit=''):
  return (
    f'{statistics.median(values):.1f}{unit} '
    f'({min(values):.1f}-{max(values):.1f})'
  )


def headline(model, results):
  ev = results['eval']
  return ev.get('accuracy', ev.get('mae'))


def end_to_end(scratch):
  print('\n## end to end, seed protocols (process start to exit)')
  print(
    '| model | lstm_flax cold s | lstm_flax warm s | plain Flax s | ratio cold | '
    'ratio warm | compile s ours / plain | peak RSS GB ours / plain | metric ours / plain |'
  )
  print('|---|---|---|---|---|---|---|---|---|')
  for model in _MODELS.value:
    workdir = os.path.join(scratch, model)
    cache = os.path.join(scratch, f'cache_{model}')
    ours(model, workdir, cache)  # warms the cache
    cold, warm, base, rss, base_rss, compile_, base_compile = (
      [] for _ in range(7)
    )
    metric = base_metric = None
    for _ in range(_REPEATS.value):
      wall, mem, results = ours(model, workdir, '')
      cold.append(wall)
      rss.append(mem)
      compile_.append(results['compile_seconds'])
      metric = headline(model, results)
      wall, _, _ = ours(model, workdir, cache)
      warm.append(wall)
      wall, mem, info = plain(model)
      base.append(wall)
      base_rss.append(mem)
      base_compile.append(info['compile_seconds'])
      base_metric = info['metric']
    ratio_cold = statistics.median(b / a for a, b in zip(cold, base))
    ratio_warm = statistics.median(b / a for a, b in zip(warm, base))
    print(
      f'| {model} | {fmt(cold)} | {fmt(warm)} | {fmt(base)} | '
      f'{ratio_cold:.1f}x | {ratio_warm:.1f}x | '
      f'{statistics.median(compile_):.1f} / {statistics.median(base_compile):.1f} | '
      f'{statistics.median(rss):.2f} / {statistics.median(base_rss):.2f} | '
      f'{metric:.4g} / {base_metric:.4g} |',
      flush=True,
    )


def seeds(scratch):
  n = _NUM_SEEDS.value
  model = _SEEDS_MODEL.value
  print(
    f'\n## num_seeds={n} on configs/{CONFIG_FILES[model]}.py (cold compile cache)'
  )
  together, one, sequential = [], [], []
  for _ in range(_REPEATS.value):
    wall, _, results = ours(
      model, os.path.join(scratch, 'seeds'), '', f'--config.num_seeds={n}'
    )
    together.append(wall)
    metric = 'mae' if 'mae' in results['eval_stats'] else 'accuracy'
    stats = results['eval_stats'][metric]
    total = 0.0
    for seed in range(n):
      wall, _, _ = ours(
        model, os.path.join(scratch, f'seed{seed}'), '', f'--config.seed={seed}'
      )
      total += wall
      if seed == 0:
        one.append(wall)
    sequential.append(total)
  print(
    f'| runs | seconds | vs one seed |\n|---|---|---|\n'
    f'| one seed | {fmt(one)} | 1.0x |\n'
    f'| num_seeds={n}, one program | {fmt(together)} | '
    f'{statistics.median(t / o for t, o in zip(together, one)):.2f}x |\n'
    f'| {n} sequential runs | {fmt(sequential)} | '
    f'{statistics.median(s / o for s, o in zip(sequential, one)):.2f}x |'
  )
  print(
    f'num_seeds={n} {metric}: mean {stats["mean"]:.4f}, std {stats["std"]:.4f}, '
    f'min {stats["min"]:.4f}, max {stats["max"]:.4f}'
  )


def main(argv):
  del argv
  print(
    f'# {os.cpu_count()} CPUs; medians (min-max) of {_REPEATS.value} repeats'
  )
  with tempfile.TemporaryDirectory() as scratch:
    if 'e2e' in _SECTIONS.value:
      end_to_end(scratch)
    if 'seeds' in _SECTIONS.value:
      seeds(scratch)


if __name__ == '__main__':
  app.run(main)
