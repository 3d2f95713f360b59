"""Copies a few plots into docs/gallery/, shrunk, for the README.

  make gallery

(which trains configs/default.py into runs/default, sweeps configs/sweep.py
into runs/sweep, then runs this script on both workdirs). The plots are the
ones `mlp/plots.py` (train) and `mlp/sweep_plots.py` (sweep) write into each
workdir's `plots/`. Images only: the measurements are in docs/performance.md.
"""

import sys
from pathlib import Path

from PIL import Image

MAX_WIDTH = 640
PICKS = {
  'train': ('learning_curves.png', 'weights.png', 'misclassified.png', 'confusion.png'),
  'sweep': ('heatmap_h300.png', 'best_curves.png'),
}


def main(train_workdir: str, sweep_workdir: str, out: str = 'docs/gallery') -> None:
  target = Path(out)
  target.mkdir(parents=True, exist_ok=True)
  for kind, workdir in (('train', train_workdir), ('sweep', sweep_workdir)):
    for name in PICKS[kind]:
      image = Image.open(Path(workdir) / 'plots' / name).convert('RGB')
      if image.width > MAX_WIDTH:
        height = round(image.height * MAX_WIDTH / image.width)
        image = image.resize((MAX_WIDTH, height), Image.LANCZOS)
      image = image.quantize(colors=128)  # small enough to commit
      image.save(target / f'{kind}_{name}', optimize=True)
      print(target / f'{kind}_{name}')


if __name__ == '__main__':
  main(*sys.argv[1:])
