"""The command line's mistakes as one line, and --help with a config's fields.

`main.py` parses its flags with absl and hands what it needs here: the command
line (`argv`), the `--config` flag's parser (`flags.FLAGS['config'].parser`,
which loads a config file the way `--config=FILE` does) and absl's `app.usage`.
Nothing here reads flags or imports JAX, so `main.py --help` stays fast.
"""

import ast
import difflib
import importlib.util
import os
import re
import sys
import sysconfig
import tokenize
import traceback
from collections.abc import Callable

import ml_collections
from absl import flags

from mlp import hparams

# Config fields that make a config belong to one mode (see configs/sweep.py).
MODE_FIELDS = ('sweep', 'benchmark')
# The flags that ask for help; absl's own exit 1 and cannot show a config's fields.
_HELP_FLAGS = frozenset({'help', '?', 'helpshort', 'helpfull'})


def message(error: BaseException) -> str:
  """The text of `error` on one line, unwrapped from the exception it wraps.

  Args:
    error: any exception; one whose only argument is another exception (as
      absl wraps a flag's error) stands for that one.

  Returns:
    Its text, the lines stripped and joined by spaces; a `KeyError`'s key as
    `repr` shows it, unless the key is a text of several lines.
  """
  while len(error.args) == 1 and isinstance(error.args[0], BaseException):
    error = error.args[0]
  text = str(error)
  if isinstance(error, KeyError) and len(error.args) == 1:
    # str() of a KeyError is the repr of its text: quotes and '\n' escaped.
    key = error.args[0]
    text = key if isinstance(key, str) and '\n' in key else repr(key)
  return ' '.join(line.strip() for line in text.splitlines() if line.strip())


def flag_arguments(argv: list[str]) -> list[str]:
  """The command line's arguments up to `--` (after it, nothing is a flag).

  Args:
    argv: the command line, the program's name first.

  Returns:
    `argv` without the program's name, cut at the first `--`.
  """
  return argv[1 : argv.index('--')] if '--' in argv else argv[1:]


def config_argument(argv: list[str]) -> str | None:
  """The value of the last `--config=FILE` (or `--config FILE`), as typed.

  Args:
    argv: the command line, the program's name first.

  Returns:
    The config file's argument, or `None` when there is no `--config`.
  """
  arguments = flag_arguments(argv)
  value = None
  for i, argument in enumerate(arguments):
    if match := re.fullmatch(r'--?config(=(.*))?', argument, re.DOTALL):
      value = match[2] if match[1] else next(iter(arguments[i + 1 : i + 2]), None)
  return value


def usable(config: object) -> ml_collections.ConfigDict:
  """`config`, or the error that loading its file raised.

  Args:
    config: what the config flag's parser returned for a file.

  Returns:
    `config`, when it is a `ConfigDict`.

  Raises:
    Exception: the error of a config file that failed to load (ml_collections
      returns a stand-in that raises it when used), or a `TypeError` when
      `get_config()` returned something other than a `ConfigDict`.
  """
  if not isinstance(config, ml_collections.ConfigDict):
    # ml_collections' stand-in for a file that failed to load raises its error.
    getattr(config, 'keys', None)
    returned = 'None' if config is None else type(config).__name__
    raise TypeError(
      f'get_config() returned {returned}, not a ConfigDict: end it with `return config`'
    )
  return config


def load_config(
  config_parser: flags.ArgumentParser, argument: str
) -> ml_collections.ConfigDict:
  """The config of `--config=argument`, as ml_collections loads it (no overrides).

  Args:
    config_parser: the `--config` flag's parser, `flags.FLAGS['config'].parser`.
    argument: the value of `--config`, e.g. `configs/default.py`.

  Returns:
    The config the file's `get_config()` returns.

  Raises:
    Exception: whatever loading the file raised (see `usable`).
  """
  return usable(config_parser.parse(argument))


def fields(config: ml_collections.ConfigDict, prefix: str = '') -> dict[str, object]:
  """Every field of `config`, nested ones flattened (`sweep`, `sweep.hidden_size`).

  Args:
    config: a config.
    prefix: put before every name (the nesting's path, e.g. `sweep.`).

  Returns:
    Each field's dotted name mapped to its value, in the order of
    `config.items()` (sorted by name); a nested config appears itself,
    followed by its fields.
  """
  flat = {}
  for name, value in config.items():
    flat[prefix + name] = value
    if isinstance(value, ml_collections.ConfigDict):
      flat.update(fields(value, f'{prefix}{name}.'))
  return flat


