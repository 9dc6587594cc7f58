"""Every number in the docs from one command, over many seeds.

  python -m lstm_flax.report [--configs=vanilla,stacked] [--num_seeds=N]
      [--out=docs/results.md] [--readme=README.md]
      [--experiments=docs/experiments.md] [--runs_dir=DIR]
      [--override=train.steps=50] [--notrain] [--note=TEXT]

Trains each packaged config of ``EXPERIMENTS`` once with
``--config.num_seeds=N`` (every seed in one process, a fresh workdir under
``--runs_dir``, no compilation cache), then writes ``docs/results.md`` (per
config: each metric's median, interquartile range and min-max over the
seeds, the seeds, the wall time; package versions and machine; the seed's
claims beside what its protocol gives; the figures) and rewrites the block
between ``<!-- results:begin -->`` and ``<!-- results:end -->`` in the
README and docs/experiments.md.  With ``--configs``, the other configs' rows
come from the runs kept in ``--runs_dir`` by earlier calls, if any.

Running (``run_experiment``, ``copy_figures``) and formatting (``fmt*``,
``*_table``, ``*_block``, ``results_markdown``: pure, records in, text out)
are separate; a record is ``{spec, command, wall_seconds, results}`` with
``results`` the run's results.json.
"""

import dataclasses
import importlib.metadata
import importlib.util
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Dict, List, Optional, Sequence, Tuple

from absl import app
from absl import flags
import numpy as np

BEGIN = '<!-- results:begin -->'
END = '<!-- results:end -->'
RUN_FILE = 'report_run.json'  # what the report adds to a run's workdir
LOG_FILE = 'train.log'  # the run's output; written first
PACKAGES = ('jax', 'jaxlib', 'flax', 'optax', 'numpy', 'ml_collections')


@dataclasses.dataclass(frozen=True)
class Experiment:
  """One row of the report: a packaged config and how to summarise it."""

  spec: str  # --config value: NAME or NAME:VARIANT
  num_seeds: int  # seeds by default (one process trains all)
  metrics: Tuple[Tuple[str, str], ...]  # (results key, label), headline 1st
  task: str  # for the README table
  model: str
  figure: Optional[str] = None  # the run's figure, copied to docs/
  figure_as: Optional[str] = None  # its name in docs/ if not ``figure``
  requires: Optional[str] = None  # a module the config needs (else skipped)


_ACC = (('accuracy', 'accuracy'),)
_MAE = (('mae', 'MAE'), ('rmse', 'RMSE'))
_STACKED = 'LSTM(20) → LSTM(20) → Dense(5)'
_ADDITION = (
  ('exact_match', 'exact match'),
  ('char_accuracy', 'per-character accuracy'),
)
_PER_STEP = (
  ('accuracy', 'per-step accuracy'),
  ('sequence_accuracy', 'whole-sequence accuracy'),
)
_RECTANGLES = (
  (
    'completed_right_angle_error_deg',
    'right-angle error over 1,000 completions',
  ),
  ('generated_right_angle_error_deg', 'right-angle error from (0,0)'),
  ('completed_corner_error', 'corner error over 1,000 completions'),
  ('completed_width_error', 'width error over 1,000 completions'),
  ('loss', 'one-step MAE'),
)
_SERIES = (('mse', 'test MSE'), ('mae', 'test MAE'), ('mase', 'test MASE'))

