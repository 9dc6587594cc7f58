"""Weights between frameworks (lstm_flax.interop).

Numpy references and error messages run everywhere; parity against PyTorch and
Keras runs with the ``interop`` extra (``pip install -e '.[interop]'``) and is
skipped, with that reason, without it.  Each parity check prints its largest
absolute difference (``pytest -s`` shows them).
"""

import contextlib
import importlib.util
import io
import json
import os
import re
import sys
import zipfile

os.environ.setdefault('KERAS_BACKEND', 'jax')

import jax  # pylint: disable=g-import-not-at-top
import jax.numpy as jnp
import numpy as np
import pytest

from lstm_flax import interop
from lstm_flax.lstm import GRU, LSTM, Bidirectional
from lstm_flax.models import StackedLSTM

EXTRA = "install the interop extra: pip install -e '.[interop]'"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ATOL = 1e-5


def _torch():
  torch = pytest.importorskip(
    'torch', reason=f'PyTorch is not installed; {EXTRA}'
  )
  torch.set_num_threads(1)
  return torch


def _keras():
  return pytest.importorskip('keras', reason=f'Keras is not installed; {EXTRA}')


def _close(what, ours, theirs):
  """Asserts |ours - theirs| <= 1e-5 everywhere and prints the largest difference."""
  ours, theirs = np.asarray(ours, np.float64), np.asarray(theirs, np.float64)
  assert ours.shape == theirs.shape, (what, ours.shape, theirs.shape)
  diff = float(np.abs(ours - theirs).max())
  print(f'max abs diff {what}: {diff:.3g}')
  np.testing.assert_allclose(ours, theirs, atol=ATOL, rtol=0, err_msg=what)
  return diff


def _sigmoid(x):
  return 1 / (1 + np.exp(-x))


# --- numpy references, written in each framework's own form -------------------------


def torch_form_lstm(x, w_ih, w_hh, b_ih, b_hh, h0, c0):
  """PyTorch's nn.LSTM equations, float64: weights (4H, F), gates i, f, g, o."""
  h, c = np.asarray(h0, np.float64), np.asarray(c0, np.float64)
  outputs = []
  for t in range(x.shape[1]):
    gates = x[:, t] @ w_ih.T + b_ih + h @ w_hh.T + b_hh
    i, f, g, o = np.split(gates, 4, axis=-1)
    c = _sigmoid(f) * c + _sigmoid(i) * np.tanh(g)
    h = _sigmoid(o) * np.tanh(c)
    outputs.append(h)
  return np.stack(outputs, 1), h, c


def torch_form_gru(x, w_ih, w_hh, b_ih, b_hh, h0):
  """PyTorch's nn.GRU equations, float64: weights (3H, F), gates r, z, n."""
  h = np.asarray(h0, np.float64)
  outputs = []
  for t in range(x.shape[1]):
    xr, xz, xn = np.split(x[:, t] @ w_ih.T + b_ih, 3, axis=-1)
    hr, hz, hn = np.split(h @ w_hh.T + b_hh, 3, axis=-1)
    r, z = _sigmoid(xr + hr), _sigmoid(xz + hz)
    n = np.tanh(xn + r * hn)
    h = (1 - z) * n + z * h
    outputs.append(h)
  return np.stack(outputs, 1), h


def keras_form_gru(x, kernel, recurrent_kernel, bias, h0):
  """Keras' GRU equations, float64: kernel (F, 3H), gates z, r, h; bias (2, 3H)
  is reset_after=True, (3H,) reset_after=False."""
  h = np.asarray(h0, np.float64)
  units = recurrent_kernel.shape[0]
  outputs = []
  for t in range(x.shape[1]):
    if bias.ndim == 2:
      xz, xr, xh = np.split(x[:, t] @ kernel + bias[0], 3, axis=-1)
      uz, ur, uh = np.split(h @ recurrent_kernel + bias[1], 3, axis=-1)
      z, r = _sigmoid(xz + uz), _sigmoid(xr + ur)
      n = np.tanh(xh + r * uh)
    else:
      xz, xr, xh = np.split(x[:, t] @ kernel + bias, 3, axis=-1)
      uz, ur = np.split(h @ recurrent_kernel[:, : 2 * units], 2, axis=-1)
      z, r = _sigmoid(xz + uz), _sigmoid(xr + ur)
      n = np.tanh(xh + (r * h) @ recurrent_kernel[:, 2 * units :])
    h = z * h + (1 - z) * n
    outputs.append(h)
  return np.stack(outputs, 1), h


def torch_form_rnn(x, state_dict, num_layers, bidirectional, gru, h0, c0=None):
  """A whole multi-layer (bidirectional) nn.LSTM / nn.GRU from its state_dict, in
  numpy: (outputs (B, T, D*H), h_n, c_n or None), h_n rows layer * D + direction."""
  sd = {k: np.asarray(v, np.float64) for k, v in state_dict.items()}
  hs, cs = [], []
  for layer in range(num_layers):
    outs = []
    for d, suffix in enumerate(('', '_reverse')[: 2 if bidirectional else 1]):
      w = [
        sd[f'{n}_l{layer}{suffix}']
        for n in ('weight_ih', 'weight_hh', 'bias_ih', 'bias_hh')
      ]
      row = layer * (2 if bidirectional else 1) + d
      xin = x[:, ::-1] if d else x
      if gru:
        out, h = torch_form_gru(xin, *w, h0[row])
      else:
        out, h, c = torch_form_lstm(xin, *w, h0[row], c0[row])
        cs.append(c)
      hs.append(h)
      outs.append(out[:, ::-1] if d else out)
    x = np.concatenate(outs, -1)
  return x, np.stack(hs), (None if gru else np.stack(cs))


def random_state_dict(
  rng, input_size, hidden, num_layers, bidirectional, gates, prefix=''
):
  dirs = ('', '_reverse') if bidirectional else ('',)
  sd = {}
  for layer in range(num_layers):
    width = input_size if layer == 0 else hidden * len(dirs)
    for s in dirs:
      sd[f'{prefix}weight_ih_l{layer}{s}'] = rng.normal(
        0, 0.5, (gates * hidden, width)
      )
      sd[f'{prefix}weight_hh_l{layer}{s}'] = rng.normal(
        0, 0.5, (gates * hidden, hidden)
      )
      sd[f'{prefix}bias_ih_l{layer}{s}'] = rng.normal(0, 0.5, (gates * hidden,))
      sd[f'{prefix}bias_hh_l{layer}{s}'] = rng.normal(0, 0.5, (gates * hidden,))
  return {k: v.astype(np.float32) for k, v in sd.items()}


def run_ours(layers, x, carries, gru):
  """Applies converted per-layer params with our layers, each layer's whole
  output sequence feeding the next: (outputs, per-layer final carries)."""
  finals = []
  for params, carry in zip(layers, carries):
    if 'forward' in params:
      layer = Bidirectional(
        params['forward']['recurrent_kernel'].shape[0],
        cell='gru' if gru else 'lstm',
        return_sequences=True,
        return_state=True,
      )
      x, (fwd, bwd) = layer.apply(
        {'params': params}, x, (carry['forward'], carry['backward'])
      )
      finals.append({'forward': fwd, 'backward': bwd})
    else:
      cls = GRU if gru else LSTM
      x, final = cls(
        params['recurrent_kernel'].shape[0],
        return_sequences=True,
        return_state=True,
      ).apply({'params': params}, x, carry)
      finals.append(final)
  return x, finals


