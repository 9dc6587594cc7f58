"""Reading Keras files safely: the containers (a ``.keras`` zip, HDF5) to raw
float32 arrays and the model config, with zipfile and h5py only.

Keras 3 stores a layer's weights at ``layers/<class>[_n]`` (snake-case class
name, numbered in model order: ``lstm``, ``lstm_1``, ...) as datasets
``vars/0``, ``vars/1``, ...; recurrent layers keep theirs under ``cell/vars``,
TimeDistributed under ``layer/vars``.  A ``.keras`` archive is a zip holding
``config.json`` and ``model.weights.h5``.  Legacy Keras 2 / tf.keras HDF5
files list the layers in model order (attribute ``layer_names``) and each
layer's datasets (``weight_names``).

Hostile files are refused with a ValueError naming the file, before anything
is read from outside it or inflated past the bounds below: zip members
(by the sizes in the zip's directory), HDF5 links to other files, external
storage and virtual datasets; damaged, truncated and malformed files too.
"""

import contextlib
import io
import json
import re
import zipfile
import zlib
from typing import Dict, List, Tuple

import numpy as np


# --- limits and errors --------------------------------------------------------


_HDF5_SIGNATURE = b'\x89HDF\r\n\x1a\n'
# Bounds on what one Keras file may make us inflate and read: far above any
# LSTM here, far below what would exhaust a machine.
MAX_FILE_BYTES = 4 << 30
MAX_COMPRESSION_RATIO = 1000
_RATIO_FLOOR = 1 << 20  # members under 1 MiB are never refused for their ratio
# What zipfile, h5py and indexing raise on a damaged or hand-made file.
_DAMAGE = (
  OSError,
  EOFError,
  KeyError,
  IndexError,
  TypeError,
  AttributeError,
  RuntimeError,
  UnicodeDecodeError,
  zipfile.BadZipFile,
  zlib.error,
)


@contextlib.contextmanager
def reading(path):
  """Re-raises a damaged or malformed file's low-level error as a ValueError
  naming the file (a missing file stays a FileNotFoundError)."""
  try:
    yield
  except FileNotFoundError:
    raise
  except _DAMAGE as e:
    raise ValueError(
      f'{path}: not a readable Keras file (damaged, truncated or '
      f'malformed): {type(e).__name__}: {e}'
    ) from e


def parse_json(text, where):
  try:
    return json.loads(text)
  except ValueError as e:  # JSONDecodeError and UnicodeDecodeError
    raise ValueError(f'{where} is not valid JSON: {e}') from e


def as_str(value):
  return value.decode('utf-8') if isinstance(value, bytes) else str(value)


# --- containers ---------------------------------------------------------------


def check_zip_sizes(path, infos) -> None:
  """Refuses, by the sizes in a zip's directory and before inflating anything,
  members ``infos`` (``zipfile.ZipInfo``) that would inflate past
  ``MAX_FILE_BYTES`` together or by more than ``MAX_COMPRESSION_RATIO``."""
  total = sum(i.file_size for i in infos)
  if total > MAX_FILE_BYTES:
    raise ValueError(
      f'{path}: its zip directory says {[i.filename for i in infos][:8]} '
      f'inflate to {total:,} bytes; refusing more than {MAX_FILE_BYTES:,}'
    )
  for i in infos:
    if (
      i.file_size > _RATIO_FLOOR
      and i.file_size > MAX_COMPRESSION_RATIO * i.compress_size
    ):
      raise ValueError(
        f'{path}: {i.filename} would inflate from {i.compress_size:,} to '
        f'{i.file_size:,} bytes (over {MAX_COMPRESSION_RATIO}x); refusing '
        'a likely zip bomb'
      )


def _read_member(z, info, path) -> bytes:
  if info.flag_bits & 0x1:
    raise ValueError(f'{path}: {info.filename} is encrypted')
  with z.open(info) as f:
    data = f.read(info.file_size + 1)  # never more than the directory promised
  if len(data) != info.file_size:
    raise ValueError(
      f'{path}: {info.filename} holds {len(data):,} bytes; its zip '
      f'directory says {info.file_size:,}'
    )
  return data


