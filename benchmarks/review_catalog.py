"""A probe catalog whose item text is customer reviews: first person, sizes, durations, family
members, one review's story per product. Written by hand for the blurb stage (issue 18: on review
text, blurbs must not be first-person sentences copied from one review), with a random click log
so that the contract's import and the stage run on it.

    python benchmarks/review_catalog.py OUT_DIR
    recsys data import events --events OUT_DIR/events.csv --items OUT_DIR/items.csv --out OUT_DIR/data
    python benchmarks/blurbs_catalog.py OUT_DIR/data --items 0
"""

from __future__ import annotations

import argparse
import csv
import random
from datetime import datetime, timedelta, timezone
from pathlib import Path

# (title, reviews)
ITEMS = [
    ('Trail Runner 3 Running Shoe',
     'I bought a size 9 a few years back, not my regular size but they fit great. Comfortable on long '
     'runs, the grip is good on wet rocks. My husband wants a pair now.'),
    ('Classic Canvas Sneaker',
     'These run small so order half a size up. I wear them every day to work and they still look new after'
     ' 6 months. Wish they came in more colours.'),
    ('Noise Cancelling Headphones',
     'Battery lasts me about 30 hours. The noise cancelling is great on the train but they squeeze my head'
     ' after two hours. Sound is warm, bass is strong.'),
    ('Compact Blender',
     'I make a smoothie every morning and it crushes ice fine. A bit loud. The jar is small, about 600 ml,'
     ' so it is only good for one or two people.'),
    ('Two Person Dome Tent',
     'We took it camping in the rain for three nights and stayed dry. Setup took me 10 minutes alone. It '
     'is tight for two adults with gear.'),
    ('Cast Iron Skillet',
     'Heavy but heats evenly. I seasoned it twice before first use and now eggs slide right off. My '
     'grandmother had the same one for 40 years.'),
    ('Wool Winter Beanie',
     'Warm and soft, not itchy at all. I have a big head and it still fits. Kept me warm skiing at minus '
     '15.'),
    ('Stainless Steel Water Bottle',
     'Keeps water cold all day in my car in summer. The lid leaked once until I tightened it. Fits in my '
     'bike cage.'),
    ('Kids Picture Book About Bears',
     'My 4 year old asks for this every night. The drawings are lovely and the story is short enough for '
     'bedtime. A little sad in the middle.'),
    ('Mechanical Keyboard',
     'The switches are clicky, my coworkers hate it. Typing feels great and the keys are solid. Took me a '
     'week to get used to the layout.'),
    ('Yoga Mat',
     'Thick enough for my knees, about 6 mm. It smelled of rubber for the first week. Does not slip even '
     'when I sweat.'),
    ('Electric Kettle',
     'Boils a full litre in about three minutes. The light is handy. I use it for tea and for pour over '
     'coffee every morning.'),
    ('Rain Jacket',
     'Wore it through a storm in Scotland and stayed dry. Runs large, I am usually a medium and the small '
     'fit me. The hood is a bit stiff.'),
    ('Desk Lamp with Dimmer',
     'Nice warm light for reading at night. The arm bends easily. The base is wobbly if you push it too '
     'far.'),
    ('Board Game for Families',
     'We play it every Sunday with the kids, ages 8 and 11. Games take about 45 minutes. Easy to learn, '
     'hard to master.'),
    ('Garden Hose 50 ft',
     'No kinks so far after a summer of use. The connectors are brass and do not leak. Heavy to carry '
     'around the yard.'),
    ('Paperback Mystery Novel',
     'Could not put it down, finished it in two days. The ending surprised me. Some chapters drag in the '
     'middle.'),
    ('Wireless Mouse',
     'Works on my laptop out of the box. The scroll wheel is smooth. Battery died after four months which '
     'is fine.'),
    ('Baby Swaddle Blankets',
     'Soft cotton, they get softer after washing. My daughter sleeps better swaddled. The set came with 3 '
     'patterns.'),
    ('Chef Knife 8 inch',
     'Sharp out of the box, cuts tomatoes like nothing. I hand wash it. The handle is comfortable for my '
     'small hands.'),
    ('Hiking Backpack 40 L',
     'Carried it for a week in the Alps. The hip belt takes the weight off my shoulders. Lots of pockets, '
     'maybe too many.'),
    ('Scented Soy Candle',
     'Smells like lavender and vanilla, not too strong. Burned for about 40 hours. Nice gift for my '
     'sister.'),
    ('Bluetooth Speaker',
     'Loud enough for a small party in the garden. Survived a drop in the pool. Pairs quickly with my '
     'phone.'),
    ('Reading Glasses',
     'Lightweight and they do not pinch my nose. I keep a pair in every room. The case is flimsy.'),
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--users", type=int, default=80)
    ap.add_argument("--seed", type=int, default=3)
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(args.seed)
    with open(args.out / "items.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["item_id", "title", "text"])
        for i, (title, reviews) in enumerate(ITEMS):
            w.writerow([f"p{i:02d}", title, f"{title}. Customer reviews: {reviews}"])
    start = datetime(2026, 10, 1, tzinfo=timezone.utc)
    with open(args.out / "events.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["user_id", "item_id", "timestamp", "clicked"])
        for u in range(args.users):  # clicks carry no signal here: the probe is about the text
            for _ in range(rng.randint(3, 12)):
                ts = start + timedelta(minutes=rng.randint(0, 60 * 24 * 40))
                w.writerow([f"u{u}", f"p{rng.randrange(len(ITEMS)):02d}", ts.strftime("%Y-%m-%dT%H:%M:%SZ"),
                            rng.choice([0, 0, 1])])
    print(f"{len(ITEMS)} items, events in {args.out}")


if __name__ == "__main__":
    main()
