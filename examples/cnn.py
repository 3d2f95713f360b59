"""A small CNN on MNIST in plain JAX, searched with Hyperband through the API.

  python examples/cnn.py --workdir=runs/cnn

Two 3x3 convolutions of stride 2 (`hidden_size` and twice as many channels),
each with a ReLU, then a dense layer from 7x7 to the 10 classes; the loss is
the mean cross-entropy plus `l2_reg / 2` times the squared weights. Hyperband
draws Adam's learning rate and lambda from log ranges, and the channels from
two values (one compiled program per value). `--tiny` runs a few steps on a
few hundred images, as the test does.
"""

import argparse

import jax
import jax.numpy as jnp

from mlp import data, models
from mlp.search import api, space

WEIGHTS = ('conv1', 'conv2', 'dense')


def init(key, hparams, static):
  channels, keys = static.hidden_size, jax.random.split(key, 3)
  shapes = ((3, 3, 1, channels), (3, 3, channels, 2 * channels))
  shapes += ((7 * 7 * 2 * channels, static.num_classes),)
  params = {}
  for name, shape, k in zip(WEIGHTS, shapes, keys, strict=True):
    fan_in = jnp.prod(jnp.array(shape[:-1]))
    params[name] = jax.random.normal(k, shape) * jnp.sqrt(2.0 / fan_in)  # He
    params[name + '_bias'] = jnp.zeros(shape[-1])
  return params


def logits(params, images):  # images (batch, 28, 28, 1) in [0, 1]
  x = images
  for name in WEIGHTS[:2]:
    x = jax.lax.conv_general_dilated(  # stride 2: 28x28 -> 14x14 -> 7x7
      x, params[name], (2, 2), 'SAME', dimension_numbers=('NHWC', 'HWIO', 'NHWC')
    )
    x = jax.nn.relu(x + params[name + '_bias'])
  return x.reshape(len(x), -1) @ params['dense'] + params['dense_bias']


def loss(params, images, labels, hparams, static, key):
  log_probs = jax.nn.log_softmax(logits(params, images))
  cross_entropy = -jnp.mean(jnp.take_along_axis(log_probs, labels[:, None], 1))
  penalty = sum(jnp.sum(params[name] ** 2) for name in WEIGHTS)
  return cross_entropy + 0.5 * hparams.l2_reg * penalty


def accuracy(params, images, labels, static):
  return jnp.mean(jnp.argmax(logits(params, images), -1) == labels)


CNN = models.Model('cnn', init, loss, accuracy)


def main(workdir: str, tiny: bool = False) -> api.Result:
  mnist = data.load_dataset('mnist')
  train, held = (512, 256) if tiny else (None, None)
  arrays = []
  for x, y, n in (
    (mnist.train_images, mnist.train_labels, train),
    (mnist.val_images, mnist.val_labels, held),
    (mnist.test_images, mnist.test_labels, held),
  ):
    arrays += [x[:n].reshape(-1, 28, 28, 1), y[:n]]  # uint8: scaled to [0, 1]
  return api.search(
    model=CNN,
    data=arrays,
    space={
      'learning_rate': space.log_uniform(1e-4, 1e-2),
      'l2_reg': space.log_uniform(1e-6, 1e-3),
      'hidden_size': space.values(4) if tiny else space.values(8, 16),
    },
    strategy='hyperband',
    workdir=workdir,
    optimizer='adam',
    batch_size=32 if tiny else 128,
    train_eval_size=256 if tiny else 5000,
    min_iters=3 if tiny else 100,
    max_iters=9 if tiny else 2700,
    models_per_chunk=1 if tiny else 0,  # tiny: one compiled program serves all
  )


if __name__ == '__main__':
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--workdir', required=True, help='where the search writes')
  parser.add_argument('--tiny', action='store_true', help='a few steps, for tests')
  args = parser.parse_args()
  result = main(args.workdir, args.tiny)
  best = result.table[0]
  print(f'best: val {best["val_accuracy"]:.4f}, {result.workdir}/results.md')
