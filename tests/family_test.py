"""The family experiments: addition (encoder-decoder), cumulative-sum threshold
(bidirectional), rectangles (generative) — generators, models, validation,
generation measures, tiny trainings; and, opt-in (LSTM_FLAX_RUN_SLOW=1),
the full configs to their targets."""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import bidirectional
from configs import generative
from configs import seq2seq_addition
from lstm_flax import data
from lstm_flax import experiment
from lstm_flax import generation
from lstm_flax import inference
from lstm_flax import models
from lstm_flax import train as train_lib
from lstm_flax import validation
from lstm_flax.lstm import LSTM

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUN_SLOW = os.environ.get('LSTM_FLAX_RUN_SLOW') == '1'
slow = pytest.mark.skipif(
  not RUN_SLOW, reason='full training; set LSTM_FLAX_RUN_SLOW=1 to run'
)


# --- generators ----------------------------------------------------------------


@pytest.mark.parametrize(
  'n_terms,max_value,input_width,answer_width',
  [(3, 10, 8, 2), (4, 999, 20, 5), (1, 7, 3, 2)],
)
def test_addition_strings_parse_to_numbers_in_range_and_their_sum(
  n_terms, max_value, input_width, answer_width
):
  options = dict(
    n_terms=n_terms,
    max_value=max_value,
    input_width=input_width,
    answer_width=answer_width,
  )
  inputs, targets = jax.jit(
    data.addition, static_argnums=1, static_argnames=tuple(options)
  )(jax.random.key(0), 500, **options)
  assert inputs.shape == (500, input_width, 12) and targets.shape == (
    500,
    answer_width,
  )
  np.testing.assert_array_equal(inputs.sum(-1), 1.0)  # one-hot
  seen = set()
  for question, answer in zip(
    data.decode_text(inputs), data.decode_text(targets)
  ):
    assert len(question) == input_width and len(answer) == answer_width
    text = question.lstrip(' ')
    assert ' ' not in text and ' ' not in answer.lstrip(' ')  # left-padded only
    terms = [int(t) for t in text.split('+')]
    assert len(terms) == n_terms
    assert all(1 <= t <= max_value for t in terms)
    assert all(
      str(t) == s for t, s in zip(terms, text.split('+'))
    )  # no leading 0
    assert int(answer) == sum(terms)
    seen.update(terms)
  if max_value == 10:
    assert seen == set(range(1, 11))  # both ends drawn


def test_addition_examples_do_not_depend_on_the_batch_split():
  generate = jax.jit(data.addition, static_argnums=1)
  whole = generate(jax.random.key(3), 8)
  second_half = generate(jax.random.key(3), 4, offset=4)
  for a, b in zip(whole, second_half):
    np.testing.assert_array_equal(a[4:], b)


def test_decode_text_takes_indices_or_one_hot():
  indices = np.array([[11, 1, 10, 2], [9, 10, 1, 0]])
  assert data.decode_text(indices) == [' 1+2', '9+10']
  assert data.decode_text(np.eye(12)[indices[0]]) == ' 1+2'


def test_cumsum_labels_are_the_threshold_of_the_running_sum():
  inputs, labels = jax.jit(data.cumsum_threshold, static_argnums=1)(
    jax.random.key(0), 2000
  )
  values = np.asarray(inputs[..., 0], np.float64)
  assert inputs.shape == (2000, 10, 1) and labels.shape == (2000, 10)
  assert values.min() >= 0 and values.max() < 1
  assert abs(values.mean() - 0.5) < 0.01
  np.testing.assert_array_equal(labels, np.cumsum(values, 1) > 2.5)
  assert (np.diff(np.asarray(labels), axis=1) >= 0).all()  # monotone
  # The sum of 10 uniforms passes 2.5 at step 5 or 6 in most sequences.
  first_one = np.argmax(np.asarray(labels), 1)
  assert 4 <= np.median(first_one) <= 5
  short = data.cumsum_threshold(
    jax.random.key(0), 3, length=4, limit_fraction=0.5
  )
  np.testing.assert_array_equal(short[1], np.cumsum(short[0][..., 0], 1) > 2.0)


