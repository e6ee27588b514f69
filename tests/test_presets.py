"""Presets hold only their deltas: from the schema's defaults (what a bare run uses), or from the
preset they build on through their defaults list."""

import json
import shutil

import pytest
import yaml
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from conftest import CONF_DIR, GROUPS
import rlvr.run  # noqa: F401  registers the schema and the rlvr_data resolver

OPTIONS = [(g, p.stem) for g in GROUPS for p in sorted((CONF_DIR / g).glob("*.yaml"))]
GLOBAL_PACKAGE = "# @package _global_"


def composed(conf_dir, group: str, option: str) -> dict:
    with initialize_config_dir(config_dir=str(conf_dir), version_base="1.3"):
        return OmegaConf.to_container(compose(config_name="config", overrides=[f"{group}={option}"]), resolve=False)


def leaf_paths(node: dict, prefix: tuple = ()) -> list[tuple]:
    """Every key of a preset's body that holds a value (the defaults list and hydra's settings aside)."""
    paths = []
    for key, value in node.items():
        if not prefix and key in ("defaults", "hydra"):
            continue
        paths += leaf_paths(value, (*prefix, key)) if isinstance(value, dict) and value else [(*prefix, key)]
    return paths


MISSING_KEY = object()


def at(node: dict, path: tuple):
    """The value at `path` in a composed config (MISSING_KEY where it has none)."""
    for key in path:
        if not isinstance(node, dict) or key not in node:
            return MISSING_KEY
        node = node[key]
    return node


@pytest.fixture(scope="module")
def conf_copy(tmp_path_factory):
    return shutil.copytree(CONF_DIR, tmp_path_factory.mktemp("conf") / "conf")


@pytest.mark.parametrize(("group", "option"), OPTIONS, ids=[f"{g}={o}" for g, o in OPTIONS])
def test_a_preset_sets_nothing_it_would_get_anyway(conf_copy, group, option):
    """Each value a preset sets changes what it composes to. Hydra merges a preset's values key by key,
    so dropping one value leaves at its path what the preset composes to with all its values dropped
    (its defaults list kept): one such composition stands for dropping each value in turn."""
    path = conf_copy / group / f"{option}.yaml"
    text = path.read_text()
    header = GLOBAL_PACKAGE + "\n" if text.startswith(GLOBAL_PACKAGE) else ""
    body = yaml.safe_load(text) or {}
    full = composed(conf_copy, group, option)
    try:
        path.write_text(header + yaml.safe_dump({k: v for k, v in body.items() if k in ("defaults", "hydra")}))
        without_values = composed(conf_copy, group, option)
    finally:
        path.write_text(text)
    package = () if header else (group,)
    restated = [".".join(map(str, leaf)) for leaf in leaf_paths(body) if at(full, package + leaf) == at(without_values, package + leaf)]
    assert restated == [], f"conf/{group}/{option}.yaml restates {restated}: the schema or its parent preset sets them"


@pytest.mark.parametrize("group", GROUPS)
def test_no_two_options_of_a_group_are_copies(group):
    seen = {}
    for option in sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml")):
        key = json.dumps(composed(CONF_DIR, group, option), sort_keys=True, default=str)
        assert key not in seen, f"conf/{group}/{option}.yaml composes to the same config as {seen[key]}.yaml"
        seen[key] = option
