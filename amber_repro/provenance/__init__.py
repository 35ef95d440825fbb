"""How each output was made: hashes, run context, crate, archive, replay."""