# Seeds per config: 20 where a run of all of them is quick, 5 for the
# slowest (cnn_lstm, stacked_best), 10 otherwise.
EXPERIMENTS = (
  Experiment(
    'vanilla',
    20,
    _ACC,
    'echo: value at position 2 of 5, 10 classes',
    'LSTM(25) → Dense(10)',
  ),
  Experiment('vanilla_fast', 20, _ACC, 'echo', 'LSTM(25) → Dense(10)'),
  Experiment(
    'stacked',
    20,
    _MAE,
    'damped sine, 50 in → 5 out',
    _STACKED,
    figure='forecast.png',
  ),
  Experiment('stacked_best', 5, _MAE, 'damped sine', _STACKED),
  Experiment(
    'cnn_lstm',
    5,
    _ACC,
    'moving line, 50 frames of 50×50',
    'Conv + pool under `nn.vmap` → LSTM(70) → Dense(1)',
    figure='moving_line.png',
  ),
  Experiment(
    'seq2seq_addition',
    10,
    _ADDITION,
    '"  10+3+7" → "20" as text',
    'LSTM(75) → repeat 2× → LSTM(50) → Dense(12) per step',
  ),
  Experiment(
    'bidirectional',
    10,
    _PER_STEP,
    'running sum of 10 values passes 2.5: label per step',
    'Bidirectional LSTM(50) → Dense(1) per step',
  ),
  Experiment(
    'bidirectional:forward',
    10,
    _PER_STEP,
    'the same',
    'LSTM(50) → Dense(1) per step',
  ),
  Experiment(
    'generative',
    10,
    _RECTANGLES,
    'rectangles drawn corner by corner',
    'LSTM(10) → Dense(2), fed back',
    figure='rectangles.png',
  ),
  Experiment(
    'generative:sequence',
    10,
    _RECTANGLES,
    'the same, whole corner sequence per example',
    'LSTM(10) → Dense(2) per step, fed back',
  ),
  Experiment(
    'sunspots',
    10,
    _SERIES,
    'yearly sunspot numbers: 22 years in → the next',
    'LSTM(32) beside a linear AR highway',
    figure='forecast.png',
    figure_as='sunspots_forecast.png',
    requires='statsmodels',
  ),
)
BY_SPEC = {e.spec: e for e in EXPERIMENTS}
BASELINE_NAMES = {'linear_ar': 'linear AR', 'seasonal_naive': 'seasonal naive'}
UNITS = {
  'completed_right_angle_error_deg': '°',
  'generated_right_angle_error_deg': '°',
}
LEARNING_CURVE_FROM = 'stacked'  # whose metrics.jsonl draws learning_curve.png


@dataclasses.dataclass(frozen=True)
class Claim:
  """What the seed tutorial says of one experiment, and how to check it."""

  experiment: str
  says: str
  protocol: str  # the seed-faithful config
  metric: str
  target: float
  higher_is_better: bool
  reaches: str  # a config that reaches the claim
  needs: str  # what that config changes
  note: str = ''
  claim_examples: int = 0  # the seed's test set size, if it scored one


CLAIMS = (
  Claim(
    'vanilla LSTM, echo',
    '"the model predicts correctly" after 2,000 '
    'Adam updates of batch 1 (shown on one sequence)',
    'vanilla',
    'accuracy',
    1.0,
    True,
    'vanilla_fast',
    'the same model; 300 updates of batch 64 at learning rate 3e-2',
  ),
  Claim(
    'stacked LSTM, damped sine',
    'small overall MAE; per-value absolute '
    'errors ~1e-3 on its plotted test sequences (10,000 sequences, one '
    'epoch of batch 10)',
    'stacked',
    'mae',
    1e-3,
    False,
    'stacked_best',
    'the same model; 6,000 updates of batch 64, cosine schedule '
    'peaking at 1e-2',
  ),
  Claim(
    'CNN-LSTM, moving line',
    '100% accuracy on 100 fresh test examples '
    '(~94% training accuracy; 5,000 examples, one epoch of batch 32)',
    'cnn_lstm',
    'accuracy',
    1.0,
    True,
    'cnn_lstm',
    "the seed's protocol with gradients clipped to global norm 1",
    note='here on 1,000 examples, not 100; training accuracy is not '
    'logged, the loss is',
    claim_examples=100,
  ),
)

# --- statistics and formatting (pure) ----------------------------------------


def seed_summary(values: Sequence[float]) -> Dict[str, float]:
  """Median, quartiles (numpy's linear interpolation), min, max and mean of
  one metric over seeds."""
  v = np.asarray(values, dtype=np.float64)
  q1, median, q3 = np.percentile(v, [25, 50, 75])
  return {
    'median': float(median),
    'q1': float(q1),
    'q3': float(q3),
    'min': float(v.min()),
    'max': float(v.max()),
    'mean': float(v.mean()),
    'n': int(v.size),
  }


def per_seed_values(results: dict, metric: str) -> List[float]:
  """One value per seed: ``eval_per_seed`` or, for one seed, ``eval``."""
  rows = results.get('eval_per_seed') or [results['eval']]
  return [float(row[metric]) for row in rows if metric in row]


