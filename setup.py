"""Maps each top-level folder to flamecast.<folder>, sub-packages included (metadata is in
pyproject.toml). Kept as code so a new sub-package never needs a manual list."""

from pathlib import Path

from setuptools import setup

FOLDERS = ("plugins", "drivers", "renderer", "server", "cli", "client_demo")


def _packages() -> list[str]:
    root = Path(__file__).parent
    found = []
    for folder in FOLDERS:
        for init in sorted((root / folder).rglob("__init__.py")):
            rel = init.parent.relative_to(root / folder).parts
            found.append(".".join(("flamecast", folder, *rel)))
    return found


setup(
    packages=_packages(),
    package_dir={f"flamecast.{folder}": folder for folder in FOLDERS},
)
