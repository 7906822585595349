"""Print pip constraints that hold each dependency of pyproject.toml at the lowest version its range admits.

For CI's third environment (.ci/run): the project's own dependencies at their lower bounds (`name>=X`
-> `name==X`), what they pull in at the newest versions that fit, as a user's resolver may give.
"""

import re
import sys
import tomllib
from pathlib import Path

project = tomllib.loads(Path(sys.argv[1] if len(sys.argv) > 1 else "pyproject.toml").read_text())["project"]
for requirement in project["dependencies"]:
    found = re.match(r"\s*([A-Za-z0-9._-]+)\s*[^;]*?>=\s*([^,;\s]+)", requirement)
    if found:
        print(f"{found[1]}=={found[2]}")
