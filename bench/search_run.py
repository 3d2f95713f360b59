"""One `main.py --mode=sweep` process, timed: the runs of bench/halving.py and
bench/pbt.py."""

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def run_search(config: str, search: str, workdir: Path, extra: list[str]):
  """`main.py --mode=sweep --config=CONFIG --config.search=SEARCH EXTRA` afresh
  (`--restart`), with an empty compilation cache of its own and no plots.

  Returns:
    The run's summary.json, and its wall seconds as a whole process.
  """
  with tempfile.TemporaryDirectory() as cache:
    command = [
      sys.executable,
      'main.py',
      '--mode=sweep',
      f'--config={config}',
      f'--workdir={workdir}',
      '--restart',
      f'--config.search={search}',
      '--config.write_plots=False',
      *extra,
    ]
    started = time.perf_counter()
    env = {**os.environ, 'XDG_CACHE_HOME': cache}
    subprocess.run(command, cwd=REPO, check=True, env=env)
    seconds = time.perf_counter() - started
  return json.loads((Path(workdir) / 'summary.json').read_text()), seconds