def fmt(value: float) -> str:
  """4 significant digits; whole numbers keep one decimal (1.0, not 1)."""
  value = float(value)
  if value == int(value) and abs(value) < 1e6:
    return f'{value:.1f}'
  return f'{value:.4g}'


def fmt_range(s: Dict[str, float]) -> str:
  return (
    fmt(s['min'])
    if s['min'] == s['max']
    else f'{fmt(s["min"])}–{fmt(s["max"])}'
  )


def fmt_seconds(seconds: float) -> str:
  if seconds < 10:
    return f'{seconds:.1f} s'
  if seconds < 100:
    return f'{seconds:.0f} s'
  minutes, rest = divmod(round(seconds), 60)
  return f'{minutes} min {rest:02d} s'


def fmt_seeds(seeds: Sequence[int]) -> str:
  seeds = list(seeds)
  if len(seeds) > 2 and seeds == list(range(seeds[0], seeds[-1] + 1)):
    return f'{seeds[0]}–{seeds[-1]}'
  return ', '.join(map(str, seeds))


def seeds_of(results: dict) -> List[int]:
  return list(results.get('seeds') or [results.get('seed', 0)])


def headline(experiment: Experiment, results: dict) -> str:
  """'accuracy 0.443 [0.41–0.50]': the first metric's median [min–max]."""
  key, label = experiment.metrics[0]
  s, unit = seed_summary(per_seed_values(results, key)), UNITS.get(key, '')
  return f'{label} {fmt(s["median"])}{unit} [{fmt_range(s)}{unit}]'


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
  lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
  lines += ['| ' + ' | '.join(row) + ' |' for row in rows]
  return '\n'.join(lines)


def command(
  spec: str, num_seeds: int, overrides: Sequence[str] = (), workdir: str = 'DIR'
) -> str:
  """The training command of one report run, as a person would type it."""
  extra = ''.join(f' --config.{o}' for o in overrides)
  return (
    f'python train.py --config={spec} --config.num_seeds={num_seeds}'
    f'{extra} --workdir={workdir} --compilation_cache_dir='
  )


def metric_rows(experiment: Experiment, results: dict) -> List[List[str]]:
  """One row per metric: median, IQR, min–max over the seeds, and the
  metric of the seeds' mean output (the ensemble) where there is one."""
  rows = []
  ensemble = results.get('eval_ensemble') or {}
  for key, label in experiment.metrics:
    values = per_seed_values(results, key)
    if not values:
      continue
    s = seed_summary(values)
    label += f' ({UNITS[key]})' if key in UNITS else ''
    rows.append(
      [
        label,
        fmt(s['median']),
        f'{fmt(s["q1"])}–{fmt(s["q3"])}',
        fmt_range(s),
        fmt(ensemble[key]) if key in ensemble else '–',
      ]
    )
  return rows


def baseline_rows(experiment: Experiment, results: dict) -> List[List[str]]:
  """A file task's baselines on the same test windows, same metrics."""
  rows = []
  for name, metrics in sorted((results.get('baselines') or {}).items()):
    rows.append(
      [f'baseline: {BASELINE_NAMES.get(name, name)}']
      + [
        fmt(metrics[key]) if key in metrics else '–'
        for key, _ in experiment.metrics
      ]
    )
  return rows


def config_section(experiment: Experiment, record: dict) -> str:
  """results.md's section of one config."""
  results = record['results']
  seeds = seeds_of(results)
  lines = [
    f'### `{experiment.spec}`',
    '',
    f'{experiment.task}; {experiment.model}.  {len(seeds)} seeds '
    f'({fmt_seeds(seeds)}), {results["steps"]} steps of batch '
    f'{results["batch_size"]}, held-out examples: '
    f'{results["eval"].get("num_examples", "?")}.  Wall time '
    f'{fmt_seconds(record["wall_seconds"])} for all seeds in one process '
    f'(training {fmt_seconds(results["train_seconds"])}, compiling '
    f'{fmt_seconds(results["compile_seconds"])})'
    + (
      f'; load average {record["load_average"]:.1f} at its end'
      if 'load_average' in record
      else ''
    )
    + '.',
    '',
    f'`{record["command"]}`',
    '',
    markdown_table(
      ['metric', 'median', 'IQR', 'min–max', f'ensemble of {len(seeds)}'],
      metric_rows(experiment, results),
    ),
    '',
    f'{experiment.metrics[0][1]} per seed: '
    + ', '.join(
      fmt(v) for v in per_seed_values(results, experiment.metrics[0][0])
    )
    + '.',
  ]
  baselines = baseline_rows(experiment, results)
  if baselines:
    lines += [
      '',
      'The same test windows, no training:',
      '',
      markdown_table(['model'] + [l for _, l in experiment.metrics], baselines),
    ]
  return '\n'.join(lines)


