"""The Pure target: Pure content created, taken over, updated and locked for source objects."""
