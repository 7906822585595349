"""Every OmegaConf name this project uses that OmegaConf does not document as public, in one place.

tests/test_private_names.py pins the behaviour relied on, so an upgrade that changes it fails there.
"""

from omegaconf import DictConfig


def node_at(cfg, key):
    """The node (not its value) at dotted `key` inside DictConfigs, or None: a ValueNode for a plain value.

    OmegaConf.select returns values; telling a plain value from an interpolation or a container
    needs the node itself.
    """
    node = cfg
    for part in key.split("."):
        if not isinstance(node, DictConfig):
            return None
        try:
            node = node._get_node(part)
        except Exception:  # noqa: BLE001  a struct node without that key
            return None
    return node
