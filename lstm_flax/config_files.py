"""Config files: finding them (a packaged name or a path), loading their
``get_config()``, and describing their fields for ``lstm-flax fields``."""

import ast
import hashlib
import importlib
import importlib.util
import inspect
import io
import os
import re
import textwrap
import tokenize
from typing import Dict, List, Optional, Tuple

import ml_collections

from lstm_flax import config_base


class ConfigFileError(Exception):
  """A config file cannot be found or loaded; the message is one line."""

  exit_code = 2


def packaged_configs_dir() -> Optional[str]:
  """The folder of the packaged configs: lstm_flax.configs when installed
  (``pip install -e .`` maps the checkout's configs/ there), else the
  configs/ folder beside this package."""
  spec = importlib.util.find_spec('lstm_flax.configs')
  if spec is not None and spec.submodule_search_locations:
    return list(spec.submodule_search_locations)[0]
  folder = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'configs'
  )
  return folder if os.path.isdir(folder) else None


def packaged_config_names() -> List[str]:
  folder = packaged_configs_dir()
  if folder is None:
    return []
  return sorted(
    name[:-3]
    for name in os.listdir(folder)
    if name.endswith('.py') and not name.startswith('_')
  )


def _config_file(path_or_name: str) -> str:
  """The file --config names: an existing path, else a packaged config."""
  if os.path.isfile(path_or_name):
    return path_or_name
  names = packaged_config_names()
  name = path_or_name[:-3] if path_or_name.endswith('.py') else path_or_name
  if os.sep not in path_or_name and '/' not in path_or_name and name in names:
    return os.path.join(packaged_configs_dir(), f'{name}.py')
  what = (
    'is a directory'
    if os.path.isdir(path_or_name)
    else 'is neither a config file nor a packaged config'
  )
  raise ConfigFileError(
    f'--config={path_or_name} {what}; packaged configs: '
    f'{", ".join(names) or "none found"} (or give a path to '
    f'a .py file with get_config())'
  )


def config_from_spec(spec: str) -> ml_collections.ConfigDict:
  """Loads --config=NAME[:VARIANT] or PATH[:VARIANT]: the locked ConfigDict of
  the file's ``get_config()``.  Raises ConfigFileError with one line."""
  path_or_name, _, variant = spec.partition(':')
  path = _config_file(path_or_name)
  where = f'--config={spec}'
  module_name = (
    '_lstm_flax_config_'
    + hashlib.sha1(os.path.abspath(path).encode()).hexdigest()[:12]
  )
  try:
    loader_spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(loader_spec)
    loader_spec.loader.exec_module(module)
  except SyntaxError as e:
    raise ConfigFileError(
      f'{where}: syntax error in {e.filename} line {e.lineno}: {e.msg}'
    ) from e
  except Exception as e:  # pylint: disable=broad-except
    raise ConfigFileError(
      f'{where}: loading {path} failed{_line_in(e, path)}: '
      f'{type(e).__name__}: {e}'
    ) from e
  get_config = getattr(module, 'get_config', None)
  if not callable(get_config):
    raise ConfigFileError(
      f'{where}: {path} defines no get_config() (a config '
      f'file returns its ConfigDict from get_config())'
    )
  args = (variant,) if variant else ()
  try:
    inspect.signature(get_config).bind(*args)
  except TypeError:
    raise ConfigFileError(
      f'{where}: get_config() in {path} takes no variant, so '
      f'":{variant}" cannot be used; use --config={path_or_name}'
    ) from None
  except ValueError:  # no signature to inspect: let the call decide
    pass
  try:
    config = get_config(*args)
  except Exception as e:  # pylint: disable=broad-except
    raise ConfigFileError(
      f'{where}: get_config({", ".join(map(repr, args))}) '
      f'failed{_line_in(e, path)}: {type(e).__name__}: '
      f'{e}'
    ) from e
  if not isinstance(config, ml_collections.ConfigDict):
    raise ConfigFileError(
      f'{where}: get_config() returned '
      f'{type(config).__name__}, not an ml_collections '
      f'ConfigDict'
    )
  config.lock()
  return config


def _line_in(error: BaseException, path: str) -> str:
  """' at line N' of the deepest frame of ``error`` in the file ``path``."""
  import traceback  # pylint: disable=g-import-not-at-top

  lines = [
    f.lineno
    for f in traceback.extract_tb(error.__traceback__)
    if os.path.abspath(f.filename) == os.path.abspath(path)
  ]
  return f' at line {lines[-1]}' if lines else ''


