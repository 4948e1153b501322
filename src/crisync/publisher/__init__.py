"""The publisher stage: the outbox to MQTT, feed health, and the operator commands it receives."""
