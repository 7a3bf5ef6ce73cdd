"""Pretraining: NewsCLIPpings-format pairs -> WebDataset shards with teacher soft labels -> fusion encoder."""
