"""Warm starts from other frameworks: :func:`params_from_file` reads a Keras or
PyTorch file into the params tree of the model being trained.

Supported: our ``StackedLSTM`` (``model.name='lstm'``: LSTM ... LSTM -> Dense)
from a Keras seed model or a PyTorch ``nn.LSTM`` + ``nn.Linear`` state_dict,
and our ``CNNLSTM`` (``'cnn_lstm'``) from a Keras TimeDistributed CNN-LSTM.
Only the parameters move: the head's activation (softmax, sigmoid) is the
task's loss here, so a head must compute what the task expects.
"""

import re
import zipfile
from typing import Any, Dict, Mapping

import jax
import numpy as np

from lstm_flax.interop._common import stacked_lstm_params
from lstm_flax.interop.keras_files import check_zip_sizes
from lstm_flax.interop.keras_models import load_keras
from lstm_flax.interop.pytorch import TORCH_RNN_KEY
from lstm_flax.interop.pytorch import linear_from_torch
from lstm_flax.interop.pytorch import lstm_from_torch

SUPPORTED_MODELS = (
  "our StackedLSTM (model.name='lstm': LSTM ... LSTM -> Dense) and "
  "CNNLSTM ('cnn_lstm', from Keras files only)"
)
_OUR_PARAM = re.compile(
  r'(params/)?(encoder/(kernel|bias)|(rnn/)?'
  r'(lstm_\d+/(kernel|recurrent_kernel|bias)|dense/(kernel|bias)))'
)


def params_from_file(path, target_params) -> Any:
  """The weights in ``path`` as a params tree like ``target_params``.

  path: a Keras file, read as :func:`load_keras` reads it (hostile files
    refused), or a PyTorch file: a ``torch.save``d state_dict (or a dict
    holding one under 'state_dict', 'model_state_dict' or 'model') with one
    unidirectional ``nn.LSTM`` (any number of layers) and one ``nn.Linear``
    head, loaded with ``torch.load(weights_only=True)`` (no code runs).
  target_params: one model's params (no seed axis), with or without the outer
    ``{'params': ...}``; arrays or ``jax.ShapeDtypeStruct``.
  Returns numpy arrays in ``target_params``' tree structure, shapes and dtypes.
  Raises ValueError naming the first parameter (in model order) whose shape
  does not fit, expected and found, or the models and files it supports.
  """
  names, treedef = _named_leaves(target_params)
  unsupported = [n for n in names if not _OUR_PARAM.fullmatch(n)]
  if unsupported:
    raise ValueError(
      f'{path}: params_from_file fills {SUPPORTED_MODELS}; the model '
      f'being trained has parameters such as {unsupported[:4]}'
    )
  kind = _file_kind(path)
  params = (
    load_keras(path).variables['params']
    if kind == 'keras'
    else (_torch_params(_torch_state_dict(path), path))
  )
  found = dict(zip(_named_leaves(params)[0], jax.tree_util.tree_leaves(params)))
  if all(n.startswith('params/') for n in names):
    found = {'params/' + n: a for n, a in found.items()}
  wanted = dict(zip(names, jax.tree_util.tree_leaves(target_params)))
  _check_fits(path, found, wanted)
  return jax.tree_util.tree_unflatten(
    treedef, [np.asarray(found[n], np.dtype(wanted[n].dtype)) for n in names]
  )


def _named_leaves(tree):
  """-> (['lstm_0/kernel', ...] in flattening order, treedef)."""
  leaves, treedef = jax.tree_util.tree_flatten_with_path(tree)
  return [
    '/'.join(str(getattr(k, 'key', getattr(k, 'idx', k))) for k in path)
    for path, _ in leaves
  ], treedef


def _model_order(name):
  """Sort key: the conv encoder, each LSTM layer (kernel, recurrent_kernel, bias), the head."""
  layer = re.search(r'lstm_(\d+)/', name)
  position = (
    0 if 'encoder/' in name else 1 + int(layer.group(1)) if layer else 10**9
  )
  return position, ('kernel', 'recurrent_kernel', 'bias').index(
    name.rsplit('/', 1)[1]
  )


def _architecture(arrays: Mapping[str, Any]) -> str:
  """Named params -> 'Conv2D(2, 2x2) -> LSTM(20) -> Dense(5)'."""
  parts = []
  for name in sorted(arrays, key=_model_order):
    shape = np.shape(arrays[name])
    if name.endswith('encoder/kernel') and len(shape) == 4:
      parts.append(f'Conv2D({shape[3]}, {shape[0]}x{shape[1]})')
    elif name.endswith('recurrent_kernel') and len(shape) == 2:
      parts.append(f'LSTM({shape[0]})')
    elif name.endswith('dense/kernel') and len(shape) == 2:
      parts.append(f'Dense({shape[1]})')
  return ' -> '.join(parts)


