"""The package's layers, read from its source: who imports whom (module level and inside functions).

data/ and nn/ import nothing else of the project and neither MLflow, Hydra nor OmegaConf;
tracking/ imports neither data/ nor nn/; no import circle anywhere; an import inside a function
says why it is there (a comment on its line or the line above: start-up time it saves).
"""

import ast

from conftest import ROOT

PACKAGE = ROOT / "runner"
FRAMEWORKS = ("mlflow", "hydra", "omegaconf")


def module_name(path):
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path):
    """[(imported module, line number, inside a function)] of one source file."""
    tree, found = ast.parse(path.read_text()), []

    def visit(node, in_function):
        for child in ast.iter_child_nodes(node):
            inside = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
            if isinstance(child, ast.Import):
                found.extend((alias.name, child.lineno, in_function) for alias in child.names)
            elif isinstance(child, ast.ImportFrom) and child.module and child.level == 0:
                found.append((child.module, child.lineno, in_function))
                found.extend((f"{child.module}.{alias.name}", child.lineno, in_function) for alias in child.names)
            visit(child, inside)

    visit(tree, False)
    return found


SOURCES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}
MODULES = set(SOURCES)


def project_imports(name):
    """The project modules `name` imports (a `from runner.x import y` counts as runner.x, or runner.x.y when
    that is a module)."""
    return {imported for imported, _, _ in imports(SOURCES[name]) if imported in MODULES and imported != name}


def test_data_and_nn_import_nothing_else_of_the_project_nor_a_framework():
    for name, path in SOURCES.items():
        layer = name.split(".")[1] if name.count(".") else None
        if layer not in ("data", "nn"):
            continue
        for imported, line, _ in imports(path):
            assert not imported.startswith(FRAMEWORKS), f"{path}:{line} imports {imported}"
            if imported.startswith("runner"):
                assert imported.startswith(f"runner.{layer}"), f"{path}:{line} imports {imported}"


def test_tracking_knows_nothing_of_the_math_or_the_data():
    for name, path in SOURCES.items():
        if not name.startswith("runner.tracking"):
            continue
        for imported, line, _ in imports(path):
            assert not imported.startswith(("runner.nn", "runner.data")), f"{path}:{line} imports {imported}"
            if imported.startswith("runner."):
                assert imported.startswith("runner.tracking"), f"{path}:{line} imports {imported}"


def test_no_import_circle():
    graph = {name: project_imports(name) for name in MODULES}
    done, path = set(), []

    def visit(name):
        if name in path:
            raise AssertionError("import circle: " + " -> ".join(path[path.index(name):] + [name]))
        if name in done:
            return
        path.append(name)
        for other in sorted(graph[name]):
            visit(other)
        path.pop()
        done.add(name)

    for name in sorted(graph):
        visit(name)


def test_an_import_inside_a_function_says_why():
    for path in SOURCES.values():
        lines = path.read_text().splitlines()
        for _, line, in_function in imports(path):
            if in_function:
                here, above = lines[line - 1], lines[line - 2].strip()
                assert "#" in here or above.startswith("#"), f"{path}:{line}: an import inside a function, no reason given"


def test_the_checks_see_a_violation(tmp_path):
    """The helpers find module-level and function-level imports (so the tests above can fail)."""
    source = tmp_path / "sample.py"
    source.write_text("import mlflow\n\ndef f():\n    from runner.nn import training\n")
    assert imports(source) == [("mlflow", 1, False), ("runner.nn", 4, True), ("runner.nn.training", 4, True)]
