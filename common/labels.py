"""Label constants shared by the two stages."""

IGNORE = -100  # torch's cross-entropy ignore_index: positions that take no part in a loss (padding, unmasked tokens)