def _read_keras_zip(path):
  """A ``.keras`` archive -> (model.weights.h5 bytes, config.json dict or None)."""
  with zipfile.ZipFile(path) as z:
    infos = {i.filename: i for i in z.infolist()}
    if 'model.weights.h5' not in infos:
      raise ValueError(
        f'{path} is a zip archive without model.weights.h5 (has '
        f'{sorted(infos)[:8]}); expected a Keras 3 .keras file'
      )
    wanted = [
      infos[n] for n in ('config.json', 'model.weights.h5') if n in infos
    ]
    check_zip_sizes(path, wanted)
    data = {i.filename: _read_member(z, i, path) for i in wanted}
  config = (
    parse_json(data['config.json'], f'{path}: config.json')
    if 'config.json' in data
    else None
  )
  return data['model.weights.h5'], config


def _check_hdf5(h5, path) -> None:
  """Refuses what would make h5py read outside the file -- links to other
  files, external storage, virtual datasets -- or more than MAX_FILE_BYTES."""
  import h5py  # pylint: disable=g-import-not-at-top

  total = 0

  def problem(name, link):  # h5py's visit stops at a non-None return
    nonlocal total
    if isinstance(link, h5py.ExternalLink):
      return f'{name!r} links to another file ({link.filename!r})'
    obj = (
      h5.get(name) if isinstance(link, h5py.HardLink) else None
    )  # soft: seen as hard
    if isinstance(obj, h5py.Dataset):
      if obj.is_virtual:
        return f'dataset {name!r} is a virtual dataset (it maps other files)'
      if obj.external:
        return (
          f'dataset {name!r} keeps its data outside the file (external storage '
          f'in {as_str(obj.external[0][0])!r})'
        )
      total += (obj.size or 0) * obj.dtype.itemsize
    return None

  found = h5.visititems_links(problem)
  if found:
    raise ValueError(
      f'{path}: {found}; a Keras file holds its own weights, refusing it'
    )
  if total > MAX_FILE_BYTES:
    raise ValueError(
      f'{path}: its datasets hold {total:,} bytes; refusing more than '
      f'{MAX_FILE_BYTES:,}'
    )


def open_keras_file(path):
  """-> (h5py.File of the weights, config dict or None), checked safe to read."""
  import h5py  # pylint: disable=g-import-not-at-top

  with open(path, 'rb') as f:
    head = f.read(8)
  with reading(path):
    if zipfile.is_zipfile(path):
      data, config = _read_keras_zip(path)
      h5 = h5py.File(io.BytesIO(data), 'r')
    elif head == _HDF5_SIGNATURE:
      h5, config = h5py.File(path, 'r'), None
    else:
      hint = ' (a truncated or damaged zip?)' if head.startswith(b'PK') else ''
      raise ValueError(
        f'{path} is neither a zip archive (.keras) nor an HDF5 file '
        f'(.weights.h5): it starts with {head!r}{hint}'
      )
    try:
      _check_hdf5(h5, path)
    except BaseException:
      h5.close()
      raise
  return h5, config


# --- weights ------------------------------------------------------------------


def read_keras_weights(path) -> Dict[str, List[np.ndarray]]:
  """Every weighted object in a Keras file, as float32 numpy; needs h5py, not Keras.

  Keras 3 ``.keras`` / ``.weights.h5``: ``{group path: [vars/0, vars/1, ...]}``,
  e.g. ``{'layers/lstm/cell': [kernel, recurrent_kernel, bias], 'layers/dense':
  [kernel, bias]}`` (a compiled model's file also has ``optimizer``).  Legacy
  HDF5 (Keras 2 / tf.keras): ``{layer name: [arrays in weight_names order]}``
  in model order.  Each list is what the layer's ``get_weights()`` returns.
  A damaged or malformed file, or one that points outside itself, raises
  ValueError naming it.
  """
  h5, _ = open_keras_file(path)
  with h5, reading(path):
    legacy = legacy_weights_group(h5)
    if legacy is not None:
      return dict(legacy_layers(legacy, path))
    return weights_of(h5, path)


def _array(obj, where, path) -> np.ndarray:
  """A float32 copy of the numeric HDF5 dataset ``obj``, else a ValueError."""
  import h5py  # pylint: disable=g-import-not-at-top

  if not isinstance(obj, h5py.Dataset) or obj.dtype.kind not in 'fiub':
    what = (
      f'a dataset of {obj.dtype}'
      if isinstance(obj, h5py.Dataset)
      else type(obj).__name__
      if obj is not None
      else 'missing'
    )
    raise ValueError(
      f'{path}: {where} is {what}; expected a dataset of numbers'
    )
  return np.asarray(obj, np.float32)


