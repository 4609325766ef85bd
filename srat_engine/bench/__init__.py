"""`srat bench`: the engine's training step against the common public-code step, and
(`study`) K runs of a preset at once on one device."""