def _library_file(filename: str) -> bool:
  """Whether `filename` is Python's or an installed package's, not the user's."""
  if filename.startswith('<'):
    return True
  libraries = {sysconfig.get_path(name) for name in ('stdlib', 'purelib', 'platlib')}
  path = os.path.realpath(filename)
  return any(path.startswith(os.path.realpath(lib) + os.sep) for lib in libraries)


def _shown(filename: str) -> str:
  """`filename` relative to the working directory when it lies below it."""
  relative = os.path.relpath(filename)
  return filename if relative.startswith('..') else relative


def raised_in_config_file(error: BaseException, argument: str) -> str | None:
  """'Type: message (line N)' when `error` comes from running the config file.

  Args:
    error: what parsing the flags raised; the errors it was raised from are
      searched too.
    argument: the value of `--config`.

  Returns:
    The error's type, message and line in the config file (or in the user's
    file the config file called, named), or `None` when the error was not
    raised while running the config file.
  """
  path = os.path.realpath(argument.split(':', 1)[0])
  seen = set()
  while error is not None and id(error) not in seen:
    seen.add(id(error))
    frames = traceback.extract_tb(error.__traceback__)
    text = message(error)
    if isinstance(error, SyntaxError) and error.filename:
      frames.append(traceback.FrameSummary(error.filename, error.lineno, 'compile'))
      text = error.msg
    if any(os.path.realpath(f.filename) == path for f in frames):
      where = ([f for f in frames if not _library_file(f.filename)] or frames)[-1]
      if os.path.realpath(where.filename) == path:
        return f'{type(error).__name__}: {text} (line {where.lineno})'
      return f'{type(error).__name__}: {text} ({_shown(where.filename)}, line {where.lineno})'
    error = error.__cause__ or error.__context__
  return None


def unknown_field(
  argv: list[str], argument: str, config_parser: flags.ArgumentParser
) -> str | None:
  """'unknown config field ...' for the first --config.FIELD the config lacks.

  Args:
    argv: the command line, the program's name first.
    argument: the value of `--config`.
    config_parser: the `--config` flag's parser, `flags.FLAGS['config'].parser`.

  Returns:
    The message, with the closest field's name when one is close, or `None`
    when every override names a field (or the config does not load).
  """
  try:
    known = fields(load_config(config_parser, argument))
  except Exception:  # noqa: BLE001 -- the caller reports the original error
    return None
  for arg in flag_arguments(argv):
    if match := re.match(r'--?(no)?config\.([^=]*)', arg):
      field = match[2]
      if field not in known:
        close = difflib.get_close_matches(field, known, n=1)
        hint = f' (did you mean {close[0]!r}?)' if close else ''
        return (
          f'unknown config field {field!r}{hint}: check the name against {argument}'
        )
  return None


def flag_error(
  error: Exception, argv: list[str], config_parser: flags.ArgumentParser
) -> str:
  """One line for a mistake in the flags or in the --config file.

  Args:
    error: what parsing the flags (or loading the config file) raised.
    argv: the command line, the program's name first.
    config_parser: the `--config` flag's parser, `flags.FLAGS['config'].parser`.

  Returns:
    The line that names the problem and the fix, without `Error: `.
  """
  argument = config_argument(argv)
  if argument is not None and (raised := raised_in_config_file(error, argument)):
    return f'cannot load the --config file {argument}: {raised}'
  if isinstance(error, flags.Error):
    return f'{message(error)} (see --helpshort)'
  if argument is None:
    return f'{type(error).__name__}: {message(error)}'
  if isinstance(error, (AttributeError, KeyError)) and (
    unknown := unknown_field(argv, argument, config_parser)
  ):
    return unknown
  if isinstance(error, OSError):  # A missing or unreadable config file.
    reason = str(error).strip().splitlines()[-1].strip()
    return f'cannot load the --config file {argument}: {reason}'
  return f'cannot load the --config file {argument}: {type(error).__name__}: {message(error)}'


def _help_flags(argv: list[str]) -> set[str]:
  """The names of the flags on the command line that are not turned off."""
  asked = set()
  for argument in flag_arguments(argv):
    name, _, value = argument.lstrip('-').partition('=')
    if argument.startswith('-') and value.lower() not in ('false', '0'):
      asked.add(name)
  return asked


def help_asked(argv: list[str]) -> bool:
  """Whether the command line asks for --help, -?, --helpshort or --helpfull.

  Args:
    argv: the command line, the program's name first.

  Returns:
    True when one of them is there and not turned off (`--help=false`).
  """
  return bool(_help_flags(argv) & _HELP_FLAGS)