def summary_table(records: Dict[str, dict]) -> str:
  """One row per config that ran: task, model, headline, seeds, wall time."""
  rows = []
  for e in EXPERIMENTS:
    if e.spec not in records:
      continue
    record = records[e.spec]
    name = f'`{e.spec}`' + (' (default)' if e.spec == 'vanilla' else '')
    rows.append(
      [
        name,
        e.task,
        e.model,
        headline(e, record['results'])
        + f' ({len(seeds_of(record["results"]))} seeds)',
        fmt_seconds(record['wall_seconds']),
      ]
    )
  return markdown_table(
    ['config', 'task', 'model', 'held-out result: median [min–max]', 'time'],
    rows,
  )


def readme_block(records: Dict[str, dict]) -> str:
  """The README's experiments table, between the results markers."""
  return (
    'Median [min–max] over seeds, each config trained once with '
    '`--config.num_seeds=N`; time: wall time of that one run, all '
    'seeds, compiling included.  Regenerated by `python -m '
    'lstm_flax.report`; machine, load, versions and every seed: '
    '[docs/results.md](docs/results.md).\n\n' + summary_table(records)
  )


def experiments_block(records: Dict[str, dict]) -> str:
  """docs/experiments.md's block: every reported metric of every config."""
  rows = []
  for e in EXPERIMENTS:
    if e.spec not in records:
      continue
    results = records[e.spec]['results']
    for label, median, iqr, span, _ in metric_rows(e, results):
      rows.append(
        [f'`{e.spec}`', label, median, iqr, span, fmt_seeds(seeds_of(results))]
      )
  text = (
    'Held-out metrics over seeds (one `--config.num_seeds=N` run per '
    'config), from `python -m lstm_flax.report`; the commands, wall '
    "times, machine and the seed's claims are in "
    '[results.md](results.md).\n\n'
    + markdown_table(
      ['config', 'metric', 'median', 'IQR', 'min–max', 'seeds'], rows
    )
  )
  paired = paired_line(
    records, 'bidirectional', 'bidirectional:forward', 'accuracy'
  )
  return text + (f'\n\n{paired}' if paired else '') + baselines_text(records)


def median_cell(results: dict, metric: str) -> str:
  values = per_seed_values(results, metric)
  return fmt(seed_summary(values)['median']) if values else '–'


def baselines_text(records: Dict[str, dict]) -> str:
  """For each file task that ran: the model (median over seeds, and the
  seeds' ensemble) beside the baselines on the same test windows."""
  text = ''
  for e in EXPERIMENTS:
    results = records.get(e.spec, {}).get('results', {})
    if not results.get('baselines'):
      continue
    ensemble = results.get('eval_ensemble') or {}
    rows = [
      [f'`{e.spec}`, median of {len(seeds_of(results))} seeds']
      + [median_cell(results, k) for k, _ in e.metrics]
    ]
    if ensemble:
      rows.append(
        [f'`{e.spec}`, ensemble of the seeds']
        + [fmt(ensemble[k]) if k in ensemble else '–' for k, _ in e.metrics]
      )
    rows += baseline_rows(e, results)
    text += (
      f'\n\n`{e.spec}` on its test windows, beside baselines fitted '
      f'on the training part:\n\n'
      + markdown_table(['model'] + [l for _, l in e.metrics], rows)
    )
  return text


