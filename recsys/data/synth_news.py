"""The synthetic news site: short-lived articles written from hidden topics, with a known click model.

A faithful but independent analogue of a news front page (the re-ranking job of CONTRACT.md):

- **Articles** arrive every day (40-60 a day) and live a few days. Each is written from one hidden
  topic: a title and a 2-3 sentence body whose words come mostly from the topic's own vocabulary
  (entities, nouns, verbs, adjectives), partly from the vocabulary shared by its family of related
  topics (football/tennis/basketball share "coach", "season"...) and partly from generic news
  words, so the text is informative but noisy. A topic runs a "story" (a lead entity) for a few
  days at a time. items.parquet has no category and no attributes (the topic stays hidden), and
  `created_at` is the publication time.
- **Readers** hold a hidden taste over topics (Dirichlet: a few favourites) and visit now and then
  (morning and evening peaks). Each visit shows a slate of recent articles (at most
  `max_age_days` old) chosen by the site's own logic: half of the slots by the site's
  recency/popularity score, half at random (weighted to the newest), ordered by that score.
- **Clicks**, several possible per visit:
      relevance  = sigmoid(base + taste(user, topic) + topic_appeal + quality) * freshness(age)
      click_prob = relevance * examination(position)
  with freshness = exp(-age / freshness_days) (hours-to-days scale) and examination =
  1 / position ** position_decay. The exact probabilities go to ground_truth.parquet (relevance =
  the click probability without position bias, as in the shop), so an oracle can be scored.

After a temporal cutoff at the 80th percentile of time, most articles shown were never shown
before it: their text and freshness are all a ranker can go on. Same seed, same bytes.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from tqdm import tqdm

from recsys.core.dataset import write_dataset
from recsys.core.schemas import GROUND_TRUTH_SCHEMA, REJECTS_SCHEMA

# topic -> (family, entities, nouns, verbs (headline present tense), adjectives)
TOPICS: dict[str, dict[str, Any]] = {
    "politics": {
        "family": "civic",
        "entities": ["Senator Halvorsen", "the Reform Party", "Prime Minister Okafor", "the Liberty Bloc",
                     "Governor Marchetti", "the coalition", "Speaker Lindqvist", "the opposition leader"],
        "nouns": ["election", "ballot", "campaign", "voters", "coalition talks", "referendum", "poll",
                  "candidate", "manifesto", "debate", "constituency", "majority"],
        "verbs": ["campaigns on", "concedes", "wins the vote on", "rejects", "backs", "calls a vote on"],
        "adjectives": ["electoral", "partisan", "constitutional", "snap", "bipartisan"],
    },
    "economy": {
        "family": "civic",
        "entities": ["the central bank", "Meridian Capital", "the finance ministry", "Governor Strand",
                     "the stock exchange", "Atlas Holdings", "the treasury", "the IMF"],
        "nouns": ["inflation", "interest rates", "markets", "recession", "jobs report", "bond yields",
                  "growth forecast", "currency", "investors", "earnings", "unemployment", "trade deficit"],
        "verbs": ["raises", "cuts", "forecasts", "warns of", "reports", "holds"],
        "adjectives": ["fiscal", "quarterly", "economic", "monetary", "inflationary"],
    },
    "crime": {
        "family": "civic",
        "entities": ["the city police", "Detective Varga", "the district attorney", "the federal court",
                     "Judge Almeida", "the prosecutors", "the sheriff's office", "the defence lawyers"],
        "nouns": ["trial", "arrest", "robbery", "suspect", "verdict", "investigation", "fraud case",
                  "jury", "witness", "sentence", "burglary", "evidence"],
        "verbs": ["charges", "arrests", "convicts", "investigates", "appeals", "sentences"],
        "adjectives": ["criminal", "violent", "fraudulent", "armed", "unsolved"],
    },
    "football": {
        "family": "sport",
        "entities": ["Riverside United", "Northgate FC", "striker Moreno", "manager Callaghan",
                     "the Premier Cup", "goalkeeper Ivanov", "Harbour City", "midfielder Adeyemi"],
        "nouns": ["goal", "penalty", "derby", "transfer", "striker", "league table", "stoppage time",
                  "clean sheet", "header", "relegation", "free kick", "stadium"],
        "verbs": ["scores against", "signs", "beats", "draws with", "sacks", "thrashes"],
        "adjectives": ["late", "stunning", "dramatic", "relegated", "unbeaten"],
    },
    "tennis": {
        "family": "sport",
        "entities": ["Elena Sorokina", "Marco Bellini", "the Grand Slam", "Kai Nakamura",
                     "the Open", "Lucia Ferreira", "the Davis Cup", "Tomas Novak"],
        "nouns": ["serve", "set", "tiebreak", "baseline rally", "ace", "quarter-final", "grass court",
                  "racket", "seed", "break point", "clay court", "forehand"],
        "verbs": ["knocks out", "edges past", "serves past", "upsets", "withdraws from", "survives"],
        "adjectives": ["top-seeded", "five-set", "straight-sets", "unseeded", "marathon"],
    },
    "basketball": {
        "family": "sport",
        "entities": ["the Lakeside Hawks", "point guard Ellis", "the Metro Titans", "coach Brandt",
                     "the playoffs", "centre Okoye", "the Capital Wolves", "forward Mendes"],
        "nouns": ["dunk", "rebound", "three-pointer", "buzzer-beater", "overtime", "draft pick",
                  "free throw", "triple-double", "court", "assist", "timeout", "roster"],
        "verbs": ["outscores", "trades", "rallies past", "drafts", "edges", "routs"],
        "adjectives": ["overtime", "record-setting", "undrafted", "clutch", "injured"],
    },
    "technology": {
        "family": "tech",
        "entities": ["Nimbus Labs", "Quanta Systems", "the chipmaker Vireo", "CEO Dana Whitfield",
                     "Orbitnet", "the app store", "Pixelcore", "the startup Fathom"],
        "nouns": ["smartphone", "software update", "chip", "app", "artificial intelligence",
                  "data breach", "cloud service", "processor", "privacy settings", "gadget",
                  "operating system", "chatbot"],
        "verbs": ["unveils", "launches", "patches", "acquires", "recalls", "rolls out"],
        "adjectives": ["digital", "wireless", "encrypted", "open-source", "next-generation"],
    },
    "science": {
        "family": "tech",
        "entities": ["the Kellner Institute", "Dr. Amara Singh", "the university lab", "Professor Holt",
                     "the genome consortium", "Dr. Felix Brenner", "the research council", "the museum"],
        "nouns": ["fossil", "experiment", "species", "particle", "genome", "microscope", "study",
                  "discovery", "molecule", "peer review", "dinosaur", "laboratory"],
        "verbs": ["discovers", "publishes", "sequences", "identifies", "measures", "replicates"],
        "adjectives": ["ancient", "microscopic", "peer-reviewed", "genetic", "experimental"],
    },
    "space": {
        "family": "tech",
        "entities": ["the space agency", "the Artemis crew", "Stellar Dynamics", "astronaut Reyes",
                     "the orbital station", "the Mars rover", "the observatory", "commander Yilmaz"],
        "nouns": ["rocket", "launch", "orbit", "asteroid", "telescope", "spacewalk", "moon landing",
                  "satellite", "comet", "galaxy", "capsule", "exoplanet"],
        "verbs": ["launches", "docks with", "spots", "lands on", "delays", "photographs"],
        "adjectives": ["lunar", "orbital", "interstellar", "crewed", "distant"],
    },
    "health": {
        "family": "life",
        "entities": ["the health ministry", "Dr. Lena Okoro", "St. Brigid's Hospital", "the WHO",
                     "the drug regulator", "Dr. Paul Ekström", "the nurses' union", "Medica Pharma"],
        "nouns": ["vaccine", "outbreak", "patients", "clinical trial", "hospital", "virus",
                  "treatment", "diagnosis", "surgery", "waiting lists", "symptoms", "infection"],
        "verbs": ["approves", "treats", "warns about", "tests", "expands", "screens for"],
        "adjectives": ["medical", "chronic", "infectious", "clinical", "mental-health"],
    },
    "food": {
        "family": "life",
        "entities": ["chef Rosa Delgado", "the Golden Spoon", "the farmers' market", "baker Tomasz",
                     "the Michelin guide", "the food festival", "chef Hiro Tanaka", "Greenleaf Bistro"],
        "nouns": ["recipe", "restaurant", "menu", "dessert", "harvest", "cookbook", "tasting",
                  "sourdough", "vegetables", "cuisine", "kitchen", "spices"],
        "verbs": ["opens", "serves", "bakes", "reinvents", "tastes", "cooks"],
        "adjectives": ["seasonal", "vegan", "spicy", "homemade", "organic"],
    },
    "travel": {
        "family": "life",
        "entities": ["the national airline", "Coastline Resorts", "the tourism board", "the old town",
                     "Alpine Rail", "the cruise line", "the island of Kessa", "the heritage site"],
        "nouns": ["flights", "hotel", "beach", "itinerary", "passport", "tourists", "resort",
                  "road trip", "luggage", "airport", "destination", "ferry"],
        "verbs": ["reopens", "adds routes to", "welcomes", "cancels", "books", "explores"],
        "adjectives": ["scenic", "coastal", "budget", "remote", "luxury"],
    },
    "climate": {
        "family": "earth",
        "entities": ["the climate panel", "Greenpeak", "the environment agency", "activist Mara Jensen",
                     "the weather service", "the glacier institute", "the energy regulator", "the coast guard"],
        "nouns": ["emissions", "heatwave", "drought", "flooding", "wildfire", "carbon tax",
                  "solar farm", "wind turbines", "sea levels", "storm", "rainfall", "deforestation"],
        "verbs": ["warns of", "tracks", "pledges to cut", "records", "evacuates ahead of", "bans"],
        "adjectives": ["extreme", "renewable", "record-breaking", "coastal", "carbon-neutral"],
    },
    "movies": {
        "family": "culture",
        "entities": ["director Lena Voss", "Silverline Studios", "actor Jonah Price", "the film festival",
                     "actress Mei Lin", "the streaming service Reelix", "the box office", "the academy"],
        "nouns": ["film", "sequel", "premiere", "trailer", "box office", "screenplay", "blockbuster",
                  "cast", "director's cut", "documentary", "red carpet", "franchise"],
        "verbs": ["premieres", "casts", "releases", "directs", "stars in", "reboots"],
        "adjectives": ["cinematic", "animated", "award-winning", "star-studded", "indie"],
    },
    "music": {
        "family": "culture",
        "entities": ["singer Ava Monroe", "the band Lowtide", "rapper K-Zen", "the symphony orchestra",
                     "Echo Records", "the summer festival", "pianist Ruben Castillo", "the charts"],
        "nouns": ["album", "concert", "tour", "single", "lyrics", "guitar", "chart", "playlist",
                  "encore", "record deal", "duet", "stage"],
        "verbs": ["drops", "tours with", "headlines", "records", "cancels", "tops"],
        "adjectives": ["acoustic", "sold-out", "platinum", "live", "experimental"],
    },
    "autos": {
        "family": "tech",
        "entities": ["Vanta Motors", "the carmaker Helix", "the motor show", "CEO Rafael Duarte",
                     "the safety regulator", "Kinetic EV", "the racing team", "the dealership network"],
        "nouns": ["electric car", "battery", "engine", "recall", "charging stations", "SUV",
                  "self-driving system", "fuel economy", "hybrid", "crash test", "sedan", "factory"],
        "verbs": ["recalls", "unveils", "tests", "discontinues", "ships", "expands"],
        "adjectives": ["electric", "autonomous", "fuel-efficient", "compact", "turbocharged"],
    },
}

# words shared by a family of related topics (informative about the family, not the topic)
FAMILY_WORDS: dict[str, list[str]] = {
    "civic": ["government", "minister", "law", "court ruling", "budget", "policy", "reform", "public"],
    "sport": ["coach", "season", "fans", "championship", "match", "injury", "title", "victory"],
    "tech": ["researchers", "data", "engineers", "innovation", "prototype", "launch", "battery", "lab"],
    "life": ["families", "guide", "weekend", "city", "local", "diet", "visitors", "wellbeing"],
    "earth": ["weather", "scientists", "energy", "environment", "temperatures", "planet", "pollution", "nature"],
    "culture": ["stars", "fans", "award", "critics", "premiere", "audience", "festival", "stage"],
}

GENERIC_NOUNS = ["officials", "report", "plans", "people", "statement", "crisis", "decision", "deal",
                 "questions", "future", "changes", "record", "concerns", "update", "sources", "interview"]
GENERIC_ADJ = ["new", "major", "surprise", "latest", "big", "historic", "controversial", "unexpected"]
WEEKDAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
REPORTING = ["according to people familiar with the matter", "officials said", "a statement said",
             "sources told reporters", "in a surprise announcement", "after weeks of speculation"]
FILLERS = ["More details are expected later this week.", "The story is developing.",
           "Reactions poured in on social media.", "Analysts are divided on what comes next.",
           "It is the latest twist in a busy week.", "Here is what we know so far."]

# relative publishing and reading rates per hour of the day (UTC)
PUBLISH_HOURS = np.array([1, 1, 1, 1, 2, 3, 5, 7, 8, 8, 7, 7, 7, 7, 6, 6, 6, 6, 5, 4, 3, 2, 1, 1], dtype=float)
READ_HOURS = np.array([1, 1, 1, 1, 1, 2, 4, 7, 8, 6, 4, 4, 5, 4, 3, 3, 4, 5, 7, 8, 8, 6, 4, 2], dtype=float)


@dataclass(frozen=True)
class NewsConfig:
    users: int = 3000
    days: int = 30
    seed: int = 7
    articles_per_day: tuple[int, int] = (40, 60)  # inclusive range, drawn per day
    topics: int = 16  # the first N of TOPICS
    lead_days: int = 3  # articles published before the first visit, so day one has a front page
    slate_size: int = 12
    visits_per_user: float = 3.5
    max_age_days: float = 2.5  # the front page shows nothing older
    popular_share: float = 0.5  # slots filled by the site's recency/popularity score
    start: str = "2026-03-01T00:00:00+00:00"
    base_logit: float = -2.2
    taste_scale: float = 1.3
    taste_concentration: float = 0.3  # Dirichlet alpha per topic: small = a few favourite topics
    quality_sd: float = 0.5
    topic_appeal_sd: float = 0.3
    freshness_days: float = 1.0
    position_decay: float = 0.5
    own_word_share: float = 0.65  # a word slot is from the topic's vocabulary; else family, else generic
    family_word_share: float = 0.2
    second_topic_share: float = 0.25  # articles that also borrow words from a second topic
    story_days: float = 3.0  # a topic's lead story (entity) lasts about this long


@dataclass(frozen=True)
class NewsWorld:
    """What `generate` makes, with the hidden truth tests and benchmarks may look at."""

    items: pl.DataFrame
    events: pl.DataFrame
    ground_truth: pl.DataFrame
    item_topic: np.ndarray  # (n_items,) topic index per article, in items' row order
    user_taste: np.ndarray  # (users, topics) taste logit added for each topic
    topic_names: list[str]


def articles_per_day(total: int, days: int, lead_days: int = NewsConfig.lead_days) -> tuple[int, int]:
    """The daily range (±20 %) that makes about `total` articles over the lead days and `days`."""
    mean = max(1.0, total / (days + lead_days))
    return max(1, int(round(mean * 0.8))), max(1, int(round(mean * 1.2)))


def _hours(rng: np.random.Generator, profile: np.ndarray, n: int) -> np.ndarray:
    """Fractions of a day drawn from an hourly profile."""
    hour = rng.choice(24, size=n, p=profile / profile.sum())
    return (hour + rng.random(n)) / 24.0


class _Writer:
    """Writes an article's title and body from its topic, word slot by word slot."""

    def __init__(self, cfg: NewsConfig, rng: np.random.Generator, names: list[str]) -> None:
        self.cfg, self.rng, self.names = cfg, rng, names

    def pick(self, seq: list[str]) -> str:
        return seq[int(self.rng.integers(len(seq)))]

    def noun(self, topic: str, used: set[str] | None = None, second: str | None = None) -> str:
        """A noun for one slot: the topic's own, its family's, or a generic one; not one in `used`.
        An article with a second topic takes some of its nouns from that one."""
        for _ in range(8):
            spec = TOPICS[second if second is not None and self.rng.random() < 0.4 else topic]
            u = self.rng.random()
            if u < self.cfg.own_word_share:
                word = self.pick(spec["nouns"])
            elif u < self.cfg.own_word_share + self.cfg.family_word_share:
                word = self.pick(FAMILY_WORDS[spec["family"]])
            else:
                word = self.pick(GENERIC_NOUNS)
            if used is None or word not in used:
                break
        if used is not None:
            used.add(word)
        return word

    def adjective(self, topic: str) -> str:
        u = self.rng.random()
        return self.pick(TOPICS[topic]["adjectives"]) if u < self.cfg.own_word_share else self.pick(GENERIC_ADJ)

    def entity(self, topic: str, lead: str) -> str:
        u = self.rng.random()
        spec = TOPICS[topic]
        if u < 0.45:
            return lead
        if u < 0.9:
            return self.pick(spec["entities"])
        # a cross-over: an entity of a related topic (same family), else of any topic
        family = [t for t in self.names if TOPICS[t]["family"] == spec["family"] and t != topic]
        return self.pick(TOPICS[self.pick(family or self.names)]["entities"])

    def write(self, topic: str, lead: str) -> tuple[str, str]:
        spec = TOPICS[topic]
        # some articles straddle two topics (the politics of football...): noise for a text model
        second = self.pick(self.names) if self.rng.random() < self.cfg.second_topic_share else None
        e1 = self.entity(topic, lead)
        e2 = self.entity(topic, lead) if second is None else self.pick(TOPICS[second]["entities"])
        v1, v2 = self.pick(spec["verbs"]), self.pick(spec["verbs"])
        used: set[str] = set()
        n1, n2, n3, n4, n5 = (self.noun(topic, used, second) for _ in range(5))
        a1, a2 = self.adjective(topic), self.adjective(topic)
        cap1, cap2 = e1[0].upper() + e1[1:], e2[0].upper() + e2[1:]
        titles = [
            f"{cap1} {v1} {a1} {n1}",
            f"{cap1} {v1} {n1} amid {n2}",
            f"{a1.capitalize()} {n1}: {e1} {v1} {n2}",
            f"What the {a1} {n1} means for {e2}",
            f"{cap1} {v1} {n1} as {n2} looms",
            f"{n1.capitalize()} in focus after {e1} {v1} {n2}",
        ]
        title = self.pick(titles)
        sentences = [
            f"{cap1} {v2} the {a2} {n3} on {self.pick(WEEKDAYS)}, {self.pick(REPORTING)}.",
            f"The move follows weeks of {n4}, and {e2} is expected to respond.",
            f"Critics point to the {n5}, while supporters say the {n2} speaks for itself.",
            f"{cap2} said the {n1} would shape the {n4} for months.",
            f"Questions remain over the {n5} and what it means for {e1}.",
            self.pick(FILLERS),
        ]
        k = 2 + int(self.rng.random() < 0.5)
        rest = self.rng.choice(np.arange(1, len(sentences)), size=k - 1, replace=False)
        return title, " ".join([sentences[0], *(sentences[i] for i in sorted(rest))])