def _comments(path: str) -> dict[int, str]:
  """The comment at the end of each line of the Python file `path`, by line."""
  with open(path, 'rb') as f:
    tokens = list(tokenize.tokenize(f.readline))
  found, code_lines = {}, set()
  for token in tokens:
    if token.type == tokenize.COMMENT and token.start[0] in code_lines:
      found[token.start[0]] = token.string.lstrip('#').strip()
    elif token.type not in (tokenize.NL, tokenize.NEWLINE, tokenize.COMMENT):
      code_lines.add(token.start[0])
  return found


def _config_name(node: ast.expr) -> str | None:
  """`config.a.b` -> `'a.b'`; `config['a']` -> `'a'`; else `None`."""
  parts = []
  while isinstance(node, ast.Attribute | ast.Subscript):
    if isinstance(node, ast.Attribute):
      parts.append(node.attr)
    elif isinstance(node.slice, ast.Constant) and isinstance(node.slice.value, str):
      parts.append(node.slice.value)
    else:
      return None
    node = node.value
  if isinstance(node, ast.Name) and node.id == 'config' and parts:
    return '.'.join(reversed(parts))
  return None


def config_comments(path: str) -> dict[str, str]:
  """Each config field's end-of-line comment in the config file `path`.

  A field's comment is the one on the line that sets it (`config.seed = 0  #
  ...`), or on its key's line in a dict literal (`config.benchmark =
  ConfigDict({'steps': 4,  # ...})`). The config files that `path` imports
  from the `configs` package come first, so `path`'s own comments win.

  Args:
    path: a config file (`configs/NAME.py`).

  Returns:
    Dotted field names (`benchmark.steps`) mapped to their comments.
  """
  with open(path, encoding='utf-8') as f:
    tree = ast.parse(f.read(), path)
  found = {}
  for node in ast.walk(tree):
    if isinstance(node, ast.ImportFrom) and node.module == 'configs':
      for alias in node.names:
        spec = importlib.util.find_spec(f'configs.{alias.name}')
        if (
          spec
          and spec.origin
          and os.path.realpath(spec.origin) != os.path.realpath(path)
        ):
          found.update(config_comments(spec.origin))
  comments = _comments(path)
  for node in ast.walk(tree):
    if not isinstance(node, ast.Assign) or len(node.targets) != 1:
      continue
    name = _config_name(node.targets[0])
    if name is None:
      continue
    if node.end_lineno in comments:
      found[name] = comments[node.end_lineno]
    for entry in ast.walk(node.value):
      if isinstance(entry, ast.Dict):
        for key in entry.keys:
          if isinstance(key, ast.Constant) and key.lineno in comments:
            found[f'{name}.{key.value}'] = comments[key.lineno]
  return found


def _declared() -> dict[str, hparams.Field | hparams.Choice]:
  """Every field and choice of `mlp/hparams.py`'s tables, by name."""
  tables = (*hparams.FIELDS.values(), *hparams.SEARCH, *hparams.CHOICES)
  return {entry.name: entry for entry in (*tables, hparams.DATA_SOURCE)}


def field_docs(argument: str) -> dict[str, str]:
  """Each field's one-line meaning and allowed values, for `--help`.

  The meaning is the hyperparameter table's (`mlp/hparams.py`), else the
  config file's comment on the field; the allowed values are the table's
  range or choices. A sweep's `sweep.FIELD` is the values of FIELD searched.

  Args:
    argument: the value of `--config` (`configs/NAME.py`, or `FILE:VARIANT`).

  Returns:
    Dotted field names mapped to their line, for the fields that have one.
  """
  path = argument.split(':', 1)[0]
  comments = config_comments(path) if os.path.isfile(path) else {}
  declared = _declared()
  docs = {}
  for name in {*declared, *comments}:
    entry = declared.get(name)
    meaning = (entry.doc if entry else '') or comments.get(name, '')
    if isinstance(entry, hparams.Field):
      allowed = entry.expected()
    elif isinstance(entry, hparams.Choice):
      allowed = 'one of ' + ', '.join(entry.values)
    else:
      allowed = ''
    docs[name] = '; '.join(part for part in (meaning, allowed) if part)
  for name in hparams.SWEEPABLE:
    docs[f'sweep.{name}'] = f'values of {name} searched; () = not swept'
  return docs