def paired_line(records, first: str, second: str, metric: str) -> str:
  """'`a` is ahead of `b` on k of N seeds ...' when both ran the same seeds."""
  if first not in records or second not in records:
    return ''
  a, b = (records[s]['results'] for s in (first, second))
  if seeds_of(a) != seeds_of(b):
    return ''
  x, y = per_seed_values(a, metric), per_seed_values(b, metric)
  label = dict(BY_SPEC[first].metrics).get(metric, metric)
  ahead = sum(u > v for u, v in zip(x, y))
  level = sum(u == v for u, v in zip(x, y))
  return (
    f'Seed by seed (the same seeds, the same held-out examples), '
    f'`{first}` is ahead of `{second}` on {label} on {ahead} of '
    f'{len(x)} seeds'
    + (f', level on {level}' if level else '')
    + f'; mean difference {fmt(float(np.mean(x) - np.mean(y)))}.'
  )


def meets(value: float, claim: Claim) -> bool:
  return (
    value >= claim.target if claim.higher_is_better else value <= claim.target
  )


def claim_cell(
  claim: Claim, spec: str, records: Dict[str, dict], what: str = ''
) -> str:
  """'`vanilla`: accuracy 0.44 [0.41–0.50]; 0 of 20 seeds at accuracy ≥
  1.0', with ``what`` the config changes in brackets after its name."""
  name = f'`{spec}`' + (f' ({what})' if what else '')
  if spec not in records:
    return f'{name}: not run'
  results = records[spec]['results']
  values = per_seed_values(results, claim.metric)
  s = seed_summary(values)
  label = dict(BY_SPEC[spec].metrics).get(claim.metric, claim.metric)
  sign = '≥' if claim.higher_is_better else '≤'
  hits = sum(meets(v, claim) for v in values)
  chance = (
    f'; at the median accuracy, {claim.claim_examples} fresh '
    f'examples are all right with probability '
    f'{s["median"] ** claim.claim_examples:.2f}'
    if claim.claim_examples
    else ''
  )
  return (
    f'{name}: {label} {fmt(s["median"])} [{fmt_range(s)}]; '
    f'{hits} of {len(values)} seeds at {label} {sign} '
    f'{fmt(claim.target)}{chance}'
  )


def claims_table(records: Dict[str, dict]) -> str:
  rows = []
  for claim in CLAIMS:
    reaches = (
      f'`{claim.reaches}` ({claim.needs}): the run beside'
      if claim.reaches == claim.protocol
      else claim_cell(claim, claim.reaches, records, claim.needs)
    )
    rows.append(
      [
        claim.experiment,
        claim.says,
        claim_cell(claim, claim.protocol, records)
        + (f' ({claim.note})' if claim.note else ''),
        reaches,
      ]
    )
  return markdown_table(
    [
      'experiment',
      'the seed says',
      'its protocol here',
      'a protocol that reaches it',
    ],
    rows,
  )


def environment_lines(env: dict) -> List[str]:
  versions = ', '.join(f'{k} {v}' for k, v in env['versions'].items())
  note = f' ({env["note"]})' if env.get('note') else ''
  return [
    f'- machine: {env["cpu"]}, {env["cores"]} cores; backend '
    f'{env["backend"]}{note}',
    f'- Python {env["python"]}; {versions}',
  ]


def figure_lines(records: Dict[str, dict], figures_dir: str) -> List[str]:
  """Each copied figure with the command that drew it as its caption."""
  lines = []
  for e in EXPERIMENTS:
    for name, caption in (records.get(e.spec, {}).get('figures') or {}).items():
      if os.path.exists(os.path.join(figures_dir, name)):
        lines += [f'![{name}]({name})', '', caption, '']
  return lines


