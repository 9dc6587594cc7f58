"""The README's quoted outputs, run: a claim that drifts from the code fails.

The quickstart (`python train.py`), `--mode=predict` on its workdir, the
vanilla_fast claim and the quoted error messages are run as a user would
(subprocesses of train.py) and compared with the lines the README quotes:
messages exactly, numbers within the tolerances in TOLERANCES.  The interop
snippets of docs/interop.md are run by tests/interop_test.py.
"""

import ast
import dataclasses
import json
import math
import os
import re
import shlex
import subprocess
import sys

import pytest

from lstm_flax import lstm

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(REPO, 'README.md')

# The text just before a number in a quoted line -> (kind, tolerance); any
# other number must be equal.  None: a timing, any value.
TOLERANCES = {
  'loss ': ('rel', 0.05),  # training loss, mean of a 100-step window
  'loss=': ('rel', 0.05),  # held-out loss on 1,000 examples
  'accuracy=': ('abs', 0.02),  # held-out accuracy on 1,000 examples
  '(train ': None,  # seconds of training
}
_NUMBER = r'[-+]?\d+(?:\.\d+)?(?:e[-+]?\d+)?'
_PLACEHOLDERS = {'<date>': r'\d{8}', '<time>': r'\d{6}(?:-\d+)?', '...': '.*'}


def readme() -> str:
  with open(README) as f:
    return f.read()


def code_block_after(text: str, marker: str) -> str:
  """The body of the first ``` block that starts after ``marker``."""
  start = text.index(marker)
  match = re.search(r'```[a-z]*\n(.*?)```', text[start:], re.S)
  return match.group(1)


def quoted_pattern(line: str):
  """(regex of the quoted ``line`` with its numbers captured, [(number,
  text before it)])."""
  parts = re.split(r'(<date>|<time>|\.\.\.|' + _NUMBER + ')', line)
  pattern, numbers, before = '', [], ''
  for i, part in enumerate(parts):
    if i % 2 == 0:
      pattern += re.escape(part)
    elif part in _PLACEHOLDERS:
      pattern += _PLACEHOLDERS[part]
    else:
      pattern += f'({_NUMBER})'
      numbers.append((part, before))
    before += part
  return pattern, numbers


def tolerance(before: str):
  keys = [k for k in TOLERANCES if before.endswith(k)]
  return TOLERANCES[max(keys, key=len)] if keys else ('abs', 0.0)


def number_mismatch(numbers, values):
  """'' if each printed value is within its tolerance of the quoted number,
  else what differs."""
  for (want, before), value in zip(numbers, values):
    allowed = tolerance(before)
    if allowed is None:
      continue
    kind, tol = allowed
    limit = tol * abs(float(want)) if kind == 'rel' else tol
    if not math.isclose(
      float(value), float(want), rel_tol=0, abs_tol=limit + 1e-12
    ):
      return f'{value} vs {want}, tolerance {kind} {tol}'
  return ''


def check_quoted_line(quoted: str, output: str):
  """``quoted`` matches a line of ``output`` (log prefixes allowed) with each
  number within its tolerance."""
  pattern, numbers = quoted_pattern(quoted)
  matches = [
    m
    for m in (re.search(pattern + '$', line) for line in output.splitlines())
    if m
  ]
  assert matches, f'README quotes {quoted!r}; not printed. Output:\n{output}'
  problems = [(m.string, number_mismatch(numbers, m.groups())) for m in matches]
  assert any(not p for _, p in problems), (
    f'README quotes {quoted!r}; the code prints {problems}'
  )


def run(command: str, env=None) -> subprocess.CompletedProcess:
  """A README command line ('python train.py ...') run from the repository."""
  argv = shlex.split(command)
  argv = [sys.executable if a == 'python' else a for a in argv]
  return subprocess.run(
    argv, cwd=REPO, capture_output=True, text=True, env=env, check=False
  )


@pytest.fixture(scope='module')
def quickstart(tmp_path_factory):
  """`python train.py` as the README runs it, with the temp dir in tmp_path
  so that its default workdir lands there: (output, workdir, tmp dir)."""
  tmp = str(tmp_path_factory.mktemp('quickstart'))
  done = run('python train.py', env={**os.environ, 'TMPDIR': tmp})
  assert done.returncode == 0, done.stderr[-2000:]
  root = os.path.join(tmp, 'lstm_flax')
  (name,) = os.listdir(root)
  return done.stdout + done.stderr, os.path.join(root, name), tmp


