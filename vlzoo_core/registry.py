"""The registry: plugins register components, LoRA rule sets and recipes; the catalog adds recipes as data.

Loading is isolated per plugin: a plugin that fails to import or to register is reported, and the others
keep working. Nothing here imports torch.
"""

from __future__ import annotations

import fnmatch
import importlib
import importlib.metadata
import os
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pluggy
from pydantic import BaseModel, ValidationError

from vlzoo_core.config import LoraRuleSet, Recipe
from vlzoo_core.errors import (
    ConfigError,
    DuplicateNameError,
    UnknownNameError,
    VlzooError,
    describe_validation_error,
)
from vlzoo_core.hooks import ENTRY_POINT_GROUP, PROJECT_NAME, VlzooHookSpec

COMPONENT_KINDS = (
    "encoder", "projector", "backbone", "head", "processor", "checkpoint_format", "loss", "index_backend",
)

ENV_DISABLE_AUTOLOAD = "VLZOO_DISABLE_PLUGIN_AUTOLOAD"
ENV_ONLY_PLUGINS = "VLZOO_PLUGINS"


@dataclass(frozen=True)
class ComponentSpec:
    """A lazy registration: nothing behind `factory` is imported until `load()` is called."""

    kind: str
    name: str
    factory: str
    config: type[BaseModel]
    description: str
    plugin: str

    def load(self) -> Any:
        module_name, _, attribute = self.factory.partition(":")
        try:
            return getattr(importlib.import_module(module_name), attribute)
        except (ImportError, AttributeError) as exc:
            raise VlzooError(
                f"{self.kind} {self.name!r} of plugin {self.plugin!r}: cannot load factory {self.factory!r}: {exc}"
            ) from exc

    def parse_config(self, options: Mapping[str, Any], where: str) -> BaseModel:
        try:
            return self.config.model_validate(dict(options))
        except ValidationError as exc:
            raise ConfigError(describe_validation_error(exc, where)) from exc


@dataclass
class PluginInfo:
    name: str
    distribution: str | None = None
    version: str | None = None
    hooks: tuple[str, ...] = ()
    error: str | None = None
    registered: list[str] = field(default_factory=list)


@dataclass
class _Staged:
    components: list[ComponentSpec] = field(default_factory=list)
    rule_sets: list[LoraRuleSet] = field(default_factory=list)
    recipes: list[Recipe] = field(default_factory=list)


class Registrar:
    """The object a plugin's `vlzoo_register` hook receives. Registrations are staged, then committed."""

    def __init__(self, plugin: str) -> None:
        self.plugin = plugin
        self._staged = _Staged()

    def component(
        self, kind: str, name: str, factory: str, config: type[BaseModel], description: str = ""
    ) -> None:
        if kind not in COMPONENT_KINDS:
            raise VlzooError(f"plugin {self.plugin!r}: unknown component kind {kind!r} (one of {COMPONENT_KINDS})")
        if ":" not in factory:
            raise VlzooError(f"plugin {self.plugin!r}: factory for {kind} {name!r} must be 'module:attribute'")
        self._staged.components.append(ComponentSpec(kind, name, factory, config, description, self.plugin))

    def lora_rules(self, rule_set: LoraRuleSet | Mapping[str, Any]) -> None:
        if not isinstance(rule_set, LoraRuleSet):
            try:
                rule_set = LoraRuleSet.model_validate(dict(rule_set))
            except ValidationError as exc:
                raise ConfigError(describe_validation_error(exc, f"plugin {self.plugin!r} lora rules")) from exc
        self._staged.rule_sets.append(rule_set)

    def recipe(self, recipe: Recipe | Mapping[str, Any]) -> None:
        if isinstance(recipe, Recipe):
            recipe = recipe.model_copy(update={"plugin": self.plugin})
        else:
            recipe = _parse_recipe({**recipe, "plugin": self.plugin}, f"plugin {self.plugin!r}")
        self._staged.recipes.append(recipe)


def _parse_recipe(data: Mapping[str, Any], where: str) -> Recipe:
    name = data.get("name", "?")
    try:
        return Recipe.model_validate(dict(data))
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(exc, f"{where}: models.{name}")) from exc


def read_catalog(path: Path) -> list[Recipe]:
    """Read a catalog TOML file: one `[models.NAME]` table per recipe."""
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read catalog: {exc}") from exc
    unknown = set(data) - {"models"}
    if unknown:
        raise ConfigError(f"{path}: unknown top-level table(s) {sorted(unknown)}; expected only [models.NAME]")
    models = data.get("models", {})
    if not isinstance(models, dict):
        raise ConfigError(f"{path}: 'models' must be a table of [models.NAME] tables")
    source = Path(path).name
    recipes = []
    for name, entry in models.items():
        if not isinstance(entry, dict):
            raise ConfigError(f"{path}: models.{name}: expected a table")
        recipes.append(_parse_recipe({**entry, "name": name, "plugin": source}, str(path)))
    return recipes


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _plugins_from_environment() -> frozenset[str] | None:
    value = os.environ.get(ENV_ONLY_PLUGINS)
    if value is None:
        return None
    return frozenset(part.strip() for part in value.split(",") if part.strip())


