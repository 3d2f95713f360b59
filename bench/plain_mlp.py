"""The course's algorithm without this project: plain NumPy, or eager PyTorch.

  .venv/bin/python bench/plain_mlp.py --backend=numpy
  /tmp/torchenv/bin/python bench/plain_mlp.py --backend=torch

A whole run as one script, for `bench/whole_process.py` to time as a process
beside `main.py`: read the vendored MNIST (data/mnist/*.gz), train a 784-H-10
ReLU network with softmax cross-entropy plus `lambda/2 * (||W1||^2 +
||W2||^2)` by mini-batch SGD (batches of `batch_size` drawn with replacement,
the learning rate times `lr_decay` after every epoch), evaluate the training
subset and val after every epoch, then val, test and train at the end. The
defaults are `configs/default.py`'s (H 300, lr 0.1, decay 0.95, lambda 1e-4,
2000 iterations of 200, init N(0, 1e-4^2)). NumPy runs the course's
hand-written backward pass; PyTorch the same forward pass with autograd,
eagerly, on the same batches (NumPy's generator draws them). Imports neither
JAX nor this project, so it runs in any environment with NumPy (and torch).
"""

import argparse
import gzip
import time
from pathlib import Path

import numpy as np

DATA = Path(__file__).resolve().parent.parent / 'data' / 'mnist'
NUM_VAL = 5000


def read_idx(path: Path) -> np.ndarray:
  """An IDX gzip file as uint8 images `(N, rows * cols)` or labels `(N,)`."""
  content = gzip.decompress(path.read_bytes())
  ndim = content[3]
  dims = [int.from_bytes(content[4 + 4 * i : 8 + 4 * i], 'big') for i in range(ndim)]
  array = np.frombuffer(content, np.uint8, offset=4 + 4 * ndim)
  return array.reshape(dims[0], -1) if ndim > 1 else array


def load(directory: Path = DATA) -> dict:
  """train (the first 55,000), val (the last 5,000 of the training file), test."""
  images = read_idx(directory / 'train-images-idx3-ubyte.gz')
  labels = read_idx(directory / 'train-labels-idx1-ubyte.gz').astype(np.int64)
  return {
    'train': (images[:-NUM_VAL], labels[:-NUM_VAL]),
    'val': (images[-NUM_VAL:], labels[-NUM_VAL:]),
    'test': (
      read_idx(directory / 't10k-images-idx3-ubyte.gz'),
      read_idx(directory / 't10k-labels-idx1-ubyte.gz').astype(np.int64),
    ),
  }


def init_params(config, input_size: int, num_classes: int, rng) -> dict:
  d, h, c = input_size, config.hidden_size, num_classes
  return {
    'W1': config.init_std * rng.standard_normal((d, h), dtype=np.float32),
    'b1': np.zeros(h, np.float32),
    'W2': config.init_std * rng.standard_normal((h, c), dtype=np.float32),
    'b2': np.zeros(c, np.float32),
  }


