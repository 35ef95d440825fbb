"""Training: the base models, the SFT, reference, DPO and AmberChat stages, and their building
blocks."""
