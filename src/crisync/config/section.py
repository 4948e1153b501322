"""What every configuration section is, and what the sections of outside systems add.

Every outside system brings its own section class (beside its code, e.g.
``listener/elements/config.py``); `crisync.config.model.Config` lists them. A section's
secrets are its ``SecretStr`` fields: they are read only from the environment variable
``CRISYNC_<SECTION>_<KEY>`` or the systemd credential ``<section>-<key>`` (see load.py).
"""

from __future__ import annotations

from abc import abstractmethod
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field

from crisync.mapping.rules import ObjectMapping


class Section(BaseModel):
    """Unknown keys are errors: a typo must not silently switch a setting off."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def http_url(value: str) -> str:
    """A field validator: an http(s) URL, without its trailing slash."""
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError("must be an http:// or https:// URL")
    return value.rstrip("/")


class SystemSection(Section):
    """The section of an outside system: the one policy for refused credentials applies."""

    park_duration: float = Field(
        900.0, gt=0, description="seconds the work that needs the API rests after it refused"
    )


class SourceSection(SystemSection):
    """The section of a source: the kinds of change its feeds produce, each needing a mapping."""

    @abstractmethod
    def kinds(self) -> frozenset[str]:
        """The kinds of object this configuration makes the source read."""


class TargetSection(SystemSection):
    """The section of a target: which mappings it can carry out."""

    @classmethod
    @abstractmethod
    def mapping_problems(cls, rules: ObjectMapping) -> list[str]:
        """Why a mapping cannot write to this target (its type, its properties); [] when it can."""
