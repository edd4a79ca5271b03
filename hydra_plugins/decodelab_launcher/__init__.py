"""decodelab's Hydra launcher plugins: `hydra/launcher=batched` (conf/hydra/launcher/batched.yaml) and
`hydra/launcher=joblib` (conf/hydra/launcher/joblib.yaml: Hydra's joblib launcher, workers ending with the sweep).

Hydra instantiates plugins only from the `hydra_plugins` namespace and knows a class by the module it was
defined in, so this package names `experiments.batched_sweep.BatchedLauncher` here by subclassing it; the
implementation and its tests live in experiments/.
"""

from experiments import batched_sweep, parent_watch


class BatchedLauncher(batched_sweep.BatchedLauncher):
    """Hydra's name for `experiments.batched_sweep.BatchedLauncher` (see that module)."""


class JoblibLauncher(parent_watch.JoblibLauncher):
    """Hydra's name for `experiments.parent_watch.JoblibLauncher` (see that module)."""


__all__ = ["BatchedLauncher", "JoblibLauncher"]
