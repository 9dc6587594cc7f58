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
