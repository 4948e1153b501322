"""Configuration: the TOML file, environment overrides and secrets, validated as a whole."""

from crisync.config.load import EX_CONFIG, ConfigError, LoadedConfig, load_config
from crisync.config.model import Config, ElementsConfig, MqttConfig, PureConfig

__all__ = [
    "EX_CONFIG",
    "Config",
    "ConfigError",
    "ElementsConfig",
    "LoadedConfig",
    "MqttConfig",
    "PureConfig",
    "load_config",
]
