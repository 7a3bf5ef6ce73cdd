"""Tiny randomly initialised image-to-text models of real architectures (BLIP, LLaVA), built from their config
classes and saved with a processor, for the context generator's tests. Their text is gibberish; the tests check the
plumbing (batching, prompts, file format, resume, counts). The tokenizer is MiniLM-L6's, the one the zoo ships."""
from pathlib import Path

import torch
from transformers import (BertTokenizerFast, BlipConfig, BlipForConditionalGeneration, BlipImageProcessor,
                          BlipProcessor, CLIPImageProcessor, CLIPVisionConfig, LlamaConfig, LlavaConfig,
                          LlavaForConditionalGeneration, LlavaProcessor)

from common.zoo.text import _minilm_path

SMALL = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2)
# LLaVA-1.5's conversation format, cut down: "USER: <image> prompt ASSISTANT:"
CHAT_TEMPLATE = ("{% for m in messages %}USER: {% for c in m['content'] %}{% if c['type'] == 'image' %}<image> "
                 "{% else %}{{ c['text'] }}{% endif %}{% endfor %}{% endfor %}"
                 "{% if add_generation_prompt %} ASSISTANT:{% endif %}")


def _tokenizer() -> BertTokenizerFast:
    return BertTokenizerFast.from_pretrained(_minilm_path())


def tiny_blip(out: Path) -> Path:
    tok = _tokenizer()
    ids = dict(bos_token_id=tok.cls_token_id, sep_token_id=tok.sep_token_id, pad_token_id=tok.pad_token_id,
               eos_token_id=tok.sep_token_id)
    cfg = BlipConfig(text_config=dict(vocab_size=len(tok), **SMALL, **ids),
                     vision_config=dict(image_size=32, patch_size=8, **SMALL), projection_dim=32)
    torch.manual_seed(0)
    BlipForConditionalGeneration(cfg).save_pretrained(out)
    processor = BlipProcessor(image_processor=BlipImageProcessor(size={"height": 32, "width": 32}), tokenizer=tok)
    processor.save_pretrained(out)
    return out


def tiny_llava(out: Path) -> Path:
    tok = _tokenizer()
    tok.add_special_tokens({"additional_special_tokens": ["<image>"]})
    text = LlamaConfig(vocab_size=len(tok), num_key_value_heads=2, bos_token_id=tok.cls_token_id,
                       eos_token_id=tok.sep_token_id, pad_token_id=tok.pad_token_id, **SMALL)
    cfg = LlavaConfig(vision_config=CLIPVisionConfig(image_size=32, patch_size=8, projection_dim=32, **SMALL),
                      text_config=text, image_token_index=tok.convert_tokens_to_ids("<image>"),
                      vision_feature_layer=-1, vision_feature_select_strategy="default", pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    LlavaForConditionalGeneration(cfg).save_pretrained(out)
    images = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    processor = LlavaProcessor(image_processor=images, tokenizer=tok, patch_size=8, chat_template=CHAT_TEMPLATE,
                               vision_feature_select_strategy="default", image_token="<image>",
                               num_additional_image_tokens=1)
    processor.save_pretrained(out)
    return out
