"""The registry: plugin registrations, duplicates, unknown names, isolation, entry points and catalogs."""

from __future__ import annotations

import importlib
import sys
import types

import pytest
from pydantic import BaseModel

import vlzoo
from vlzoo_core import ConfigError, Recipe, UnknownNameError, VlzooError, hookimpl
from vlzoo_core.errors import DuplicateNameError
from tests.helpers import write_fake_distribution
from vlzoo_core.registry import ENV_DISABLE_AUTOLOAD, ENV_ONLY_PLUGINS, Registry


# ---- helpers ---------------------------------------------------------------------------------------------


class EncoderConfig(BaseModel):
    width: int = 8


def recipe_data(name: str, **fields) -> dict:
    """A minimal valid recipe mapping (component names need not exist to register a recipe)."""
    data = {
        "name": name,
        "description": f"test recipe {name}",
        "encoder": {"name": "enc"},
        "projector": {"name": "proj"},
        "backbone": {"name": "bb"},
        "query_head": {"name": "multi_vector", "module": "custom_text_proj"},
        "document_head": {"name": "multi_vector", "module": "image_proj"},
        "processor": {"name": "proc"},
    }
    data.update(fields)
    return data


RULES = {
    "name": "test_rules",
    "rules": [{"name": "all_linear", "component": "language_model", "pattern": r"layers\.\d+\.proj"}],
}


class Plugin:
    """A plugin object whose `vlzoo_register` registers the given components, rule sets and recipes."""

    def __init__(self, components=(), rule_sets=(), recipes=(), fail: BaseException | None = None):
        self.components, self.rule_sets, self.recipes, self.fail = components, rule_sets, recipes, fail

    @hookimpl
    def vlzoo_register(self, register):
        for kind, name in self.components:
            register.component(kind, name, "vlzoo_fake_module:Factory", EncoderConfig, f"{kind} {name}")
        for rule_set in self.rule_sets:
            register.lora_rules(rule_set)
        for recipe in self.recipes:
            register.recipe(recipe)
        if self.fail is not None:
            raise self.fail


def plugin_info(registry: Registry, name: str):
    matches = [p for p in registry.plugins if p.name == name]
    assert len(matches) == 1, [p.name for p in registry.plugins]
    return matches[0]


# ---- registration ---------------------------------------------------------------------------------------


def test_plugin_component_rule_set_and_recipe_show_up(isolated_registry):
    plugin = Plugin(
        components=[("encoder", "enc"), ("projector", "proj")],
        rule_sets=[RULES],
        recipes=[recipe_data("alpha", aliases=["a1", "a2"])],
    )
    reg = isolated_registry(plugins=[("myplugin", plugin)])

    spec = reg.component("encoder", "enc")
    assert (spec.kind, spec.name, spec.plugin) == ("encoder", "enc", "myplugin")
    assert spec.factory == "vlzoo_fake_module:Factory"
    assert spec.config is EncoderConfig
    assert reg.component("projector", "proj").plugin == "myplugin"
    assert reg.rule_set("test_rules").rules[0].name == "all_linear"

    recipe = reg.recipe("alpha")
    assert recipe.name == "alpha"
    assert recipe.plugin == "myplugin"
    assert reg.recipe("a1") is recipe
    assert reg.recipe("a2") is recipe
    assert reg.aliases == {"a1": "alpha", "a2": "alpha"}
    # the public helpers go through the same (isolated) registry
    assert vlzoo.recipe("a1") is recipe
    assert vlzoo.list_models() == ["alpha"]

    info = plugin_info(reg, "myplugin")
    assert info.error is None
    assert info.hooks == ("vlzoo_register",)
    assert info.registered == ["encoder:enc", "projector:proj", "lora:test_rules", "model:alpha"]
    assert reg.failures == []
    # the built-in plugin is always there
    assert reg.component("head", "multi_vector").plugin == "vlzoo_core"


def test_recipe_object_is_attributed_to_its_plugin(isolated_registry):
    """A plugin may pass a ready `Recipe`; it is still recorded as registered by that plugin."""
    recipe = Recipe.model_validate(recipe_data("alpha", aliases=["a1"]))
    reg = isolated_registry(plugins=[("object_plugin", Plugin(recipes=[recipe]))])
    assert reg.recipe("a1").name == "alpha"
    assert reg.recipe("alpha").plugin == "object_plugin"


