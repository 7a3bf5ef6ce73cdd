"""Property-based tests (hypothesis): random mutations of valid records never make a reader raise anything but a
one-line DataError — no traceback from any input file."""
import json
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from common.errors import DataError
from finetune.readers import read_mjere, read_mnre, read_twitter

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

TWITTER = "IMGID:1\nSo\tO\nproud\tO\nof\tO\nAtlas\tB-LOC\nFC\tI-LOC\n\nIMGID:2\nJordan\tB-PER\nwins\tO\n"
MNRE = {"token": ["Nice", "one", "from", "Apollo", "about", "Everest"], "h": {"name": "Apollo", "pos": [3, 4]},
        "t": {"name": "Everest", "pos": [5, 6]}, "img_id": "a.jpg", "relation": "None"}
MJERE = {"token": ["Obama", "visits", "Chicago"], "img_id": "b.jpg",
         "label_list": [{"beg_ent": {"name": "Obama", "pos": [0, 1], "tags": "PER"},
                         "sec_ent": {"name": "Chicago", "pos": [2, 3], "tags": "LOC"},
                         "relation": "/per/loc/place_of_residence"}]}

# any JSON-like value, to put where a field's value was
values = st.recursive(st.none() | st.booleans() | st.integers(-5, 20) | st.floats(allow_nan=True) | st.text(max_size=8),
                      lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner,
                                                                                   max_size=4), max_leaves=10)


def read(reader, text: str | bytes, name: str):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8", "surrogatepass"))
        try:
            reader(path)
        except DataError as e:
            assert "\n" not in str(e) and str(path) in str(e)  # one line, naming the file


def mutate_json(draw, record):
    """Replace or drop a field at a random depth, or replace the whole record."""
    record = json.loads(json.dumps(record))
    kind = draw(st.sampled_from(["replace", "drop", "whole"]))
    if kind == "whole":
        return draw(values)
    node, keys = record, []
    while isinstance(node, (dict, list)) and node and draw(st.booleans()):
        key = draw(st.sampled_from(sorted(node) if isinstance(node, dict) else range(len(node))))
        keys.append(key)
        node = node[key]
    if not keys:
        keys = [draw(st.sampled_from(sorted(record) if isinstance(record, dict) else range(len(record))))]
    parent = record
    for k in keys[:-1]:
        parent = parent[k]
    if kind == "drop":
        del parent[keys[-1]]
    else:
        parent[keys[-1]] = draw(values)
    return record


@st.composite
def mnre_lines(draw):
    line = repr(mutate_json(draw, MNRE))
    if draw(st.booleans()):  # a cut or spliced line
        i = draw(st.integers(0, len(line)))
        line = line[:i] + draw(st.text(max_size=6)) + line[i + draw(st.integers(0, 4)):]
    return line + "\n" + repr(MNRE) + "\n"


@st.composite
def mjere_files(draw):
    doc = [mutate_json(draw, MJERE), MJERE] if draw(st.booleans()) else mutate_json(draw, [MJERE])
    text = json.dumps(doc)
    if draw(st.booleans()):
        i = draw(st.integers(0, len(text)))
        text = text[:i] + draw(st.text(max_size=4)) + text[i + draw(st.integers(0, 4)):]
    return text


@st.composite
def twitter_files(draw):
    lines = TWITTER.split("\n")
    for _ in range(draw(st.integers(1, 3))):
        i = draw(st.integers(0, len(lines) - 1))
        op = draw(st.sampled_from(["replace", "drop", "dup", "tabs"]))
        if op == "replace":
            lines[i] = draw(st.text(max_size=12))
        elif op == "drop":
            del lines[i]
        elif op == "dup":
            lines.insert(i, lines[i])
        else:
            lines[i] = lines[i].replace("\t", draw(st.sampled_from(["", "\t\t", " ", "\tB-"])))
        if not lines:
            lines = [""]
    return "\n".join(lines)


@SETTINGS
@given(mnre_lines())
def test_mnre_reader_never_raises_anything_but_data_error(text):
    read(read_mnre, text, "mnre_train.txt")


@SETTINGS
@given(mjere_files())
def test_mjere_reader_never_raises_anything_but_data_error(text):
    read(read_mjere, text, "train.json")


@SETTINGS
@given(twitter_files() | st.binary(max_size=64))
def test_twitter_reader_never_raises_anything_but_data_error(text):
    read(read_twitter, text, "train.txt")


def test_mnre_literals_python_cannot_build_are_data_errors():
    """Found by hand beside the properties: a dict literal with an unhashable key made literal_eval raise
    TypeError (a traceback) before it was caught; deep nesting raises RecursionError or MemoryError."""
    for line in ("{[1]: 2}", "{{}: 1}", "(" * 100_000, "[" * 100_000):
        read(read_mnre, line + "\n", "mnre_train.txt")

