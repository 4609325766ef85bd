"""Run directories and the run index: files only, never torch, so every reader stays light."""