def test_plugin_as_module_object(isolated_registry):
    module = types.ModuleType("vlzoo_test_module_plugin")

    @hookimpl
    def vlzoo_register(register):
        register.component("backbone", "modbb", "vlzoo_fake_module:Backbone", EncoderConfig)

    module.vlzoo_register = vlzoo_register
    reg = isolated_registry(plugins=[("modplugin", module)])
    assert reg.component("backbone", "modbb").plugin == "modplugin"


def test_catalog_recipes_and_aliases_resolve(isolated_registry):
    reg = isolated_registry(catalogs=[vlzoo.catalog_path()])
    assert reg.recipe("colllava") is reg.recipe("colllava_interleave")
    assert reg.recipe("colllava").plugin == "registry.toml"
    assert reg.recipe("colllava_tiny").name == "colllava_tiny"


def test_plugin_name_registered_twice_is_an_error(isolated_registry):
    with pytest.raises(DuplicateNameError, match="'twin'"):
        isolated_registry(plugins=[("twin", Plugin()), ("twin", Plugin())])


# ---- duplicates name both plugins ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "first, second, name",
    [
        pytest.param(Plugin(components=[("encoder", "enc")]), Plugin(components=[("encoder", "enc")]),
                     "enc", id="component"),
        pytest.param(Plugin(rule_sets=[RULES]), Plugin(rule_sets=[RULES]), "test_rules", id="rule-set"),
        pytest.param(Plugin(recipes=[recipe_data("alpha")]), Plugin(recipes=[recipe_data("alpha")]),
                     "alpha", id="recipe"),
        pytest.param(Plugin(recipes=[recipe_data("alpha")]), Plugin(recipes=[recipe_data("beta", aliases=["alpha"])]),
                     "alpha", id="alias-vs-earlier-name"),
        pytest.param(Plugin(recipes=[recipe_data("beta", aliases=["alpha"])]), Plugin(recipes=[recipe_data("alpha")]),
                     "alpha", id="name-vs-earlier-alias"),
        pytest.param(Plugin(recipes=[recipe_data("beta", aliases=["x"])]),
                     Plugin(recipes=[recipe_data("gamma", aliases=["x"])]), "x", id="alias-vs-alias"),
        pytest.param(Plugin(recipes=[Recipe.model_validate(recipe_data("alpha"))]),
                     Plugin(recipes=[Recipe.model_validate(recipe_data("alpha"))]),
                     "alpha", id="recipe-objects"),
    ],
)
def test_duplicate_names_are_errors_naming_both_plugins(isolated_registry, first, second, name):
    with pytest.raises(DuplicateNameError) as raised:
        isolated_registry(plugins=[("first_plugin", first), ("second_plugin", second)])
    message = str(raised.value)
    assert "duplicate" in message
    assert repr(name) in message
    assert "'first_plugin'" in message
    assert "'second_plugin'" in message
    assert "\n" not in message


def test_same_component_name_in_different_kinds_is_fine(isolated_registry):
    reg = isolated_registry(plugins=[("p1", Plugin(components=[("encoder", "x")])),
                                     ("p2", Plugin(components=[("projector", "x")]))])
    assert reg.component("encoder", "x").plugin == "p1"
    assert reg.component("projector", "x").plugin == "p2"


def test_plugin_recipe_colliding_with_catalog_recipe(isolated_registry):
    plugin = Plugin(recipes=[recipe_data("colllava")])
    with pytest.raises(DuplicateNameError) as raised:
        isolated_registry(plugins=[("shadowing_plugin", plugin)], catalogs=[vlzoo.catalog_path()])
    message = str(raised.value)
    assert "'colllava'" in message
    assert "'shadowing_plugin'" in message
    assert "registry.toml" in message


def test_builtin_component_cannot_be_overridden(isolated_registry):
    with pytest.raises(DuplicateNameError) as raised:
        isolated_registry(plugins=[("hijack", Plugin(components=[("head", "multi_vector")]))])
    assert "'vlzoo_core'" in str(raised.value) and "'hijack'" in str(raised.value)


# ---- unknown names --------------------------------------------------------------------------------------


