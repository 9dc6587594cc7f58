"""lstm_flax.report: statistics and formatting on fake results, the marked
blocks rewritten in place, and one real tiny run of the command."""

import json
import os
import subprocess
import sys

import pytest

from lstm_flax import cli
from lstm_flax import report

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PER_SEED = [0.443, 0.439, 0.463, 0.496, 0.453]


def fake_results(values, metric='accuracy', seed=0, **extra):
  per_seed = [{metric: v, 'loss': 1.0 + v} for v in values]
  return {
    'config': 'x',
    'task': 'echo',
    'steps': 2000,
    'batch_size': 1,
    'seed': seed,
    'seeds': list(range(seed, seed + len(values))),
    'eval': {'num_examples': 1000, metric: sum(values) / len(values)},
    'eval_per_seed': per_seed,
    'eval_ensemble': {metric: 0.5},
    'train_seconds': 1.5,
    'compile_seconds': 7.25,
    'platform': 'cpu',
    'num_devices': 1,
    **extra,
  }


def fake_record(spec, values, metric='accuracy', wall=12.0):
  return {
    'spec': spec,
    'workdir': '/nowhere',
    'wall_seconds': wall,
    'command': report.command(spec, len(values)),
    'results': fake_results(values, metric),
  }


def test_seed_summary_median_quartiles_range():
  s = report.seed_summary(PER_SEED)
  # sorted: 0.439 0.443 0.453 0.463 0.496
  assert s['median'] == pytest.approx(0.453)
  assert s['q1'] == pytest.approx(0.443)
  assert s['q3'] == pytest.approx(0.463)
  assert (s['min'], s['max'], s['n']) == (0.439, 0.496, 5)
  assert report.seed_summary([1.0, 2.0])['q1'] == pytest.approx(1.25)


def test_per_seed_values_single_seed_falls_back_to_eval():
  one = {'eval': {'mae': 0.02, 'num_examples': 1000}, 'seed': 3}
  assert report.per_seed_values(one, 'mae') == [0.02]
  assert report.seeds_of(one) == [3]
  assert report.per_seed_values(fake_results(PER_SEED), 'accuracy') == PER_SEED


def test_number_formats():
  assert report.fmt(1.0) == '1.0'
  assert report.fmt(0.00037123) == '0.0003712'
  assert report.fmt(0.4765) == '0.4765'
  assert report.fmt_range({'min': 1.0, 'max': 1.0}) == '1.0'
  assert report.fmt_seeds(range(20)) == '0–19'
  assert report.fmt_seeds([0, 1]) == '0, 1'
  assert report.fmt_seconds(4.26) == '4.3 s'
  assert report.fmt_seconds(158.4) == '2 min 38 s'


def test_headline_and_metric_rows():
  vanilla = report.BY_SPEC['vanilla']
  results = fake_results(PER_SEED)
  assert report.headline(vanilla, results) == 'accuracy 0.453 [0.439–0.496]'
  (row,) = report.metric_rows(vanilla, results)
  assert row == ['accuracy', '0.453', '0.443–0.463', '0.439–0.496', '0.5']


def test_blocks_and_page_from_fake_records(tmp_path):
  records = {
    'vanilla_fast': fake_record('vanilla_fast', [1.0] * 20),
    'vanilla': fake_record('vanilla', PER_SEED),
  }
  block = report.readme_block(records)
  rows = [l for l in block.splitlines() if l.startswith('| `')]
  assert len(rows) == 2 and rows[0].startswith('| `vanilla` (default)')
  assert 'accuracy 0.453 [0.439–0.496] (5 seeds) | 12 s |' in rows[0]
  assert 'accuracy 1.0 [1.0] (20 seeds)' in rows[1]
  claims = report.claims_table(records)
  assert '0 of 5 seeds at accuracy ≥ 1.0' in claims
  assert '20 of 20 seeds at accuracy ≥ 1.0' in claims
  assert '`stacked`: not run' in claims
  env = {
    'cpu': 'Some CPU',
    'cores': 2,
    'backend': 'cpu × 1',
    'python': '3.11',
    'versions': {'jax': '0.0'},
  }
  page = report.results_markdown(records, env, str(tmp_path))
  assert '- machine: Some CPU, 2 cores; backend cpu × 1' in page
  assert '5 seeds (0–4)' in page
  assert 'accuracy per seed: 0.443, 0.439, 0.463, 0.496, 0.453.' in page
  assert report.command('vanilla', 5) in page
  assert '## Figures' not in page  # no figure was copied
  table = report.experiments_block(records)
  assert (
    '| `vanilla` | accuracy | 0.453 | 0.443–0.463 | 0.439–0.496 | 0–4 |'
  ) in table


def test_claim_on_a_smaller_test_set():
  """The seed scored 100 examples: the chance that 100 are all right."""
  records = {'cnn_lstm': fake_record('cnn_lstm', [0.99, 0.996, 0.998])}
  table = report.claims_table(records)
  assert '`cnn_lstm`: accuracy 0.996 [0.99–0.998]; 0 of 3 seeds' in table
  assert f'all right with probability {0.996**100:.2f}' in table
  assert 'clipped to global norm 1): the run beside' in table