def weights_of(h5, path) -> Dict[str, List[np.ndarray]]:
  import h5py  # pylint: disable=g-import-not-at-top

  groups = []  # raising inside h5py's visit would garble the error: collect, then read
  h5.visititems(
    lambda name, obj: (
      groups.append(name)
      if (
        isinstance(obj, h5py.Group)
        and name.split('/')[-1] == 'vars'
        and len(obj)
      )
      else None
    )
  )
  found = {}
  for name in groups:
    keys = sorted(h5[name], key=lambda k: int(k) if k.isdigit() else -1)
    if keys != [str(i) for i in range(len(keys))]:
      raise ValueError(
        f'{path}: {name} holds {keys}; expected datasets 0, 1, ... '
        '(Keras 3 layout)'
      )
    found[name[: -len('/vars')] if '/' in name else ''] = [
      _array(h5[name].get(k), f'{name}/{k}', path) for k in keys
    ]
  return found


def legacy_weights_group(h5):
  """The group of a legacy (Keras 2 / tf.keras) HDF5 file holding ``layer_names``, or None."""
  import h5py  # pylint: disable=g-import-not-at-top

  if 'layer_names' in h5.attrs:
    return h5  # model.save_weights('x.h5')
  group = h5.get('model_weights')
  if isinstance(group, h5py.Group) and 'layer_names' in group.attrs:
    return group  # model.save('x.h5')
  return None


def _names(obj, attr, path) -> List[str]:
  """A legacy file's list-of-names attribute (``layer_names``, ``weight_names``)."""
  value = obj.attrs.get(attr, [])
  if np.ndim(value) != 1:
    raise ValueError(
      f'{path}: {obj.name} has {attr}={value!r:.60}; expected a list of names'
    )
  return [as_str(v) for v in value]


def legacy_layers(group, path) -> List[Tuple[str, List[np.ndarray]]]:
  """[(layer name, arrays)] in model order, layers with weights only."""
  import h5py  # pylint: disable=g-import-not-at-top

  layers = []
  for name in _names(group, 'layer_names', path):
    layer = group.get(name)
    if not isinstance(layer, h5py.Group):
      raise ValueError(
        f'{path}: layer_names lists {name!r}, but the file has no such group'
      )
    weight_names = _names(layer, 'weight_names', path)
    missing = [w for w in weight_names if w not in layer]
    if missing:
      raise ValueError(
        f'{path}: layer {name!r} lists weights {missing} it does not hold'
      )
    if weight_names:
      layers.append(
        (
          name,
          [_array(layer.get(w), f'{name}/{w}', path) for w in weight_names],
        )
      )
  return layers


_SUPPORTED = 'LSTM, Dense, and TimeDistributed Conv2D / MaxPooling2D / Flatten'


def _layer_name_key(name):
  """'lstm' -> ('lstm', 0), 'lstm_2' -> ('lstm', 2): Keras 3's numbering in model order."""
  m = re.fullmatch(r'(.*?)(?:_(\d+))?', name)
  return m.group(1), int(m.group(2) or 0)


def keras3_layers(weights, path) -> List[Tuple[str, List[np.ndarray]]]:
  """[(layer path, arrays)] of a Keras 3 file in our models' order: the
  TimeDistributed conv, the LSTMs (Keras numbers them in model order), the Dense."""
  by_class = {}
  for group, arrays in weights.items():
    parts = group.split('/')
    if parts[0] != 'layers':
      continue  # the optimizer's state (a compiled model's file), not the model
    if len(parts) < 2:
      raise ValueError(
        f"{path}: weights at {group!r} are not a layer's ({_SUPPORTED})"
      )
    cls, index = _layer_name_key(parts[1])
    by_class.setdefault(cls, []).append((index, group, arrays))
  unknown = sorted(set(by_class) - {'lstm', 'dense', 'time_distributed'})
  if unknown:
    raise ValueError(
      f'{path}: layers {unknown} are not part of our models ({_SUPPORTED})'
    )
  for _, group, _ in by_class.get('lstm', []):
    if not group.endswith('/cell'):
      raise ValueError(
        f'{path}: LSTM weights at {group!r}; expected layers/lstm*/cell'
      )
  return [
    (group, arrays)
    for cls in ('time_distributed', 'lstm', 'dense')
    for _, group, arrays in sorted(by_class.get(cls, []), key=lambda e: e[0])
  ]