def test_unknown_model_suggests_close_name(isolated_registry):
    reg = isolated_registry(catalogs=[vlzoo.catalog_path()])
    with pytest.raises(UnknownNameError) as raised:
        reg.recipe("colllav")
    message = str(raised.value)
    assert "unknown model 'colllav'" in message
    assert "did you mean" in message
    assert "'colllava'" in message
    assert isinstance(raised.value, KeyError) and isinstance(raised.value, VlzooError)


def test_unknown_model_suggests_recipe_name_not_only_alias(isolated_registry):
    reg = isolated_registry(catalogs=[vlzoo.catalog_path()])
    with pytest.raises(UnknownNameError, match="did you mean.*'colllava_tiny'"):
        reg.recipe("colllava_tin")


def test_unknown_component_suggests_close_name(isolated_registry):
    reg = isolated_registry(plugins=[("p", Plugin(components=[("encoder", "siglip")]))])
    with pytest.raises(UnknownNameError) as raised:
        reg.component("encoder", "siglp")
    assert "did you mean" in str(raised.value) and "'siglip'" in str(raised.value)
    assert "unknown encoder 'siglp'" in str(raised.value)
    # suggestions come from the same kind only
    with pytest.raises(UnknownNameError) as raised:
        reg.component("projector", "siglp")
    assert "did you mean" not in str(raised.value)


def test_unknown_rule_set_suggests_close_name(isolated_registry):
    reg = isolated_registry(plugins=[("p", Plugin(rule_sets=[RULES]))])
    with pytest.raises(UnknownNameError) as raised:
        reg.rule_set("test_ruls")
    assert "did you mean" in str(raised.value) and "'test_rules'" in str(raised.value)


def test_unknown_name_far_from_everything_has_no_suggestion(isolated_registry):
    reg = isolated_registry(catalogs=[vlzoo.catalog_path()])
    with pytest.raises(UnknownNameError) as raised:
        reg.recipe("zzzzzzzz")
    assert str(raised.value) == "unknown model 'zzzzzzzz'"


# ---- isolation of a failing plugin ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "fail, expected",
    [
        pytest.param(RuntimeError("kaboom in register"), "RuntimeError: kaboom in register", id="exception"),
        pytest.param(VlzooError("bad registration data"), "bad registration data", id="vlzoo-error"),
    ],
)
def test_plugin_that_raises_is_isolated(isolated_registry, fail, expected):
    good_before = Plugin(components=[("encoder", "good_enc")], recipes=[recipe_data("good_model")])
    broken = Plugin(
        components=[("encoder", "broken_enc")],
        rule_sets=[RULES],
        recipes=[recipe_data("broken_model", aliases=["broken_alias"])],
        fail=fail,
    )
    good_after = Plugin(components=[("projector", "good_proj")])
    reg = isolated_registry(plugins=[("good1", good_before), ("broken", broken), ("good2", good_after)])

    assert [p.name for p in reg.failures] == ["broken"]
    info = plugin_info(reg, "broken")
    assert info.error.startswith("registration failed")
    assert expected in info.error
    assert info.registered == []
    # nothing it staged was committed
    assert ("encoder", "broken_enc") not in reg.components
    assert "test_rules" not in reg.rule_sets
    assert "broken_model" not in reg.recipes and "broken_alias" not in reg.aliases
    with pytest.raises(UnknownNameError):
        reg.recipe("broken_model")
    with pytest.raises(UnknownNameError):
        reg.component("encoder", "broken_enc")
    # the others work
    assert reg.component("encoder", "good_enc").plugin == "good1"
    assert reg.component("projector", "good_proj").plugin == "good2"
    assert reg.recipe("good_model").plugin == "good1"


def test_failed_plugin_does_not_claim_its_names(isolated_registry):
    broken = Plugin(components=[("encoder", "enc")], recipes=[recipe_data("alpha")], fail=RuntimeError("no"))
    good = Plugin(components=[("encoder", "enc")], recipes=[recipe_data("alpha")])
    reg = isolated_registry(plugins=[("broken", broken), ("good", good)])
    assert reg.component("encoder", "enc").plugin == "good"
    assert reg.recipe("alpha").plugin == "good"


