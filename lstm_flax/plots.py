"""Figures (optional: needs matplotlib, ``pip install -e '.[plot]'``).

Each function takes numpy arrays of a few held-out examples and writes a PNG
into ``workdir``, returning its path.
"""

import os

# Figures are made with matplotlib's object API, not pyplot: no global figure
# manager or GUI backend to set up, and a faster import.
from matplotlib.figure import Figure
import numpy as np


def forecast_figure(workdir, inputs, targets, predictions):
  """Damped sine: inputs (B, T, 1), targets and predictions (B, K) -> forecast.png."""
  n = inputs.shape[0]
  length, horizon = inputs.shape[1], targets.shape[1]
  fig = Figure(figsize=(8, 2.2 * n))
  axes = fig.subplots(n, 1, sharex=True, squeeze=False)
  t_in = np.arange(length)
  t_out = np.arange(length, length + horizon)
  for i, ax in enumerate(axes[:, 0]):
    ax.plot(t_in, inputs[i, :, 0], color='0.5', label='input')
    ax.plot(t_out, targets[i], 'o-', color='tab:blue', label='true next values')
    ax.plot(t_out, predictions[i], 'x--', color='tab:red', label='predicted')
    mae = np.abs(predictions[i] - targets[i]).mean()
    ax.set_title(
      f'held-out sequence {i}: MAE of the forecast {mae:.4f}', fontsize=9
    )
    ax.set_ylabel('f(i)')
    ax.grid(alpha=0.3)
  axes[0, 0].legend(loc='upper right', fontsize=8)
  axes[-1, 0].set_xlabel('time step i')
  # Fixed margins: tight_layout measures every text box, a large share of
  # drawing the figure.
  height = 2.2 * n  # inches: room for the x label below, a title above
  fig.subplots_adjust(
    left=0.09,
    right=0.98,
    bottom=0.5 / height,
    top=1 - 0.3 / height,
    hspace=0.35,
  )
  path = os.path.join(workdir, 'forecast.png')
  fig.savefig(path, dpi=100)
  return path


def moving_line_figure(workdir, frames, labels, predictions):
  """Moving line: frames (B, T, H, W, 1), labels and predictions (B,) -> moving_line.png.

  Each row shows frames at a few time steps, ending with the last one.
  """
  n, t = frames.shape[:2]
  steps = np.linspace(0, t - 1, 5).astype(int)
  fig = Figure(figsize=(1.8 * len(steps), 2 * n))
  axes = fig.subplots(n, len(steps), squeeze=False)
  names = {1: 'right', 0: 'left'}
  for i in range(n):
    for j, step in enumerate(steps):
      ax = axes[i, j]
      ax.imshow(frames[i, step, :, :, 0], cmap='Greys', vmin=0, vmax=1)
      ax.set_xticks([])
      ax.set_yticks([])
      if i == 0:
        ax.set_title(f'frame {step}', fontsize=9)
    ok = 'ok' if labels[i] == predictions[i] else 'WRONG'
    axes[i, 0].set_ylabel(
      f'true {names[int(labels[i])]}\npredicted '
      f'{names[int(predictions[i])]} ({ok})',
      fontsize=8,
    )
  fig.tight_layout()
  path = os.path.join(workdir, 'moving_line.png')
  fig.savefig(path, dpi=100)
  return path


def rectangles_figure(workdir, generated, completed, true_corners):
  """Generated rectangles: ``generated`` (4, 2) from (0, 0) alone; ``completed``
  (n, 4, 2) from (0, 0) and a held-out first edge, with ``true_corners``
  (n, 4, 2) of those held-out rectangles -> rectangles.png."""
  from lstm_flax import generation  # pylint: disable=g-import-not-at-top

  n = completed.shape[0]
  fig = Figure(figsize=(2.6 * (n + 1), 2.9))
  axes = fig.subplots(1, n + 1, squeeze=False)

  def draw(ax, corners, title, truth=None):
    closed = np.concatenate([corners, corners[:1]])
    if truth is not None:
      t = np.concatenate([truth, truth[:1]])
      ax.plot(t[:, 0], t[:, 1], '--', color='0.6', label='held-out rectangle')
    ax.plot(
      closed[:, 0], closed[:, 1], 'o-', color='tab:red', label='generated'
    )
    for k, (x, y) in enumerate(corners):
      ax.annotate(
        str(k), (x, y), textcoords='offset points', xytext=(3, 3), fontsize=7
      )
    angle = generation.right_angle_error(corners[None])[0]
    error = generation.corner_error(corners[None])[0]
    ax.set_title(
      f'{title}\nangle err {angle:.1f} deg, corner err {error:.3f}', fontsize=8
    )
    ax.set_xlim(-0.1, 1.1)
    ax.set_ylim(-0.1, 1.1)
    ax.set_aspect('equal')
    ax.grid(alpha=0.3)

  draw(axes[0, 0], generated, 'from (0,0) alone')
  for i in range(n):
    draw(
      axes[0, i + 1],
      completed[i],
      f'from (0,0), (w,0): held-out {i}',
      true_corners[i],
    )
  axes[0, -1].legend(loc='upper right', fontsize=7)
  fig.tight_layout()
  path = os.path.join(workdir, 'rectangles.png')
  fig.savefig(path, dpi=100)
  return path
