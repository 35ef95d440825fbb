"""amber-repro: reproduce LLM360 AmberSafe (safety SFT + DPO on PKU-SafeRLHF) stage by stage."""

__version__ = "0.1.0"
