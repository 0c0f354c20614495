"""The pluggy hook specification. Plugin modules import `hookimpl` from `vlzoo_core`."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from vlzoo_core.registry import Registrar

PROJECT_NAME = "vlzoo"
ENTRY_POINT_GROUP = "vlzoo"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


class VlzooHookSpec:
    @hookspec
    def vlzoo_register(self, register: Registrar) -> None:
        """Register components, LoRA rule sets, checkpoint formats and recipes.

        Registrations are data: a name, a lazy "module:attribute" factory reference,
        a pydantic config class and a description. The module that defines this hook
        must not import torch, so that `vlzoo list` stays fast.
        """