def _make_articles(cfg: NewsConfig, rng: np.random.Generator, start: datetime) -> tuple[pl.DataFrame, dict[str, np.ndarray]]:
    names = list(TOPICS)[: cfg.topics]
    k = len(names)
    share = rng.dirichlet(np.full(k, 3.0))  # how much each topic is covered
    lo, hi = cfg.articles_per_day
    days = np.arange(-cfg.lead_days, cfg.days)
    per_day = rng.integers(lo, hi + 1, size=days.size)
    writer = _Writer(cfg, rng, names)
    # each topic's lead story (entity) changes every `story_days` or so
    lead_of: dict[tuple[int, int], str] = {}
    rows, topics, created = [], [], []
    n = 0
    for d, count in zip(days, per_day):
        daily = share * rng.lognormal(0.0, 0.4, size=k)  # the news cycle: some topics surge today
        topic = rng.choice(k, size=count, p=daily / daily.sum())
        when = d + np.sort(_hours(rng, PUBLISH_HOURS, count))
        for t, w in zip(topic, when):
            epoch = int(np.floor((w + t * 0.37) / cfg.story_days))
            key = (int(t), epoch)
            if key not in lead_of:
                lead_of[key] = writer.pick(TOPICS[names[t]]["entities"])
            title, text = writer.write(names[t], lead_of[key])
            rows.append((f"n{n:05d}", title, text, start + timedelta(days=float(w))))
            topics.append(int(t))
            created.append(float(w))
            n += 1
    items = pl.DataFrame(rows, schema=["item_id", "title", "text", "created_at"], orient="row")
    items = items.with_columns(
        category=pl.lit(None, dtype=pl.String), attributes=pl.lit(None, dtype=pl.String),
        created_at=pl.col("created_at").dt.cast_time_unit("us").dt.replace_time_zone("UTC"),
    )
    arrays = {"topic": np.asarray(topics), "created": np.asarray(created),
              "quality": rng.normal(0.0, cfg.quality_sd, size=n)}
    return items, arrays