# --- numpy-only: conversions against the references ------------------------------


def _random_lstm_params(rng, features, hidden):
  return {
    'kernel': rng.normal(0, 0.5, (features, 4 * hidden)).astype(np.float32),
    'recurrent_kernel': rng.normal(0, 0.5, (hidden, 4 * hidden)).astype(
      np.float32
    ),
    'bias': rng.normal(0, 0.5, (4 * hidden,)).astype(np.float32),
  }


def test_keras_lstm_arrays_round_trip_exactly():
  params = _random_lstm_params(np.random.default_rng(0), 3, 5)
  arrays = interop.lstm_to_keras(params)
  assert [a.shape for a in arrays] == [(3, 20), (5, 20), (20,)]
  back = interop.lstm_from_keras(arrays, units=5)
  for name in params:
    np.testing.assert_array_equal(back[name], params[name])
  # use_bias=False: two arrays, zero bias.
  np.testing.assert_array_equal(
    interop.lstm_from_keras(arrays[:2])['bias'], np.zeros(20)
  )


def test_ours_to_torch_state_dict_and_back_is_exact():
  rng = np.random.default_rng(1)
  layers = [_random_lstm_params(rng, 3, 4), _random_lstm_params(rng, 4, 4)]
  dense = {
    'kernel': rng.normal(size=(4, 2)).astype(np.float32),
    'bias': rng.normal(size=(2,)).astype(np.float32),
  }
  tree = interop.stacked_lstm_params(layers, dense)
  sd = interop.lstm_to_torch(tree, prefix='lstm.')
  assert sorted(sd) == sorted(
    f'lstm.{n}_l{k}'
    for n in ('weight_ih', 'weight_hh', 'bias_ih', 'bias_hh')
    for k in (0, 1)
  )
  assert sd['lstm.weight_ih_l0'].shape == (16, 3)
  np.testing.assert_array_equal(
    sd['lstm.bias_hh_l1'], np.zeros(16)
  )  # whole bias in bias_ih
  sd.update(interop.dense_to_torch(tree['dense'], prefix='fc.'))
  back = interop.stacked_lstm_params(
    interop.lstm_from_torch(sd, prefix='lstm.'),
    interop.linear_from_torch(sd, prefix='fc.'),
  )
  assert jax.tree_util.tree_structure(back) == jax.tree_util.tree_structure(
    tree
  )
  jax.tree_util.tree_map(np.testing.assert_array_equal, back, tree)


@pytest.mark.parametrize(
  'num_layers,bidirectional', [(1, False), (2, False), (2, True)]
)
def test_torch_lstm_state_dict_matches_torch_equations(
  num_layers, bidirectional
):
  """A state_dict in numpy (no torch) -> our layers == PyTorch's equations in numpy."""
  rng = np.random.default_rng(2)
  b, t, f, h = 3, 6, 4, 5
  rows = num_layers * (2 if bidirectional else 1)
  sd = random_state_dict(rng, f, h, num_layers, bidirectional, 4)
  x = rng.normal(size=(b, t, f)).astype(np.float32)
  h0, c0 = (rng.normal(size=(rows, b, h)).astype(np.float32) for _ in range(2))
  ref, ref_h, ref_c = torch_form_rnn(
    x.astype(np.float64), sd, num_layers, bidirectional, False, h0, c0
  )
  layers = interop.lstm_from_torch(sd)
  ours, finals = run_ours(
    layers, x, interop.carries_from_torch(h0, c0, bidirectional), False
  )
  h_n, c_n = interop.carries_to_torch(finals)
  name = (
    f'numpy torch-form LSTM layers={num_layers} bidirectional={bidirectional}'
  )
  _close(name + ' outputs', ours, ref)
  _close(name + ' h_n', h_n, ref_h)
  _close(name + ' c_n', c_n, ref_c)


def test_torch_lstm_and_linear_to_stacked_model():
  """nn.LSTM(num_layers=2) + nn.Linear on the last step -> our StackedLSTM."""
  rng = np.random.default_rng(3)
  sd = random_state_dict(rng, 1, 6, 2, False, 4, prefix='rnn.')
  sd['head.weight'] = rng.normal(size=(5, 6)).astype(np.float32)
  sd['head.bias'] = rng.normal(size=(5,)).astype(np.float32)
  params = interop.stacked_lstm_params(
    interop.lstm_from_torch(sd, 'rnn.'), interop.linear_from_torch(sd, 'head.')
  )
  x = rng.normal(size=(4, 7, 1)).astype(np.float32)
  zeros = np.zeros((2, 4, 6))
  seq, _, _ = torch_form_rnn(
    x.astype(np.float64),
    {k[4:]: v for k, v in sd.items() if k.startswith('rnn.')},
    2,
    False,
    False,
    zeros,
    zeros,
  )
  ref = seq[:, -1] @ sd['head.weight'].T + sd['head.bias']
  ours = StackedLSTM((6, 6), 5).apply({'params': params}, x)
  _close('numpy torch-form StackedLSTM(6, 6) + Linear', ours, ref)


def _random_gru_arrays(rng, features, hidden, reset_after=True):
  bias_shape = (2, 3 * hidden) if reset_after else (3 * hidden,)
  return [
    rng.normal(0, 0.5, s).astype(np.float32)
    for s in ((features, 3 * hidden), (hidden, 3 * hidden), bias_shape)
  ]


def test_gru_keras_and_torch_layouts_agree():
  """Keras reset_after=True arrays -> nn.GRU state_dict: both frameworks' equations
  and our GRU give the same outputs, and the conversion round-trips exactly."""
  rng = np.random.default_rng(4)
  kernel, recurrent_kernel, bias = _random_gru_arrays(rng, 3, 4)
  x = rng.normal(size=(2, 5, 3)).astype(np.float32)
  h0 = rng.normal(size=(2, 4)).astype(np.float32)
  keras_out, keras_h = keras_form_gru(
    x.astype(np.float64),
    kernel.astype(np.float64),
    recurrent_kernel.astype(np.float64),
    bias.astype(np.float64),
    h0,
  )
  params = interop.gru_from_keras([kernel, recurrent_kernel, bias], units=4)
  sd = interop.gru_to_torch(params)
  torch_out, torch_h = torch_form_gru(
    x.astype(np.float64),
    *(
      sd[f'{n}_l0'].astype(np.float64)
      for n in ('weight_ih', 'weight_hh', 'bias_ih', 'bias_hh')
    ),
    h0,
  )
  _close('numpy keras-form vs torch-form GRU outputs', torch_out, keras_out)
  ours, ours_h = GRU(4, return_sequences=True, return_state=True).apply(
    {'params': params}, x, h0
  )
  _close('numpy keras-form GRU vs our GRU outputs', ours, keras_out)
  _close('numpy keras-form GRU vs our GRU h', ours_h, keras_h)
  back = interop.gru_from_torch(sd)[0]
  for name, array in zip(
    ('kernel', 'recurrent_kernel', 'bias'), (kernel, recurrent_kernel, bias)
  ):
    np.testing.assert_array_equal(back[name], array)
  for name, array in zip(
    ('kernel', 'recurrent_kernel', 'bias'), interop.gru_to_keras(back)
  ):
    np.testing.assert_array_equal(array, params[name])


