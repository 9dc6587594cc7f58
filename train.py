"""python train.py = the lstm-flax command (lstm_flax/cli.py): train, eval,
predict, fields, plot.  `python train.py --help` lists the flags."""

from lstm_flax import cli

if __name__ == '__main__':
  cli.run()
