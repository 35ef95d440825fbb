"""Data: the raw datasets (downloaded or synthetic), filtered into preference pairs and
conversations, and tokenized."""