def test_invalid_registration_call_is_a_plugin_failure(isolated_registry):
    plugin = Plugin(components=[("tokenizer", "tok")])  # not a component kind
    reg = isolated_registry(plugins=[("odd", plugin), ("fine", Plugin(components=[("encoder", "e")]))])
    info = plugin_info(reg, "odd")
    assert info.error is not None and "unknown component kind 'tokenizer'" in info.error
    assert reg.component("encoder", "e").plugin == "fine"


def test_invalid_recipe_data_is_a_plugin_failure(isolated_registry):
    plugin = Plugin(recipes=[recipe_data("alpha", descripton="typo")])
    reg = isolated_registry(plugins=[("typo_plugin", plugin)])
    info = plugin_info(reg, "typo_plugin")
    assert info.error is not None and "descripton" in info.error and "unknown field" in info.error
    assert "alpha" not in reg.recipes


class MisspelledHook:
    @hookimpl
    def vlzoo_registr(self, register):
        register.component("encoder", "never", "x:y", EncoderConfig)


class WrongHookArgument:
    @hookimpl
    def vlzoo_register(self, registrar):
        registrar.component("encoder", "never", "x:y", EncoderConfig)


@pytest.mark.parametrize(
    "plugin, expected",
    [
        pytest.param(MisspelledHook(), "vlzoo_registr", id="misspelled-hook-name"),
        pytest.param(WrongHookArgument(), "registrar", id="misspelled-hook-argument"),
    ],
)
def test_misspelled_hook_is_reported_not_ignored(isolated_registry, plugin, expected):
    good = Plugin(components=[("encoder", "good")])
    reg = isolated_registry(plugins=[("misspelled", plugin), ("good", good)])
    assert [p.name for p in reg.failures] == ["misspelled"]
    info = plugin_info(reg, "misspelled")
    assert info.error.startswith("invalid plugin")
    assert expected in info.error
    assert ("encoder", "never") not in reg.components
    assert reg.component("encoder", "good").plugin == "good"


# ---- list_recipes -------------------------------------------------------------------------------------


def test_list_recipes_glob(isolated_registry):
    plugin = Plugin(recipes=[recipe_data("alpha_two"), recipe_data("alpha_one"),
                             recipe_data("beta", aliases=["gamma_alias"])])
    reg = isolated_registry(plugins=[("p", plugin)])

    def names(pattern):
        return [r.name for r in reg.list_recipes(pattern)]

    assert names("*") == ["alpha_one", "alpha_two", "beta"]
    assert reg.list_recipes() == reg.list_recipes("*")
    assert names("alpha_*") == ["alpha_one", "alpha_two"]
    assert names("alpha_t?o") == ["alpha_two"]
    assert names("*_one") == ["alpha_one"]
    assert names("gamma*") == ["beta"]  # matched through the alias
    assert names("[ab]*") == ["alpha_one", "alpha_two", "beta"]
    assert names("ALPHA*") == []  # case-sensitive
    assert names("alpha") == []  # a glob is not a prefix
    assert names("nothing*") == []
    assert vlzoo.list_models("alpha_*") == ["alpha_one", "alpha_two"]


def test_list_recipes_on_catalog(isolated_registry):
    reg = isolated_registry(catalogs=[vlzoo.catalog_path()])
    assert [r.name for r in reg.list_recipes("colllava_t*")] == ["colllava_tiny"]
    assert [r.name for r in reg.list_recipes("colllava")] == ["colllava_interleave"]
    assert [r.name for r in reg.list_recipes("colllava*")] == ["colllava_interleave", "colllava_tiny"]


# ---- catalogs ---------------------------------------------------------------------------------------------


VALID_ENTRY = """
encoder = { name = "enc" }
projector = { name = "proj" }
backbone = { name = "bb" }
query_head = { name = "multi_vector", module = "q" }
document_head = { name = "multi_vector", module = "d" }
processor = { name = "proc" }
"""


def test_catalog_file_is_read(isolated_registry, tmp_path):
    path = tmp_path / "extra.toml"
    path.write_text(f'[models.mine]\ndescription = "mine"\naliases = ["m"]\n{VALID_ENTRY}', encoding="utf-8")
    reg = isolated_registry(catalogs=[path])
    assert reg.recipe("m").name == "mine"
    assert reg.recipe("mine").plugin == "extra.toml"