class Registry:
    """All registered names. Build one per process (see `vlzoo.registry()`) or per test (isolated)."""

    def __init__(
        self,
        *,
        catalogs: Iterable[Path] = (),
        plugins: Iterable[tuple[str, object]] = (),
        autoload: bool | None = None,
        only: Iterable[str] | None = None,
    ) -> None:
        if autoload is None:
            autoload = os.environ.get(ENV_DISABLE_AUTOLOAD, "") in ("", "0")
        self._only = frozenset(only) if only is not None else _plugins_from_environment()
        self.components: dict[tuple[str, str], ComponentSpec] = {}
        self.rule_sets: dict[str, LoraRuleSet] = {}
        self.recipes: dict[str, Recipe] = {}
        self.aliases: dict[str, str] = {}
        self._owners: dict[tuple[str, str], str] = {}
        self.plugins: list[PluginInfo] = []

        self._pm = pluggy.PluginManager(PROJECT_NAME)
        self._pm.add_hookspecs(VlzooHookSpec)
        self._add_plugin(PluginInfo("vlzoo_core"), "vlzoo_core.builtin")
        for name, plugin in plugins:
            self._add_plugin(PluginInfo(name), plugin)
        if autoload:
            self._autoload()
        for path in catalogs:
            for recipe in read_catalog(path):
                self._add_recipe(recipe)

    # ---- loading -------------------------------------------------------------------------------------

    def _autoload(self) -> None:
        for entry_point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            info = PluginInfo(entry_point.name)
            if entry_point.dist is not None:
                info.distribution, info.version = entry_point.dist.name, entry_point.dist.version
            if self._only is not None and entry_point.name not in self._only:
                continue
            try:
                module = entry_point.load()
            except Exception as exc:  # noqa: BLE001 - any failure of third-party code is isolated
                info.error = _one_line(f"import failed: {type(exc).__name__}: {exc}")
                self.plugins.append(info)
                continue
            self._add_plugin(info, module)

    def _add_plugin(self, info: PluginInfo, plugin: object) -> None:
        if isinstance(plugin, str):
            plugin = importlib.import_module(plugin)
        if any(p.name == info.name for p in self.plugins):
            raise DuplicateNameError(f"plugin name {info.name!r} is registered twice")
        try:
            self._pm.register(plugin, name=info.name)
            self._pm.check_pending()
        except pluggy.PluginValidationError as exc:
            self._pm.unregister(name=info.name)
            info.error = _one_line(f"invalid plugin: {exc}")
            self.plugins.append(info)
            return
        info.hooks = tuple(sorted(hook.name for hook in self._pm.get_hookcallers(plugin) or ()))
        registrar = Registrar(info.name)
        for impl in self._pm.hook.vlzoo_register.get_hookimpls():
            if impl.plugin_name != info.name:
                continue
            try:
                impl.function(register=registrar)
            except VlzooError as exc:
                info.error = _one_line(f"registration failed: {exc}")
            except Exception as exc:  # noqa: BLE001 - isolate a broken plugin
                info.error = _one_line(f"registration failed: {type(exc).__name__}: {exc}")
        self.plugins.append(info)
        if info.error is None:
            self._commit(info, registrar._staged)
        else:
            self._pm.unregister(name=info.name)

    def _commit(self, info: PluginInfo, staged: _Staged) -> None:
        for spec in staged.components:
            self._claim(spec.kind, spec.name, info.name)
            self.components[(spec.kind, spec.name)] = spec
            info.registered.append(f"{spec.kind}:{spec.name}")
        for rule_set in staged.rule_sets:
            self._claim("LoRA rule set", rule_set.name, info.name)
            self.rule_sets[rule_set.name] = rule_set
            info.registered.append(f"lora:{rule_set.name}")
        for recipe in staged.recipes:
            self._add_recipe(recipe)
            info.registered.append(f"model:{recipe.name}")

    def _claim(self, kind: str, name: str, plugin: str) -> None:
        owner = self._owners.get((kind, name))
        if owner is not None:
            raise DuplicateNameError(f"duplicate {kind} name {name!r}: registered by {owner!r} and by {plugin!r}")
        self._owners[(kind, name)] = plugin

    def _add_recipe(self, recipe: Recipe) -> None:
        for name in (recipe.name, *recipe.aliases):
            owner = self._owners.get(("model", name))
            if owner is not None:
                raise DuplicateNameError(
                    f"duplicate model name {name!r}: registered by {owner!r} and by {recipe.plugin!r}"
                )
            self._owners[("model", name)] = recipe.plugin
        self.recipes[recipe.name] = recipe
        self.aliases.update({alias: recipe.name for alias in recipe.aliases})

    # ---- lookup --------------------------------------------------------------------------------------

    def recipe(self, name: str) -> Recipe:
        canonical = self.aliases.get(name, name)
        if canonical not in self.recipes:
            raise UnknownNameError("model", name, [*self.recipes, *self.aliases])
        return self.recipes[canonical]

    def component(self, kind: str, name: str) -> ComponentSpec:
        spec = self.components.get((kind, name))
        if spec is None:
            raise UnknownNameError(kind, name, [n for k, n in self.components if k == kind])
        return spec

    def rule_set(self, name: str) -> LoraRuleSet:
        if name not in self.rule_sets:
            raise UnknownNameError("LoRA rule set", name, self.rule_sets)
        return self.rule_sets[name]

    def list_recipes(self, pattern: str = "*") -> list[Recipe]:
        """Recipes whose name or an alias matches the glob `pattern`, sorted by name."""
        return [
            recipe
            for name, recipe in sorted(self.recipes.items())
            if any(fnmatch.fnmatchcase(n, pattern) for n in (name, *recipe.aliases))
        ]

    @property
    def failures(self) -> list[PluginInfo]:
        return [p for p in self.plugins if p.error is not None]