def _attribute_path(node) -> Optional[str]:
  """'train.steps' for the assignment target ``c.train.steps``."""
  parts = []
  while isinstance(node, ast.Attribute):
    parts.append(node.attr)
    node = node.value
  if not isinstance(node, ast.Name) or not parts:
    return None
  return '.'.join(reversed(parts))


def field_meanings(source: str) -> Dict[str, str]:
  """{field path: meaning} from the comments of a config file's assignments
  (``c.train.steps = 1000  # optimizer updates``, its continuation comment
  lines, or else the first sentence of the comment block above it)."""
  comments = {}  # line -> (column, text, whole line)
  for token in tokenize.generate_tokens(io.StringIO(source).readline):
    if token.type == tokenize.COMMENT:
      line, column = token.start
      whole = not token.line[:column].strip()
      comments[line] = (column, token.string.lstrip('#').strip(), whole)
  meanings = {}
  for node in ast.walk(ast.parse(source)):
    if not isinstance(node, ast.Assign) or len(node.targets) != 1:
      continue
    path = _attribute_path(node.targets[0])
    if path is None:
      continue
    text = [
      comments[n][1]
      for n in range(node.lineno, node.end_lineno + 1)
      if n in comments and not comments[n][2]
    ]
    if text:
      n = node.end_lineno + 1
      while (
        n in comments and comments[n][2] and (comments[n][0] > node.col_offset)
      ):
        text.append(comments[n][1])
        n += 1
    else:
      above, n = [], node.lineno - 1
      while (
        n in comments and comments[n][2] and (comments[n][0] == node.col_offset)
      ):
        above.insert(0, comments[n][1])
        n -= 1
      if above:
        paragraph = ' '.join(above)
        text = [re.split(r'(?<=\.)\s+(?=[A-Z])', paragraph, maxsplit=1)[0]]
    if text:
      joined = re.sub(r'(?<=[a-z])- (?=[a-z])', '-', ' '.join(text))
      meanings[path] = re.sub(r'\s+', ' ', joined).strip()
  return meanings


def leaves(config, prefix='') -> List[Tuple[str, object]]:
  out = []
  for key, value in config.items():
    path = f'{prefix}{key}'
    if isinstance(value, ml_collections.ConfigDict):
      out.extend(leaves(value, f'{path}.'))
    else:
      out.append((path, value))
  return out


def describe_fields(config, source: str = '') -> str:
  """Every field of ``config``: its value, its default where the config
  changes it, and its meaning (from lstm_flax/config_base.py's comments)."""
  with open(inspect.getsourcefile(config_base)) as f:
    meanings = field_meanings(f.read())
  defaults = dict(leaves(config_base.base_config()))
  task = config.get('task', {}).get('name', '')
  lines = [
    f'# {config.get("name", "")}  ({source})'
    if source
    else f'# {config.get("name", "")}'
  ]
  rows = []
  for path, value in leaves(config):
    meaning = meanings.get(path)
    parent = path.rpartition('.')[0]
    if meaning is None and path == 'task.name':
      meaning = meanings.get('task')
    if meaning is None and path.startswith('task.'):
      meaning = (
        f"an option of the {task!r} task (its generator's keyword "
        f'argument; see lstm_flax/tasks.py)'
      )
    elif meaning is None and path.startswith('model.'):
      meaning = (
        f'an option of the {config.model.get("name", "")!r} model '
        f'(see lstm_flax/models.py)'
      )
    elif meaning is None and '.' in parent and parent in meanings:
      meaning = f'one of {parent}: {meanings[parent]}'
    if path in defaults and defaults[path] != value:
      meaning = f'{meaning or ""} [default: {defaults[path]!r}]'.strip()
    rows.append((f'config.{path} = {value!r}', meaning or ''))
  width = min(44, max(len(r[0]) for r in rows))
  for assignment, meaning in rows:
    if not meaning:
      lines.append(assignment)
      continue
    wrapped = textwrap.wrap(meaning, max(40, 100 - width))
    first = (
      f'{assignment:{width}}  # '
      if len(assignment) <= width
      else f'{assignment}\n{"":{width}}  # '
    )
    lines.append(first + f'\n{"":{width}}  # '.join(wrapped))
  return '\n'.join(lines)