def test_two_catalogs_with_the_same_model_name_both_named(isolated_registry, tmp_path):
    first, second = tmp_path / "first.toml", tmp_path / "second.toml"
    for path in (first, second):
        path.write_text(f"[models.mine]\n{VALID_ENTRY}", encoding="utf-8")
    with pytest.raises(DuplicateNameError) as raised:
        isolated_registry(catalogs=[first, second])
    assert "first.toml" in str(raised.value) and "second.toml" in str(raised.value)


@pytest.mark.parametrize(
    "text, expected",
    [
        pytest.param(f'[models.mine]\ndescripton = "typo"\n{VALID_ENTRY}', ["models.mine.descripton", "unknown field"],
                     id="typo-field"),
        pytest.param(f'[models.mine]\n{VALID_ENTRY}lora = 5\n',
                     ["models.mine.lora"], id="wrong-type"),
        pytest.param("[models.mine]\n" + VALID_ENTRY.replace('module = "q"', 'modul = "q"'),
                     ["models.mine.query_head"], id="nested-typo"),
        pytest.param('[models.mine\ndescription = "x"\n', ["cannot read catalog"], id="bad-syntax"),
        pytest.param('description = "unterminated\n', ["cannot read catalog"], id="bad-string"),
        pytest.param(f'[modles.mine]\n{VALID_ENTRY}', ["unknown top-level", "modles"], id="unknown-table"),
        pytest.param('models = 3\n', ["models"], id="models-not-a-table"),
        pytest.param('[models]\nmine = "not a table"\n', ["mine"], id="model-not-a-table"),
    ],
)
def test_catalog_errors_are_config_errors(isolated_registry, tmp_path, text, expected):
    path = tmp_path / "broken_catalog.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as raised:
        isolated_registry(catalogs=[path])
    message = str(raised.value)
    assert "broken_catalog.toml" in message
    for fragment in expected:
        assert fragment in message
    assert "\n" not in message


def test_missing_catalog_file_is_a_config_error(isolated_registry, tmp_path):
    with pytest.raises(ConfigError, match="does_not_exist.toml"):
        isolated_registry(catalogs=[tmp_path / "does_not_exist.toml"])


# ---- entry-point autoload -------------------------------------------------------------------------------


GOOD_PLUGIN_SOURCE = '''
from pydantic import BaseModel
from vlzoo_core import hookimpl


class Config(BaseModel):
    pass


@hookimpl
def vlzoo_register(register):
    register.component("encoder", "fake_encoder", "fake_module:Encoder", Config, "a fake encoder")
'''

BROKEN_PLUGIN_SOURCE = 'raise RuntimeError("fake plugin exploded at import")\n'


@pytest.fixture
def fake_distribution(tmp_path, monkeypatch):
    """A real (fake) installed distribution `fake-plugin 0.1` on sys.path with entry points `good`, `broken`."""
    root = tmp_path / "site"
    modules = write_fake_distribution(root, "fake-plugin", "0.1",
                                      {"good": GOOD_PLUGIN_SOURCE, "broken": BROKEN_PLUGIN_SOURCE},
                                      extra_entry_points="\n[other_group]\nignored = nowhere\n")
    good_module, broken_module = modules["good"], modules["broken"]
    monkeypatch.syspath_prepend(str(root))
    importlib.invalidate_caches()
    monkeypatch.delenv(ENV_DISABLE_AUTOLOAD, raising=False)
    monkeypatch.delenv(ENV_ONLY_PLUGINS, raising=False)
    yield types.SimpleNamespace(good_module=good_module, broken_module=broken_module)
    for name in (good_module, broken_module):
        sys.modules.pop(name, None)


def test_autoload_isolates_a_plugin_that_fails_to_import(fake_distribution):
    reg = Registry()  # autoload from the environment: on

    broken = plugin_info(reg, "broken")
    assert broken.error is not None
    assert broken.error.startswith("import failed")
    assert "RuntimeError: fake plugin exploded at import" in broken.error
    assert (broken.distribution, broken.version) == ("fake-plugin", "0.1")
    assert broken.registered == []

    good = plugin_info(reg, "good")
    assert good.error is None
    assert (good.distribution, good.version) == ("fake-plugin", "0.1")
    assert good.registered == ["encoder:fake_encoder"]
    assert reg.component("encoder", "fake_encoder").plugin == "good"

    # the real built-in plugin still loads next to them
    colllava = plugin_info(reg, "colllava")
    assert colllava.error is None and colllava.version == "0.1.0"
    assert reg.component("encoder", "siglip").plugin == "colllava"
    assert [p.name for p in reg.failures] == ["broken"]
    assert "ignored" not in [p.name for p in reg.plugins]


