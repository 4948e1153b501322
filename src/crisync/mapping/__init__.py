"""The mapping engine: rules from configuration that turn a source object into a target's body."""