def test_rectangle_pairs_are_consecutive_corners_of_one_rectangle():
  generate = jax.jit(data.rectangles, static_argnums=1, static_argnames='mode')
  inputs, targets = generate(jax.random.key(0), 300)
  corners_in = np.asarray(inputs[:, 0]).reshape(100, 3, 2)
  corners_out = np.asarray(targets).reshape(100, 3, 2)
  np.testing.assert_array_equal(corners_in[:, 0], 0.0)  # from (0, 0)
  np.testing.assert_array_equal(corners_in[:, 1:], corners_out[:, :2])
  width, height = corners_out[:, 0, 0], corners_out[:, 1, 1]
  assert (width >= 0).all() and (width < 1).all() and (height >= 0).all()
  assert (height < 1).all() and len(np.unique(width)) == 100
  expected = np.stack(
    [
      np.stack([width, 0 * width], -1),
      np.stack([width, height], -1),
      np.stack([0 * width, height], -1),
    ],
    1,
  )
  np.testing.assert_array_equal(corners_out, expected)
  # A batch of 3 at offset 3k is rectangle k; 'sequence' mode draws the same
  # rectangle k whole.
  _, pair_out = generate(jax.random.key(0), 3, offset=6)
  np.testing.assert_array_equal(pair_out, corners_out[2])
  seq_in, seq_out = generate(jax.random.key(0), 4, mode='sequence')
  np.testing.assert_array_equal(seq_out[2], corners_out[2])
  np.testing.assert_array_equal(seq_in[2], corners_in[2])


# --- generation measures -----------------------------------------------------


def test_rectangularity_measures():
  rectangle = np.array([[[0, 0], [0.5, 0], [0.5, 0.3], [0, 0.3]]])
  assert generation.right_angle_error(rectangle)[0] == pytest.approx(
    0, abs=1e-9
  )
  assert generation.corner_error(rectangle)[0] == pytest.approx(0, abs=1e-12)
  # A parallelogram with 45 and 135 degree corners: 45 degrees off everywhere.
  slanted = np.array([[[0, 0], [1, 0], [1.5, 0.5], [0.5, 0.5]]])
  assert generation.right_angle_error(slanted)[0] == pytest.approx(45)
  # One corner moved by 0.1 along y: the fit moves h by 0.05; distances
  # 0.05 + 0.05 at corners 2 and 3, over 4 corners.
  moved = rectangle.copy()
  moved[0, 3, 1] += 0.1
  assert generation.corner_error(moved)[0] == pytest.approx(0.1 / 4)


def test_feed_back_pairs_and_sequence_equal_stepping_with_the_carry():
  true = np.array([[0, 0], [0.6, 0], [0.6, 0.2], [0, 0.2]], np.float32)

  def next_corner(variables, x):  # a perfect 'pairs' model of one rectangle
    del variables
    index = jnp.argmin(jnp.abs(x[:, -1:, None] - true[None, None]).sum(-1), -1)
    return jnp.asarray(true)[index[:, 0] + 1]

  drawn = generation.feed_back(next_corner, None, jnp.zeros((1, 1, 2)), 'pairs')
  np.testing.assert_allclose(drawn[0], true)
  # 'sequence': rereading the prefix = one corner at a time with the carry kept.
  model = models.PerStepRNN((6,), 2, bidirectional=False)
  params = jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, 3, 2)))[
    'params'
  ]
  prefix = jnp.zeros((2, 1, 2))
  drawn = generation.feed_back_jit(model.apply, params, prefix, 'sequence', 4)
  step = jax.jit(LSTM(6, return_state=True).apply)
  carry, x, stepped = None, prefix, [prefix[:, 0]]
  for _ in range(3):
    h, carry = step({'params': params['rnn_0']}, x, carry)
    x = (h @ params['dense']['kernel'] + params['dense']['bias'])[:, None]
    stepped.append(x[:, 0])
  np.testing.assert_allclose(drawn, jnp.stack(stepped, 1), atol=1e-5)


# --- models ---------------------------------------------------------------------


def test_encoder_decoder_is_encoder_repeat_decoder_dense():
  model = models.EncoderDecoder((7, 5), num_outputs=12, output_steps=3)
  x = data.addition(jax.random.key(0), 4)[0]
  params = jax.jit(model.init)(jax.random.key(1), x)['params']
  assert sorted(params) == ['decoder_0', 'dense', 'encoder_0']
  out = jax.jit(model.apply)({'params': params}, x)
  assert out.shape == (4, 3, 12)

  @jax.jit
  def by_hand(params, x):
    last = LSTM(7).apply({'params': params['encoder_0']}, x)
    repeated = jnp.repeat(last[:, None], 3, axis=1)
    decoded = LSTM(5, return_sequences=True).apply(
      {'params': params['decoder_0']}, repeated
    )
    return decoded @ params['dense']['kernel'] + params['dense']['bias']

  np.testing.assert_allclose(out, by_hand(params, x), atol=1e-5)