def results_markdown(
  records: Dict[str, dict], env: dict, figures_dir: str
) -> str:
  """The whole of docs/results.md."""
  lines = [
    '# Results, regenerated',
    '',
    'Written by `python -m lstm_flax.report` (`--configs=a,b` retrains '
    "some configs and keeps the other rows; each config's own command is "
    'in its section).  Each config trained once with '
    '`--config.num_seeds=N`: seeds `seed … seed+N−1` in one compiled '
    'program, all scored on the same held-out examples (fresh generated '
    'ones, or the test part of a file).  Medians, interquartile ranges '
    '(IQR, 25th–75th percentile) and min–max are over the seeds; '
    '"ensemble" scores the mean output of all seeds.  Wall times are one '
    'process for all seeds, start to exit, without a compilation cache.',
    '',
    *environment_lines(env),
    '',
    '## Summary',
    '',
    summary_table(records),
    '',
    "## The seed's claims, checked",
    '',
    'What the tutorial (`seed/`, summarised in SPEC.md) says of each of '
    'its experiments, beside what its protocol gives here over the seeds '
    '(held-out examples as above), and a config that reaches the claim.',
    '',
    claims_table(records),
    '',
    '## Per config',
    '',
  ]
  for e in EXPERIMENTS:
    if e.spec in records:
      lines += [config_section(e, records[e.spec]), '']
  figures = figure_lines(records, figures_dir)
  if figures:
    lines += [
      '## Figures',
      '',
      'From the runs above; the held-out '
      "examples are replica 0's (the config's own seed).  Each "
      'caption is the command that drew it.',
      '',
      *figures,
    ]
  return '\n'.join(lines).rstrip() + '\n'


def rewrite_block(text: str, block: str) -> str:
  """``text`` with what lies between the results markers replaced by
  ``block``; everything outside the markers is kept byte for byte."""
  start, end = text.find(BEGIN), text.find(END)
  if start < 0 or end < start:
    raise ValueError(f'no {BEGIN} ... {END} block to rewrite')
  head = text[: start + len(BEGIN)]
  return f'{head}\n{block.strip()}\n{text[end:]}'


# --- running (subprocesses, files) -------------------------------------------


def slug(spec: str) -> str:
  return spec.replace(':', '-')


def available(experiment: Experiment) -> bool:
  """False for a config whose optional dependency is not installed."""
  return (
    experiment.requires is None
    or importlib.util.find_spec(experiment.requires) is not None
  )


def fresh_workdir(runs_dir: str, spec: str) -> str:
  """``<runs_dir>/<spec>``, emptied if it holds an earlier run (and only
  then: a directory of anything else is refused)."""
  path = os.path.join(runs_dir, slug(spec))
  if os.path.exists(path):
    entries = set(os.listdir(path))
    if entries and not entries & {RUN_FILE, LOG_FILE, 'config.json'}:
      raise ValueError(
        f'{path} exists and holds no run: not deleting it; '
        f'choose another --runs_dir'
      )
    shutil.rmtree(path)
  os.makedirs(path)
  open(os.path.join(path, LOG_FILE), 'w').close()  # marks it as the report's
  return path


def run_experiment(
  experiment: Experiment,
  num_seeds: int,
  runs_dir: str,
  overrides: Sequence[str] = (),
) -> dict:
  """Trains one config with ``num_seeds`` seeds in a fresh workdir (a
  subprocess of the command line) and returns its record: the command, its
  wall time and results.json.  Raises RuntimeError if the run fails."""
  workdir = fresh_workdir(runs_dir, experiment.spec)
  argv = [
    sys.executable,
    '-m',
    'lstm_flax.cli',
    f'--config={experiment.spec}',
    f'--config.num_seeds={num_seeds}',
    *[f'--config.{o}' for o in overrides],
    f'--workdir={workdir}',
    '--compilation_cache_dir=',
  ]
  start = time.perf_counter()
  done = subprocess.run(argv, capture_output=True, text=True, check=False)
  wall = time.perf_counter() - start
  with open(os.path.join(workdir, LOG_FILE), 'w') as f:
    f.write(done.stdout + done.stderr)
  if done.returncode != 0:
    raise RuntimeError(
      f'{experiment.spec} failed (exit {done.returncode}): '
      f'{done.stderr.strip().splitlines()[-1:]}; log: '
      f'{os.path.join(workdir, LOG_FILE)}'
    )
  with open(os.path.join(workdir, 'results.json')) as f:
    results = json.load(f)
  record = {
    'spec': experiment.spec,
    'workdir': workdir,
    'command': command(experiment.spec, num_seeds, overrides),
    'wall_seconds': wall,
    'load_average': os.getloadavg()[0],
    'results': results,
  }
  write_record(workdir, record)
  return record


def write_record(workdir: str, record: dict):
  with open(os.path.join(workdir, RUN_FILE), 'w') as f:
    json.dump(record, f, indent=1)