def batches(config, num_train: int, rng):
  """Each step's batch indices (with replacement) and learning rate."""
  iters_per_epoch, lr = max(num_train // config.batch_size, 1), config.learning_rate
  for step in range(config.num_iters):
    yield step, rng.integers(0, num_train, config.batch_size), lr
    if (step + 1) % iters_per_epoch == 0:
      lr *= config.lr_decay


def numpy_train(config, images, labels, num_classes, on_epoch=None) -> dict:
  """The course's loop: sample, forward, backward by hand, SGD, decay per epoch.

  Args:
    config: `hidden_size`, `learning_rate`, `lr_decay`, `l2_reg`,
      `batch_size`, `num_iters`, `init_std`, `seed` (a config of this project,
      or the namespace of this script's flags).
    images: uint8 `(N, D)` training images; labels `(N,)`.
    num_classes: C.
    on_epoch: called with `(step, params)` after every epoch and the last step.

  Returns:
    The trained params (NumPy float32).
  """
  rng = np.random.default_rng(config.seed)
  params = init_params(config, images.shape[1], num_classes, rng)
  n, batch, reg = len(labels), config.batch_size, config.l2_reg
  iters_per_epoch = max(n // batch, 1)
  for step, idx, lr in batches(config, n, rng):
    x, y = images[idx].astype(np.float32) / 255.0, labels[idx]
    z1 = x @ params['W1'] + params['b1']
    a1 = np.maximum(z1, 0)
    scores = a1 @ params['W2'] + params['b2']
    scores -= scores.max(axis=1, keepdims=True)
    probs = np.exp(scores)
    probs /= probs.sum(axis=1, keepdims=True)
    dscores = probs
    dscores[np.arange(batch), y] -= 1
    dscores /= batch
    grads = {
      'W2': a1.T @ dscores + reg * params['W2'],
      'b2': dscores.sum(axis=0),
    }
    dz1 = (dscores @ params['W2'].T) * (z1 > 0)
    grads['W1'] = x.T @ dz1 + reg * params['W1']
    grads['b1'] = dz1.sum(axis=0)
    for name in params:
      params[name] -= lr * grads[name]
    if on_epoch and ((step + 1) % iters_per_epoch == 0 or step + 1 == config.num_iters):
      on_epoch(step + 1, params)
  return params


def numpy_accuracy(params: dict, images: np.ndarray, labels: np.ndarray) -> float:
  hidden = np.maximum(
    images.astype(np.float32) / 255.0 @ params['W1'] + params['b1'], 0
  )
  return float(np.mean(np.argmax(hidden @ params['W2'] + params['b2'], 1) == labels))


def torch_train(config, images, labels, num_classes, on_epoch=None) -> dict:
  """The same algorithm in eager PyTorch with autograd, on the same batches."""
  import torch

  rng = np.random.default_rng(config.seed)
  params = {
    k: torch.tensor(v, requires_grad=True)
    for k, v in init_params(config, images.shape[1], num_classes, rng).items()
  }
  images, labels = torch.from_numpy(images), torch.from_numpy(labels)
  iters_per_epoch = max(len(labels) // config.batch_size, 1)
  for step, idx, lr in batches(config, len(labels), rng):
    idx = torch.from_numpy(idx)
    x, y = images[idx].float() / 255.0, labels[idx]
    hidden = torch.relu(x @ params['W1'] + params['b1'])
    scores = hidden @ params['W2'] + params['b2']
    penalty = params['W1'].square().sum() + params['W2'].square().sum()
    loss = torch.nn.functional.cross_entropy(scores, y) + 0.5 * config.l2_reg * penalty
    for p in params.values():
      p.grad = None
    loss.backward()
    with torch.no_grad():
      for p in params.values():
        p -= lr * p.grad
    if on_epoch and ((step + 1) % iters_per_epoch == 0 or step + 1 == config.num_iters):
      on_epoch(step + 1, params)
  return params


def torch_accuracy(params: dict, images: np.ndarray, labels: np.ndarray) -> float:
  import torch

  with torch.no_grad():
    x = torch.from_numpy(images).float() / 255.0
    hidden = torch.relu(x @ params['W1'] + params['b1'])
    scores = hidden @ params['W2'] + params['b2']
    return float((scores.argmax(1) == torch.from_numpy(labels)).float().mean())


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--backend', choices=('numpy', 'torch'), default='numpy')
  parser.add_argument('--hidden_size', type=int, default=300)
  parser.add_argument('--learning_rate', type=float, default=0.1)
  parser.add_argument('--lr_decay', type=float, default=0.95)
  parser.add_argument('--l2_reg', type=float, default=1e-4)
  parser.add_argument('--batch_size', type=int, default=200)
  parser.add_argument('--num_iters', type=int, default=2000)
  parser.add_argument('--init_std', type=float, default=1e-4)
  parser.add_argument('--seed', type=int, default=0)
  parser.add_argument('--train_eval_size', type=int, default=5000)
  config = parser.parse_args()
  started = time.perf_counter()
  splits = load()
  images, labels = splits['train']
  train, accuracy = (
    (numpy_train, numpy_accuracy)
    if config.backend == 'numpy'
    else (torch_train, torch_accuracy)
  )
  subset = (images[: config.train_eval_size], labels[: config.train_eval_size])

  def on_epoch(step, params):
    print(
      f'step {step}: train acc {accuracy(params, *subset):.4f}, '
      f'val acc {accuracy(params, *splits["val"]):.4f}',
      flush=True,
    )

  params = train(config, images, labels, 10, on_epoch)
  final = {name: accuracy(params, *split) for name, split in splits.items()}
  print(
    f'val_accuracy {final["val"]:.4f}  test_accuracy {final["test"]:.4f}  '
    f'train_accuracy {final["train"]:.4f}  ({config.backend}, '
    f'{time.perf_counter() - started:.1f} s)'
  )


if __name__ == '__main__':
  main()