@pytest.mark.parametrize('num_layers,bidirectional', [(2, False), (2, True)])
def test_torch_gru_state_dict_matches_torch_equations(
  num_layers, bidirectional
):
  rng = np.random.default_rng(5)
  b, t, f, h = 2, 5, 3, 4
  rows = num_layers * (2 if bidirectional else 1)
  sd = random_state_dict(rng, f, h, num_layers, bidirectional, 3)
  x = rng.normal(size=(b, t, f)).astype(np.float32)
  h0 = rng.normal(size=(rows, b, h)).astype(np.float32)
  ref, ref_h, _ = torch_form_rnn(
    x.astype(np.float64), sd, num_layers, bidirectional, True, h0
  )
  ours, finals = run_ours(
    interop.gru_from_torch(sd),
    x,
    interop.carries_from_torch(h0, None, bidirectional),
    True,
  )
  name = (
    f'numpy torch-form GRU layers={num_layers} bidirectional={bidirectional}'
  )
  _close(name + ' outputs', ours, ref)
  _close(name + ' h_n', interop.carries_to_torch(finals), ref_h)
  back = interop.gru_to_torch(interop.gru_from_torch(sd))
  jax.tree_util.tree_map(np.testing.assert_array_equal, back, sd)


def test_keras_gru_reset_before_matches_ours_and_is_refused_for_torch():
  rng = np.random.default_rng(6)
  arrays = _random_gru_arrays(rng, 3, 4, reset_after=False)
  x = rng.normal(size=(2, 5, 3)).astype(np.float32)
  h0 = np.zeros((2, 4))
  ref, _ = keras_form_gru(
    x.astype(np.float64), *(a.astype(np.float64) for a in arrays), h0
  )
  params = interop.gru_from_keras(arrays)
  ours = GRU(4, reset_after=False, return_sequences=True).apply(
    {'params': params}, x
  )
  _close('numpy keras-form GRU(reset_after=False) vs ours', ours, ref)
  with pytest.raises(
    ValueError, match=r'reset_after=False.*no exact\s+mapping'
  ):
    interop.gru_to_torch(params)


def test_carries_round_trip():
  rng = np.random.default_rng(7)
  h_n, c_n = (rng.normal(size=(4, 2, 3)).astype(np.float32) for _ in range(2))
  carries = interop.carries_from_torch(h_n, c_n, bidirectional=True)
  assert len(carries) == 2
  np.testing.assert_array_equal(carries[1]['backward'][1], c_n[3])
  back_h, back_c = interop.carries_to_torch(carries)
  np.testing.assert_array_equal(back_h, h_n)
  np.testing.assert_array_equal(back_c, c_n)
  np.testing.assert_array_equal(
    interop.carries_to_torch(interop.carries_from_torch(h_n)), h_n
  )  # GRU: h alone


# --- errors name the key or shape and what was expected ---------------------------


def _lstm_sd(**changes):
  sd = random_state_dict(np.random.default_rng(8), 3, 4, 1, False, 4)
  for key, value in changes.items():
    if value is None:
      del sd[key]
    else:
      sd[key] = value
  return sd


@pytest.mark.parametrize(
  'call,message',
  [
    (
      lambda: interop.lstm_from_torch(_lstm_sd(bias_hh_l0=None)),
      r'missing bias_hh_l0',
    ),
    (
      lambda: interop.lstm_from_torch(_lstm_sd(weight_hh_l0=np.zeros((16, 5)))),
      r'weight_hh_l0 has shape \(16, 5\); expected \(4\*hidden, hidden\)',
    ),
    (
      lambda: interop.lstm_from_torch(_lstm_sd(weight_hr_l0=np.zeros((2, 4)))),
      r'proj_size',
    ),
    (
      lambda: interop.lstm_from_torch(
        {'lstm.' + k: v for k, v in _lstm_sd().items()}
      ),
      r"not nn.LSTM parameters.*prefix='lstm.'",
    ),
    (
      lambda: interop.lstm_from_torch(
        {'fc.weight': np.zeros((2, 2))}, prefix='lstm.'
      ),
      r'no nn.LSTM parameters under prefix',
    ),
    (
      lambda: interop.lstm_from_torch(
        {
          **_lstm_sd(),
          **{k + '_reverse': v for k, v in _lstm_sd(bias_ih_l0=None).items()},
        }
      ),
      r'missing bias_ih_l0_reverse',
    ),
    (
      lambda: interop.lstm_from_torch(
        random_state_dict(np.random.default_rng(0), 3, 4, 1, False, 3)
      ),
      r'weight_hh_l0 has shape \(12, 4\); expected \(4\*hidden, hidden\) for nn.LSTM: it '
      r'has 3 x hidden rows, is this an nn.GRU\?',
    ),
    (
      lambda: interop.lstm_from_keras(
        [np.zeros((3, 30)), np.zeros((5, 20)), np.zeros(20)]
      ),
      r'kernel \(weights\[0\]\) has shape \(3, 30\); expected \(any, 20\)',
    ),
    (
      lambda: interop.lstm_from_keras(
        [np.zeros((3, 15)), np.zeros((5, 15)), np.zeros(15)]
      ),
      r'expected \(H, 4\*H\).*3 x units wide: is this a GRU\?',
    ),
    (
      lambda: interop.lstm_from_keras(
        [np.zeros((3, 20)), np.zeros((5, 20)), np.zeros(12)]
      ),
      r'bias \(weights\[2\]\) has shape \(12,\); expected \(20,\)',
    ),
    (
      lambda: interop.lstm_from_keras(
        [np.zeros((3, 20)), np.zeros((5, 20)), np.zeros(20)], units=6
      ),
      r'5 units; expected units=6',
    ),
    (
      lambda: interop.gru_from_keras(
        [np.zeros((3, 12)), np.zeros((4, 12)), np.zeros((3, 12))]
      ),
      r'bias has shape \(3, 12\); expected \(2, 12\)',
    ),
    (
      lambda: interop.lstm_to_torch(
        [
          _random_lstm_params(np.random.default_rng(0), 3, 4),
          _random_lstm_params(np.random.default_rng(0), 4, 5),
        ]
      ),
      r'same hidden size; layer 0 has 4, layer 1 forward has 5',
    ),
    (
      lambda: interop.lstm_to_keras(
        {'kernel': np.zeros((3, 16)), 'bias': np.zeros(16)}
      ),
      r"missing \['recurrent_kernel'\]",
    ),
    (
      lambda: interop.stacked_lstm_params(
        [
          _random_lstm_params(np.random.default_rng(0), 3, 4),
          _random_lstm_params(np.random.default_rng(0), 5, 4),
        ]
      ),
      r"input width must be layer 0's units, 4",
    ),
    (
      lambda: interop.save_keras_weights('model.h5', {}),
      r'Keras 3 loads weights only from a file named \*.weights.h5',
    ),
    (
      lambda: interop.keras_weights(
        interop.stacked_lstm_params(
          [_random_lstm_params(np.random.default_rng(0), 3, 4)]
        )
      ),
      r'no dense head',
    ),
  ],
)
def test_conversion_errors_say_what_was_expected(call, message):
  with pytest.raises(ValueError, match=message):
    call()


