"""One typed config per component, read in one place.

Each component (``capture``, ``jobs``, ...) has a pydantic model with
defaults. Values come, lowest precedence first, from the model's defaults,
``conf/<component>.yaml`` and environment variables
``FLOWLAKE_<COMPONENT>__<FIELD>[__<SUBFIELD>]`` (for example
``FLOWLAKE_CAPTURE__INTERVAL_S=30``), then explicit keyword overrides.

The conf folder is ``$FLOWLAKE_CONF_DIR`` if set, else ``./conf`` if it
exists, else the ``conf/`` of the source checkout.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

ENV_PREFIX = "FLOWLAKE_"
CONF_DIR_ENV = "FLOWLAKE_CONF_DIR"

T = TypeVar("T", bound="ComponentConfig")


def conf_dir() -> Path:
    """The folder holding ``<component>.yaml`` files."""
    if os.environ.get(CONF_DIR_ENV):
        return Path(os.environ[CONF_DIR_ENV])
    local = Path.cwd() / "conf"
    if local.is_dir():
        return local
    return Path(__file__).resolve().parent.parent / "conf"


class ComponentConfig(BaseSettings):
    """Base of every component's config; subclasses set ``component``."""

    model_config = SettingsConfigDict(env_nested_delimiter="__", extra="forbid")
    component: str = ""  # each subclass sets its own default
    yaml_file_path: ClassVar[Path | None] = None

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        yaml_path = cls.yaml_file_path
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if yaml_path is not None and Path(yaml_path).is_file():
            sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=yaml_path))
        return tuple(sources)


def load_config(model: type[T], *, path: str | Path | None = None, **overrides: Any) -> T:
    """Load ``model``'s config from its YAML file and the environment.

    ``path`` names the YAML file explicitly; by default it is
    ``<conf_dir>/<component>.yaml``. A missing default file means defaults;
    a missing explicit file is an error.
    """
    component = model.model_fields["component"].default
    if not component:
        raise ValueError(f"{model.__name__} must set a default for 'component'")
    if path is not None and not Path(path).is_file():
        raise FileNotFoundError(f"config file {path} does not exist: pass an existing YAML file")
    yaml_path = Path(path) if path is not None else conf_dir() / f"{component}.yaml"

    bound = type(
        model.__name__,
        (model,),
        {
            "yaml_file_path": yaml_path,
            "model_config": SettingsConfigDict(
                **{**model.model_config, "env_prefix": f"{ENV_PREFIX}{component.upper()}__"}
            ),
        },
    )
    return bound(**overrides)  # type: ignore[return-value]
