"""Smoke test: the throughput benchmark runs end to end at tiny sizes."""

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_throughput_benchmark_prints_a_ratio_row():
  proc = subprocess.run(
    [
      sys.executable,
      os.path.join(ROOT, 'bench', 'throughput.py'),
      '--models=echo',
      '--batch_sizes=2',
      '--repeats=1',
      '--seconds=0.01',
    ],
    capture_output=True,
    text=True,
    timeout=300,
    cwd=ROOT,
    env={**os.environ, 'JAX_PLATFORMS': 'cpu'},
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  rows = [l for l in proc.stdout.splitlines() if l.startswith('echo ')]
  assert len(rows) == 1
  ratio = float(rows[0].split('|')[3].strip().rstrip('x'))
  assert ratio > 0


def test_end_to_end_benchmark_prints_the_table():
  proc = subprocess.run(
    [
      sys.executable,
      os.path.join(ROOT, 'bench', 'end_to_end.py'),
      '--models=echo',
      '--repeats=1',
      '--steps=5',
      '--sections=e2e',
    ],
    capture_output=True,
    text=True,
    timeout=600,
    cwd=ROOT,
    env={**os.environ, 'JAX_PLATFORMS': 'cpu'},
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  row = next(l for l in proc.stdout.splitlines() if l.startswith('| echo |'))
  cells = [c.strip() for c in row.split('|')[1:-1]]
  assert float(cells[4].rstrip('x')) > 0  # plain / lstm_flax, cold cache
  assert float(cells[7].split('/')[0]) > 0  # peak RSS of our run, GB


def test_seeds_section_compares_one_program_with_sequential_runs(
  monkeypatch, capsys
):
  """The num_seeds table, with the processes replaced by fixed timings."""
  sys.path.insert(0, ROOT)
  from bench import end_to_end  # pylint: disable=g-import-not-at-top

  end_to_end.flags.FLAGS(['end_to_end', '--replicas=4', '--repeats=1'])

  def fake_ours(model, workdir, cache_dir, *flags):
    del workdir, cache_dir
    assert model == 'stacked'
    if '--config.num_seeds=4' in flags:
      stats = {'mean': 0.02, 'std': 0.001, 'min': 0.018, 'max': 0.021}
      return 20.0, 0.7, {'eval_stats': {'mae': stats}}
    return 10.0, 0.6, {}

  monkeypatch.setattr(end_to_end, 'ours', fake_ours)
  end_to_end.seeds('/unused')
  out = capsys.readouterr().out
  assert '| num_seeds=4, one program | 20.0 (20.0-20.0) | 2.00x |' in out
  assert '| 4 sequential runs | 40.0 (40.0-40.0) | 4.00x |' in out
  assert 'mae: mean 0.0200' in out
