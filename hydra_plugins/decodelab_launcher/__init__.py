"""decodelab's Hydra launcher plugin: `hydra/launcher=batched` (conf/hydra/launcher/batched.yaml).

Hydra instantiates plugins only from the `hydra_plugins` namespace and knows a class by the module it was
defined in, so this package names `experiments.batched_sweep.BatchedLauncher` here by subclassing it; the
implementation and its tests live in experiments/.
"""

from experiments import batched_sweep


class BatchedLauncher(batched_sweep.BatchedLauncher):
    """Hydra's name for `experiments.batched_sweep.BatchedLauncher` (see that module)."""


__all__ = ["BatchedLauncher"]
