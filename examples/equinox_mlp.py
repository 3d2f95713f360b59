"""An Equinox model searched through the API: `eqx.nn.MLP`, two hidden layers.

  python examples/equinox_mlp.py --workdir=runs/equinox

Equinox keeps a model's arrays in the module itself. `eqx.partition` splits
them off as the params pytree the search trains (stacked along its model
axis, one program for every member); `eqx.combine` puts them back into the
module's skeleton, built from shapes alone (`eqx.filter_eval_shape`), to call
it. Random search over the learning rate and lambda; `--tiny` runs a few
steps on a few hundred images, as the test does.
"""

import argparse

import equinox as eqx
import jax
import jax.numpy as jnp

from mlp import data, models
from mlp.search import api, space


def build(key, static):
  return eqx.nn.MLP(
    static.input_size, static.num_classes, static.hidden_size, depth=2, key=key
  )


def init(key, hparams, static):
  params, _ = eqx.partition(build(key, static), eqx.is_array)
  return params


def logits(params, inputs, static):
  skeleton = eqx.filter_eval_shape(build, jax.random.key(0), static)
  return jax.vmap(eqx.combine(params, skeleton))(inputs)


def loss(params, inputs, labels, hparams, static, key):
  log_probs = jax.nn.log_softmax(logits(params, inputs, static))
  cross_entropy = -jnp.mean(jnp.take_along_axis(log_probs, labels[:, None], 1))
  penalty = sum(jnp.sum(layer.weight**2) for layer in params.layers)
  return cross_entropy + 0.5 * hparams.l2_reg * penalty


def accuracy(params, inputs, labels, static):
  return jnp.mean(jnp.argmax(logits(params, inputs, static), -1) == labels)


EQUINOX_MLP = models.Model('equinox_mlp', init, loss, accuracy)


def main(workdir: str, tiny: bool = False) -> api.Result:
  mnist = data.load_dataset('mnist')
  if tiny:  # a few hundred images of each split
    mnist = data.from_arrays(
      (mnist.train_images[:512], mnist.train_labels[:512]),
      (mnist.val_images[:256], mnist.val_labels[:256]),
      (mnist.test_images[:256], mnist.test_labels[:256]),
    )
  return api.search(
    model=EQUINOX_MLP,
    data=mnist,
    space={
      'learning_rate': space.log_uniform(1e-2, 0.5),
      'l2_reg': space.log_uniform(1e-5, 1e-3),
    },
    strategy='random',
    workdir=workdir,
    num_samples=2 if tiny else 16,
    hidden_size=8 if tiny else 128,
    batch_size=32 if tiny else 128,
    num_iters=10 if tiny else 3000,
    train_eval_size=256 if tiny else 5000,
  )


if __name__ == '__main__':
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--workdir', required=True, help='where the search writes')
  parser.add_argument('--tiny', action='store_true', help='a few steps, for tests')
  args = parser.parse_args()
  result = main(args.workdir, args.tiny)
  best = result.table[0]
  print(f'best: val {best["val_accuracy"]:.4f}, {result.workdir}/results.md')
