"""The package's layout: stage folders in data-path order, imports that only run down the stages,
no import circles, no re-export facades, every package installed. A module holds one job whole;
its size follows the job (no line cap).

The stage order is written once, here. A module may import from its own stage or any earlier
one; an import to a later stage (a shard reader importing the mixer, the library importing its
CLI) fails this test, and so does any circle, function-level imports included (they once hid
the model-dir recursion).
"""

from __future__ import annotations

import ast
import configparser
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "generalist"

# The data path, left to right. "base" is the package's top-level modules (errors, seeds, ...);
# tasks and mixtures are the built-in catalog entries (installed as generalist.tasks/.mixtures).
STAGES = (
    "base",
    "catalog",
    "sources",
    "tasks",
    "mixtures",
    "shards",
    "mixing",
    "model",
    "batching",
    "tracking",
    "eval",
    "train",
    "bench",
    "cli",
)


def module_files() -> dict[str, Path]:
    """Dotted module name -> file, for generalist/ and the two folders installed under it."""
    files = {}
    roots = [(PACKAGE, "generalist"), (ROOT / "tasks", "generalist.tasks")]
    roots.append((ROOT / "mixtures", "generalist.mixtures"))
    for folder, prefix in roots:
        for path in sorted(folder.rglob("*.py")):
            parts = list(path.relative_to(folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            files[".".join([prefix, *parts])] = path
    return files


FILES = module_files()


def stage_of(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 1 or f"generalist.{parts[1]}" not in FILES or parts[1] not in STAGES:
        return "base"
    return parts[1]


def imports_of(module: str) -> set[str]:
    """The generalist modules `module` imports anywhere in its file (function level included)."""
    tree = ast.parse(FILES[module].read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("generalist")}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("generalist"):
            assert node.level == 0, f"{module}: relative import"
            base = str(node.module)
            found.add(base)
            found |= {f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in FILES}
    missing = sorted(m for m in found if m not in FILES)
    assert not missing, f"{module} imports modules that do not exist: {missing}"
    return found - {module}


GRAPH = {module: imports_of(module) for module in FILES}


def test_every_stage_is_a_folder_and_every_folder_a_stage():
    folders = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()}
    assert folders == set(STAGES) - {"base", "tasks", "mixtures"}


def test_imports_only_run_down_the_stages():
    upward = [
        f"{module} ({stage_of(module)}) imports {target} ({stage_of(target)})"
        for module, targets in GRAPH.items()
        for target in targets
        if STAGES.index(stage_of(target)) > STAGES.index(stage_of(module))
    ]
    assert not upward, "imports from a lower stage to a higher one:\n" + "\n".join(upward)


def test_no_import_circles():
    # Tarjan's strongly connected components: any component with two or more modules is a circle
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    circles: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        for target in GRAPH[module]:
            if target not in index:
                visit(target)
                low[module] = min(low[module], low[target])
            elif target in stack:
                low[module] = min(low[module], index[target])
        if low[module] == index[module]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == module:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for module in GRAPH:
        if module not in index:
            visit(module)
    assert not circles, f"import circles: {circles}"


def test_no_reexport_facades():
    """Only a package __init__ may hand on names it imports (the public faces); a plain module
    exports what it defines: an imported name in its `__all__`, or a generalist import kept with
    `noqa: F401`, marks a facade."""
    facades = []
    for module, path in FILES.items():
        if path.name == "__init__.py":
            continue
        text = path.read_text()
        tree = ast.parse(text)
        imported = {
            alias.asname or alias.name
            for node in tree.body
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("generalist")
            for alias in node.names
        }
        for node in tree.body:
            if isinstance(node, ast.Assign) and any(
                getattr(t, "id", "") == "__all__" for t in node.targets
            ):
                handed_on = sorted(imported & set(ast.literal_eval(node.value)))
                if handed_on:
                    facades.append(f"{module}: __all__ hands on {handed_on}")
        for line in text.splitlines():
            if line.lstrip().startswith("from generalist") and "F401" in line:
                facades.append(f"{module}: {line.strip()}")
    assert not facades, facades


def test_setup_cfg_installs_every_package():
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    listed = set(config["options"]["packages"].split())
    packages = {m for m, p in FILES.items() if p.name == "__init__.py"}
    assert listed == packages, f"setup.cfg packages differ: {sorted(listed ^ packages)}"


def test_zero_jsons_are_package_data_and_configs_link_to_them():
    shipped = sorted(p.name for p in (PACKAGE / "train" / "zero").glob("*.json"))
    linked = sorted(p.name for p in (ROOT / "configs" / "deepspeed").glob("*.json"))
    assert shipped == linked == ["zero1.json", "zero2.json", "zero3.json", "zero3_offload.json"]
    for name in linked:
        link = ROOT / "configs" / "deepspeed" / name
        assert link.resolve() == (PACKAGE / "train" / "zero" / name).resolve()