def test_paired_line_counts_seeds_ahead():
  records = {
    'bidirectional': fake_record('bidirectional', [0.99, 0.98, 0.97]),
    'bidirectional:forward': fake_record(
      'bidirectional:forward', [0.98, 0.98, 0.99]
    ),
  }
  line = report.paired_line(
    records, 'bidirectional', 'bidirectional:forward', 'accuracy'
  )
  assert (
    'ahead of `bidirectional:forward` on per-step accuracy on 1 of 3 '
    'seeds, level on 1' in line
  )


def test_baselines_beside_the_model():
  record = fake_record('sunspots', [250.0, 220.0, 350.0], metric='mse')
  record['results']['eval_ensemble'] = {'mse': 240.0, 'mae': 11.0}
  record['results']['baselines'] = {
    'linear_ar': {'mse': 260.0, 'mae': 12.0, 'mase': 0.5},
    'persistence': {'mse': 400.0, 'mae': 15.0, 'mase': 0.7},
  }
  text = report.experiments_block({'sunspots': record})
  assert '| `sunspots`, median of 3 seeds | 250.0 | – | – |' in text
  assert '| `sunspots`, ensemble of the seeds | 240.0 | 11.0 | – |' in text
  assert '| baseline: linear AR | 260.0 | 12.0 | 0.5 |' in text
  assert '| baseline: persistence | 400.0 | 15.0 | 0.7 |' in text


def test_rewrite_block_is_idempotent_and_keeps_the_rest():
  text = (
    '# Title\n\nbefore ✓\n'
    + report.BEGIN
    + '\nold table\n'
    + report.END
    + '\n<!-- TODO: keep me -->\nafter\n'
  )
  once = report.rewrite_block(text, '| new | table |\n')
  twice = report.rewrite_block(once, '| new | table |')
  assert once == twice
  head, tail = text.split(report.BEGIN)[0], text.split(report.END)[1]
  assert once.startswith(head + report.BEGIN + '\n| new | table |\n')
  assert once.endswith(report.END + tail)
  with pytest.raises(ValueError, match='results:begin'):
    report.rewrite_block('no markers here', 'x')


def test_every_experiment_is_a_packaged_config():
  for e in report.EXPERIMENTS:
    config = cli.config_from_spec(e.spec)
    assert config.name, e.spec
    assert e.num_seeds in (5, 10, 20)
  for claim in report.CLAIMS:
    assert claim.protocol in report.BY_SPEC and claim.reaches in report.BY_SPEC


def test_fresh_workdir_refuses_a_foreign_directory(tmp_path):
  (tmp_path / 'vanilla').mkdir()
  (tmp_path / 'vanilla' / 'notes.txt').write_text('mine')
  with pytest.raises(ValueError, match='holds no run'):
    report.fresh_workdir(str(tmp_path), 'vanilla')
  (tmp_path / 'stacked').mkdir()
  (tmp_path / 'stacked' / 'train.log').write_text('')
  path = report.fresh_workdir(str(tmp_path), 'stacked')
  assert os.listdir(path) == ['train.log']  # the report's mark


def test_report_command_tiny_real_run(tmp_path):
  """--configs=vanilla --num_seeds=2 with 20 steps: results.md from the run,
  the README's block rewritten and nothing else of it touched."""
  with open(os.path.join(REPO, 'README.md')) as f:
    original = f.read()
  readme = tmp_path / 'README.md'
  readme.write_text(original)
  out, runs = tmp_path / 'docs' / 'results.md', tmp_path / 'runs'
  argv = [
    sys.executable,
    '-m',
    'lstm_flax.report',
    '--configs=vanilla',
    '--num_seeds=2',
    '--override=train.steps=20',
    '--override=train.steps_per_call=10',
    f'--out={out}',
    f'--readme={readme}',
    '--experiments=',
    f'--runs_dir={runs}',
  ]
  done = subprocess.run(
    argv, cwd=REPO, capture_output=True, text=True, check=False
  )
  assert done.returncode == 0, done.stderr[-3000:]
  with open(runs / 'vanilla' / 'results.json') as f:
    results = json.load(f)
  assert results['seeds'] == [0, 1] and results['steps'] == 20
  page = out.read_text()
  values = [report.fmt(r['accuracy']) for r in results['eval_per_seed']]
  assert f'accuracy per seed: {", ".join(values)}.' in page
  assert '--config.train.steps=20' in page and 'jax ' in page
  new = readme.read_text()
  assert new.split(report.BEGIN)[0] == original.split(report.BEGIN)[0]
  assert new.split(report.END)[1] == original.split(report.END)[1]
  assert '| `vanilla` (default) |' in new and '(2 seeds)' in new
  again = subprocess.run(
    argv[:-1] + ['--notrain', f'--runs_dir={runs}'],
    cwd=REPO,
    capture_output=True,
    text=True,
    check=False,
  )
  assert again.returncode == 0, again.stderr[-3000:]
  assert readme.read_text() == new and out.read_text() == page
