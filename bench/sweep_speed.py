"""The sweep against training its models one by one.

  .venv/bin/python bench/sweep_speed.py [--config=configs/sweep.py] [--out=runs/sweep_speed]
  .venv/bin/python bench/sweep_speed.py --plots --skip_loop   # the whole-process goal

Times, as whole processes where it says so, on the same machine in one run:
  1. the sweep: `python main.py --mode=sweep` (one process, every model at once);
  2. one process looping over the grid with `--mode=train`'s function
     (`mlp/modes/train.py`'s `run`; each hidden size compiles once, the other
     values reuse the program);
  3. every grid point as its own `python main.py --mode=train` process.

The processes read config files that this script writes (so that its
`--config.FIELD` overrides reach them): the sweep config, and each grid
point's training config (the sweep fields removed). Prints wall times, the
ratios, and model-examples per second. By default none of the three writes
plots (`write_plots=False`), to compare training; with `--plots` the sweep and
every process write theirs (and all write their reports either way), as a
user's runs do. Every run
starts afresh (`--restart`: a finished run left in `--out` would otherwise
resume and take no time), and the processes share a compilation cache that
starts empty, so the sweep compiles from scratch and the per-model processes
after the first of each hidden size load their programs. Results:
docs/performance.md, "Sweep speed".
"""

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from absl import app, flags, logging

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
import ml_collections  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from mlp import hparams  # noqa: E402
from mlp.modes import train  # noqa: E402
from mlp.search import space  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file('config', str(REPO / 'configs/sweep.py'))
_OUT = flags.DEFINE_string('out', 'runs/sweep_speed', 'Where the workdirs go.')
_SKIP_PROCESSES = flags.DEFINE_bool(
  'skip_processes', False, 'Skip the one-process-per-model run.'
)
_SKIP_LOOP = flags.DEFINE_bool('skip_loop', False, 'Skip the one-process loop.')
_PLOTS = flags.DEFINE_bool(
  'plots', False, 'The sweep and the per-model processes write their plots.'
)


# A sweep config's fields that a training config does not have.
SWEEP_FIELDS = (
  'sweep',
  'search',
  'num_samples',
  'models_per_chunk',
  *(f.name for f in hparams.SEARCH),
)
# A config file holding one ConfigDict as JSON, for `main.py --config=`.
CONFIG_FILE = '''"""A config written by bench/sweep_speed.py."""

import json

import ml_collections


def get_config():
  return ml_collections.ConfigDict(json.loads({text!r}))
'''


def _config_file(config: ml_collections.ConfigDict, path: Path) -> str:
  """Writes `config` as a config file that `main.py --config=PATH` reads."""
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(CONFIG_FILE.format(text=config.to_json()))
  return str(path)


def _train_config(config: ml_collections.ConfigDict, point: dict):
  """The grid point's training config (the sweep fields removed)."""
  single = space.model_config(config, point)
  for field in SWEEP_FIELDS:
    if field in single:
      del single[field]
  single.write_plots = _PLOTS.value
  return single


def _main_py(args: list[str]) -> None:
  """`python main.py ARGS`; exits with its error if it fails."""
  result = subprocess.run(
    [sys.executable, 'main.py', *args], cwd=REPO, capture_output=True, text=True
  )
  if result.returncode != 0:
    sys.exit(f'main.py {" ".join(args)} failed:\n{result.stderr[-2000:]}')


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  config = _CONFIG.value
  out = Path(_OUT.value)
  points = space.points(config)
  examples = sum(
    space.model_config(config, p).num_iters * space.model_config(config, p).batch_size
    for p in points
  )
  times = {}
  tmp = tempfile.TemporaryDirectory()
  files = Path(tmp.name) / 'configs'
  sweep_config = ml_collections.ConfigDict(config.to_dict())
  sweep_config.write_plots = _PLOTS.value
  common = ['--restart', f'--compilation_cache_dir={tmp.name}/cache']

  t0 = time.perf_counter()
  _main_py(
    [
      '--mode=sweep',
      f'--config={_config_file(sweep_config, files / "sweep.py")}',
      f'--workdir={out}/sweep',
      *common,
    ]
  )
  times['sweep (1 process, vmap)'] = time.perf_counter() - t0
  summary = json.loads((out / 'sweep' / 'summary.json').read_text())

  if not _SKIP_LOOP.value:
    t0 = time.perf_counter()
    for i, point in enumerate(points):
      train.run(_train_config(config, point), str(out / 'loop' / str(i)), restart=True)
    times['1 process, loop over models'] = time.perf_counter() - t0

  if not _SKIP_PROCESSES.value:
    paths = [
      _config_file(_train_config(config, point), files / f'point{i}.py')
      for i, point in enumerate(points)
    ]
    t0 = time.perf_counter()
    for i, path in enumerate(paths):
      _main_py(
        [
          '--mode=train',
          f'--config={path}',
          f'--workdir={out}/processes/{i}',
          *common,
        ]
      )
    times['1 process per model'] = time.perf_counter() - t0
  tmp.cleanup()

  sweep_seconds = times['sweep (1 process, vmap)']
  print(f'{len(points)} models, {examples:,} model-examples in total')
  print('| how | wall s | vs sweep | model-examples/s |')
  print('|---|---|---|---|')
  for how, seconds in times.items():
    print(
      f'| {how} | {seconds:.1f} | {seconds / sweep_seconds:.2f}x | {examples / seconds:,.0f} |'
    )
  print(
    f'sweep internals: compile {summary["compile_seconds"]:.1f}s, training '
    f'{summary["sweep_seconds"] - summary["compile_seconds"]:.1f}s, '
    f'{summary["model_examples_per_second"]:,.0f} model-examples/s while training'
  )


if __name__ == '__main__':
  app.run(main)
