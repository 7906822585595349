"""Puts nn-run's Hydra configs into a built wheel: conf/ (with experiments/ as its experiment group) -> runner/conf/.

In the repository the configs stay top-level (conf/ mirrors the code, experiments/ holds the
presets, conf/experiment links to it); runner/config.py reads runner/conf/ when a wheel put it
there and conf/ beside the package otherwise (a checkout, an editable install).
"""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent


class BuildWithConfigs(build_py):
    def run(self):
        super().run()
        if self.editable_mode:  # an editable install reads conf/ from the checkout
            return
        target = Path(self.build_lib) / "runner" / "conf"
        shutil.rmtree(target, ignore_errors=True)
        # symlinks=False copies what conf/experiment points to (experiments/) as a real folder
        shutil.copytree(ROOT / "conf", target, symlinks=False, ignore=shutil.ignore_patterns("__pycache__"))


setup(cmdclass={"build_py": BuildWithConfigs})
