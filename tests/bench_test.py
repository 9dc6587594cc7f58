"""Smoke test: the throughput benchmark runs end to end at tiny sizes."""

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_throughput_benchmark_prints_a_ratio_row():
  proc = subprocess.run(
      [sys.executable, os.path.join(ROOT, 'bench', 'throughput.py'),
       '--models=echo', '--batch_sizes=2', '--repeats=1', '--seconds=0.01'],
      capture_output=True, text=True, timeout=300, cwd=ROOT,
      env={**os.environ, 'JAX_PLATFORMS': 'cpu'})
  assert proc.returncode == 0, proc.stderr[-3000:]
  rows = [l for l in proc.stdout.splitlines() if l.startswith('echo ')]
  assert len(rows) == 1
  ratio = float(rows[0].split('|')[3].strip().rstrip('x'))
  assert ratio > 0


def test_end_to_end_benchmark_prints_both_tables():
  proc = subprocess.run(
      [sys.executable, os.path.join(ROOT, 'bench', 'end_to_end.py'),
       '--models=echo', '--repeats=1', '--steps=5', '--num_seeds=2'],
      capture_output=True, text=True, timeout=600, cwd=ROOT,
      env={**os.environ, 'JAX_PLATFORMS': 'cpu'})
  assert proc.returncode == 0, proc.stderr[-3000:]
  row = next(l for l in proc.stdout.splitlines() if l.startswith('| echo |'))
  cells = [c.strip() for c in row.split('|')[1:-1]]
  assert float(cells[4].rstrip('x')) > 0   # plain / lstm_flax, cold cache
  assert '| num_seeds=2, one program |' in proc.stdout
