"""The package's architecture, held to what README's Layout section says.

Layers, bottom-up: a module imports only from its own sub-package and from the layers below it
(function-level imports included), and never a private name of another module.
"""
import ast
import pathlib
import re

SRC = pathlib.Path(__file__).resolve().parents[1] / "src"
LAYERS = [("mezo.errors", "mezo.paths"), ("mezo.zo",), ("mezo.data",), ("mezo.models",), ("mezo.config",),
          ("mezo.experiments",), ("mezo.training",), ("mezo.cli",)]


def _modules():
    out = {}
    for f in sorted((SRC / "mezo").rglob("*.py")):
        parts = list(f.relative_to(SRC).with_suffix("").parts)
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = f
    return out


def _imports(name, path, modules):
    """(imported module, imported names) for every `mezo` import anywhere in the module."""
    pkg = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("mezo"):
                    yield a.name, ()
        elif isinstance(node, ast.ImportFrom):
            mod = node.module or ""
            if node.level:
                base = pkg.split(".")[: len(pkg.split(".")) - node.level + 1]
                mod = ".".join(base + ([mod] if mod else []))
            if mod.startswith("mezo"):
                for a in node.names:
                    sub = f"{mod}.{a.name}"
                    yield (sub, ()) if sub in modules else (mod, (a.name,))


def _layer(name):
    for i, layer in enumerate(LAYERS):
        if any(name == top or name.startswith(top + ".") for top in layer):
            return i, next(t for t in layer if name == t or name.startswith(t + "."))
    return None, "mezo"


def test_every_import_goes_down_the_layers_or_stays_in_its_subpackage():
    modules = _modules()
    bad = []
    for name, path in modules.items():
        here, pkg = _layer(name)
        for dep, _ in _imports(name, path, modules):
            there, dep_pkg = _layer(dep)
            if name == "mezo":           # the package's own __init__ re-exports the public API
                continue
            if dep_pkg != pkg and (there is None or here is None or there >= here):
                bad.append(f"{name} imports {dep}")
    assert not bad, bad


def test_mezo_zo_imports_only_itself():
    modules = _modules()
    for name, path in modules.items():
        if name.startswith("mezo.zo"):
            assert all(dep.startswith("mezo.zo") for dep, _ in _imports(name, path, modules)), name


def test_no_module_imports_a_private_name_of_another():
    modules = _modules()
    bad = []
    for name, path in modules.items():
        tree = ast.parse(path.read_text())
        aliases = {}
        for dep, names in _imports(name, path, modules):
            bad += [f"{name}: from {dep} import {n}" for n in names if n.startswith("_")]
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                for a in node.names:
                    full = (a.name if isinstance(node, ast.Import) else f"{node.module}.{a.name}")
                    if full in modules:
                        aliases[a.asname or a.name.split(".")[-1]] = full
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases
                    and node.attr.startswith("_") and not node.attr.startswith("__")):
                bad.append(f"{name}: {node.value.id}.{node.attr}")
    assert not bad, bad


def _readme_layout(repo_root):
    text = open(f"{repo_root}/README.md").read()
    block = re.search(r"## Layout\n.*?```\n(.*?)```", text, re.S).group(1)
    lines = block.split("\nsrc/mezo/", 1)[1].splitlines()[1:]
    listed, stack = set(), []
    for line in lines:
        if not line.startswith("  "):
            break                       # the end of the package's part of the tree
        indent = (len(line) - len(line.lstrip())) // 2
        stack = stack[: indent - 1] + [line.split()[0]]
        listed.add("".join(stack))
    return listed


def test_readme_layout_lists_every_module_of_the_package(repo_root):
    files = {str(p.relative_to(SRC / "mezo")) for p in (SRC / "mezo").rglob("*.py") if p.name != "__init__.py"}
    dirs = {str(p.relative_to(SRC / "mezo")) + "/" for p in (SRC / "mezo").iterdir()
            if p.is_dir() and (p / "__init__.py").exists()}
    listed = _readme_layout(repo_root)
    assert listed == files | dirs, (sorted(listed - files - dirs), sorted(files | dirs - listed))


def test_tests_mirror_the_package():
    """One test folder per sub-package (package-wide tests at the top), every test file in one."""
    tests = SRC.parent / "tests"
    subpackages = {p.name for p in (SRC / "mezo").iterdir() if (p / "__init__.py").exists()}
    folders = {p.name for p in tests.iterdir() if p.is_dir() and p.name != "__pycache__"}
    assert folders == subpackages
    assert {p.name for p in tests.glob("test_*.py")} == {"test_layout.py"}
