"""`python -m finetune.context generate`: a local image-to-text model writes the contexts file that
`--context file:` reads (Shap-CA's step 1), batched, resumable, counting pictures it cannot read."""
import json
import shutil

import pytest

from common.errors import MmieError
from finetune.context import main as context_main
from finetune.context_generate import SHAPCA_PROMPT, Generator, list_images
from tests.helpers.tiny_generators import tiny_blip, tiny_llava
from tests.helpers.tiny_run import tiny_run


@pytest.fixture(scope="module")
def blip(tmp_path_factory):
    return tiny_blip(tmp_path_factory.mktemp("blip"))


def _pictures(synth_dir, tmp_path, n=9):
    src = synth_dir / "twitter" / "images"
    images = tmp_path / "images"
    (images / "sub").mkdir(parents=True)
    names = sorted(p.name for p in src.iterdir())[:n]
    for name in names[:-1]:
        shutil.copy(src / name, images / name)
    shutil.copy(src / names[-1], images / "sub" / names[-1])  # ids are paths relative to --images
    (images / "broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    (images / "notes.txt").write_text("not a picture")
    return images, sorted(names[:-1] + [f"sub/{names[-1]}", "broken.jpg"])


def _generate(images, model, out, capsys, *extra):
    assert context_main(["generate", "--images", str(images), "--generator", str(model), "--out", str(out),
                         "--batch-size", "4", "--max-new-tokens", "4", *extra]) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_generate_writes_every_picture_and_resumes(synth_dir, blip, tmp_path, capsys):
    images, ids = _pictures(synth_dir, tmp_path)
    assert list_images(images) == ids
    out = tmp_path / "contexts.json"
    counts = _generate(images, blip, out, capsys)
    texts = json.loads(out.read_text())
    assert sorted(texts) == ids and texts["broken.jpg"] is None  # unreadable: counted, no context
    assert counts["unreadable"] == 1 and counts["described"] + counts.get("empty", 0) == len(ids) - 1
    assert all(isinstance(texts[i], str) and texts[i] for i in ids if i != "broken.jpg" and texts[i] is not None)
    for gone in ids[:3]:  # a run stopped part-way: the rest is described, what is there is kept as it was
        del texts[gone]
    out.write_text(json.dumps(texts))
    again = _generate(images, blip, out, capsys)
    assert again["already there"] == len(ids) - 3 and again["described"] + again.get("empty", 0) == 3
    resumed = json.loads(out.read_text())
    assert sorted(resumed) == ids and all(resumed[k] == v for k, v in texts.items())
    assert not list(tmp_path.glob(".contexts.json.*"))  # temp files renamed away


def test_generate_rejects_what_it_cannot_use(tmp_path, blip):
    with pytest.raises(MmieError, match="no config.json"):
        Generator(tmp_path)
    with pytest.raises(MmieError, match="not a directory"):
        list_images(tmp_path / "nowhere")
    with pytest.raises(MmieError, match="--batch-size must be at least 1"):
        context_main(["generate", "--images", str(tmp_path), "--generator", str(blip), "--out",
                      str(tmp_path / "c.json"), "--batch-size", "0"])
    (tmp_path / "c.json").write_text("[1, 2]")
    with pytest.raises(MmieError, match="not a JSON object"):
        context_main(["generate", "--images", str(tmp_path), "--generator", str(blip), "--out",
                      str(tmp_path / "c.json")])


def test_chat_model_gets_the_prompt_and_only_its_answer_is_kept(tmp_path):
    from PIL import Image

    gen = Generator(tiny_llava(tmp_path / "llava"), temperature=0, max_new_tokens=5)
    assert gen.chat and gen.prompt == SHAPCA_PROMPT  # LLaVA-style: Shap-CA's prompt as the user's turn
    pictures = [Image.new("RGB", (64, 48), (200, 10, 10)), Image.new("RGB", (20, 30), (0, 90, 0))]
    texts = gen.describe(pictures)
    assert len(texts) == 2 and not any("please generate" in t for t in texts)
    assert gen.describe(pictures[:1]) == texts[:1]  # greedy; left padding leaves a post's answer unchanged


def test_generated_contexts_feed_finetuning(synth_dir, blip, tmp_path, capsys):
    out = tmp_path / "contexts.json"
    _generate(synth_dir / "twitter" / "images", blip, out, capsys)
    run = tiny_run("mner", synth_dir / "twitter", tmp_path / "run", tmp_path / "mlruns", "--context", f"file:{out}")
    metrics = json.loads((run / "metrics.json").read_text())
    described = sum(v is not None for v in json.loads(out.read_text()).values())
    assert metrics["contexts"]["train"]["from file"] > 0 and described > 0