def test_per_step_model_bidirectional_sees_the_future_forward_does_not():
  x = jax.random.uniform(jax.random.key(0), (2, 10, 1))
  later = x.at[:, 7:].set(0.9)
  for flag in (True, False):
    model = models.PerStepRNN((8,), 1, bidirectional=flag)
    params = jax.jit(model.init)(jax.random.key(1), x)['params']
    apply = jax.jit(model.apply)
    out, out_later = (apply({'params': params}, a) for a in (x, later))
    assert out.shape == (2, 10, 1)
    changed_early = not np.allclose(out[:, :7], out_later[:, :7])
    assert changed_early == flag
  assert set(params['rnn_0']) == {'kernel', 'recurrent_kernel', 'bias'}
  bi = models.PerStepRNN((8,), 1, cell='gru', merge_mode='sum')
  bi_params = jax.jit(bi.init)(jax.random.key(1), x)['params']
  assert set(bi_params['rnn_0']) == {'forward', 'backward'}
  assert bi_params['dense']['kernel'].shape == (8, 1)  # 'sum' keeps H


# --- validation ---------------------------------------------------------------------


BAD = [
  (seq2seq_addition, 'task.input_width', 7, 'must be >= 8'),
  (seq2seq_addition, 'task.answer_width', 1, 'must be >= 2'),
  (seq2seq_addition, 'task.max_value', 0, 'must be >= 1'),
  (
    seq2seq_addition,
    'model.output_steps',
    3,
    "must equal the target length of task 'addition', 2",
  ),
  (seq2seq_addition, 'model.encoder_depth', 2, 'must be <= 1'),
  (
    seq2seq_addition,
    'model.layer_sizes',
    (75,),
    'needs encoder and decoder sizes',
  ),
  (
    seq2seq_addition,
    'model.name',
    'lstm',
    "needs (B, S, K), an output sequence; use one of ['encoder_decoder']",
  ),
  (
    bidirectional,
    'model.merge_mode',
    'avg',
    "known values are ['concat', 'mean', 'multiply', 'sum']",
  ),
  (bidirectional, 'model.cell', 'rnn', "known values are ['gru', 'lstm']"),
  (
    bidirectional,
    'model.name',
    'lstm',
    "needs (B, T, K), one output per input step; use one of ['per_step']",
  ),
  (bidirectional, 'task.limit_fraction', -0.5, 'must be >= 0'),
  (
    generative,
    'task.mode',
    'stateful',
    "known values are ['pairs', 'sequence']",
  ),
  (
    generative,
    'model.name',
    'per_step',
    'needs (B, K), one output per example',
  ),
]


@pytest.mark.parametrize('module,field,value,expected', BAD)
def test_bad_value_names_field_value_and_valid_range(
  module, field, value, expected
):
  config = module.get_config()
  section, name = field.split('.')
  with config.unlocked():
    config[section][name] = value
  with pytest.raises(validation.ConfigError) as info:
    experiment.check_config(config)  # every check train.py runs
  assert f'config.{field}={value!r}' in str(info.value)
  assert expected in str(info.value)


def test_per_step_flag_must_be_a_bool():
  config = dict(bidirectional.get_config().model)
  config['bidirectional'] = 1
  with pytest.raises(
    validation.ConfigError,
    match=r'model.bidirectional=1 is invalid: must be True or False',
  ):
    models.check_model_config(
      config, bidirectional.get_config().task, 'sequence', 'per_step'
    )


def test_family_configs_are_valid():
  for config in (
    seq2seq_addition.get_config(),
    bidirectional.get_config(),
    bidirectional.get_config('forward'),
    generative.get_config(),
    generative.get_config('sequence'),
  ):
    experiment.check_config(config)
  assert seq2seq_addition.get_config().train.steps == 2344  # 75,000 / 32
  assert bidirectional.get_config('forward').model.bidirectional is False
  with pytest.raises(ValueError, match="use 'pairs' or 'sequence'"):
    generative.get_config('stateful')


# --- tiny trainings --------------------------------------------------------------


def _tiny(config, steps, **eval_options):
  with config.unlocked():
    config.train.steps = steps
    config.train.steps_per_call = steps
    config.eval.num_examples = 40
    config.eval.batch_size = 20
    config.eval.figure_examples = 0
    for k, v in eval_options.items():
      config.eval[k] = v
  return config


