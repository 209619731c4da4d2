"""What pyproject.toml cannot say: the packages found in the tree, plus the repository's
top-level `fixtures/` shipped inside the wheel as `frontends._fixtures`.

`fixtures/` stays the one source of the demo catalog and its examples; an installed
gateway reads the copy in the wheel with `importlib.resources` (see
`frontends/settings.py`), and no new top-level import name is installed for it.
Everything else about the build is in pyproject.toml.
"""

from setuptools import find_packages, setup

SOURCE = ["core", "transports", "frontends", "adaptors", "resource_server_async"]

setup(
    packages=[
        *find_packages(include=[name for top in SOURCE for name in (top, f"{top}.*")]),
        "frontends._fixtures",
        "frontends._fixtures.examples",
    ],
    package_dir={"frontends._fixtures": "fixtures"},
)