def test_autoload_with_catalog_still_lists_models(fake_distribution):
    reg = Registry(catalogs=[vlzoo.catalog_path()])
    assert [p.name for p in reg.failures] == ["broken"]
    assert reg.recipe("colllava").name == "colllava_interleave"


@pytest.mark.parametrize("value", ["good", " good ,", "good,not_installed"])
def test_env_only_plugins_limits_loading(fake_distribution, monkeypatch, value):
    monkeypatch.setenv(ENV_ONLY_PLUGINS, value)
    reg = Registry()
    assert [p.name for p in reg.plugins] == ["vlzoo_core", "good"]
    assert reg.failures == []
    assert reg.component("encoder", "fake_encoder").plugin == "good"
    # plugins left out are not even imported
    assert fake_distribution.broken_module not in sys.modules
    with pytest.raises(UnknownNameError):
        reg.component("encoder", "siglip")


def test_env_only_plugins_two_names(fake_distribution, monkeypatch):
    monkeypatch.setenv(ENV_ONLY_PLUGINS, "good,colllava")
    reg = Registry()
    assert sorted(p.name for p in reg.plugins) == ["colllava", "good", "vlzoo_core"]
    assert reg.failures == []


def test_only_argument_overrides_environment(fake_distribution, monkeypatch):
    monkeypatch.setenv(ENV_ONLY_PLUGINS, "good")
    reg = Registry(only=["broken"])
    assert [p.name for p in reg.plugins] == ["vlzoo_core", "broken"]
    assert fake_distribution.good_module not in sys.modules


@pytest.mark.parametrize("value, loads", [("1", False), ("yes", False), ("0", True), ("", True)])
def test_env_disable_autoload(fake_distribution, monkeypatch, value, loads):
    monkeypatch.setenv(ENV_DISABLE_AUTOLOAD, value)
    reg = Registry()
    names = {p.name for p in reg.plugins}
    if loads:
        assert {"good", "broken", "colllava"} <= names
    else:
        assert names == {"vlzoo_core"}
        assert fake_distribution.good_module not in sys.modules
        assert fake_distribution.broken_module not in sys.modules


def test_explicit_autoload_argument_overrides_environment(fake_distribution, monkeypatch):
    monkeypatch.setenv(ENV_DISABLE_AUTOLOAD, "1")
    assert "good" in {p.name for p in Registry(autoload=True).plugins}
    monkeypatch.delenv(ENV_DISABLE_AUTOLOAD)
    assert {p.name for p in Registry(autoload=False).plugins} == {"vlzoo_core"}


def test_entry_points_monkeypatched(monkeypatch):
    """The same isolation with `entry_points` replaced, and plugins that are plain module objects."""
    import vlzoo_core.registry as registry_module

    module = types.ModuleType("vlzoo_test_ep_module")

    @hookimpl
    def vlzoo_register(register):
        register.lora_rules(RULES)

    module.vlzoo_register = vlzoo_register

    class FakeEntryPoint:
        def __init__(self, name, target):
            self.name, self.dist, self._target = name, None, target

        def load(self):
            if isinstance(self._target, BaseException):
                raise self._target
            return self._target

    seen_groups = []

    def fake_entry_points(*, group):
        seen_groups.append(group)
        return [FakeEntryPoint("ep_broken", ImportError("No module named 'missing_dep'")),
                FakeEntryPoint("ep_good", module)]

    monkeypatch.delenv(ENV_DISABLE_AUTOLOAD, raising=False)
    monkeypatch.delenv(ENV_ONLY_PLUGINS, raising=False)
    monkeypatch.setattr(registry_module.importlib.metadata, "entry_points", fake_entry_points)
    reg = Registry()
    assert seen_groups == ["vlzoo"]
    broken = plugin_info(reg, "ep_broken")
    assert broken.error == "import failed: ImportError: No module named 'missing_dep'"
    assert broken.distribution is None
    assert reg.rule_set("test_rules").name == "test_rules"
    assert plugin_info(reg, "ep_good").registered == ["lora:test_rules"]
