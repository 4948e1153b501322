"""Configuration: the TOML file, environment overrides and secrets (load.py), checked as a
whole (model.py); each outside system's section lives beside its code."""