def test_a_file_that_is_neither_zip_nor_hdf5_is_refused(tmp_path):
  pytest.importorskip('h5py', reason=f'h5py is not installed; {EXTRA}')
  path = tmp_path / 'model.keras'
  path.write_bytes(b'not a model at all')
  with pytest.raises(
    ValueError, match=r'neither a zip archive \(.keras\) nor an HDF5'
  ):
    interop.load_keras(path)


# --- hostile Keras files: refused with a ValueError naming the file (h5py only) -------


def _h5py():
  return pytest.importorskip('h5py', reason=f'h5py is not installed; {EXTRA}')


def _lstm_entry(units, return_sequences=False, **changes):
  config = {
    'name': 'lstm',
    'units': units,
    'activation': 'tanh',
    'recurrent_activation': 'sigmoid',
    'go_backwards': False,
    'return_sequences': return_sequences,
    **changes,
  }
  return {'class_name': 'LSTM', 'config': config}


def _dense_entry(units, activation='linear'):
  return {
    'class_name': 'Dense',
    'config': {'name': 'dense', 'units': units, 'activation': activation},
  }


def _sequential(*layers):
  """A Keras 3 Sequential's config.json, only the fields load_keras reads."""
  return {
    'class_name': 'Sequential',
    'config': {
      'layers': [
        {'class_name': 'InputLayer', 'config': {'batch_shape': [None, 5, 3]}},
        *layers,
      ]
    },
  }


def _weights_file(path, layer_sizes=(4,), features=3, outputs=2):
  """Our writer's Keras 3 .weights.h5 of StackedLSTM(layer_sizes, outputs)."""
  rng = np.random.default_rng(20)
  widths = (features,) + tuple(layer_sizes)
  layers = [_random_lstm_params(rng, f, h) for f, h in zip(widths, layer_sizes)]
  dense = {
    'kernel': rng.normal(size=(layer_sizes[-1], outputs)).astype(np.float32),
    'bias': np.zeros(outputs, np.float32),
  }
  interop.save_keras_weights(path, interop.stacked_lstm_params(layers, dense))
  return path


def _keras_zip(path, config, weights_h5, **zip_options):
  """A .keras archive: config.json (a dict, or raw bytes) and model.weights.h5."""
  with zipfile.ZipFile(path, 'w', **zip_options) as z:
    z.writestr(
      'config.json', config if isinstance(config, bytes) else json.dumps(config)
    )
    if weights_h5 is not None:
      z.writestr(
        'model.weights.h5',
        weights_h5
        if isinstance(weights_h5, bytes)
        else weights_h5.read_bytes(),
      )
  return path


def _refused(path, match, readers=(interop.load_keras,)):
  """Each reader raises ValueError naming ``path`` and matching ``match``."""
  for read in readers:
    with pytest.raises(ValueError, match=match) as error:
      read(path)
    assert str(path) in str(error.value), (read.__name__, str(error.value))


def test_a_consistent_hand_made_keras_file_loads(tmp_path):
  """The control for the hostile files below: the same recipe, consistent, loads."""
  _h5py()
  weights = _weights_file(tmp_path / 'ok.weights.h5', (4, 4))
  path = _keras_zip(
    tmp_path / 'ok.keras',
    _sequential(
      _lstm_entry(4, True), _lstm_entry(4), _dense_entry(2, 'softmax')
    ),
    weights,
  )
  imported = interop.load_keras(path)
  assert imported.model == StackedLSTM((4, 4), 2)
  assert imported.activation == 'softmax'


@pytest.mark.parametrize(
  'layers,sizes,described,held',
  [
    (
      (_lstm_entry(4, True), _lstm_entry(4), _dense_entry(2)),
      (4,),
      'LSTM(4), LSTM(4), Dense(2)',
      'LSTM(4), Dense(2)',
    ),
    (
      (_lstm_entry(5), _dense_entry(2)),
      (4,),
      'LSTM(5), Dense(2)',
      'LSTM(4), Dense(2)',
    ),
    (
      (_lstm_entry(4), _dense_entry(3)),
      (4,),
      'LSTM(4), Dense(3)',
      'LSTM(4), Dense(2)',
    ),
  ],
  ids=['two_lstms_one_held', 'units', 'dense_units'],
)
def test_keras_file_whose_config_contradicts_its_weights_is_refused(
  tmp_path, layers, sizes, described, held
):
  _h5py()
  path = _keras_zip(
    tmp_path / 'liar.keras',
    _sequential(*layers),
    _weights_file(tmp_path / 'w.weights.h5', sizes),
  )
  _refused(
    path, re.escape(f'describes [{described}], but its weights hold [{held}]')
  )


def _external(h5py, f, tmp_path):
  secret = tmp_path / 'secret.txt'
  secret.write_bytes(b'root:x:0:0:root:/root:/bin/bash\n' * 4)
  del f['layers/dense/vars/1']
  f.create_dataset(
    'layers/dense/vars/1', (2,), 'f4', external=[(str(secret), 0, 8)]
  )


def _virtual(h5py, f, tmp_path):
  with h5py.File(tmp_path / 'other.h5', 'w') as other:
    other['x'] = np.ones(2, np.float32)
  layout = h5py.VirtualLayout(shape=(2,), dtype='f4')
  layout[:] = h5py.VirtualSource(str(tmp_path / 'other.h5'), 'x', shape=(2,))
  del f['layers/dense/vars/1']
  f.create_virtual_dataset('layers/dense/vars/1', layout)


def _external_link(h5py, f, tmp_path):
  del f['layers/dense/vars/1']
  f['layers/dense/vars/1'] = h5py.ExternalLink(str(tmp_path / 'other.h5'), '/x')


@pytest.mark.parametrize(
  'make,match',
  [
    (
      _external,
      r"'layers/dense/vars/1' keeps its data outside the file \(external "
      r"storage in '.*secret.txt'\)",
    ),
    (_virtual, r"'layers/dense/vars/1' is a virtual dataset"),
    (_external_link, r"'layers/dense/vars/1' links to another file"),
  ],
  ids=['external_storage', 'virtual_dataset', 'external_link'],
)
def test_hdf5_that_points_outside_itself_is_refused(tmp_path, make, match):
  """External storage would read any local file (a password file, say) into the weights."""
  h5py = _h5py()
  path = _weights_file(tmp_path / 'hostile.weights.h5')
  with h5py.File(path, 'a') as f:
    make(h5py, f, tmp_path)
  _refused(path, match, (interop.load_keras, interop.read_keras_weights))
  archive = _keras_zip(
    tmp_path / 'hostile.keras',
    _sequential(_lstm_entry(4), _dense_entry(2)),
    path,
  )
  _refused(archive, match, (interop.load_keras, interop.read_keras_weights))


