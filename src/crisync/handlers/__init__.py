"""The handlers stage: the Target contract (base.py), routing, the dispatcher, one folder per target."""
