"""An example vlzoo plugin: `mlp_head`, a two-layer MLP retrieval head, and recipes that use it.

The hook module (`vlzoo_plugin_example.plugin`) and the configs import no torch; `heads` does.
"""

__version__ = "0.1.0"