def test_quickstart_prints_the_quoted_lines(quickstart):
  output, workdir, tmp = quickstart
  block = code_block_after(readme(), '## What the quickstart prints')
  lines = [l for l in block.splitlines() if l.strip()]
  assert len(lines) >= 3
  for line in lines:
    check_quoted_line(line.replace('/tmp/', tmp.rstrip('/') + '/'), output)
  with open(os.path.join(workdir, 'results.json')) as f:
    accuracy = json.load(f)['eval']['accuracy']
  # The README: "0.44 is the expected result" of the seed's protocol, seed 0.
  assert abs(accuracy - 0.44) <= 0.02


def test_predict_prints_the_quoted_line(quickstart):
  _, workdir, _ = quickstart
  block = code_block_after(readme(), 'prints one line per held-out example')
  command, quoted = [l for l in block.splitlines() if l.strip()][:2]
  assert command.startswith('$ python train.py --mode=predict --workdir=')
  done = run(f'python train.py --mode=predict --workdir={workdir}')
  assert done.returncode == 0, done.stderr[-2000:]
  assert done.stdout.splitlines()[0] == quoted  # data and prediction: exact


def test_vanilla_fast_claims(tmp_path):
  """'accuracy 1.0' (seed 0 here; every seed: the report) and, on the
  predict example, 'trained with vanilla_fast.py it predicts 5'."""
  text = readme()
  assert '--config=configs/vanilla_fast.py   # accuracy 1.0' in text
  claim = re.search(r'trained with `vanilla_fast.py` it predicts (\d+)', text)
  workdir = str(tmp_path / 'fast')
  done = run(
    f'python train.py --config=configs/vanilla_fast.py --workdir={workdir}'
  )
  assert done.returncode == 0, done.stderr[-2000:]
  with open(os.path.join(workdir, 'results.json')) as f:
    assert json.load(f)['eval']['accuracy'] == 1.0
  done = run(f'python train.py --mode=predict --workdir={workdir}')
  assert done.returncode == 0, done.stderr[-2000:]
  assert done.stdout.splitlines()[0].endswith(f'predicted: {claim.group(1)}')


def quoted_errors():
  """[(command, the error line it prints)] from the README's error block."""
  block = code_block_after(readme(), 'a bad one exits with status 2')
  pairs, command = [], None
  for line in block.splitlines():
    if line.startswith('$ '):
      command = line[2:]
    elif line.strip():
      pairs.append((command, line))
  return pairs


def test_quoted_error_messages_are_exact():
  pairs = quoted_errors()
  assert len(pairs) >= 2
  argvs = [
    [sys.executable if a == 'python' else a for a in shlex.split(c)]
    for c, _ in pairs
  ]
  running = [
    subprocess.Popen(
      a, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    for a in argvs
  ]
  for (command, message), process in zip(pairs, running):
    out, err = process.communicate()
    assert process.returncode == 2, (command, err)
    assert err.strip() == message, f'{command}:\n{err}'
    assert not out.strip()


def test_lstm_layer_signature_in_docs():
  """docs/lstm_layer.md's LSTM(...) call: every keyword is a field with that
  default."""
  with open(os.path.join(REPO, 'docs', 'lstm_layer.md')) as f:
    block = code_block_after(f.read(), '```python')
  text = ' '.join(block.split())
  assert text.startswith('lstm_flax.lstm.LSTM(units,')
  defaults = {f.name: f.default for f in dataclasses.fields(lstm.LSTM)}
  keywords = re.findall(r'(\w+)=([^,)]+)', text)
  assert len(keywords) >= 8
  assert 'units' in defaults
  for name, value in keywords:
    assert name in defaults, name
    default = ast.literal_eval(value)
    assert defaults[name] == default, (name, value, defaults[name])


@pytest.mark.parametrize(
  'quoted,printed,ok',
  [
    (
      'step 100/2000  loss 2.294  ...',
      'I0 x.py:1] step 100/2000  loss 2.3  lr',
      True,
    ),
    ('step 100/2000  loss 2.294  ...', 'step 100/2000  loss 2.6  lr', False),
    ('step 100/2000  loss 2.294  ...', 'step 200/2000  loss 2.294  lr', False),
    (
      'step 100/2000  loss 2.294  ...',
      'step 100/2000  loss 2.3  lr\nstep 2000/2000  loss 1.4  lr',
      True,
    ),
    ('x-<date>-<time> (train 0.3 s)', 'x-20261129-190400 (train 9.1 s)', True),
    ('error: a=7 is bad', 'error: a=7 is bad!', False),
  ],
)
def test_quoted_line_matcher(quoted, printed, ok):
  if ok:
    check_quoted_line(quoted, printed)
  else:
    with pytest.raises(AssertionError):
      check_quoted_line(quoted, printed)
