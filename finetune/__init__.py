"""Fine-tuning: multimodal NER (Twitter-2015/2017), relation extraction (MNRE), joint extraction (MJERE)."""
