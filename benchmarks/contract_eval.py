"""The engine beside its peers on ../shared/CONTRACT.md's two jobs, through the contract's CLI only.

    .venv/bin/pip install -e '.[bench]'     # the peers' libraries: implicit (ALS, BPR), LightFM
    .venv/bin/python benchmarks/contract_eval.py [--datasets news movielens] [--origins 0.6 0.7 0.8 0.9]
        [--out bench_out/contract_eval] [--config experiments/NAME.toml] [--set ranker.num_leaves=63]
        [--skip-engine] [--engine-run DIR] [--peers popularity recent als ...]

The one home of the contract protocol (benchmarks/contract_movielens.py calls it). For every split,
the engine runs as a user would run it, as subprocesses of `python -m recsys.cli`, with the default
config unless --config is given (MLflow goes to a sqlite file inside --out):

    recsys data import events --events EVENTS.csv --items ITEMS.csv --out DATA
    recsys train --data DATA --run-dir RUN [-c CONFIG] [--set K=V ...]
    recsys score --run RUN --candidates CANDIDATES.parquet --out SCORES.parquet

and each peer is fitted on the same training events only and scores exactly the same candidate rows.

Datasets
- `news` (re-ranking a page): `recsys data synth --profile news` generated into --out; the cutoff
  is the 80th percentile of time; EVENTS.csv = the impressions before it (user_id, item_id,
  timestamp, clicked); ITEMS.csv = item_id, title, text of every article (no created_at: the
  contract does not carry it; new articles need their text). Test readers: >= 1 training event and
  >= 1 click after the cutoff (up to 300, fixed seed); candidates = every article a reader was
  shown after the cutoff; relevant = the ones they clicked. Most of them are new articles.
- `movielens` (ranking a catalog): ../shared/data/movielens-latest-small with CONTRACT.md's
  protocol (rating >= 4 -> click, every rated item counts as shown; test users >= 5 training events
  and >= 1 click after the cutoff, up to 200; candidates = every catalog item the user did not
  interact with in training), at each --origins quantile (per origin and pooled).

Peers: popularity (all training clicks); recent popularity (clicks in the last W, a grid scaled
to the training span; the best W is marked, chosen on the test itself, so optimistic); zero-shot
MiniLM (the project's pretrained all-MiniLM-L6-v2 wheel; user = mean of their clicked items'
vectors, score = cosine); ALS and BPR (implicit, 64 factors); EASE (closed form, lambda grid,
best marked, optimistic too); LightFM WARP hybrid (item id for warm items + title tokens, + genres
on MovieLens); on news also the true click model (oracle: P(at least one click if examined) from
ground_truth.parquet) and random order.

Metrics: nDCG@10, Recall@10, MRR@10, mean over test users with a bootstrap 95% CI, and the paired
difference engine - best peer (by nDCG@10) with its CI. A markdown table per split (and pooled
over the MovieLens origins) is printed; OUT/contract_eval.json holds everything, with the wall
time of each engine stage.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from recsys.core.metrics import mean_with_ci, per_request

ROOT = Path(__file__).resolve().parent.parent
ML = ROOT.parent / "shared" / "data" / "movielens-latest-small"
METRICS = ("ndcg@10", "recall@10", "mrr@10")
PEERS = ("popularity", "recent", "minilm", "als", "bpr", "ease", "lightfm")
TS_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
EASE_LAMBDAS = (100.0, 250.0, 500.0)


@dataclass
class Split:
    """One temporal split: what the engine and every peer see, and what they are judged on."""

    name: str
    dataset: str
    cutoff: datetime
    train: pl.DataFrame  # user_id, item_id, ts (UTC), clicked
    items: pl.DataFrame  # item_id, title, text, tokens (list of str: LightFM's item features)
    candidates: pl.DataFrame  # user_id, item_id (unique pairs)
    relevant: pl.DataFrame  # user_id, item_id
    fixed: dict[str, np.ndarray] = field(default_factory=dict)  # reference scores (oracle, random)
    info: dict[str, Any] = field(default_factory=dict)


# -- the datasets ---------------------------------------------------------------------------------

def title_tokens(col: str = "title") -> pl.Expr:
    return pl.col(col).fill_null("").str.to_lowercase().str.extract_all(r"[a-z0-9][a-z0-9'-]+")


def news_split(work: Path, users: int, days: int, seed: int, max_users: int) -> Split:
    from recsys.data.synth_news import NewsConfig, synth_news

    data_dir = work / "synth"
    started = time.perf_counter()
    synth_news(NewsConfig(users=users, days=days, seed=seed), data_dir)
    events = pl.read_parquet(data_dir / "events.parquet")
    items = pl.read_parquet(data_dir / "items.parquet")
    truth = pl.read_parquet(data_dir / "ground_truth.parquet")
    cutoff = events["ts"].quantile(0.8, "nearest")
    train = events.filter(pl.col("ts") < cutoff).select("user_id", "item_id", "ts", "clicked")
    after = events.filter(pl.col("ts") >= cutoff).join(truth, on=["request_id", "item_id"], how="left")
    clickers = after.filter(pl.col("clicked") == 1).select("user_id").unique()
    eligible = clickers.join(train.select("user_id").unique(), on="user_id").sort("user_id")
    test_users = eligible.sample(min(max_users, eligible.height), seed=0) if eligible.height else eligible
    shown = after.join(test_users, on="user_id").group_by("user_id", "item_id").agg(
        clicked=pl.col("clicked").max(),
        # the oracle: P(at least one click) over the reader's impressions of it, as if examined
        oracle=1.0 - (1.0 - pl.col("relevance")).product(),
    ).sort("user_id", "item_id")
    seen = train.select("item_id").unique()
    new_share = shown.join(seen, on="item_id", how="anti").height / max(shown.height, 1)
    candidates = shown.select("user_id", "item_id")
    rng = np.random.default_rng(seed)
    return Split(
        name="news", dataset="news", cutoff=cutoff, train=train,
        items=items.select("item_id", "title", "text", tokens=title_tokens()),
        candidates=candidates, relevant=shown.filter(pl.col("clicked") == 1).select("user_id", "item_id"),
        fixed={"oracle (true click model)": shown["oracle"].to_numpy(), "random": rng.random(shown.height)},
        info={"generated_s": round(time.perf_counter() - started, 1), "candidates_new_share": round(new_share, 3),
              "synth": {"users": users, "days": days, "seed": seed}},
    )


def movielens_split(origin: float, max_users: int = 200) -> Split:
    ratings = pl.read_csv(ML / "ratings.csv")
    cutoff_s = ratings["timestamp"].quantile(origin, "nearest")
    events = ratings.select(
        user_id=pl.col("userId").cast(pl.String), item_id=pl.col("movieId").cast(pl.String),
        ts=pl.from_epoch("timestamp").dt.replace_time_zone("UTC"), epoch="timestamp",
        clicked=(pl.col("rating") >= 4).cast(pl.Int8),
    )
    train, after = events.filter(pl.col("epoch") < cutoff_s), events.filter(pl.col("epoch") >= cutoff_s)
    movies = pl.read_csv(ML / "movies.csv")
    tags = pl.read_csv(ML / "tags.csv").filter(pl.col("timestamp") < cutoff_s)  # no tag from after the cutoff
    tag_text = tags.group_by("movieId").agg(pl.col("tag").str.to_lowercase().unique().sort().str.join(", "))
    genres = pl.col("genres").str.split("|").list.eval(pl.lit("genre:") + pl.element().str.to_lowercase())
    items = movies.join(tag_text, on="movieId", how="left").select(
        item_id=pl.col("movieId").cast(pl.String), title="title",
        text=pl.col("title") + ". Genres: " + pl.col("genres").str.replace_all(r"\|", ", ") + "."
        + pl.when(pl.col("tag").is_not_null()).then(" Tags: " + pl.col("tag") + ".").otherwise(pl.lit("")),
        tokens=pl.concat_list(title_tokens(), genres),
    )
    active = train.group_by("user_id").len().filter(pl.col("len") >= 5).select("user_id")
    clickers = after.filter(pl.col("clicked") == 1).select("user_id").unique().join(active, on="user_id").sort("user_id")
    users = clickers.sample(min(max_users, clickers.height), seed=0) if clickers.height else clickers
    seen = train.select("user_id", "item_id").unique()
    candidates = (users.join(items.select("item_id"), how="cross")
                  .join(seen, on=["user_id", "item_id"], how="anti").sort("user_id", "item_id"))
    relevant = after.filter(pl.col("clicked") == 1).select("user_id", "item_id").unique()
    return Split(name=f"movielens q={origin}", dataset="movielens", cutoff=datetime.fromtimestamp(cutoff_s, timezone.utc),
                 train=train.drop("epoch"), items=items, candidates=candidates, relevant=relevant,
                 info={"origin": origin})


# -- the engine, through the CLI ------------------------------------------------------------------

def write_contract_inputs(split: Split, work: Path) -> None:
    work.mkdir(parents=True, exist_ok=True)
    split.items.select("item_id", "title", "text").write_csv(work / "items.csv")
    split.train.select("user_id", "item_id", timestamp=pl.col("ts").dt.strftime(TS_FORMAT), clicked="clicked").write_csv(
        work / "events.csv")
    split.candidates.write_parquet(work / "candidates.parquet")


def cli(env: dict[str, str], *args: object) -> float:
    started = time.perf_counter()
    print(f"$ recsys {' '.join(map(str, args))}", flush=True)
    subprocess.run([sys.executable, "-m", "recsys.cli", *map(str, args)], check=True, env=env, cwd=ROOT)
    return round(time.perf_counter() - started, 1)


def run_engine(split: Split, work: Path, args: argparse.Namespace) -> tuple[np.ndarray, dict[str, Any]]:
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{(args.out / 'mlflow.db').resolve()}"}
    seconds: dict[str, Any] = {}
    run = work / "run"
    if args.engine_run is not None:
        run = args.engine_run / work.name / "run"
        if not (run / "metrics.json").exists() and (args.engine_run / "metrics.json").exists():
            run = args.engine_run  # one run directory given directly
        print(f"[{split.name}] reusing the engine run {run}")
    else:
        seconds["import_s"] = cli(env, "data", "import", "events", "--events", work / "events.csv",
                                  "--items", work / "items.csv", "--out", work / "data")
        # `recsys train` keeps its blurb cache beside the run (work/.cache): one cache for every
        # split, as a user's reruns share theirs (an item's text is mostly the same at each origin;
        # a 9.7k-film catalog is ~20 minutes of generation)
        shared = (args.out / "engine_cache").resolve()
        shared.mkdir(parents=True, exist_ok=True)
        if not (work / ".cache").exists():
            (work / ".cache").symlink_to(shared, target_is_directory=True)
        train_args: list[object] = ["train", "--data", work / "data", "--run-dir", run]
        if args.config:
            train_args += ["-c", args.config]
        for override in args.overrides:
            train_args += ["--set", override]
        seconds["train_s"] = cli(env, *train_args)
        metrics_file = run / "metrics.json"
        if metrics_file.exists():
            seconds["train_stages"] = json.loads(metrics_file.read_text()).get("stages", {})
    seconds["score_s"] = cli(env, "score", "--run", run, "--candidates", work / "candidates.parquet",
                             "--out", work / "scores.parquet")
    scores = pl.read_parquet(work / "scores.parquet")
    assert scores.height == split.candidates.height, (scores.height, split.candidates.height)
    assert not scores["score"].is_nan().any() and scores["score"].null_count() == 0
    aligned = split.candidates.join(scores, on=["user_id", "item_id"], how="left", maintain_order="left")
    assert aligned["score"].null_count() == 0, "scores do not cover every candidate pair"
    seconds["total_s"] = round(sum(v for k, v in seconds.items() if k.endswith("_s")), 1)
    print(f"[{split.name}] engine seconds: {seconds}", flush=True)
    return aligned["score"].to_numpy(), seconds


# -- the peers ------------------------------------------------------------------------------------

@dataclass
class Index:
    """Integer ids for users and items, and the training click matrix (users x items)."""

    users: dict[str, int]
    items: dict[str, int]
    clicks: Any  # scipy.sparse.csr_matrix of 0/1
    cand_u: np.ndarray
    cand_i: np.ndarray


def index(split: Split) -> Index:
    import scipy.sparse as sp

    users = {u: n for n, u in enumerate(sorted(set(split.train["user_id"]) | set(split.candidates["user_id"])))}
    items = {i: n for n, i in enumerate(split.items["item_id"].to_list())}
    clicked = split.train.filter(pl.col("clicked") == 1).select("user_id", "item_id").unique()
    clicked = clicked.filter(pl.col("item_id").is_in(list(items)))
    rows = np.array([users[u] for u in clicked["user_id"]], dtype=np.int32)
    cols = np.array([items[i] for i in clicked["item_id"]], dtype=np.int32)
    mat = sp.csr_matrix((np.ones(rows.size, dtype=np.float32), (rows, cols)), shape=(len(users), len(items)))
    cand_u = np.array([users[u] for u in split.candidates["user_id"]], dtype=np.int64)
    cand_i = np.array([items.get(i, -1) for i in split.candidates["item_id"]], dtype=np.int64)
    assert (cand_i >= 0).all(), "every candidate item must be in ITEMS"
    return Index(users, items, mat, cand_u, cand_i)


def popularity(split: Split, since: datetime | None = None) -> np.ndarray:
    train = split.train if since is None else split.train.filter(pl.col("ts") >= since)
    pop = train.group_by("item_id").agg(pop=pl.col("clicked").cast(pl.Float64).sum())
    return split.candidates.join(pop, on="item_id", how="left", maintain_order="left")["pop"].fill_null(0.0).to_numpy()


def recent_windows(split: Split) -> list[tuple[str, timedelta]]:
    """A grid of windows shorter than the training span: 1d .. 365d (and 6h on a short log)."""
    span = split.cutoff - split.train["ts"].min()
    grid = [("6h", timedelta(hours=6))] if span <= timedelta(days=60) else []
    grid += [("1d", timedelta(days=1)), ("3d", timedelta(days=3)),
            ("7d", timedelta(days=7)), ("30d", timedelta(days=30)), ("90d", timedelta(days=90)),
            ("365d", timedelta(days=365))]
    return [(name, w) for name, w in grid if w < span]


def minilm_scores(split: Split, idx: Index, cache_file: Path, max_len: int = 64) -> np.ndarray:
    """Zero-shot: pretrained MiniLM item vectors (mean pooling, unit length); user = mean of the
    vectors of their training clicks; score = cosine. Vectors cached by text hash."""
    vectors = embed_texts(split.items.select("item_id", "title", "text"), cache_file, max_len)
    user_vec = np.zeros((len(idx.users), vectors.shape[1]), dtype=np.float32)
    counts = np.asarray(idx.clicks.sum(axis=1)).ravel()
    has = counts > 0
    user_vec[has] = (idx.clicks[has] @ vectors) / counts[has, None]
    norms = np.linalg.norm(user_vec, axis=1, keepdims=True)
    user_vec = np.divide(user_vec, norms, out=np.zeros_like(user_vec), where=norms > 0)
    return np.einsum("nd,nd->n", user_vec[idx.cand_u], vectors[idx.cand_i])


def embed_texts(items: pl.DataFrame, cache_file: Path, max_len: int) -> np.ndarray:
    import torch

    from models.interest.config import InterestConfig
    from models.interest.model import InterestModel, encode_texts, load_tokenizer, new_encoder
    from models.interest.text import item_text_expr

    texts = items.select(item_text_expr())["item_text"].to_list()
    keys = [hashlib.sha1(f"{max_len}\x00{t}".encode()).hexdigest() for t in texts]
    cache: dict[str, np.ndarray] = {}
    if cache_file.exists():
        frame = pl.read_parquet(cache_file)
        cache = dict(zip(frame["key"].to_list(), frame["vec"].to_numpy()))
    todo = sorted({k: t for k, t in zip(keys, texts) if k not in cache}.items(), key=lambda kt: len(kt[1]))
    if todo:
        started = time.perf_counter()
        torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))
        cfg = InterestConfig(max_len=max_len)
        model = InterestModel(cfg, new_encoder(cfg)).eval()
        tokenizer = load_tokenizer()
        vecs = encode_texts(model, tokenizer, [t for _, t in todo], max_len, batch_size=64).numpy().astype(np.float32)
        cache.update({k: v for (k, _), v in zip(todo, vecs)})
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        pl.DataFrame({"key": list(cache), "vec": np.stack(list(cache.values()))}).write_parquet(cache_file)
        print(f"  MiniLM: encoded {len(todo):,} texts in {time.perf_counter() - started:.0f}s", flush=True)
    return np.stack([cache[k] for k in keys]).astype(np.float32)


def implicit_scores(idx: Index, kind: str, seed: int = 0) -> np.ndarray:
    from implicit.cpu.als import AlternatingLeastSquares
    from implicit.cpu.bpr import BayesianPersonalizedRanking

    threads = max(1, min(4, os.cpu_count() or 1))
    if kind == "als":
        model = AlternatingLeastSquares(factors=64, regularization=0.05, alpha=10.0, iterations=15,
                                        random_state=seed, num_threads=threads)
    else:
        model = BayesianPersonalizedRanking(factors=64, learning_rate=0.01, regularization=0.01, iterations=100,
                                            random_state=seed, num_threads=threads)
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1, "blas"):  # implicit's own threads; a BLAS pool on top slows it down
        model.fit(idx.clicks, show_progress=False)
    uf, itf = np.asarray(model.user_factors), np.asarray(model.item_factors)
    # items no one clicked in training carry no signal here: their factors stay as initialised
    clicked_items = np.asarray(idx.clicks.sum(axis=0)).ravel() > 0
    scores = np.einsum("nd,nd->n", uf[idx.cand_u], itf[idx.cand_i])
    return np.where(clicked_items[idx.cand_i], scores, scores[clicked_items[idx.cand_i]].min(initial=0.0) - 1.0)


def ease_scores(idx: Index, lambdas: tuple[float, ...]) -> dict[float, np.ndarray]:
    """EASE (Steck 2019) on the items anyone clicked in training; other items score below them."""
    x = idx.clicks
    cols = np.flatnonzero(np.asarray(x.sum(axis=0)).ravel() > 0)
    xs = x[:, cols].astype(np.float64)
    gram = (xs.T @ xs).toarray()
    pos = np.full(x.shape[1], -1)
    pos[cols] = np.arange(cols.size)
    cand_pos = pos[idx.cand_i]
    warm = cand_pos >= 0
    users = np.unique(idx.cand_u)
    user_rows = xs[users].toarray()
    row_of = np.searchsorted(users, idx.cand_u)
    out = {}
    for lam in lambdas:
        p = np.linalg.inv(gram + lam * np.eye(cols.size))
        b = -p / np.diag(p)
        np.fill_diagonal(b, 0.0)
        full = user_rows @ b  # (test users, warm items)
        scores = np.full(idx.cand_u.size, -1.0)
        scores[warm] = full[row_of[warm], cand_pos[warm]]
        out[lam] = scores
    return out


def lightfm_scores(split: Split, idx: Index, seed: int = 0) -> np.ndarray:
    """LightFM WARP: item features = its id (warm items only) + its title tokens (+ genres)."""
    import scipy.sparse as sp
    from lightfm import LightFM

    clicked_items = np.asarray(idx.clicks.sum(axis=0)).ravel() > 0
    counts: dict[str, int] = {}
    for toks in split.items["tokens"].to_list():
        for t in set(toks or []):
            counts[t] = counts.get(t, 0) + 1
    vocab = {t: n for n, t in enumerate(sorted(t for t, c in counts.items() if c >= 2))}
    n_items = len(idx.items)
    rows, cols, vals = [], [], []
    for i, toks in enumerate(split.items["tokens"].to_list()):
        feats = sorted({vocab[t] for t in (toks or []) if t in vocab})
        for f in feats + ([len(vocab) + i] if clicked_items[i] else []):
            rows.append(i)
            cols.append(f)
            vals.append(1.0)
    feats_m = sp.csr_matrix((vals, (rows, cols)), shape=(n_items, len(vocab) + n_items), dtype=np.float32)
    # normalise each row to sum 1 (LightFM's recommended scaling for hybrid features)
    sums = np.asarray(feats_m.sum(axis=1)).ravel()
    feats_m = sp.diags(1.0 / np.maximum(sums, 1.0)) @ feats_m
    model = LightFM(loss="warp", no_components=64, learning_rate=0.05, random_state=seed)
    model.fit(idx.clicks.tocoo(), item_features=feats_m.tocsr(), epochs=30, num_threads=max(1, min(4, os.cpu_count() or 1)))
    return model.predict(idx.cand_u.astype(np.int32), idx.cand_i.astype(np.int32), item_features=feats_m.tocsr(),
                         num_threads=max(1, min(4, os.cpu_count() or 1))).astype(np.float64)


def run_peers(split: Split, wanted: list[str], cache_dir: Path) -> tuple[dict[str, np.ndarray], dict[str, float], dict[str, list[str]]]:
    """{system: scores aligned with split.candidates}, {system: seconds}, {family: [systems]} (grids)."""
    scores: dict[str, np.ndarray] = {}
    seconds: dict[str, float] = {}
    families: dict[str, list[str]] = {}

    def timed(name: str, fn: Callable[[], Any]) -> Any:
        started = time.perf_counter()
        try:
            return fn()
        finally:
            seconds[name] = round(time.perf_counter() - started, 1)
            print(f"  [{split.name}] {name}: {seconds[name]}s", flush=True)

    idx = index(split)
    if "popularity" in wanted:
        scores["popularity (all training clicks)"] = timed("popularity", lambda: popularity(split))
    if "recent" in wanted:
        names = []
        for label, window in recent_windows(split):
            name = f"recent popularity ({label})"
            scores[name] = timed(name, lambda w=window: popularity(split, split.cutoff - w))
            names.append(name)
        families["recent popularity"] = names
    if "minilm" in wanted:
        scores["zero-shot MiniLM"] = timed("minilm", lambda: minilm_scores(split, idx, cache_dir / "minilm_vectors.parquet"))
    for kind, label in (("als", "ALS (implicit, 64 factors)"), ("bpr", "BPR (implicit, 64 factors)")):
        if kind in wanted:
            if _has("implicit"):
                scores[label] = timed(kind, lambda k=kind: implicit_scores(idx, k))
            else:
                print(f"  [{split.name}] {label}: skipped, `implicit` is not installed (pip install -e '.[bench]')")
    if "ease" in wanted:
        by_lambda = timed("ease", lambda: ease_scores(idx, EASE_LAMBDAS))
        names = []
        for lam, s in by_lambda.items():
            scores[f"EASE (lambda {lam:g})"] = s
            names.append(f"EASE (lambda {lam:g})")
        families["EASE"] = names
    if "lightfm" in wanted:
        if _has("lightfm"):
            scores["LightFM WARP hybrid (id + title tokens)"] = timed("lightfm", lambda: lightfm_scores(split, idx))
        else:
            print(f"  [{split.name}] LightFM: skipped, `lightfm` is not importable here "
                  "(lightfm 1.17 does not build on this toolchain; the bench extra installs the lightfm-next fork)")
    return scores, seconds, families


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


# -- judging --------------------------------------------------------------------------------------

def judge(split: Split, scores: np.ndarray) -> pl.DataFrame:
    """Per test user (with a relevant candidate): ndcg@10, recall@10, mrr@10."""
    labelled = split.candidates.with_columns(score=pl.Series(np.asarray(scores, dtype=np.float64))).join(
        split.relevant.with_columns(label=pl.lit(1)), on=["user_id", "item_id"], how="left", maintain_order="left")
    per = per_request(labelled.select(request_id="user_id", item_id="item_id", label=pl.col("label").fill_null(0),
                                      score="score"))
    return per.select("request_id", *METRICS).with_columns(split=pl.lit(split.name))


def estimates(per: pl.DataFrame) -> dict[str, dict[str, float]]:
    out = {}
    for m in METRICS:
        e = mean_with_ci(per[m].to_numpy())
        out[m] = {"mean": e.mean, "low": e.low, "high": e.high, "n": e.n}
    return out


def paired(a: pl.DataFrame, b: pl.DataFrame) -> dict[str, dict[str, float]]:
    joined = a.join(b, on=["split", "request_id"], suffix="_b")
    out = {}
    for m in METRICS:
        e = mean_with_ci((joined[m] - joined[f"{m}_b"]).to_numpy())
        out[m] = {"mean": e.mean, "low": e.low, "high": e.high, "n": e.n}
    return out


REFERENCE = ("oracle (true click model)", "random")


def summarise(title: str, per: dict[str, pl.DataFrame], families: dict[str, list[str]], info: str) -> dict[str, Any]:
    """Print the markdown table of one split (or pooled splits); return its JSON."""
    table = {name: estimates(p) for name, p in per.items()}
    best_of = {}
    for family, names in families.items():
        present = [n for n in names if n in table]
        if present:
            best_of[family] = max(present, key=lambda n: table[n]["ndcg@10"]["mean"])
    peers = [n for n in table if n != "engine" and n not in REFERENCE]
    best_peer = max(peers, key=lambda n: table[n]["ndcg@10"]["mean"]) if peers else None
    diff = paired(per["engine"], per[best_peer]) if "engine" in per and best_peer else None
    print(f"\n### {title}\n\n{info}\n")
    print("| system | nDCG@10 [95% CI] | Recall@10 [95% CI] | MRR@10 [95% CI] |")
    print("|---|---|---|---|")
    order = sorted(table, key=lambda n: -table[n]["ndcg@10"]["mean"])
    for name in order:
        mark = " (best W)" if name in best_of.values() and name.startswith("recent") else ""
        mark = " (best lambda)" if name in best_of.values() and name.startswith("EASE") else mark
        mark += " ← best peer" if name == best_peer else ""
        label = f"**{name}**" if name == "engine" else name
        cells = [f"{table[name][m]['mean']:.3f} [{table[name][m]['low']:.3f}, {table[name][m]['high']:.3f}]" for m in METRICS]
        print(f"| {label}{mark} | " + " | ".join(cells) + " |")
    if diff:
        cells = [f"{diff[m]['mean']:+.3f} [{diff[m]['low']:+.3f}, {diff[m]['high']:+.3f}]" for m in METRICS]
        print(f"| engine − {best_peer} (paired) | " + " | ".join(cells) + " |")
    return {"systems": table, "best_of": best_of, "best_peer": best_peer, "engine_minus_best_peer": diff}


# -- main -----------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", choices=["news", "movielens"], default=["news", "movielens"])
    parser.add_argument("--origins", type=float, nargs="+", default=[0.6, 0.7, 0.8, 0.9],
                        help="MovieLens cutoff quantiles (0.8 is the contract's split)")
    parser.add_argument("--out", type=Path, default=Path("bench_out/contract_eval"))
    parser.add_argument("--config", type=Path, default=None, help="experiment TOML for `recsys train` (default: none = the default config)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="passed to `recsys train --set`")
    parser.add_argument("--skip-engine", action="store_true", help="peers only (fast)")
    parser.add_argument("--engine-run", type=Path, default=None,
                        help="reuse trained runs (a previous --out: DIR/<split>/run, or one run dir): only `recsys score` runs")
    parser.add_argument("--peers", nargs="+", choices=PEERS, default=list(PEERS))
    parser.add_argument("--news-users", type=int, default=3000)
    parser.add_argument("--news-days", type=int, default=30)
    parser.add_argument("--news-seed", type=int, default=7)
    parser.add_argument("--news-max-users", type=int, default=300)
    parser.add_argument("--movielens-max-users", type=int, default=200)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {"args": {k: str(v) for k, v in vars(args).items()},
                              "started": datetime.now(timezone.utc).isoformat(timespec="seconds"), "splits": {}}
    plan: list[tuple[str, Callable[[], Split]]] = []
    if "news" in args.datasets:
        plan.append(("news", lambda: news_split(args.out / "news", args.news_users, args.news_days, args.news_seed,
                                                args.news_max_users)))
    if "movielens" in args.datasets:
        plan += [(f"movielens_q{int(round(o * 100))}", lambda o=o: movielens_split(o, args.movielens_max_users))
                 for o in args.origins]
    pooled: dict[str, list[pl.DataFrame]] = {}
    pooled_families: dict[str, list[str]] = {}
    for key, make in plan:
        work = args.out / key
        split = make()
        write_contract_inputs(split, work)
        n_users = split.candidates["user_id"].n_unique()
        print(f"\n== {split.name}: cutoff {split.cutoff:%Y-%m-%d %H:%M}Z, {split.train.height:,} training events "
              f"({int(split.train['clicked'].sum()):,} clicks), {n_users} test users, {split.candidates.height:,} candidates, "
              f"{split.relevant.join(split.candidates, on=['user_id', 'item_id']).height:,} relevant {split.info}", flush=True)
        peer_scores, peer_seconds, families = run_peers(split, args.peers, args.out / "cache")
        systems = {**peer_scores, **split.fixed}
        entry: dict[str, Any] = {"info": split.info, "peer_seconds": peer_seconds, "test_users": n_users,
                                 "candidates": split.candidates.height, "cutoff": split.cutoff.isoformat()}
        if not args.skip_engine:
            engine, seconds = run_engine(split, work, args)
            systems = {"engine": engine, **systems}
            entry["engine_seconds"] = seconds
        per = {name: judge(split, s) for name, s in systems.items()}
        info = (f"cutoff {split.cutoff:%Y-%m-%d %H:%M}Z; {per[next(iter(per))].height} test users with a relevant candidate; "
                f"{split.candidates.height:,} candidate rows")
        if "candidates_new_share" in split.info:
            info += f"; {split.info['candidates_new_share']:.0%} of candidate articles never seen in training"
        if "engine_seconds" in entry:
            info += f"; engine import+train+score {entry['engine_seconds']['total_s']:.0f}s"
        entry.update(summarise(split.name, per, families, info))
        report["splits"][key] = entry
        if split.dataset == "movielens":
            for name, p in per.items():
                pooled.setdefault(name, []).append(p)
            pooled_families = families
        (args.out / "contract_eval.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    if len([k for k, _ in plan if k.startswith("movielens")]) > 1:
        per = {name: pl.concat(ps) for name, ps in pooled.items() if len(ps) == len(args.origins)}
        report["splits"]["movielens_pooled"] = summarise(
            f"movielens pooled over origins {args.origins}", per, pooled_families,
            f"{per[next(iter(per))].height} (origin, user) pairs")
    report["finished"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    (args.out / "contract_eval.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(f"\nwrote {args.out / 'contract_eval.json'}")
    return report


if __name__ == "__main__":
    main()
