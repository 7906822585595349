"""Print pip constraints that hold each dependency of pyproject.toml at the lowest version its range admits.

For CI's third environment (.ci/run): the project's own dependencies at their lower bounds
(`name>=X` -> `name==X`; a dependency an extra names again, as mlflow[auth], at the higher bound), what they
pull in at the newest versions that fit, as a user's resolver may give.
"""

import re
import sys
import tomllib
from pathlib import Path

project = tomllib.loads(Path(sys.argv[1] if len(sys.argv) > 1 else "pyproject.toml").read_text())["project"]
extras = [r for name, requirements in project.get("optional-dependencies", {}).items() for r in requirements]
lowest = {}  # a dependency an extra names again (mlflow[auth]) at the higher of the two lower bounds
for extra, requirement in [*((False, r) for r in project["dependencies"]), *((True, r) for r in extras)]:
    found = re.match(r"\s*([A-Za-z0-9._-]+)(?:\[[^]]*\])?\s*[^;]*?>=\s*([^,;\s]+)", requirement)
    name = re.sub(r"[-_.]+", "-", found[1]).lower() if found else None
    if found and (not extra or name in lowest):  # the extras' own packages (pytest, ...) are left to the resolver
        version = tuple(int(part) for part in found[2].split("."))
        if name not in lowest or version > lowest[name][1]:
            lowest[name] = (found[1], version, found[2])
for name, _, version in lowest.values():
    print(f"{name}=={version}")
