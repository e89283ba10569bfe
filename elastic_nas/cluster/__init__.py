"""Driver-side Ray machinery: starting Ray and the trainer, watching nodes, warm workers.

* :mod:`~elastic_nas.cluster.launcher` -- connect to or start Ray, run a ``TorchTrainer``;
* :mod:`~elastic_nas.cluster.node_watch` -- the node watcher: resizes seen at once;
* :mod:`~elastic_nas.cluster.warm_workers` -- pre-started worker processes for restarts;
* :mod:`~elastic_nas.cluster.kv` -- the driver/rank-0 handshake for a checkpoint before a join;
* :mod:`~elastic_nas.cluster.local` -- ``elastic-nas cluster local``: an autoscaling cluster on
  127.0.0.1, with its node provider in :mod:`~elastic_nas.cluster.local_provider`;
* :mod:`~elastic_nas.cluster.private` -- every private Ray API, each degrading on its own.
"""