def test_tiny_seq2seq_run_logs_and_saves_decoded_predictions(tmp_path):
  config = _tiny(seq2seq_addition.get_config(), 30, predict_examples=3)
  results = train_lib.train_and_evaluate(config, str(tmp_path))
  saved = json.loads((tmp_path / 'results.json').read_text())
  assert set(saved['eval']) >= {'char_accuracy', 'exact_match', 'loss'}
  assert (
    0 <= saved['eval']['exact_match'] <= saved['eval']['char_accuracy'] <= 1
  )
  lines = saved['report']['examples']
  assert len(lines) == 3 and lines == results['report']['examples']
  eval_key = experiment.run_keys(config.seed, config.eval.seed).eval
  inputs, targets = data.addition(eval_key, 3)
  for line, question, answer in zip(
    lines, data.decode_text(inputs), data.decode_text(targets)
  ):
    assert line.startswith(f'{question.strip()} = {answer.strip()} (predicted ')


def test_tiny_bidirectional_run_learns(tmp_path):
  config = _tiny(bidirectional.get_config(), 200, predict_examples=2)
  with config.unlocked():
    config.train.batch_size = 32
    config.optimizer.learning_rate = 1e-2
  results = train_lib.train_and_evaluate(config, str(tmp_path))
  # All-zero labels would score ~0.55 per step; 200 steps learn more.
  assert results['eval']['accuracy'] > 0.8
  assert results['eval']['sequence_accuracy'] <= results['eval']['accuracy']
  assert len(results['report']['examples']) == 2


def test_tiny_generative_run_reports_generation(tmp_path):
  # The 'sequence' variant differs only in its model and feed_back's mode,
  # both tested above.
  config = _tiny(generative.get_config(), 20, figure_examples=2)
  results = train_lib.train_and_evaluate(config, str(tmp_path))
  ev = results['eval']
  for name in (
    'generated_right_angle_error_deg',
    'completed_right_angle_error_deg',
  ):
    assert 0 <= ev[name] <= 180
  assert ev['completed_corner_error'] >= 0 and ev['mae'] > 0
  corners = np.array(results['report']['generated_from_origin'])
  assert corners.shape == (4, 2)
  np.testing.assert_array_equal(corners[0], 0.0)
  assert generation.corner_error(corners[None])[0] == pytest.approx(
    ev['generated_corner_error'], abs=1e-3
  )
  assert (tmp_path / 'rectangles.png').stat().st_size > 5000
  # --mode=eval of the saved checkpoint runs the same generation.
  evaluated = inference.evaluate_checkpoint(config, str(tmp_path))
  for name in ('generated_right_angle_error_deg', 'completed_corner_error'):
    assert evaluated['eval'][name] == pytest.approx(ev[name], rel=1e-5)
  assert evaluated['report']['generated_from_origin'] == corners.tolist()


# --- full configs (opt-in) ---------------------------------------------------------


def _run_train(workdir, *args):
  proc = subprocess.run(
    [
      sys.executable,
      os.path.join(ROOT, 'train.py'),
      f'--workdir={workdir}',
      '--compilation_cache_dir=',
      *args,
    ],
    capture_output=True,
    text=True,
    timeout=1800,
    cwd=ROOT,
    env={**os.environ, 'JAX_PLATFORMS': 'cpu'},
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  return json.loads((workdir / 'results.json').read_text())


@pytest.mark.slow
@slow
def test_seq2seq_addition_reaches_target(tmp_path):
  results = _run_train(tmp_path, '--config=configs/seq2seq_addition.py')
  assert results['steps'] == 2344 and results['batch_size'] == 32
  assert results['eval']['char_accuracy'] >= 0.99
  assert results['eval']['exact_match'] >= 0.95


@pytest.mark.slow
@slow
def test_bidirectional_reaches_target_and_beats_forward_only(tmp_path):
  both = _run_train(tmp_path / 'bi', '--config=configs/bidirectional.py')
  forward = _run_train(
    tmp_path / 'fw', '--config=configs/bidirectional.py:forward'
  )
  assert both['eval']['accuracy'] >= 0.98
  # Seed 0: 0.991 vs 0.980.  Not a law: over seeds 0-4 the bidirectional
  # model is ahead on 3 (README); runs are deterministic, so this is seed 0's.
  assert both['eval']['accuracy'] > forward['eval']['accuracy']


@pytest.mark.slow
@slow
def test_generative_draws_near_rectangles(tmp_path):
  results = _run_train(tmp_path, '--config=configs/generative.py')
  assert results['eval']['completed_right_angle_error_deg'] < 10
  assert results['eval']['generated_right_angle_error_deg'] < 10