def _check_fits(path, found, wanted):
  """ValueError unless ``found`` has exactly ``wanted``'s names and shapes."""
  models = (
    f'the file holds {_architecture(found)}, the model being trained is '
    f'{_architecture(wanted)}'
  )
  missing = sorted(set(wanted) - set(found), key=_model_order)
  extra = sorted(set(found) - set(wanted), key=_model_order)
  if missing or extra:
    what = (
      f'the file has no {missing[0]}'
      if missing
      else f'the model has no {extra[0]}'
    )
    raise ValueError(f'{path}: {models}: {what}')
  for name in sorted(wanted, key=_model_order):
    if np.shape(found[name]) != tuple(np.shape(wanted[name])):
      raise ValueError(
        f'{path}: parameter {name} has shape {np.shape(found[name])} in '
        f'the file; the model being trained needs '
        f'{tuple(np.shape(wanted[name]))} ({models})'
      )


def _file_kind(path) -> str:
  """'keras' or 'torch', from the file's first bytes and, for a zip, its names."""
  with open(path, 'rb') as f:
    head = f.read(8)
  if head == b'\x89HDF\r\n\x1a\n':
    return 'keras'
  if zipfile.is_zipfile(path):
    try:
      with zipfile.ZipFile(path) as z:
        names = z.namelist()
    except (zipfile.BadZipFile, OSError) as e:
      raise ValueError(f'{path}: a damaged zip archive: {e}') from e
    if 'model.weights.h5' in names:
      return 'keras'
    if any(n.endswith('data.pkl') for n in names):
      return 'torch'
  elif head[:1] == b'\x80':  # a pickle: torch.save's format before PyTorch 1.6
    return 'torch'
  raise ValueError(
    f'{path} is neither a Keras file (.keras, .h5, .weights.h5) nor a '
    f'PyTorch state_dict saved with torch.save (.pt, .pth): it starts '
    f'with {head!r}'
  )


def _torch_state_dict(path) -> Mapping[str, Any]:
  """``torch.load(path, weights_only=True)``'s state_dict, checked."""
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError(
      f'{path} is a PyTorch file; reading it needs torch '
      "(pip install '.[interop]')"
    ) from e
  if zipfile.is_zipfile(path):
    with zipfile.ZipFile(path) as z:
      check_zip_sizes(path, z.infolist())
  try:
    loaded = torch.load(path, map_location='cpu', weights_only=True)
  except Exception as e:  # pylint: disable=broad-except  # torch raises many kinds
    raise ValueError(
      f'{path}: torch.load(weights_only=True) cannot read it (a whole '
      'module saved with torch.save(model) is refused: save '
      f'model.state_dict()): {type(e).__name__}: {e}'
    ) from e
  for key in ('state_dict', 'model_state_dict', 'model'):
    if isinstance(loaded, Mapping) and isinstance(loaded.get(key), Mapping):
      loaded = loaded[key]
      break
  if (
    not isinstance(loaded, Mapping)
    or not loaded
    or not all(
      isinstance(k, str) and hasattr(v, 'shape') for k, v in loaded.items()
    )
  ):
    raise ValueError(
      f'{path}: holds {type(loaded).__name__}, not a state_dict (a dict '
      'of parameter names to tensors)'
    )
  return loaded


def _torch_params(state_dict, path) -> Dict[str, Any]:
  """An nn.LSTM + nn.Linear state_dict -> our StackedLSTM params."""
  prefixes = sorted(
    {
      k[: -len('weight_ih_l0')]
      for k in state_dict
      if k.endswith('weight_ih_l0')
    }
  )
  if len(prefixes) != 1:
    raise ValueError(
      f'{path}: holds {len(prefixes)} nn.LSTM modules {prefixes}; '
      'params_from_file reads one nn.LSTM and one nn.Linear head'
    )
  prefix = prefixes[0]
  rnn = {
    k
    for k in state_dict
    if k.startswith(prefix) and TORCH_RNN_KEY.fullmatch(k[len(prefix) :])
  }
  layers = lstm_from_torch({k: state_dict[k] for k in rnn}, prefix)
  if isinstance(layers[0], Mapping) and 'forward' in layers[0]:
    raise ValueError(
      f'{path}: {prefix}* is a bidirectional nn.LSTM; our StackedLSTM '
      'reads time forwards only'
    )
  rest = sorted(set(state_dict) - rnn)
  heads = [
    k[: -len('weight')]
    for k in rest
    if k.endswith('weight') and k[: -len('weight')] + 'bias' in state_dict
  ]
  if len(heads) != 1 or len(rest) != 2:
    raise ValueError(
      f'{path}: besides the nn.LSTM {prefix!r} it holds {rest[:8]}; '
      'params_from_file reads one nn.Linear head (weight and bias) '
      'after the LSTM and nothing else'
    )
  return stacked_lstm_params(layers, linear_from_torch(state_dict, heads[0]))
