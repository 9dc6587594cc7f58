"""Trains the seed's vanilla LSTM in Keras on our echo generator and saves it.

A stand-in for a Keras model you already have: LSTM(25) -> Dense(10, softmax),
written as ``<out_dir>/echo.keras`` and ``<out_dir>/echo.weights.h5``.  Needs
the ``interop`` extra (Keras 3); the backend is JAX unless KERAS_BACKEND says
otherwise.

  python examples/train_keras_echo.py --out_dir=.

Defaults follow ``configs/vanilla_fast.py`` (300 Adam updates of batch 64,
learning rate 3e-2), which takes echo to ~100% held-out accuracy.
"""

import os
import sys

os.environ.setdefault('KERAS_BACKEND', 'jax')
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags
import jax
import numpy as np

from lstm_flax import data


def train(out_dir, steps=300, batch_size=64, learning_rate=3e-2, seed=0):
  """Trains LSTM(25) -> Dense(10, softmax) on echo; saves it; returns the Keras model."""
  import keras  # pylint: disable=g-import-not-at-top

  keras.utils.set_random_seed(seed)
  inputs, labels = data.echo(jax.random.key(seed), steps * batch_size)
  model = keras.Sequential(
    [
      keras.Input((5, 10)),
      keras.layers.LSTM(25),
      keras.layers.Dense(10, activation='softmax'),
    ]
  )
  model.compile(
    keras.optimizers.Adam(learning_rate),
    'sparse_categorical_crossentropy',
    metrics=['accuracy'],
  )
  model.fit(
    np.asarray(inputs),
    np.asarray(labels),
    batch_size=batch_size,
    epochs=1,
    shuffle=False,
    verbose=0,
  )
  os.makedirs(out_dir, exist_ok=True)
  model.save(os.path.join(out_dir, 'echo.keras'))
  model.save_weights(os.path.join(out_dir, 'echo.weights.h5'))
  return model


def main(argv):
  del argv
  f = flags.FLAGS
  model = train(f.out_dir, f.steps, f.batch_size, f.learning_rate, f.seed)
  inputs, labels = data.echo(jax.random.key(1), 1000)
  accuracy = (
    model.predict(np.asarray(inputs), verbose=0).argmax(-1) == labels
  ).mean()
  print(
    f'Keras held-out accuracy {accuracy:.3f}; saved {f.out_dir}/echo.keras and '
    f'{f.out_dir}/echo.weights.h5'
  )


if __name__ == '__main__':
  # Defined here, not at import, so that tests can import train().
  flags.DEFINE_string('out_dir', '.', 'where echo.keras and echo.weights.h5 go')
  flags.DEFINE_integer('steps', 300, 'Adam updates')
  flags.DEFINE_integer('batch_size', 64, 'sequences per update')
  flags.DEFINE_float('learning_rate', 3e-2, 'Adam learning rate')
  flags.DEFINE_integer('seed', 0, 'seed of the training data and the weights')
  app.run(main)
