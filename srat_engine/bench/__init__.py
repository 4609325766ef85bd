"""`srat bench`: the engine's training step against the common public-code step."""
