"""Start-up overlap: the slow imports a run needs later, done while XLA compiles.

``experiment.compile_in_parallel`` compiles the programs on worker threads;
XLA's compiler releases the GIL, so the main thread can meanwhile import
orbax (checkpoints) and matplotlib (the figure), which a run would otherwise
import one after the other once compiling is done.  The imports stay on the
main thread.  docs/performance.md has what this saves.
"""

import importlib


def import_while_compiling(figure: bool):
  """Imports orbax, and matplotlib's figure module if ``figure``."""
  importlib.import_module('orbax.checkpoint')
  if figure:
    try:
      importlib.import_module('lstm_flax.plots')
    except ImportError:  # no matplotlib: the figure is skipped later
      pass