def read_records(runs_dir: str) -> Dict[str, dict]:
  """Every record kept in ``runs_dir``, by config spec."""
  records = {}
  for e in EXPERIMENTS:
    path = os.path.join(runs_dir, slug(e.spec), RUN_FILE)
    if os.path.exists(path):
      with open(path) as f:
        records[e.spec] = json.load(f)
  return records


def copy_figures(
  experiment: Experiment, record: dict, figures_dir: str
) -> dict:
  """Copies the run's figure (and, for ``LEARNING_CURVE_FROM``, a learning
  curve drawn by lstm_flax.plot) to ``figures_dir``; returns the record
  with ``figures``: {file name: caption naming the command}."""
  workdir, figures = record['workdir'], {}
  seed = seeds_of(record['results'])[0]
  if experiment.figure:
    source = os.path.join(workdir, experiment.figure)
    name = experiment.figure_as or experiment.figure
    if os.path.exists(source):
      shutil.copyfile(source, os.path.join(figures_dir, name))
      figures[name] = (
        f'`{experiment.spec}`, seed {seed}: `{record["command"]}` writes '
        f'`DIR/{experiment.figure}`.'
      )
  if experiment.spec == LEARNING_CURVE_FROM:
    drawn = subprocess.run(
      [sys.executable, '-m', 'lstm_flax.plot', workdir],
      capture_output=True,
      text=True,
      check=False,
    )
    source = os.path.join(workdir, 'learning_curve.png')
    if drawn.returncode == 0 and os.path.exists(source):
      shutil.copyfile(source, os.path.join(figures_dir, 'learning_curve.png'))
      figures['learning_curve.png'] = (
        f'`{experiment.spec}`, training loss (mean over the seeds): '
        f'`{record["command"]}`, then `python -m lstm_flax.plot DIR` writes '
        f'`DIR/learning_curve.png`.'
      )
  record = {**record, 'figures': figures}
  write_record(workdir, record)
  return record


