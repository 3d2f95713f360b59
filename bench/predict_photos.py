"""How well `--mode=predict` reads photo-like pictures of digits.

  .venv/bin/python bench/predict_photos.py --workdir=runs/best_plain [--per_style=100]

Draws `--per_style` pictures of MNIST test digits in each style of
`bench/photo_digits.py` (clean renderings, uneven lighting, ruled and squared
paper, a noisy grey page, chalk on a dark board, small digits in large
pictures), runs predict's preprocessing and the workdir's model on them, and
prints the accuracy per style, the accuracy over all photo styles, and how
many pictures were flagged as not a digit. Without `--workdir`, it trains
`configs/best_plain.py` into `runs/best_plain` first. The goal
(docs/performance.md): at least 90% of the photos and 97% of the clean
renderings correct with `configs/best_plain.py`'s model.
"""

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import jax  # noqa: E402
import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402

from bench import photo_digits  # noqa: E402
from configs import best_plain  # noqa: E402
from mlp import data, digit_image, model  # noqa: E402
from mlp import workdir as workdir_lib  # noqa: E402

_WORKDIR = flags.DEFINE_string('workdir', 'runs/best_plain', 'A trained workdir.')
_PER_STYLE = flags.DEFINE_integer('per_style', 100, 'Pictures per style.')
_FIRST = flags.DEFINE_integer('first', 0, 'First MNIST test image drawn.')


def main(argv) -> None:
  del argv
  workdir = Path(_WORKDIR.value)
  if not workdir_lib.params_path(workdir).is_file():
    from mlp.modes import train

    print(f'Training configs/best_plain.py into {workdir} first.')
    train.run(best_plain.get_config(), str(workdir))
  params = workdir_lib.load_params(workdir_lib.params_path(workdir))
  mnist = data.load_dataset('mnist')
  started = time.perf_counter()
  print('| style | correct | flagged | of |')
  print('|---|---|---|---|')
  photos_correct = photos_total = 0
  for style in photo_digits.STYLES:
    images, labels, flagged = [], [], 0
    for k in range(_PER_STYLE.value):
      i = _FIRST.value + k
      picture = photo_digits.photo(mnist.test_images[i].reshape(28, 28), style, seed=i)
      result = digit_image.preprocess_digit(picture)
      flagged += result.problem is not None
      images.append(result.image.reshape(-1))
      labels.append(int(mnist.test_labels[i]))
    predicted = np.argmax(model.apply(params, np.stack(images)), axis=1)
    correct = int(np.sum(np.asarray(predicted) == np.asarray(labels)))
    print(f'| {style} | {correct / len(labels):.1%} | {flagged} | {len(labels)} |')
    if style != 'clean':
      photos_correct += correct
      photos_total += len(labels)
  print(f'\nphoto styles together: {photos_correct / photos_total:.1%} correct')
  print(
    f'({time.perf_counter() - started:.1f}s; JAX {jax.__version__}, '
    f'{jax.default_backend()})'
  )


if __name__ == '__main__':
  app.run(main)
