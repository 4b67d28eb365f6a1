from __future__ import annotations

from pathlib import Path

import polars as pl

from recsys.core.dataset import load_dataset, validate_dataset
from recsys.data.importers.mind import import_mind
from recsys.data.importers.movielens import import_movielens
from tests.conftest import write_text

NEWS = (
    'N1\tsports\tsoccer\tThe "big" match\tA tense final.\thttp://x/1\t[]\t[]\n'
    "N2\tnews\tworld\tElection day\t\thttp://x/2\t[]\t[]\n"
    "N3\tfinance\tmarkets\tStocks rise\tMarkets rallied.\thttp://x/3\t[]\t[]\n"
)
BEHAVIORS = (
    "1\tU1\t11/11/2019 9:05:58 AM\tN1 N2\tN1-1 N3-0 N7-0\n"
    "2\tU2\t11/11/2019 1:05:00 PM\t\tN2-0 N3-1 N1-x\n"
    "3\tU1\t11/12/2019 9:05:58 AM\tN1 N2\tN2-1\n"
    "4\tU3\tnot a time\tN9\tN1-0\n"
)


def test_mind_import_explodes_impressions_and_keeps_history(tmp_path: Path) -> None:
    news = write_text(tmp_path / "news.tsv", NEWS)
    behaviors = write_text(tmp_path / "behaviors.tsv", BEHAVIORS)
    manifest = import_mind(behaviors, news, tmp_path / "ds")
    data = load_dataset(tmp_path / "ds")
    ev = data.events
    assert manifest["rows_in"]["events"] == 8  # one per impression candidate
    assert manifest["rejects_by_reason"] == {
        "events/bad_clicked": 1,  # N1-x
        "events/bad_timestamp": 1,  # line 4
        "events/unknown_item": 1,  # N7
        "history/unknown_item": 1,  # N9
    }
    first = ev.filter(pl.col("request_id") == "1").sort("position")
    assert first["item_id"].to_list() == ["N1", "N3"] and first["clicked"].to_list() == [1, 0]
    assert str(first["ts"][0]) == "2019-11-11 09:05:58+00:00"
    assert data.items.filter(pl.col("item_id") == "N1")["title"].item() == 'The "big" match'
    assert data.items.filter(pl.col("item_id") == "N2")["text"].item() == ""
    # history comes from the user's first line only, in order
    h = data.history.filter(pl.col("user_id") == "U1").sort("order")  # type: ignore[union-attr]
    assert h["item_id"].to_list() == ["N1", "N2"]
    assert validate_dataset(tmp_path / "ds") == []


def test_mind_placeholder_items_cover_events_and_history(tmp_path: Path) -> None:
    news = write_text(tmp_path / "news.tsv", NEWS)
    behaviors = write_text(tmp_path / "behaviors.tsv", BEHAVIORS)
    manifest = import_mind(behaviors, news, tmp_path / "ds", unknown_items="placeholder")
    assert manifest["placeholder_items"] == 2  # N7 (impression) and N9 (history)
    assert "history/unknown_item" not in manifest["rejects_by_reason"]


def test_movielens_ratings_become_clicks_and_text_has_genres_and_tags(tmp_path: Path) -> None:
    d = tmp_path / "ml"
    write_text(d / "movies.csv", 'movieId,title,genres\n1,"Toy Story, The (1995)",Animation|Comedy\n2,Heat (1995),Action\n')
    write_text(
        d / "ratings.csv", "userId,movieId,rating,timestamp\n1,1,4.0,964982703\n1,2,3.5,964982931\n2,2,five,964982931\n2,3,5,964982931\n"
    )
    write_text(d / "tags.csv", "userId,movieId,tag,timestamp\n1,1,Pixar,1\n2,1,pixar,2\n2,1,fun,3\n")
    manifest = import_movielens(d, tmp_path / "ds", click_threshold=4.0)
    data = load_dataset(tmp_path / "ds")
    assert data.events.sort("item_id")["clicked"].to_list() == [1, 0]
    assert manifest["rejects_by_reason"] == {"events/bad_clicked": 1, "events/unknown_item": 1}
    text = data.items.filter(pl.col("item_id") == "1")["text"].item()
    assert text == "Toy Story, The (1995). Genres: Animation, Comedy. Tags: fun, pixar."
    assert data.events["request_id"].n_unique() == 1  # 228 s apart: one session
