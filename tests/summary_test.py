"""lstm_flax.summary: the model table of the seed models' configs."""

import importlib.util
import math
import os

import jax
import jax.numpy as jnp
import pytest

from lstm_flax import models
from lstm_flax import summary
from lstm_flax import tasks

CONFIGS = os.path.join(
  os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'configs'
)


def _config(name):
  spec = importlib.util.spec_from_file_location(
    f'summary_test_{name}', os.path.join(CONFIGS, f'{name}.py')
  )
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def _model_and_inputs(name):
  config = _config(name)
  task = tasks.make_task(config.task)
  inputs, _ = jax.eval_shape(lambda: task.generate(jax.random.key(0), 1))
  return models.make_model(config.model, task.num_outputs), inputs


def _rows(text):
  """{layer path: (module, output shape, parameters)} of the table."""
  lines = text.splitlines()
  rules = [i for i, l in enumerate(lines) if set(l) <= {'-', ' '} and l]
  header = lines[rules[0] - 1]
  starts = [header.index(c) for c in ('layer', 'module', 'output shape')]
  rows = {}
  for l in lines[rules[0] + 1 : rules[1]]:
    path = l[: starts[1]].strip()
    module = l[starts[1] : starts[2]].strip()
    shape, count = l[starts[2] :].rstrip().rsplit(None, 1)
    rows[path] = (module, shape.strip(), int(count.replace(',', '')))
  return rows


def _subtree_size(params, path):
  for name in path.split('/'):
    params = params[name]
  return sum(math.prod(x.shape) for x in jax.tree_util.tree_leaves(params))


# config -> {layer path: (module, output shape for one example)}.
EXPECTED = {
  'stacked': {
    '(model)': ('StackedLSTM', '(1, 5)'),
    'lstm_0': ('LSTM', '(1, 50, 20)'),
    'lstm_1': ('LSTM', '(1, 20)'),
    'dense': ('Dense', '(1, 5)'),
  },
  'cnn_lstm': {
    '(model)': ('CNNLSTM', '(1, 1)'),
    'encoder': ('FrameEncoder', '(1, 1152) per step (nn.vmap)'),
    'rnn': ('StackedLSTM', '(1, 1)'),
    'rnn/lstm_0': ('LSTM', '(1, 70)'),
    'rnn/dense': ('Dense', '(1, 1)'),
  },
  'seq2seq_addition': {
    '(model)': ('EncoderDecoder', '(1, 2, 12)'),
    'encoder_0': ('LSTM', '(1, 75)'),
    'decoder_0': ('LSTM', '(1, 2, 50)'),
    'dense': ('Dense', '(1, 2, 12)'),
  },
}


@pytest.mark.parametrize('name', sorted(EXPECTED))
def test_summary_lists_layers_shapes_and_parameter_counts(name):
  model, inputs = _model_and_inputs(name)
  text = summary.model_summary(model, inputs)
  params = jax.eval_shape(
    lambda: model.init(jax.random.key(0), jnp.zeros(inputs.shape, inputs.dtype))
  )['params']
  total = sum(math.prod(x.shape) for x in jax.tree_util.tree_leaves(params))
  assert f'Total parameters: {total:,} (' in text
  rows = _rows(text)
  assert {p: r[:2] for p, r in rows.items()} == EXPECTED[name]
  assert rows['(model)'][2] == total
  for path, (_, _, count) in rows.items():
    if path != '(model)':
      assert count == _subtree_size(params, path), path
  for helper in ('LSTMCell', 'ProjectInScan', 'LSTMWeights', '/cell'):
    assert helper not in text


def test_summary_compiles_nothing():
  model, inputs = _model_and_inputs('stacked')
  summary.model_summary(model, inputs)  # first use: imports, caches
  compiles = []

  def listener(event, duration, **kwargs):
    del duration, kwargs
    if event == '/jax/core/compile/backend_compile_duration':
      compiles.append(event)

  jax.monitoring.register_event_duration_secs_listener(listener)
  try:
    model, inputs = _model_and_inputs('seq2seq_addition')
    summary.model_summary(model, inputs)
  finally:
    jax.monitoring.unregister_event_duration_listener(listener)
  assert not compiles


def test_summary_of_a_wavefront_stack_shows_each_layer():
  """Two fused layers train as one wavefront loop; the table still shows
  each layer, with the same parameters as the model."""
  model = models.StackedLSTM(
    (6, 4), 3, models.RecurrentOptions(recurrence='fused')
  )
  inputs = jnp.zeros((2, 12, 5))
  rows = _rows(summary.model_summary(model, inputs))
  assert rows['lstm_0'] == ('LSTM', '(2, 12, 6)', 5 * 24 + 6 * 24 + 24)
  assert rows['lstm_1'] == ('LSTM', '(2, 4)', 6 * 16 + 4 * 16 + 16)
  assert rows['(model)'][2] == 5 * 24 + 6 * 24 + 24 + 6 * 16 + 4 * 16 + 16 + 15


def test_summary_of_bidirectional_layers_names_a_non_float32_dtype():
  model = models.PerStepRNN(
    (3,), 2, recurrent=models.RecurrentOptions(dtype=jnp.bfloat16)
  )
  text = summary.model_summary(model, jnp.zeros((1, 7, 2), jnp.bfloat16))
  assert text.startswith('PerStepRNN, inputs (1, 7, 2) bfloat16\n')
  rows = _rows(text)
  assert rows['rnn_0'][:2] == ('Bidirectional', '(1, 7, 6)')
  assert rows['rnn_0/forward'][0] == rows['rnn_0/backward'][0] == 'LSTM'
  assert rows['rnn_0/forward'][2] == 2 * 12 + 3 * 12 + 12
