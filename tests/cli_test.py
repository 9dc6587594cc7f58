"""The command line (lstm_flax/cli.py, `python train.py`, `lstm-flax`).

Every bad input ends in one line on stderr and a non-zero exit, before
anything compiles; the subprocesses that train run 2 steps.
"""

import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile

import pytest

from lstm_flax import cli
from lstm_flax import config_files

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = (
  '--config.train.steps=2',
  '--config.train.steps_per_call=2',
  '--config.eval.num_examples=10',
  '--config.eval.batch_size=10',
  '--config.eval.figure_examples=0',
)
LONG_NAME = 'echo_' + 'x' * 295  # 300 characters


def _run(*args, cwd=ROOT, env=None, user=None, timeout=300):
  return subprocess.run(
    [
      sys.executable,
      os.path.join(ROOT, 'train.py'),
      *args,
      '--compilation_cache_dir=',
    ],
    capture_output=True,
    text=True,
    cwd=cwd,
    timeout=timeout,
    user=user,
    env={**os.environ, 'JAX_PLATFORMS': 'cpu', **(env or {})},
  )


def _one_line_error(proc, code, *expected):
  """The process failed with ``code`` and said so in one line."""
  lines = proc.stderr.strip().splitlines()
  assert proc.returncode == code, proc.stderr[-3000:]
  assert 'Traceback' not in proc.stderr, proc.stderr[-3000:]
  assert lines and lines[-1].startswith('error: '), proc.stderr[-3000:]
  for text in expected:
    assert text in lines[-1], lines[-1]
  return lines


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
  """A 2-step run of vanilla named LONG_NAME, trained without --workdir (the
  quickstart): (the process, its workdir)."""
  tmp = tmp_path_factory.mktemp('quickstart')
  proc = _run(
    '--config=vanilla',
    f'--config.name={LONG_NAME}',
    *TINY,
    env={'TMPDIR': str(tmp)},
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  said = [l for l in proc.stdout.splitlines() if ': writing to ' in l]
  assert len(said) == 1, proc.stdout
  workdir = said[0].split(': writing to ', 1)[1].split(' (')[0]
  return proc, workdir


# --- configs by name, the installed package, --help and fields ---------------


def test_a_packaged_name_and_a_path_load_the_same_config():
  by_name = cli.config_from_spec('vanilla')
  by_path = cli.config_from_spec(os.path.join(ROOT, 'configs', 'vanilla.py'))
  assert by_name.to_dict() == by_path.to_dict()
  assert cli.config_from_spec('vanilla.py').name == 'vanilla'
  # A config that imports another (from lstm_flax.configs import ...).
  assert cli.config_from_spec('stacked_best').name == 'stacked_best'
  assert cli.config_from_spec('vanilla_fast').train.steps == 300
  forward = cli.config_from_spec('bidirectional:forward')
  assert forward.model.bidirectional is False
  assert {'vanilla', 'stacked', 'cnn_lstm', 'stacked_best'} <= set(
    cli.packaged_config_names()
  )


def test_help_lists_the_packaged_configs_and_the_exit_codes():
  proc = _run('--help')
  assert 'vanilla_fast' in proc.stdout and 'stacked_best' in proc.stdout
  assert '--config.train.steps=abc' in proc.stdout  # exit 2
  assert 'lstm-flax fields' in proc.stdout and '--checkpoint' in proc.stdout


def test_field_meanings_come_from_the_config_comments():
  source = (
    'c = base()\n'
    'c.train.steps = 1000             # optimizer updates\n'
    'c.model.unroll = 0               # steps per iteration;\n'
    '                                 # 0: auto\n'
    '# XLA options of the train program.  More words here.\n'
    'c.train.xla_options = dict(\n'
    '    a=1)\n'
    'c.seed = 0\n'
  )
  assert config_files.field_meanings(source) == {
    'train.steps': 'optimizer updates',
    'model.unroll': 'steps per iteration; 0: auto',
    'train.xla_options': 'XLA options of the train program.',
  }


def test_fields_lists_every_field_with_its_value_and_meaning():
  config = cli.config_from_spec('stacked')
  text = cli.describe_fields(config)
  for path, value in config_files.leaves(config):
    assert f'config.{path} = {value!r}' in text
  assert 'config.train.steps = 1000' in text and '# optimizer updates' in text
  assert '[default: (25,)]' in text  # stacked's layer_sizes
  assert "an option of the 'damped_sine' task" in text  # task.length & co.
  proc = _run('--config=stacked', 'fields', '--config.train.steps=7')
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert 'config.train.steps = 7 ' in proc.stdout


def test_default_workdir_is_new_per_run_and_short_for_long_names():
  path = cli.default_workdir(LONG_NAME, now=0)
  assert os.path.dirname(path) == os.path.join(
    tempfile.gettempdir(), 'lstm_flax'
  )
  name = os.path.basename(path)
  assert len(name) < 70 and name.startswith('echo_xxx')
  assert cli.default_workdir(LONG_NAME + 'y', now=0) != path  # a hash
  assert cli.default_workdir('a/b c', now=0).endswith('a_b_c-' + name[-15:])


def test_metrics_are_rounded_in_the_console_line():
  assert cli.format_metrics(
    {
      'num_examples': 1000,
      'accuracy': 0.44300001859664917,
      'loss': 1.2345678e-5,
    }
  ) == ('accuracy=0.443 loss=1.235e-05')


def test_plot_draws_the_learning_curve(trained, tmp_path):
  _, workdir = trained
  proc = _run('plot', workdir)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert os.path.exists(os.path.join(workdir, 'learning_curve.png'))
  proc = _run('--mode=plot', f'--workdir={tmp_path}')  # not a run's workdir
  assert proc.returncode == 2 and 'metrics.jsonl' in proc.stderr


# --- the workdir knows its config --------------------------------------------


def test_quickstart_writes_to_a_new_directory_and_says_where(trained):
  proc, workdir = trained
  assert os.path.isdir(workdir) and len(os.path.basename(workdir)) < 70
  results = json.loads(open(os.path.join(workdir, 'results.json')).read())
  assert results['config'] == LONG_NAME and results['steps'] == 2
  last = proc.stdout.strip().splitlines()[-1]
  assert last.endswith(os.path.join(workdir, 'results.json'))
  assert 'Unable to initialize backend' not in proc.stderr
  assert '0.44300001859664917' not in last and 'accuracy=' in last


def test_a_finished_run_says_so_and_trains_nothing(trained):
  _, workdir = trained
  before = os.path.getmtime(os.path.join(workdir, 'results.json'))
  proc = _run(
    '--config=vanilla',
    f'--config.name={LONG_NAME}',
    *TINY,
    f'--workdir={workdir}',
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  lines = proc.stdout.strip().splitlines()
  assert len(lines) == 1 and 'already trained for 2 steps' in lines[0]
  assert os.path.join(workdir, 'results.json') in lines[0]
  assert os.path.getmtime(os.path.join(workdir, 'results.json')) == before


def test_eval_without_config_uses_the_workdirs_config(trained, tmp_path):
  _, workdir = trained
  proc = _run('eval', f'--workdir={workdir}', cwd=tmp_path)
  assert proc.returncode == 0, proc.stderr[-3000:]
  evaluated = json.loads(open(os.path.join(workdir, 'eval.json')).read())
  assert evaluated['step'] == 2 and evaluated['config'] == LONG_NAME
  assert evaluated['eval']['num_examples'] == 10  # config.json's, not 1000


@pytest.mark.parametrize(
  'args,field',
  [
    (
      ['--config=vanilla', '--config.model.layer_sizes=(7,)'],
      'model.layer_sizes',
    ),
    (['--config.task.out_index=4'], 'task.out_index'),
    (['--config=stacked'], 'model.layer_sizes'),
  ],
)
def test_eval_and_predict_refuse_a_config_of_another_model(
  trained, args, field
):
  _, workdir = trained
  for mode in ('eval', 'predict'):
    proc = _run(f'--mode={mode}', f'--workdir={workdir}', *args)
    _one_line_error(proc, 2, 'differs from the one', field)


def test_checkpoint_flag_is_checked_before_compiling(trained):
  _, workdir = trained
  _one_line_error(
    _run('eval', f'--workdir={workdir}', '--checkpoint=soon'),
    2,
    'latest, best or a step number',
  )
  _one_line_error(
    _run('eval', f'--workdir={workdir}', '--checkpoint=best'),
    1,
    'best checkpoint is kept when config.eval.every_steps > 0',
  )


def test_eval_needs_a_checkpoint(tmp_path):
  proc = _run('eval', f'--workdir={tmp_path}')
  _one_line_error(proc, 2, 'needs a checkpoint')


# --- one line instead of a traceback -------------------------------------------


def test_predict_out_in_a_missing_directory_fails_before_predicting(
  trained, tmp_path
):
  _, workdir = trained
  out = tmp_path / 'missing' / 'predictions.json'
  proc = _run('predict', f'--workdir={workdir}', f'--predict_out={out}')
  _one_line_error(proc, 2, 'does not exist')
  assert 'sequence:' not in proc.stdout  # nothing was predicted
  assert os.listdir(tmp_path) == []  # no stray temp file


def test_workdir_that_is_a_file(tmp_path):
  path = tmp_path / 'file'
  path.write_text('not a folder')
  _one_line_error(_run(f'--workdir={path}', *TINY), 2, 'is a file')
  assert path.read_text() == 'not a folder'


def test_read_only_workdir(tmp_path):
  workdir = tmp_path / 'read_only'
  workdir.mkdir()
  workdir.chmod(stat.S_IRUSR | stat.S_IXUSR)
  try:
    # Root ignores the mode bits; /proc/1 is a folder not even root may write.
    candidates = [str(workdir), '/proc/1']
    read_only = next(
      (c for c in candidates if os.path.isdir(c) and not os.access(c, os.W_OK)),
      None,
    )
    if read_only is None:
      pytest.skip('no folder here is read-only to this user')
    before = sorted(os.listdir(read_only))
    _one_line_error(_run(f'--workdir={read_only}', *TINY), 2, 'not writable')
    assert sorted(os.listdir(read_only)) == before
  finally:
    workdir.chmod(stat.S_IRWXU)


def test_eval_in_a_read_only_workdir_is_refused_before_compiling(
  trained, tmp_path
):
  _, workdir = trained
  copy = tmp_path / 'copy'
  shutil.copytree(workdir, copy)
  for folder, _, _ in os.walk(copy):
    os.chmod(folder, stat.S_IRUSR | stat.S_IXUSR)
  try:
    if os.access(copy, os.W_OK):
      pytest.skip('permissions are not enforced for this user (root)')
    _one_line_error(
      _run('eval', f'--workdir={copy}'), 2, 'not writable', 'eval.json'
    )
  finally:
    for folder, _, _ in os.walk(copy):
      os.chmod(folder, stat.S_IRWXU)


@pytest.mark.parametrize(
  'args,field',
  [
    (['--config.model.layer_sizes=(1000000,)'], 'config.model.layer_sizes'),
    (['--config.train.batch_size=1000000000'], 'config.train.batch_size'),
    (
      [
        '--config.eval.batch_size=1000000000',
        '--config.eval.num_examples=1000000000',
      ],
      'config.eval.batch_size',
    ),
  ],
)
def test_sizes_that_cannot_fit_are_refused_before_compiling(
  tmp_path, args, field
):
  proc = _run(f'--workdir={tmp_path}', *args, timeout=120)
  _one_line_error(proc, 2, 'GiB', f'lower {field}')
  assert not os.path.exists(tmp_path / 'checkpoints')


def test_a_workdir_in_use_is_refused_naming_the_holder(tmp_path):
  from lstm_flax import workdir as workdir_lib  # pylint: disable=g-import-not-at-top

  with workdir_lib.lock(str(tmp_path)):
    proc = _run(f'--workdir={tmp_path}', *TINY, '--overwrite')
  _one_line_error(proc, 1, f'pid {os.getpid()}')
  assert sorted(os.listdir(tmp_path)) == ['.lock']


def test_truncated_config_json(tmp_path):
  (tmp_path / 'config.json').write_text('{"name": "vanilla", "task": {"na')
  (tmp_path / 'results.json').write_text('{}')
  proc = _run(f'--workdir={tmp_path}', *TINY)  # train
  _one_line_error(proc, 1, 'config.json')
  os.makedirs(tmp_path / 'checkpoints' / '2')
  proc = _run('eval', f'--workdir={tmp_path}')  # no --config
  _one_line_error(proc, 2, 'config.json')


@pytest.mark.parametrize(
  'source,expected',
  [
    ('def get_config(:\n  pass\n', 'syntax error'),
    ('x = 1\n', 'defines no get_config()'),
    ('import no_such_module_anywhere\n', 'ModuleNotFoundError'),
    ('def get_config():\n  return {"a": 1}\n', 'not an ml_collections'),
  ],
)
def test_broken_config_files(tmp_path, source, expected):
  path = tmp_path / 'bad.py'
  path.write_text(source)
  lines = _one_line_error(
    _run(f'--config={path}', f'--workdir={tmp_path}/w'), 2, expected, 'bad.py'
  )
  assert len(lines) == 1
  assert not os.path.exists(tmp_path / 'w')


@pytest.mark.parametrize(
  'args,code,expected',
  [
    (
      ['--config=configs/vanilla.py:nonexistent_variant'],
      2,
      'takes no variant',
    ),
    (
      ['--config=bidirectional:nonexistent_variant'],
      2,
      "use 'bidirectional' or 'forward'",
    ),
    (['--config=nope'], 2, 'packaged configs: '),
    (['--config.no_such_field=1'], 2, "config has no field 'no_such_field'"),
    (
      ['--config=vanilla', '--config.no_such_field=1'],
      2,
      "config has no field 'no_such_field'",
    ),
    (['--config=stacked', '--config.train.stpes=3'], 2, 'Did you mean "steps"'),
    (
      ['--config.train.steps=abc'],
      2,
      "--config.train.steps=abc: invalid literal for int() with base 10: 'abc'",
    ),
    (['--wrkdir=/tmp/x'], 2, 'Unknown command line flag'),
    (['--config=vanilla', 'stray'], 2, 'unexpected arguments'),
  ],
)
def test_bad_command_lines_are_one_line(tmp_path, args, code, expected):
  proc = _run(*args, f'--workdir={tmp_path}/w')
  assert len(_one_line_error(proc, code, expected)) == 1
  assert not os.path.exists(tmp_path / 'w')
