"""Names and sentence templates of the synthetic posts.

Two kinds of mention:
- *image-resolved*: an ambiguous surface name (it is a person, a place, a club and an event) in a neutral template;
  its type is drawn independently of the text and shown only by the key object in the image;
- *text-resolved*: a name whose type the words give away (a template that says "flew to", "signed for", ...).
"""
from __future__ import annotations

TYPES = ("PER", "LOC", "ORG", "MISC")
TWITTER_TAG = {"PER": "PER", "LOC": "LOC", "ORG": "ORG", "MISC": "OTHER"}  # Twitter-2015 spells MISC "OTHER"

AMBIGUOUS_NAMES = [
    "Jordan", "Phoenix", "Victoria", "Chelsea", "Madison", "Austin", "Georgia", "Jackson", "Aurora", "Orlando",
    "Florence", "Sydney", "Lincoln", "Dallas", "Savannah", "Kingston", "Mercury", "Apollo", "Atlas", "Everest",
    "San Remo", "Santa Clara", "Monte Verde", "Port Royal", "Green Bay", "Golden Gate", "Silver Lake",
    "Red Rock", "New Haven", "Blue Ridge",
]

TEXT_RESOLVED_NAMES = {
    "PER": ["Maria Lopez", "Kenji Tanaka", "Aisha Khan", "Tom Becker", "Lena Novak", "Omar Haddad", "Ines Costa"],
    "LOC": ["Lake Verin", "Port Alvo", "Mount Ardel", "Riverton", "Eastvale", "Norhaven", "Westmarch"],
    "ORG": ["Acme Corp", "United Bank", "Dorval FC", "Nexa Labs", "Civic Party", "Orbit Air", "Helix Media"],
    "MISC": ["Summer Cup", "Golden Globe", "Super Bowl", "Jazz Fest", "Grand Prix", "Spring Open", "Expo Week"],
}

# {E} marks the mention. None of these says what kind of thing E is.
NEUTRAL_TEMPLATES = [
    "RT @{user} : Look at {E} today !",
    "{E} is everywhere this morning",
    "Can't stop thinking about {E} #wow",
    "Another great shot of {E} .",
    "So proud of {E} right now",
    "Everyone is talking about {E} .",
    "Here is {E} , live and loud",
    "@{user} did you see {E} ? unreal",
    "Nothing beats {E} on a Sunday",
    "Big news from {E} tonight",
]

# Templates that do say the type.
TYPED_TEMPLATES = {
    "PER": ["{E} said in an interview that it was close", "Congrats to {E} on her birthday", "{E} scored twice"],
    "LOC": ["Flights to {E} are cheap this week", "Heavy rain expected in {E}", "I moved to {E} last year"],
    "ORG": ["{E} announced new jobs", "Shares of {E} fell sharply", "{E} signed a new striker"],
    "MISC": ["Watching the {E} final", "Tickets for the {E} sold out", "Who wins the {E} this year ?"],
}

USERS = ["newsdesk", "sportsfan", "cityhall", "photo_daily", "local_radio", "fan_zone"]

# MNRE: the head is always an ambiguous name; the image decides the relation (None when nothing in it does).
RELATION_OF_KEY_OBJECT = {
    "trophy": "/per/misc/awarded",
    "flag": "/per/loc/place_of_residence",
    "building": "/per/org/member_of",
    "person": "/per/per/peer",
}
RELATION_TEMPLATES = [
    "{H} and {T} in one picture",
    "RT @{user} : {H} with {T} today",
    "{H} , {T} and the rest of us",
    "Photo of the day : {H} & {T}",
    "Nice one from {H} about {T}",
]

# NewsCLIPpings captions: the object nouns feed the entity vocabulary (spaCy nouns), the verb phrases the relations.
CAPTION_TEMPLATES = [
    "{names} pictured with {objects} in {place} .",
    "A view of {objects} as {names} arrives in {place} .",
    "{names} poses next to {objects} during a visit to {place} .",
    "Residents of {place} gather near {objects} .",
]
PLACES = ["Riverton", "Eastvale", "Norhaven", "Westmarch", "Port Alvo", "Lake Verin"]
NOUN_OF_KIND = {
    "person": "a man", "dog": "a dog", "car": "a car", "building": "an office building", "flag": "a flag",
    "trophy": "a trophy", "ball": "a football", "tree": "a tree", "boat": "a boat", "plane": "a plane",
}