def print_help(
  argv: list[str],
  config_parser: flags.ArgumentParser,
  usage: Callable[..., None],
) -> str | None:
  """Prints the flags, then the fields of the command line's --config file.

  absl's own help flags exit 1 and cannot show a config given after them; the
  caller exits 0 after this. A reader that stops early (`main.py --help | head`)
  is not an error: the rest of the output is dropped.

  Args:
    argv: the command line, the program's name first.
    config_parser: the `--config` flag's parser, `flags.FLAGS['config'].parser`.
    usage: absl's `app.usage`, called with `shorthelp` and `writeto_stdout=True`.

  Returns:
    `None` once printed, or, when the config file fails to load, the one-line
    error (see `flag_error`) with nothing printed.
  """
  argument = config_argument(argv)
  config_fields = {}
  if argument is not None:
    try:
      config_fields = fields(load_config(config_parser, argument))
    except Exception as e:  # noqa: BLE001 -- a config file that fails to load
      return flag_error(e, argv, config_parser)
  full = 'helpfull' in _help_flags(argv)
  try:
    usage(shorthelp=not full, writeto_stdout=True)
    if argument is None:
      print("With --config=configs/NAME.py, --help lists that config's fields too.")
    else:
      print(
        f'Config fields of {argument} (override with --config.FIELD=VALUE; '
        'a field given twice takes the last value):'
      )
      docs = field_docs(argument)
      shown = {
        name: repr(value)
        for name, value in config_fields.items()
        if not isinstance(value, ml_collections.ConfigDict) or not value
      }
      # Aligned, except for the few long ones (a sweep's tuples).
      width = min(
        max(map(len, (f'{n} = {v}' for n, v in shown.items())), default=0), 32
      )
      for name, value in shown.items():
        line = f'{name} = {value}'
        doc = docs.get(name)
        print(f'  {line.ljust(width)}  # {doc}' if doc else f'  {line}')
    if not full:
      print('\nTry --helpfull to get a list of all flags.')
    sys.stdout.flush()
  except BrokenPipeError:  # `main.py --help | head` stopped reading.
    drop_stdout()
  return None


def drop_stdout() -> None:
  """Sends the rest of stdout to /dev/null, after its reader closed it, so that
  flushing it at exit raises nothing."""
  os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def last_overrides(argv: list[str]) -> list[str]:
  """`argv` with only the last of each repeated `--config.FIELD=VALUE`.

  absl's config flags replace a scalar field's value but add a repeated tuple's
  values to the earlier ones; here the last value wins for every field (as
  --help says). `--config.FIELD` and `--noconfig.FIELD` (booleans) count as
  that field's values too.

  Args:
    argv: the command line, the program's name first.

  Returns:
    The command line to parse.

  Raises:
    flags.Error: when a repeated field is given as `--config.FIELD VALUE`
      (two arguments), whose value cannot be told from the next flag.
  """
  arguments = flag_arguments(argv)
  last: dict[str, int] = {}
  for i, argument in enumerate(arguments):
    if match := re.fullmatch(r'--?(?:no)?config\.([^=]+)(=.*)?', argument, re.DOTALL):
      if match[1] in last and not (match[2] and '=' in arguments[last[match[1]]]):
        raise flags.Error(
          f'--config.{match[1]} is given more than once, once without "=": give it '
          f'once, or each time as --config.{match[1]}=VALUE'
        )
      last[match[1]] = i
  dropped = {
    i
    for i, argument in enumerate(arguments)
    if (match := re.fullmatch(r'--?(?:no)?config\.([^=]+)(=.*)?', argument, re.DOTALL))
    and last[match[1]] != i
  }
  kept = [a for i, a in enumerate(arguments) if i not in dropped]
  return [argv[0], *kept, *argv[len(arguments) + 1 :]]


def mode_mismatch(
  mode: str, config: ml_collections.ConfigDict, path: str
) -> str | None:
  """Refuses a sweep or benchmark config that another mode would misread.

  Args:
    mode: the value of `--mode`.
    config: the loaded config.
    path: the config file's path, for the message.

  Returns:
    The one-line error, or `None` when `mode` fits `config` (eval, predict and serve
    take any config).
  """
  kinds = [field for field in MODE_FIELDS if field in config]
  if mode in ('eval', 'predict', 'serve') or not kinds or mode in kinds:
    return None
  kind = kinds[0]
  if mode == 'train':
    return (
      f'{path} is a {kind} config (it has a {kind!r} field), which --mode=train '
      f'would ignore: add --mode={kind}'
    )
  return (
    f'{path} is a {kind} config (it has a {kind!r} field), not a {mode} config: '
    f'use --mode={kind}, or a {mode} config such as configs/{mode}.py'
  )
