"""Configuration: the typed run config, method names, presets, and their resolution.

Config flows one way: preset (TOML) -> validated `RunConfig` -> resolved block -> run directory.
"""
