"""Job configs as the nested dicts Hydra saves, changed by dotted key."""

import copy


def with_values(config: dict, values: dict) -> dict:
    """A copy of a nested config with each {dotted key: value} of `values` set; a group the config
    lacks is added."""
    changed = copy.deepcopy(config)
    for dotted, value in values.items():
        *parents, leaf = dotted.split(".")
        node = changed
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    return changed