def test_truncated_keras_files_are_refused_naming_the_file(tmp_path):
  _h5py()
  whole = _weights_file(tmp_path / 'whole.weights.h5').read_bytes()
  path = tmp_path / 'cut.weights.h5'
  path.write_bytes(whole[: len(whole) // 2])
  _refused(
    path,
    r'not a readable Keras file.*truncated',
    (interop.load_keras, interop.read_keras_weights),
  )
  config = _sequential(_lstm_entry(4), _dense_entry(2))
  inner = _keras_zip(tmp_path / 'inner.keras', config, whole[: len(whole) // 2])
  _refused(inner, r'not a readable Keras file.*truncated')
  archive = _keras_zip(tmp_path / 'whole.keras', config, whole).read_bytes()
  cut = tmp_path / 'cut.keras'
  cut.write_bytes(archive[: len(archive) // 2])
  _refused(cut, r'neither a zip archive.*a truncated or damaged zip\?')


def test_keras_zip_that_would_inflate_too_far_is_refused_before_reading(
  tmp_path, monkeypatch
):
  """Refused by the sizes in the zip directory: nothing is inflated."""
  _h5py()
  config = _sequential(_lstm_entry(4), _dense_entry(2))
  bomb = _keras_zip(
    tmp_path / 'bomb.keras',
    config,
    bytes(16 << 20),
    compression=zipfile.ZIP_DEFLATED,
    compresslevel=9,
  )
  assert bomb.stat().st_size < 64 << 10  # 16 MiB of zeros in a few kB
  big = _keras_zip(tmp_path / 'big.keras', config, bytes(2 << 20))

  def no_inflating(*args, **kwargs):
    raise AssertionError('a member was opened')

  monkeypatch.setattr(zipfile.ZipFile, 'open', no_inflating)
  _refused(
    bomb,
    r'model.weights.h5 would inflate from [\d,]+ to 16,777,216 bytes '
    r'\(over 1000x\); refusing a likely zip bomb',
  )
  # Over the total bound (4 GiB; lowered here to keep the test small), stored.
  monkeypatch.setattr(interop.keras_files, 'MAX_FILE_BYTES', 1 << 20)
  _refused(
    big,
    r"'model.weights.h5'\] inflate to [\d,]+ bytes; refusing more than 1,048,576",
  )


def _malformed(kind, tmp_path):
  """A file that is malformed in one way -> (path, what the error must say)."""
  import h5py  # pylint: disable=g-import-not-at-top

  weights = _weights_file(tmp_path / 'w.weights.h5')
  good = _sequential(_lstm_entry(4), _dense_entry(2))
  if kind == 'config_not_json':
    return _keras_zip(tmp_path / 'm.keras', b'{"class_name": ', weights), (
      r'config.json is not valid JSON'
    )
  if kind == 'config_without_layers':
    return _keras_zip(
      tmp_path / 'm.keras', {'class_name': 'Sequential', 'config': {}}, weights
    ), r'has no config.layers list'
  if kind == 'layer_without_config':
    return _keras_zip(
      tmp_path / 'm.keras', _sequential({'class_name': 'LSTM'}), weights
    ), (r'layers\[1\] is not a layer entry with a class_name and a config dict')
  if kind == 'lstm_without_units':
    bad = _lstm_entry(4)
    del bad['config']['units']
    return _keras_zip(
      tmp_path / 'm.keras', _sequential(bad, _dense_entry(2)), weights
    ), (r"layer 'lstm' \(LSTM\) has units=None; expected a positive integer")
  if kind == 'no_weights_member':
    return _keras_zip(
      tmp_path / 'm.keras', good, None
    ), r'without model.weights.h5'
  with h5py.File(weights, 'a') as f:
    if kind == 'vars_member_is_a_group':
      del f['layers/dense/vars/1']
      f.create_group('layers/dense/vars/1')
      return (
        weights,
        r'layers/dense/vars/1 is Group; expected a dataset of numbers',
      )
    if kind == 'vars_member_is_text':
      del f['layers/dense/vars/1']
      f['layers/dense/vars/1'] = np.array([b'ab', b'cd'])
      return (
        weights,
        r'layers/dense/vars/1 is a dataset of \|S2; expected a dataset of numbers',
      )
  legacy = tmp_path / 'legacy.h5'
  with h5py.File(legacy, 'w') as f:
    f.attrs['layer_names'] = [b'lstm', b'dense']
    f['lstm'] = np.zeros(3)  # a dataset where the layer's group should be
    f.create_group('dense').attrs['weight_names'] = b'dense/kernel:0'
    if kind == 'legacy_layer_is_a_dataset':
      return legacy, r"layer_names lists 'lstm', but the file has no such group"
    del f['lstm']
    f.create_group('lstm').attrs['weight_names'] = []
    if kind == 'legacy_weight_names_not_a_list':
      return (
        legacy,
        r'/dense has weight_names=.*dense/kernel:0.*; expected a list of names',
      )
    f['dense'].attrs['weight_names'] = [b'kernel:0']
    f.attrs['model_config'] = '{"class_name": "Sequential", '
    return legacy, r'model_config is not valid JSON'


@pytest.mark.parametrize(
  'kind',
  [
    'config_not_json',
    'config_without_layers',
    'layer_without_config',
    'lstm_without_units',
    'no_weights_member',
    'vars_member_is_a_group',
    'vars_member_is_text',
    'legacy_layer_is_a_dataset',
    'legacy_weight_names_not_a_list',
    'legacy_model_config_not_json',
  ],
)
def test_malformed_keras_files_say_what_is_missing(tmp_path, kind):
  _h5py()
  path, match = _malformed(kind, tmp_path)
  _refused(path, match)


# --- PyTorch parity -------------------------------------------------------------


@pytest.mark.parametrize('gru', [False, True], ids=['lstm', 'gru'])
@pytest.mark.parametrize(
  'num_layers,bidirectional', [(1, False), (2, False), (1, True), (2, True)]
)
def test_torch_parity(num_layers, bidirectional, gru):
  """torch nn.LSTM / nn.GRU with random weights and initial states -> ours:
  outputs and final states agree."""
  torch = _torch()
  torch.manual_seed(num_layers * 2 + bidirectional)
  b, t, f, h = 3, 7, 4, 5
  cls = torch.nn.GRU if gru else torch.nn.LSTM
  module = cls(
    f, h, num_layers=num_layers, bidirectional=bidirectional, batch_first=True
  )
  with torch.no_grad():
    for p in module.parameters():
      p.uniform_(-0.7, 0.7)
  rows = num_layers * (2 if bidirectional else 1)
  x = torch.randn(b, t, f)
  h0, c0 = torch.randn(rows, b, h), torch.randn(rows, b, h)
  with torch.no_grad():
    if gru:
      theirs, h_n = module(x, h0)
    else:
      theirs, (h_n, c_n) = module(x, (h0, c0))
  convert = interop.gru_from_torch if gru else interop.lstm_from_torch
  layers = convert(module.state_dict())  # tensors in, numpy out
  carries = interop.carries_from_torch(h0, None if gru else c0, bidirectional)
  ours, finals = run_ours(layers, x.numpy(), carries, gru)
  name = (
    f'torch {"GRU" if gru else "LSTM"} layers={num_layers} '
    f'bidirectional={bidirectional}'
  )
  _close(name + ' outputs', ours, theirs.numpy())
  if gru:
    _close(name + ' h_n', interop.carries_to_torch(finals), h_n.numpy())
  else:
    our_h, our_c = interop.carries_to_torch(finals)
    _close(name + ' h_n', our_h, h_n.numpy())
    _close(name + ' c_n', our_c, c_n.numpy())
  # And back: our params exported load into a fresh module that computes the same.
  export = interop.gru_to_torch if gru else interop.lstm_to_torch
  fresh = cls(
    f, h, num_layers=num_layers, bidirectional=bidirectional, batch_first=True
  )
  fresh.load_state_dict(
    {k: torch.from_numpy(v) for k, v in export(layers).items()}
  )
  with torch.no_grad():
    again = fresh(x, h0 if gru else (h0, c0))[0]
  _close(name + ' exported and reloaded', again.numpy(), theirs.numpy())


def test_stacked_model_to_torch_parity():
  """Our StackedLSTM((6, 6), 3) exported to nn.LSTM(num_layers=2) + nn.Linear."""
  torch = _torch()
  rng = np.random.default_rng(9)
  x = rng.normal(size=(4, 8, 2)).astype(np.float32)
  params = interop.stacked_lstm_params(
    [_random_lstm_params(rng, 2, 6), _random_lstm_params(rng, 6, 6)],
    {
      'kernel': rng.normal(size=(6, 3)).astype(np.float32),
      'bias': rng.normal(size=(3,)).astype(np.float32),
    },
  )
  ours = StackedLSTM((6, 6), 3).apply({'params': params}, x)

  class Net(torch.nn.Module):
    def __init__(self):
      super().__init__()
      self.lstm = torch.nn.LSTM(2, 6, num_layers=2, batch_first=True)
      self.fc = torch.nn.Linear(6, 3)

    def forward(self, inputs):
      return self.fc(self.lstm(inputs)[0][:, -1])

  net = Net()
  sd = {
    **interop.lstm_to_torch(params, prefix='lstm.'),
    **interop.dense_to_torch(params['dense'], prefix='fc.'),
  }
  net.load_state_dict({k: torch.from_numpy(v) for k, v in sd.items()})
  with torch.no_grad():
    theirs = net(torch.from_numpy(x)).numpy()
  _close('StackedLSTM((6, 6)) -> torch LSTM + Linear', ours, theirs)


# --- Keras parity ----------------------------------------------------------------


def _randomise(keras_layer, rng):
  keras_layer.set_weights(
    [
      rng.uniform(-0.7, 0.7, w.shape).astype(np.float32)
      for w in keras_layer.get_weights()
    ]
  )


@pytest.mark.parametrize(
  'kind',
  [
    'lstm',
    'gru',
    'gru_reset_before',
    'bidirectional_lstm',
    'bidirectional_gru',
  ],
)
def test_keras_layer_parity(kind):
  """A Keras layer with random weights -> ours: outputs and final states agree;
  ours -> Keras arrays -> ours is exact."""
  keras = _keras()
  rng = np.random.default_rng(10)
  b, t, f, h = 3, 6, 4, 5
  x = rng.normal(size=(b, t, f)).astype(np.float32)
  cell = 'gru' if 'gru' in kind else 'lstm'
  options = dict(return_sequences=True, return_state=True)
  if kind == 'gru_reset_before':
    options['reset_after'] = False
  inner = (keras.layers.GRU if cell == 'gru' else keras.layers.LSTM)(
    h, **options
  )
  layer = (
    keras.layers.Bidirectional(inner) if 'bidirectional' in kind else inner
  )
  layer(x)  # build
  _randomise(layer, rng)
  theirs = [np.asarray(a) for a in layer(x)]
  weights = layer.get_weights()
  if 'bidirectional' in kind:
    params = interop.bidirectional_from_keras(weights, cell)
    ours, (fwd, bwd) = Bidirectional(
      h, cell=cell, return_sequences=True, return_state=True
    ).apply({'params': params}, x)
    ours_states = list(fwd) + list(bwd) if cell == 'lstm' else [fwd, bwd]
    back = interop.bidirectional_to_keras(params, cell)
  else:
    params = (
      interop.gru_from_keras if cell == 'gru' else interop.lstm_from_keras
    )(weights)
    cls = GRU if cell == 'gru' else LSTM
    extra = {'reset_after': False} if kind == 'gru_reset_before' else {}
    ours, state = cls(
      h, return_sequences=True, return_state=True, **extra
    ).apply({'params': params}, x)
    ours_states = list(state) if cell == 'lstm' else [state]
    back = (interop.gru_to_keras if cell == 'gru' else interop.lstm_to_keras)(
      params
    )
  _close(f'keras {kind} outputs', ours, theirs[0])
  # Keras' states: [h, c] per direction for an LSTM, [h] for a GRU.
  _close(
    f'keras {kind} final states', np.stack(ours_states), np.stack(theirs[1:])
  )
  assert len(back) == len(weights)
  for ours_array, keras_array in zip(back, weights):
    np.testing.assert_array_equal(ours_array, keras_array)


def test_keras_gru_to_torch_parity():
  """Keras GRU (reset_after=True) -> nn.GRU state_dict, framework against framework."""
  keras, torch = _keras(), _torch()
  rng = np.random.default_rng(11)
  x = rng.normal(size=(2, 6, 3)).astype(np.float32)
  layer = keras.layers.GRU(4, return_sequences=True)
  layer(x)
  _randomise(layer, rng)
  module = torch.nn.GRU(3, 4, batch_first=True)
  module.load_state_dict(
    {
      k: torch.from_numpy(v)
      for k, v in interop.gru_to_torch(
        interop.gru_from_keras(layer.get_weights())
      ).items()
    }
  )
  with torch.no_grad():
    theirs = module(torch.from_numpy(x))[0].numpy()
  _close('keras GRU -> torch GRU outputs', theirs, np.asarray(layer(x)))


def _seed_keras_model(keras, name):
  """The seed experiments' Keras models, random weights (biases too)."""
  layers = keras.layers
  if name == 'vanilla':
    shape, stack = (
      (5, 10),
      [layers.LSTM(25), layers.Dense(10, activation='softmax')],
    )
  elif name == 'stacked':
    shape, stack = (
      (50, 1),
      [
        layers.LSTM(20, return_sequences=True),
        layers.LSTM(20),
        layers.Dense(5),
      ],
    )
  else:  # cnn_lstm, on 20x20 frames to keep the test quick
    shape, stack = (
      (6, 20, 20, 1),
      [
        layers.TimeDistributed(layers.Conv2D(2, (2, 2), activation='relu')),
        layers.TimeDistributed(layers.MaxPooling2D(pool_size=(2, 2))),
        layers.TimeDistributed(layers.Flatten()),
        layers.LSTM(50),
        layers.Dense(1, activation='sigmoid'),
      ],
    )
  model = keras.Sequential([keras.Input(shape)] + stack)
  rng = np.random.default_rng(12)
  model.set_weights(
    [
      rng.uniform(-0.3, 0.3, w.shape).astype(np.float32)
      for w in model.get_weights()
    ]
  )
  return model, shape


@pytest.mark.parametrize('name', ['stacked', 'cnn_lstm'])
def test_keras_seed_model_files_load_without_keras(name, tmp_path, monkeypatch):
  """A Keras seed model saved as .keras and .weights.h5, read back with our
  reader while `import keras` and `import torch` fail: same predictions.
  (The vanilla model: test_readme_keras_snippet_runs, trained and compiled.)"""
  keras = _keras()
  model, shape = _seed_keras_model(keras, name)
  x = np.random.default_rng(13).uniform(0, 1, (4,) + shape).astype(np.float32)
  expected = model.predict(x, verbose=0)
  model.save(tmp_path / 'model.keras')
  model.save_weights(tmp_path / 'model.weights.h5')
  model.save(
    tmp_path / 'legacy.h5'
  )  # Keras 2's HDF5 layout, with its model config
  monkeypatch.setitem(
    sys.modules, 'keras', None
  )  # `import keras` raises ImportError
  monkeypatch.setitem(sys.modules, 'torch', None)
  activation = {
    'vanilla': 'softmax',
    'stacked': 'linear',
    'cnn_lstm': 'sigmoid',
  }[name]
  for filename in ('model.keras', 'model.weights.h5', 'legacy.h5'):
    imported = interop.load_keras(
      tmp_path / filename,
      activation=activation if 'weights' in filename else None,
    )
    assert imported.activation == activation
    assert type(imported.model).__name__ == (
      'CNNLSTM' if name == 'cnn_lstm' else 'StackedLSTM'
    )
    want = jax.eval_shape(
      imported.model.init, jax.random.key(0), jnp.zeros((1,) + shape)
    )
    assert jax.tree_util.tree_map(
      lambda a: a.shape, imported.variables
    ) == jax.tree_util.tree_map(lambda a: a.shape, want)
    _close(
      f'keras {name} {filename} vs model.predict', imported.predict(x), expected
    )
  # And back: other weights of ours, written without Keras, load into the Keras model.
  ours = jax.tree_util.tree_map(
    lambda a: np.asarray(a) * 0.5 + 0.05, imported.variables
  )
  interop.save_keras_weights(tmp_path / 'ours.weights.h5', ours)
  assert interop.load_keras(tmp_path / 'ours.weights.h5').variables[
    'params'
  ].keys() == (ours['params'].keys())
  monkeypatch.undo()
  model.load_weights(tmp_path / 'ours.weights.h5')
  for keras_array, our_array in zip(
    model.get_weights(), interop.keras_weights(ours)
  ):
    np.testing.assert_array_equal(keras_array, our_array)
  _close(
    f'ours -> keras {name} .weights.h5, predictions',
    model.predict(x, verbose=0),
    interop.KerasImport(imported.model, ours, activation).predict(x),
  )


def test_keras_file_with_a_layer_we_do_not_have_is_refused(tmp_path):
  keras = _keras()
  model = keras.Sequential(
    [keras.Input((5, 3)), keras.layers.GRU(4), keras.layers.Dense(2)]
  )
  model.save(tmp_path / 'gru.keras')
  with pytest.raises(ValueError, match=r"layers are 'GRU Dense'"):
    interop.load_keras(tmp_path / 'gru.keras')
  model.save_weights(tmp_path / 'gru.weights.h5')
  with pytest.raises(
    ValueError, match=r"layers \['gru'\] are not part of our models"
  ):
    interop.load_keras(tmp_path / 'gru.weights.h5')


def test_keras_file_with_hard_sigmoid_is_refused(tmp_path):
  """Keras before 2.3 defaulted to recurrent_activation='hard_sigmoid'; ours is sigmoid."""
  keras = _keras()
  model = keras.Sequential(
    [
      keras.Input((5, 10)),
      keras.layers.LSTM(4, recurrent_activation='hard_sigmoid'),
      keras.layers.Dense(10, activation='softmax'),
    ]
  )
  model.save(tmp_path / 'old.h5')
  with pytest.raises(
    ValueError,
    match=r"recurrent_activation='hard_sigmoid'; our model "
    r"computes 'sigmoid'",
  ):
    interop.load_keras(tmp_path / 'old.h5')


# --- params_from_file: a Keras or PyTorch file into our model's params ---------------


def _init_params(model, shape):
  return model.init(jax.random.key(0), jnp.zeros((1,) + shape))['params']


def _same_tree(params, target):
  """Same structure, shapes and dtypes, leaf by leaf."""
  assert jax.tree_util.tree_structure(params) == jax.tree_util.tree_structure(
    target
  )
  jax.tree_util.tree_map(
    lambda p, t: (
      (p.shape, p.dtype) == (t.shape, t.dtype)
      or pytest.fail(f'{p.shape} {p.dtype} != {t.shape} {t.dtype}')
    ),
    params,
    target,
  )


def test_params_from_keras_file_compute_what_keras_predicts(tmp_path):
  """A Keras echo model, LSTM(25) -> Dense(10, softmax), into our StackedLSTM's params."""
  keras = _keras()
  model, shape = _seed_keras_model(keras, 'vanilla')
  x = np.random.default_rng(14).uniform(0, 1, (6,) + shape).astype(np.float32)
  expected = model.predict(x, verbose=0)
  model.save(tmp_path / 'echo.keras')
  model.save_weights(tmp_path / 'echo.weights.h5')
  model.save(tmp_path / 'echo.h5')
  ours = StackedLSTM((25,), 10)
  target = _init_params(ours, shape)
  for name in ('echo.keras', 'echo.weights.h5', 'echo.h5'):
    params = interop.params_from_file(str(tmp_path / name), target)
    _same_tree(params, target)
    _close(
      f'params_from_file {name}: softmax(ours) vs keras predict',
      jax.nn.softmax(ours.apply({'params': params}, x)),
      expected,
    )
  # With the outer {'params': ...}, and a dtype other than float32: kept as given.
  wrapped = {
    'params': jax.tree_util.tree_map(lambda a: a.astype(jnp.bfloat16), target)
  }
  _same_tree(
    interop.params_from_file(tmp_path / 'echo.keras', wrapped), wrapped
  )


def test_params_from_a_keras_file_of_another_size_name_the_shapes(tmp_path):
  keras = _keras()
  model, shape = _seed_keras_model(keras, 'vanilla')
  model.save(tmp_path / 'echo.keras')
  path = tmp_path / 'echo.keras'
  with pytest.raises(
    ValueError,
    match=re.escape(
      f'{path}: parameter lstm_0/kernel has shape (10, 100) in the file; the model being '
      'trained needs (10, 120) (the file holds LSTM(25) -> Dense(10), the model being '
      'trained is LSTM(30) -> Dense(10))'
    ),
  ):
    interop.params_from_file(path, _init_params(StackedLSTM((30,), 10), shape))
  with pytest.raises(
    ValueError,
    match=re.escape(
      'the file holds LSTM(25) -> Dense(10), the model being trained is LSTM(25) -> '
      'LSTM(25) -> Dense(10): the file has no lstm_1/kernel'
    ),
  ):
    interop.params_from_file(
      path, _init_params(StackedLSTM((25, 25), 10), shape)
    )
  from lstm_flax.models import EncoderDecoder  # pylint: disable=g-import-not-at-top

  with pytest.raises(
    ValueError,
    match=r"fills our StackedLSTM \(model.name='lstm'.*and "
    r"CNNLSTM.*has parameters such as \['decoder_0/",
  ):
    interop.params_from_file(
      path, _init_params(EncoderDecoder((25, 25), 10, 1), shape)
    )


def test_params_from_a_keras_cnn_lstm_file(tmp_path):
  keras = _keras()
  model, shape = _seed_keras_model(keras, 'cnn_lstm')
  x = np.random.default_rng(15).uniform(0, 1, (3,) + shape).astype(np.float32)
  model.save(tmp_path / 'cnn.keras')
  from lstm_flax.models import CNNLSTM  # pylint: disable=g-import-not-at-top

  ours = CNNLSTM((50,), 1)
  target = _init_params(ours, shape)
  params = interop.params_from_file(tmp_path / 'cnn.keras', target)
  _same_tree(params, target)
  _close(
    'params_from_file cnn_lstm: sigmoid(ours) vs keras predict',
    jax.nn.sigmoid(ours.apply({'params': params}, x)),
    model.predict(x, verbose=0),
  )


class _TorchEcho:
  """nn.LSTM(10, 25) -> nn.Linear(25, 10) on the last step, built lazily (torch optional)."""

  @staticmethod
  def make(torch, layers=1):
    class Net(torch.nn.Module):
      def __init__(self):
        super().__init__()
        self.lstm = torch.nn.LSTM(10, 25, num_layers=layers, batch_first=True)
        self.head = torch.nn.Linear(25, 10)

      def forward(self, x):
        return self.head(self.lstm(x)[0][:, -1])

    torch.manual_seed(0)
    return Net()


def test_params_from_torch_file_compute_what_torch_computes(tmp_path):
  torch = _torch()
  x = np.random.default_rng(16).uniform(0, 1, (4, 5, 10)).astype(np.float32)
  for layers in (1, 2):
    net = _TorchEcho.make(torch, layers)
    with torch.no_grad():
      expected = net(torch.from_numpy(x)).numpy()
    torch.save(net.state_dict(), tmp_path / 'echo.pt')
    torch.save(
      {'state_dict': net.state_dict(), 'epoch': 3}, tmp_path / 'echo.pth'
    )
    ours = StackedLSTM((25,) * layers, 10)
    target = _init_params(ours, (5, 10))
    for name in ('echo.pt', 'echo.pth'):
      params = interop.params_from_file(tmp_path / name, target)
      _same_tree(params, target)
      _close(
        f'params_from_file {name} ({layers} layers) vs torch',
        ours.apply({'params': params}, x),
        expected,
      )
  path = tmp_path / 'echo.pt'
  with pytest.raises(
    ValueError,
    match=re.escape(
      f'{path}: parameter lstm_0/kernel has shape (10, 100) in the file; the model being '
      'trained needs (10, 80)'
    ),
  ):
    interop.params_from_file(
      path, _init_params(StackedLSTM((20, 20), 10), (5, 10))
    )


def test_params_from_file_refuses_what_it_cannot_read(tmp_path):
  torch = _torch()
  target = _init_params(StackedLSTM((25,), 10), (5, 10))
  net = _TorchEcho.make(torch)
  whole = tmp_path / 'whole.pt'
  torch.save(
    torch.nn.Linear(25, 10), whole
  )  # a module, not a state_dict: pickled code
  with pytest.raises(
    ValueError,
    match=re.escape(f'{whole}: torch.load(weights_only=True) cannot read it'),
  ):
    interop.params_from_file(whole, target)
  gru = tmp_path / 'gru.pt'
  torch.save(
    {
      **torch.nn.GRU(10, 25).state_dict(),
      'head.weight': torch.zeros(10, 25),
      'head.bias': torch.zeros(10),
    },
    gru,
  )
  with pytest.raises(ValueError, match=r'is this an nn.GRU\?'):
    interop.params_from_file(gru, target)
  extra = tmp_path / 'extra.pt'
  torch.save({**net.state_dict(), 'norm.weight': torch.ones(25)}, extra)
  with pytest.raises(
    ValueError,
    match=r"besides the nn.LSTM 'lstm.' it holds "
    r"\['head.bias', 'head.weight', 'norm.weight'\]",
  ):
    interop.params_from_file(extra, target)
  text = tmp_path / 'notes.txt'
  text.write_text('hello')
  with pytest.raises(
    ValueError,
    match=r'notes.txt is neither a Keras file .* nor a '
    r'PyTorch state_dict',
  ):
    interop.params_from_file(text, target)


# --- the README's section runs as written -----------------------------------------


def _readme_snippets():
  with open(os.path.join(ROOT, 'docs', 'interop.md'), encoding='utf-8') as f:
    text = f.read()
  section = text.split('## Bring your Keras or PyTorch LSTM\n', 1)[1].split(
    '\n## ', 1
  )[0]
  snippets = re.findall(r'```python\n(.*?)```', section, re.S)
  assert len(snippets) == 2, 'expected the Keras and the PyTorch snippet'
  return snippets


def _run_snippet(code):
  namespace = {'__name__': '__readme__'}
  out = io.StringIO()
  with contextlib.redirect_stdout(out):
    exec(compile(code, 'README.md', 'exec'), namespace)  # pylint: disable=exec-used
  return namespace, out.getvalue()


def test_readme_keras_snippet_runs(tmp_path, monkeypatch):
  """examples/train_keras_echo.py makes echo.keras (a few updates: quick); the
  README's snippet, run without Keras, reports the accuracy Keras itself gets."""
  _keras()
  spec = importlib.util.spec_from_file_location(
    'train_keras_echo', os.path.join(ROOT, 'examples', 'train_keras_echo.py')
  )
  example = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(example)
  keras_model = example.train(str(tmp_path), steps=2, batch_size=8)
  assert (tmp_path / 'echo.keras').exists() and (
    tmp_path / 'echo.weights.h5'
  ).exists()
  snippet = _readme_snippets()[0]
  monkeypatch.chdir(tmp_path)
  monkeypatch.setitem(sys.modules, 'keras', None)
  namespace, printed = _run_snippet(snippet)
  from configs import vanilla  # pylint: disable=g-import-not-at-top
  from lstm_flax.models import make_model  # pylint: disable=g-import-not-at-top

  imported = namespace['imported']
  assert imported.model == make_model(vanilla.get_config().model, 10)
  want = jax.eval_shape(
    imported.model.init, jax.random.key(0), jnp.zeros((1, 5, 10))
  )
  assert jax.tree_util.tree_map(
    lambda a: a.shape, imported.variables
  ) == jax.tree_util.tree_map(lambda a: a.shape, want)
  inputs, labels = namespace['inputs'], namespace['labels']
  expected = keras_model.predict(np.asarray(inputs), verbose=0)
  _close(
    'README keras snippet predictions vs model.predict',
    namespace['probabilities'],
    expected,
  )
  accuracy = float(re.search(r'accuracy (\S+)', printed).group(1))
  assert accuracy == pytest.approx(
    float((expected.argmax(-1) == labels).mean()), abs=1e-3
  )
  # The .weights.h5 variant in the snippet's comment.
  weights_only = interop.load_keras('echo.weights.h5', activation='softmax')
  _close(
    'README keras snippet .weights.h5 variant',
    weights_only.predict(inputs),
    expected,
  )


def test_readme_torch_snippet_runs():
  _torch()
  namespace, printed = _run_snippet(_readme_snippets()[1])
  diff = float(re.search(r'max abs diff (\S+)', printed).group(1))
  assert diff <= ATOL, printed
  print(f'max abs diff README torch snippet: {diff:.3g}')
  torch = sys.modules['torch']
  with (
    torch.no_grad()
  ):  # the exported state_dict, loaded back, computes the same
    _close(
      'README torch snippet, reloaded net',
      namespace['net'](namespace['x']).numpy(),
      namespace['ours'],
    )
