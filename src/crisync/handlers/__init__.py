"""The handlers stage: the Target contract (base.py), routing, dispatcher, a folder per target."""
