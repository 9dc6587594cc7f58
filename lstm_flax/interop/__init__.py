"""Weights that move between frameworks: Keras and PyTorch LSTM (and GRU) weights to and from ours.

Neither Keras nor PyTorch is needed here: arrays go in and out as numpy
(float32), torch tensors are read by duck typing (``.detach().cpu().numpy()``)
and Keras files are read with ``zipfile`` and ``h5py``.  Every conversion
checks names and shapes and raises a ``ValueError`` that names the offending
key or array, its shape, and what was expected.

LSTM layouts (B batch, T time, F features, H units)
---------------------------------------------------
- Ours (``lstm_flax.lstm.LSTM``) is Keras' ``LSTM`` layout exactly:
  ``kernel`` (F, 4H), ``recurrent_kernel`` (H, 4H), ``bias`` (4H,), gate
  blocks ordered input, forget, cell (candidate), output.  Keras'
  ``layer.get_weights()`` is ``[kernel, recurrent_kernel, bias]``
  (``[kernel, recurrent_kernel]`` for ``use_bias=False``).  Copies both ways,
  exact.
- PyTorch ``nn.LSTM``, layer k: ``weight_ih_l{k}`` (4H, F_k),
  ``weight_hh_l{k}`` (4H, H), ``bias_ih_l{k}`` (4H,), ``bias_hh_l{k}`` (4H,);
  gate blocks i, f, g, o (g is Keras' c: the same order).  The second
  direction of a bidirectional LSTM has the suffix ``_reverse``; layers after
  the first take F_k = H * num_directions.  Import: kernel = weight_ih.T,
  recurrent_kernel = weight_hh.T, bias = bias_ih + bias_hh (one float32 add).
  Export puts the whole bias in ``bias_ih`` and zeros in ``bias_hh``, so
  ours -> PyTorch -> ours is exact, and PyTorch -> ours -> PyTorch computes the
  same function with the bias split differently.  ``num_layers > 1`` maps onto
  our ``StackedLSTM`` (``lstm_0``, ``lstm_1``, ... then ``dense``); PyTorch
  needs every layer to have the same H.  ``proj_size`` (``weight_hr_l{k}``)
  and ``bias=False`` have no counterpart and are refused.

GRU layouts (array level; ``gru_*`` functions)
----------------------------------------------
- Keras ``GRU(reset_after=True)`` (Keras 3's default): ``kernel`` (F, 3H),
  ``recurrent_kernel`` (H, 3H), ``bias`` (2, 3H) = [input bias; recurrent
  bias], blocks z (update), r (reset), h (candidate)::

    z = sigmoid(x Wz + bz0 + h Uz + bz1)      r = sigmoid(x Wr + br0 + h Ur + br1)
    n = tanh(x Wh + bh0 + r * (h Uh + bh1))   h' = z * h + (1 - z) * n

- PyTorch ``nn.GRU``: ``weight_ih_l{k}`` (3H, F), ``weight_hh_l{k}`` (3H, H),
  ``bias_ih_l{k}``, ``bias_hh_l{k}`` (3H,), blocks r, z, n, with the same
  equations (the reset gate multiplies the recurrent matmul's result,
  ``r * (W_hn h + b_hn)``).  So Keras ``reset_after=True`` <-> PyTorch is an
  exact reordering of blocks, both ways, biases included.
- Keras ``GRU(reset_after=False)``: ``bias`` (3H,), and the candidate is
  ``tanh(x Wh + bh + (r * h) Uh)`` -- the reset gate applied *before* the
  recurrent matmul.  PyTorch has no such cell, so converting it to PyTorch
  raises ``ValueError``.

Our layers
----------
``lstm_flax.lstm.LSTM`` takes the LSTM params above, ``lstm_flax.lstm.GRU``
the GRU params in Keras layout (``reset_after=True``: bias (2, 3H);
``reset_after=False``: bias (3H,)), and ``lstm_flax.lstm.Bidirectional``
``{'forward': params, 'backward': params}`` -- the form every ``*_from_torch``
returns per layer for a bidirectional state_dict, and
:func:`bidirectional_from_keras` for Keras' ``Bidirectional`` (whose backward
layer reads time backwards and, like ours, returns its outputs in input
order).  A multi-layer bidirectional PyTorch RNN is a list of such layers, each
layer's merged (concatenated) outputs feeding the next.

Carries
-------
Ours and Keras: ``(h, c)`` per layer, each (B, H) (Keras' ``return_state``
returns ``[output, h, c]``).  PyTorch returns ``(h_n, c_n)``, each
(num_layers * num_directions, B, H), row ``layer * num_directions +
direction``; its GRU returns ``h_n`` alone.  Flax's own cells
(``nn.OptimizedLSTMCell``) carry ``(c, h)``.  :func:`carries_from_torch` and
:func:`carries_to_torch` convert.

Keras files
-----------
:func:`load_keras` reads a Keras 3 ``.keras`` archive, a bare
``.weights.h5``, or a legacy Keras 2 / tf.keras HDF5 (``model.save('x.h5')``)
of one of the seed models into our ``StackedLSTM`` / ``CNNLSTM`` and its
parameters, refusing hostile files (``keras_files``).  The other way,
:func:`save_keras_weights` writes our ``StackedLSTM`` / ``CNNLSTM`` params as a
Keras 3 ``.weights.h5`` that the matching Keras model's ``load_weights`` reads,
and :func:`keras_weights` gives its ``set_weights`` list.

Modules
-------
- ``_common``: array copies, shape checks, checked layer layouts, ``StackedLSTM`` trees.
- ``keras``: Keras ``get_weights()`` lists <-> ours; our seed models -> Keras.
- ``pytorch``: ``nn.LSTM`` / ``nn.GRU`` / ``nn.Linear`` state_dicts and carries <-> ours.
- ``keras_files``: reading ``.keras`` / ``.h5`` safely (zipfile and h5py only).
- ``keras_models``: ``load_keras``, the model config checked against its weights.
- ``from_file``: ``params_from_file``, a Keras or PyTorch file into a given params tree
  (warm starts).
"""

