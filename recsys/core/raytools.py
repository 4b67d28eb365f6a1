"""Ray at the edge: connect to RAY_ADDRESS when set, else a small local instance."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any, TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")


def ensure_ray(metrics_port: int | None = None) -> None:
    """`metrics_port`: where a local Ray exports Prometheus metrics (Ray Serve's ray_serve_*
    included); a cluster joined through RAY_ADDRESS has its own.

    Workers' output is forwarded to this driver (log_to_driver): `recsys train` and `recsys bench
    serve` run inside `recsys.core.logs.quiet`, which points this process's stdout/stderr at the run's
    log file, so the workers' chatter (Ray Train's reports, LightGBM's iterations, Ray Serve's
    controller) lands there, next to the driver's own, and the console stays readable; a task's
    error still raises here, in the driver, and reaches the console. `recsys serve` keeps it all
    on the console (its access log)."""
    import ray

    if ray.is_initialized():
        return
    address = os.environ.get("RAY_ADDRESS")
    if address:
        log.info("connecting to the Ray cluster at %s", address)
        ray.init(address=address, log_to_driver=True)
    else:
        # More logical CPUs than cores: on 2 cores a Train worker plus a Data pipeline would
        # otherwise wait on each other forever (STACK.md). address="local": never attach by
        # surprise to some other cluster started on this machine; RAY_ADDRESS is the way in.
        # Without a dashboard this Ray still advertises 127.0.0.1:8265 for its state API, and Ray
        # Train's PlacementGroupCleaner asks whichever other Ray owns that port whether our
        # controller lives, hears "no such actor" and removes our placement group, killing the
        # training worker. Point the state API at a closed port (workers inherit the setting).
        os.environ.setdefault("RAY_API_SERVER_ADDRESS", "http://127.0.0.1:9")
        extra: dict[str, Any] = {"_metrics_export_port": metrics_port} if metrics_port else {}
        ray.init(address="local", num_cpus=int(os.environ.get("RECSYS_RAY_CPUS", "4")), include_dashboard=False,
                 log_to_driver=True, configure_logging=False,
                 runtime_env={"worker_process_setup_hook": "recsys.core.raytools.quiet_cleaner_warnings"}, **extra)


def quiet_cleaner_warnings() -> None:
    """Setup hook of a local Ray's workers: the PlacementGroupCleaner, finding no state API (the
    closed port above), warns once a second for the whole training run; only its errors remain."""
    logging.getLogger("ray.train.v2._internal.execution.controller.placement_group_cleaner").setLevel(logging.ERROR)


def local_cores() -> int:
    """Cores this process may run on (its CPU affinity, not the machine's count)."""
    return len(os.sched_getaffinity(0))


def usable_cpus() -> float:
    """CPUs work can really use (call after ensure_ray): the cluster's CPU resource when joined
    through RAY_ADDRESS; this machine's cores for the local Ray, which advertises more logical
    CPUs than cores so that stages do not wait on each other (ensure_ray)."""
    import ray

    if os.environ.get("RAY_ADDRESS"):
        return float(ray.cluster_resources().get("CPU", 1.0))
    return float(local_cores())


def remote_call(fn: Callable[..., T], *args: Any, num_cpus: float = 1.0, **kwargs: Any) -> T:
    """Run `fn(*args)` as a Ray task (on the cluster when RAY_ADDRESS is set) and wait for it.

    Inputs and outputs travel as files in the run directory, which must be on storage every node
    sees when running on a real cluster.
    """
    import ray

    ensure_ray()
    task = ray.remote(num_cpus=num_cpus, max_retries=1)(fn)
    return ray.get(task.remote(*args, **kwargs))