def cpu_model() -> str:
  try:
    with open('/proc/cpuinfo') as f:
      for line in f:
        if line.startswith('model name'):
          return line.split(':', 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or platform.machine()


def environment(records: Dict[str, dict]) -> dict:
  """Package versions, CPU model, core count and the runs' backend."""
  versions = {}
  for name in PACKAGES:
    try:
      versions[name] = importlib.metadata.version(name.replace('_', '-'))
    except importlib.metadata.PackageNotFoundError:
      continue
  backends = sorted(
    {
      f'{r["results"].get("platform", "?")} × '
      f'{r["results"].get("num_devices", "?")}'
      for r in records.values()
    }
  )
  return {
    'cpu': cpu_model(),
    'cores': os.cpu_count(),
    'backend': ', '.join(backends) or '?',
    'note': _NOTE.value,
    'python': platform.python_version(),
    'versions': versions,
  }


def update_block(path: str, block: str) -> bool:
  """Rewrites the results block of the file at ``path``; True if it changed."""
  with open(path) as f:
    text = f.read()
  new = rewrite_block(text, block)
  if new != text:
    with open(path, 'w') as f:
      f.write(new)
  return new != text


_CONFIGS = flags.DEFINE_list(
  'configs',
  None,
  'Configs to train (specs of EXPERIMENTS, e.g. '
  'vanilla,bidirectional:forward); default: all.  The other rows come from '
  'earlier runs kept in --runs_dir.',
)
_NUM_SEEDS = flags.DEFINE_integer(
  'num_seeds',
  None,
  "Seeds per config; default: each config's own "
  '(EXPERIMENTS: 20 where quick, 5 for cnn_lstm and stacked_best, else 10).',
)
_OUT = flags.DEFINE_string('out', 'docs/results.md', 'The results page.')
_README = flags.DEFINE_string(
  'readme',
  'README.md',
  "File whose results block gets the experiments table ('' = none).",
)
_EXPERIMENTS_DOC = flags.DEFINE_string(
  'experiments',
  'docs/experiments.md',
  "File whose results block gets every metric of every config ('' = none).",
)
_RUNS_DIR = flags.DEFINE_string(
  'runs_dir',
  os.path.join(tempfile.gettempdir(), 'lstm_flax_report'),
  'Where each config trains (<runs_dir>/<config>, emptied first).',
)
_TRAIN = flags.DEFINE_bool(
  'train',
  True,
  'Train the selected configs; --notrain only copies the '
  'figures and rewrites the docs from the runs kept in --runs_dir.',
)
_NOTE = flags.DEFINE_string(
  'note',
  '',
  'A remark on the machine for results.md (e.g. what else ran on it).',
)
_OVERRIDE = flags.DEFINE_multi_string(
  'override',
  [],
  'A config override for every run, FIELD=VALUE (e.g. '
  'train.steps=50); repeatable.  For quick checks: the numbers are then '
  "not the configs'.",
)


def selected(names: Optional[Sequence[str]]) -> List[Experiment]:
  """The experiments ``--configs`` names (all available ones by default)."""
  if not names:
    return [e for e in EXPERIMENTS if available(e)]
  unknown = [n for n in names if n not in BY_SPEC]
  if unknown:
    raise app.UsageError(
      f'--configs: unknown {unknown}; use some of '
      f'{[e.spec for e in EXPERIMENTS]}'
    )
  missing = [n for n in names if not available(BY_SPEC[n])]
  if missing:
    raise app.UsageError(
      f'--configs: {missing} need(s) '
      f'{[BY_SPEC[n].requires for n in missing]}, not '
      f'installed'
    )
  return [BY_SPEC[n] for n in names]


def train_all(
  experiments: Sequence[Experiment], runs_dir: str, figures_dir: str
) -> List[str]:
  """Runs each experiment, copies its figures; returns the failures."""
  failed = []
  for e in experiments:
    n = _NUM_SEEDS.value or e.num_seeds
    print(f'{e.spec}: training {n} seeds in {runs_dir}', flush=True)
    try:
      record = run_experiment(e, n, runs_dir, _OVERRIDE.value)
    except (RuntimeError, OSError, ValueError) as error:
      print(f'error: {error}', file=sys.stderr, flush=True)
      failed.append(e.spec)
      continue
    copy_figures(e, record, figures_dir)
    print(
      f'{e.spec}: {headline(e, record["results"])} over {n} seeds, '
      f'{fmt_seconds(record["wall_seconds"])}',
      flush=True,
    )
  return failed


def recopy_figures(
  experiments: Sequence[Experiment], runs_dir: str, figures_dir: str
) -> List[str]:
  """--notrain: the figures again from the kept workdirs; no failures."""
  records = read_records(runs_dir)
  for e in experiments:
    if e.spec in records and os.path.isdir(records[e.spec]['workdir']):
      copy_figures(e, records[e.spec], figures_dir)
  return []


def write_docs(records: Dict[str, dict], figures_dir: str):
  with open(_OUT.value, 'w') as f:
    f.write(results_markdown(records, environment(records), figures_dir))
  print(f'wrote {_OUT.value}')
  blocks = (
    (_README.value, readme_block(records)),
    (_EXPERIMENTS_DOC.value, experiments_block(records)),
  )
  for path, block in blocks:
    if path:
      changed = update_block(path, block)
      print(f'{"rewrote" if changed else "unchanged"}: results block of {path}')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments {argv[1:]}')
  experiments = selected(_CONFIGS.value)
  runs_dir = os.path.abspath(_RUNS_DIR.value)
  figures_dir = os.path.dirname(os.path.abspath(_OUT.value))
  os.makedirs(runs_dir, exist_ok=True)
  os.makedirs(figures_dir, exist_ok=True)
  start = time.perf_counter()
  if _TRAIN.value:
    failed = train_all(experiments, runs_dir, figures_dir)
  else:
    failed = recopy_figures(experiments, runs_dir, figures_dir)
  records = read_records(runs_dir)
  if not records:
    print('error: no run to report', file=sys.stderr)
    return 1
  write_docs(records, figures_dir)
  if _TRAIN.value:
    print(
      f'report: {len(experiments) - len(failed)} of {len(experiments)} '
      f'configs trained in {fmt_seconds(time.perf_counter() - start)}'
    )
  return 1 if failed else 0


if __name__ == '__main__':
  app.run(main)