def _make_tastes(cfg: NewsConfig, rng: np.random.Generator, k: int) -> np.ndarray:
    """(users, topics) taste logits: log-scaled Dirichlet shares, 0 for a topic the user ignores."""
    theta = rng.dirichlet(np.full(k, cfg.taste_concentration), size=cfg.users)
    return cfg.taste_scale * np.log1p(k * theta)


def generate(cfg: NewsConfig) -> NewsWorld:
    """Articles, impressions and the true click model, in the contract's schemas."""
    rng = np.random.default_rng(cfg.seed)
    start = datetime.fromisoformat(cfg.start).astimezone(timezone.utc)
    items, art = _make_articles(cfg, rng, start)
    k = min(cfg.topics, len(TOPICS))
    taste = _make_tastes(cfg, rng, k)
    topic_appeal = rng.normal(0.0, cfg.topic_appeal_sd, size=k)
    activity = rng.lognormal(0.0, 0.7, size=cfg.users)
    visits = rng.poisson(cfg.visits_per_user * activity / activity.mean())
    user_of = rng.permutation(np.repeat(np.arange(cfg.users), visits))
    when = np.sort(rng.integers(0, cfg.days, size=user_of.size) + _hours(rng, READ_HOURS, user_of.size))
    created, quality = art["created"], art["quality"]
    # the site's own score: what its editors and counters know (quality, noisily) minus age
    site_quality = quality + rng.normal(0.0, 0.5, size=quality.size)
    examine = 1.0 / np.arange(1, cfg.slate_size + 1) ** cfg.position_decay
    order = np.argsort(created, kind="stable")
    created_sorted = created[order]
    rows_u, rows_i, rows_t, rows_p = [], [], [], []
    for s in tqdm(range(user_of.size), desc="synth visits", unit="visit", mininterval=1.0, disable=None):
        t = when[s]
        lo = np.searchsorted(created_sorted, t - cfg.max_age_days, side="left")
        hi = np.searchsorted(created_sorted, t, side="right")
        pool = order[lo:hi]
        if pool.size == 0:
            continue
        age = t - created[pool]
        score = site_quality[pool] - age / 0.75 + rng.gumbel(0.0, 0.5, size=pool.size)
        size = min(cfg.slate_size, pool.size)
        n_pop = int(round(size * cfg.popular_share))
        top = np.argsort(-score, kind="stable")[:n_pop]
        rest = np.setdiff1d(np.arange(pool.size), top)
        w = np.exp(-age[rest] / 1.5)
        extra = rng.choice(rest, size=size - n_pop, replace=False, p=w / w.sum()) if size > n_pop else rest[:0]
        chosen = np.concatenate([top, extra])
        chosen = chosen[np.argsort(-score[chosen], kind="stable")]  # the page is ordered by the site's score
        rows_u.append(np.full(size, user_of[s]))
        rows_i.append(pool[chosen])
        rows_t.append(np.full(size, t))
        rows_p.append(np.arange(1, size + 1))
    u, i, t, pos = (np.concatenate(x) for x in (rows_u, rows_i, rows_t, rows_p))
    age = t - created[i]
    logit = cfg.base_logit + taste[u, art["topic"][i]] + topic_appeal[art["topic"][i]] + quality[i]
    relevance = 1.0 / (1.0 + np.exp(-logit)) * np.exp(-age / cfg.freshness_days)
    click_prob = relevance * examine[pos - 1]
    clicked = (rng.random(click_prob.size) < click_prob).astype(np.int8)
    request_no = np.repeat(np.arange(len(rows_u)), [r.size for r in rows_u])
    ts_us = np.datetime64(start.replace(tzinfo=None), "us") + np.round(t * 86_400e6).astype("timedelta64[us]")
    events = pl.DataFrame({
        "request_id": [f"v{n:07d}" for n in request_no],
        "user_id": [f"u{x:05d}" for x in u],
        "item_id": items["item_id"].gather(i),
        "ts": pl.Series(ts_us).dt.replace_time_zone("UTC"),
        "position": pos.astype(np.int32),
        "clicked": clicked,
        "rating": pl.Series([None] * u.size, dtype=pl.Float32),
    })
    truth = pl.DataFrame({"request_id": events["request_id"], "item_id": events["item_id"],
                          "relevance": relevance, "click_prob": click_prob}, schema=GROUND_TRUTH_SCHEMA)
    return NewsWorld(items, events, truth, art["topic"], taste, list(TOPICS)[:k])


def synth_news(cfg: NewsConfig, out: Path) -> dict[str, Any]:
    world = generate(cfg)
    return write_dataset(
        out,
        items=world.items,
        events=world.events,
        rejects=[REJECTS_SCHEMA.to_frame().lazy()],
        rows_in={"items": world.items.height, "events": world.events.height},
        source={"kind": "synth", "profile": "news", **asdict(cfg)},
        ground_truth=world.ground_truth,
        extra={"placeholder_items": 0},
    )
