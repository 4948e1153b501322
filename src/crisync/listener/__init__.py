"""The listener stage: the Source contract (base.py) and one folder per source."""