from lstm_flax.interop._common import stacked_lstm_layers
from lstm_flax.interop._common import stacked_lstm_params
from lstm_flax.interop._common import to_numpy
from lstm_flax.interop.keras import bidirectional_from_keras
from lstm_flax.interop.keras import bidirectional_to_keras
from lstm_flax.interop.keras import dense_from_keras
from lstm_flax.interop.keras import dense_to_keras
from lstm_flax.interop.keras import gru_from_keras
from lstm_flax.interop.keras import gru_to_keras
from lstm_flax.interop.keras import keras_weights
from lstm_flax.interop.keras import lstm_from_keras
from lstm_flax.interop.keras import lstm_to_keras
from lstm_flax.interop.keras import save_keras_weights
from lstm_flax.interop.keras_files import MAX_COMPRESSION_RATIO
from lstm_flax.interop.keras_files import MAX_FILE_BYTES
from lstm_flax.interop.keras_files import check_zip_sizes
from lstm_flax.interop.keras_files import read_keras_weights
from lstm_flax.interop.from_file import params_from_file
from lstm_flax.interop.keras_models import KerasImport
from lstm_flax.interop.keras_models import load_keras
from lstm_flax.interop.pytorch import carries_from_torch
from lstm_flax.interop.pytorch import carries_to_torch
from lstm_flax.interop.pytorch import dense_to_torch
from lstm_flax.interop.pytorch import gru_from_torch
from lstm_flax.interop.pytorch import gru_to_torch
from lstm_flax.interop.pytorch import linear_from_torch
from lstm_flax.interop.pytorch import lstm_from_torch
from lstm_flax.interop.pytorch import lstm_to_torch

__all__ = [
  'bidirectional_from_keras',
  'bidirectional_to_keras',
  'carries_from_torch',
  'carries_to_torch',
  'check_zip_sizes',
  'dense_from_keras',
  'dense_to_keras',
  'dense_to_torch',
  'gru_from_keras',
  'gru_from_torch',
  'gru_to_keras',
  'gru_to_torch',
  'keras_weights',
  'KerasImport',
  'linear_from_torch',
  'load_keras',
  'lstm_from_keras',
  'lstm_from_torch',
  'lstm_to_keras',
  'lstm_to_torch',
  'MAX_COMPRESSION_RATIO',
  'MAX_FILE_BYTES',
  'params_from_file',
  'read_keras_weights',
  'save_keras_weights',
  'stacked_lstm_layers',
  'stacked_lstm_params',
  'to_numpy',
]
