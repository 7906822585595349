"""Where nn-run's config files are, and the tracking settings they give by default, read without Hydra.

A command that only reads a store (nn-compare) starts in a fraction of a second this way, where
importing Hydra and composing the config takes ~1.5 s. runner/config.py composes the same files
with Hydra (tracking_defaults); a test checks that both agree.
"""

from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
# nn-run's Hydra configs: conf/ inside the installed package (a wheel), else conf/ beside the package (a checkout)
CONFIG_DIR = str(PACKAGE_DIR / "conf" if (PACKAGE_DIR / "conf").is_dir() else PACKAGE_DIR.parent / "conf")
PRIMARY_CONFIG = "config"  # conf/config.yaml


def plain_tracking_defaults():
    """(tracking.uri, tracking.experiment) of the primary config's `tracking` group choice, read from its YAML file;
    None when the files need Hydra's composition to say (a value with an interpolation, a choice not plainly given,
    tracking keys set elsewhere in the primary config)."""
    import yaml  # ~0.1 s, with nothing else

    primary = yaml.safe_load(Path(CONFIG_DIR, f"{PRIMARY_CONFIG}.yaml").read_text())
    choices = [entry["tracking"] for entry in primary.get("defaults", []) if isinstance(entry, dict)
               and "tracking" in entry]
    if len(choices) != 1 or not isinstance(choices[0], str) or "tracking" in primary:
        return None
    group = yaml.safe_load(Path(CONFIG_DIR, "tracking", f"{choices[0]}.yaml").read_text())
    values = (group.get("uri"), group.get("experiment"))
    if not all(isinstance(value, str) and "${" not in value for value in values):
        return None
    return values
