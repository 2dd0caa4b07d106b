"""Conda env files in envs/: they parse, install radiogen, and provide what rules import.

Conda channels are not reachable from the test machines, so the envs are not
built here.  Instead the third-party modules each rule needs are derived from
the code: a rule's ``shell:`` calls ``radiogen <subcommand>``, the subcommand
is registered by a topic module of :mod:`radiogen.cli`, and that module's
imports (followed through the radiogen package) name the modules its env must
provide.  Every env must also provide what ``radiogen.cli`` imports when it
builds its parser, because every subcommand goes through it.
"""

from __future__ import annotations

import argparse
import ast
import importlib.metadata
import os
import re
import subprocess
import sys
from functools import lru_cache
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
ENVS = REPO / "envs"
LIB = REPO / "lib"
ENV_NAMES = ("data", "torch", "pybdsf", "plotting", "interferometer")

#: Import name -> conda/pip package names that provide it (either will do).
MODULE_PACKAGES = {
    "numpy": {"numpy"},
    "scipy": {"scipy"},
    "astropy": {"astropy"},
    "h5py": {"h5py"},
    "pandas": {"pandas"},
    "yaml": {"pyyaml"},
    "tqdm": {"tqdm"},
    "matplotlib": {"matplotlib", "matplotlib-base"},
    "mpl_toolkits": {"matplotlib", "matplotlib-base"},
    "seaborn": {"seaborn", "seaborn-base"},
    "PIL": {"pillow"},
    "torch": {"pytorch", "pytorch-gpu", "pytorch-cpu", "torch"},
    "torchvision": {"torchvision"},
    "bdsf": {"bdsf"},
    "sklearn": {"scikit-learn"},
    "skimage": {"scikit-image"},
    "jsonschema": {"jsonschema"},
    "requests": {"requests"},
    "submitit": {"submitit"},
}

#: Distribution names (pyproject dependencies) -> conda package names.
DIST_PACKAGES = {
    "matplotlib": {"matplotlib", "matplotlib-base"},
    "seaborn": {"seaborn", "seaborn-base"},
    "torch": MODULE_PACKAGES["torch"],
}


def _package_name(spec: str) -> str:
    """``'numpy >=1.26,<3'`` / ``'bdsf==1.14.1'`` / ``'conda-forge::h5py'`` -> name."""
    spec = spec.split("::")[-1].strip()
    return re.split(r"[\s=<>!~\[;]", spec, maxsplit=1)[0].lower().replace("_", "-")


@lru_cache(maxsize=None)
def env_spec(name: str) -> dict:
    path = ENVS / f"{name}.yaml"
    data = yaml.safe_load(path.read_text())
    assert isinstance(data, dict), f"{path}: not a YAML mapping"
    return data


def env_packages(name: str) -> set[str]:
    packages = set()
    for dep in env_spec(name)["dependencies"]:
        if isinstance(dep, dict):
            packages.update(_package_name(p) for p in dep.get("pip", []))
        else:
            packages.add(_package_name(dep))
    return packages


# --- the env files themselves -------------------------------------------------


@pytest.mark.parametrize("name", ENV_NAMES)
def test_env_file_parses(name):
    spec = env_spec(name)
    assert spec.get("channels"), f"envs/{name}.yaml: no channels"
    assert "defaults" not in spec["channels"], "mixing defaults with conda-forge breaks solves"
    deps = spec.get("dependencies")
    assert isinstance(deps, list) and deps, f"envs/{name}.yaml: no dependencies"
    for dep in deps:
        assert isinstance(dep, (str, dict)), f"envs/{name}.yaml: odd entry {dep!r}"
        if isinstance(dep, dict):
            assert set(dep) == {"pip"} and isinstance(dep["pip"], list)
    packages = env_packages(name)
    assert "python" in packages and "pip" in packages
    python = next(d for d in deps if isinstance(d, str) and _package_name(d) == "python")
    assert re.search(r"3\.1[0-9]", python), f"envs/{name}.yaml: pin a python >= 3.10 ({python})"


@pytest.mark.parametrize("name", ENV_NAMES)
def test_env_provides_radiogen_core_dependencies(name):
    """radiogen is installed with --no-deps, so its declared dependencies must come from the env."""
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    packages = env_packages(name)
    for requirement in project["dependencies"]:
        dist = _package_name(requirement)
        choices = DIST_PACKAGES.get(dist, {dist})
        assert choices & packages, f"envs/{name}.yaml lacks {dist} (a radiogen dependency)"


#: Conda package -> its name in requirements-lock.txt where the two differ.
LOCK_NAMES = {"matplotlib-base": "matplotlib", "seaborn-base": "seaborn", "pytorch-gpu": "torch"}


def _lock_pins() -> dict[str, str]:
    pins = {}
    for line in (REPO / "requirements-lock.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version, f"requirements-lock.txt: {line!r} is not an exact pin"
            pins[name.strip().lower()] = version.strip()
    return pins


@pytest.mark.parametrize("name", ENV_NAMES)
def test_env_pins_the_lock_file_versions(name):
    """`--sdm conda` on a cluster builds what CI tested: every package the lock file pins."""
    pins = _lock_pins()
    checked = 0
    for dep in env_spec(name)["dependencies"]:
        specs = dep.get("pip", []) if isinstance(dep, dict) else [dep]
        for spec in specs:
            package = _package_name(spec)
            locked = pins.get(LOCK_NAMES.get(package, package))
            if locked is None:
                continue
            version = re.sub(r"^[=\s]+", "", spec.split("::")[-1][len(package):].strip())
            assert version == locked, f"envs/{name}.yaml pins {spec!r}, requirements-lock.txt {locked}"
            checked += 1
    assert checked >= 8


def test_torch_env_is_a_cuda_build():
    packages = env_packages("torch")
    assert "pytorch-gpu" in packages or {"pytorch", "pytorch-cuda"} <= packages
    assert "torchvision" in packages


@pytest.mark.parametrize("name", ENV_NAMES)
def test_post_deploy_script_installs_radiogen(name):
    script = ENVS / f"{name}.post-deploy.sh"
    assert script.is_file(), f"{script} missing: nothing would install radiogen into the env"
    text = script.read_text()
    assert re.search(r"pip install .*--editable", text), f"{script}: no editable radiogen install"
    assert "--no-deps" in text


def test_one_post_deploy_script_for_all_envs():
    """Every env's post-deploy script is a link to envs/post-deploy.sh: one copy to maintain."""
    for name in ENV_NAMES:
        script = ENVS / f"{name}.post-deploy.sh"
        assert script.is_symlink() and script.resolve() == (ENVS / "post-deploy.sh").resolve(), script


def test_post_deploy_script_refuses_a_directory_that_is_not_the_checkout(tmp_path):
    result = subprocess.run(
        ["bash", str(ENVS / "data.post-deploy.sh")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={k: v for k, v in os.environ.items() if k != "RADIOGEN_ROOT"},
        timeout=60,
    )
    assert result.returncode == 1
    assert "not the radiogen checkout" in result.stderr


@pytest.mark.slow
def test_post_deploy_script_installs_radiogen_into_a_fresh_env(tmp_path):
    """Run the script for real in a fresh venv standing in for the conda env."""
    venv = tmp_path / "env"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = next((venv / "lib").glob("python3*/site-packages"))
    # Borrow pip/setuptools from the test venv (a plain path entry: its .pth
    # files, among them radiogen's own editable hook, are not processed).
    borrowed = Path(importlib.metadata.distribution("pip").locate_file("")).resolve()
    (site / "borrowed.pth").write_text(f"{borrowed}\n")
    env = {
        **{k: v for k, v in os.environ.items() if k not in {"RADIOGEN_ROOT", "PYTHONPATH"}},
        "PATH": f"{venv / 'bin'}{os.pathsep}{os.environ['PATH']}",
        "VIRTUAL_ENV": str(venv),
        "PIP_NO_INDEX": "1",
    }
    probe = [str(venv / "bin" / "python"), "-c", "import radiogen; print(radiogen.__file__)"]
    before = subprocess.run(probe, capture_output=True, text=True, env=env, cwd=tmp_path)
    assert before.returncode != 0, "radiogen importable before the install: the test proves nothing"
    result = subprocess.run(
        ["bash", str(ENVS / "torch.post-deploy.sh")],
        cwd=REPO,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    after = subprocess.run(probe, capture_output=True, text=True, env=env, cwd=tmp_path)
    assert after.returncode == 0, after.stderr
    assert Path(after.stdout.strip()).resolve() == (LIB / "radiogen" / "__init__.py").resolve()
    assert (venv / "bin" / "radiogen").exists(), "console script not installed"


# --- what the rules import ----------------------------------------------------


def _module_file(module: str) -> Path | None:
    parts = module.split(".")
    base = LIB.joinpath(*parts)
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


@lru_cache(maxsize=None)
def _imports(path: Path, *, module: str, top_level_only: bool) -> frozenset[str]:
    """Absolute names imported by a module (relative imports resolved)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    nodes = []

    def visit(node):
        for child in ast.iter_child_nodes(node):
            # Function bodies run only when called; with top_level_only, keep
            # what runs at import time (module level, if/try blocks, class bodies).
            if top_level_only and isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            nodes.append(child)
            visit(child)

    visit(tree)
    names = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            names.add(prefix)
            # `from radiogen.x import y` may import the submodule radiogen.x.y
            names.update(f"{prefix}.{alias.name}" for alias in node.names)
    return frozenset(names)


def third_party_imports(roots: list[str], *, top_level_only: bool) -> set[str]:
    """Top-level third-party modules reachable from ``roots`` through radiogen."""
    return set(_third_party_imports(tuple(roots), top_level_only))


@lru_cache(maxsize=None)
def _third_party_imports(roots: tuple[str, ...], top_level_only: bool) -> frozenset[str]:
    seen, todo, found = set(), list(roots), set()
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        path = _module_file(module)
        if path is None:
            continue
        parent = module.rpartition(".")[0]
        if parent.startswith("radiogen"):
            todo.append(parent)  # importing a submodule runs its package's __init__
        for name in _imports(path, module=module, top_level_only=top_level_only):
            top = name.split(".")[0]
            if top == "radiogen":
                todo.append(name)
            elif top and top not in sys.stdlib_module_names and top != "__future__":
                found.add(top)
    return frozenset(found)


class _Module:
    """Parsed radiogen module: top-level functions and import-time names."""

    def __init__(self, name: str, path: Path):
        self.name = name
        self.tree = ast.parse(path.read_text(), filename=str(path))
        self.package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        self.functions = {
            node.name: node
            for node in self.tree.body
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
        }
        self.aliases = self.import_aliases(
            n
            for stmt in self.tree.body
            if not isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef))
            for n in ast.walk(stmt)
        )

    def absolute(self, node: ast.ImportFrom) -> str:
        if not node.level:
            return node.module or ""
        base = self.package.split(".")
        base = base[: len(base) - node.level + 1]
        return ".".join(base + ([node.module] if node.module else []))

    def import_aliases(self, nodes) -> dict[str, str]:
        """Local name -> dotted target for import statements among ``nodes``."""
        aliases = {}
        for node in nodes:
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.asname:
                        aliases[alias.asname] = alias.name
                    else:
                        top = alias.name.split(".")[0]
                        aliases[top] = top
            elif isinstance(node, ast.ImportFrom):
                prefix = self.absolute(node)
                for alias in node.names:
                    aliases[alias.asname or alias.name] = f"{prefix}.{alias.name}"
        return aliases


@lru_cache(maxsize=None)
def _parsed(name: str) -> _Module | None:
    path = _module_file(name)
    return _Module(name, path) if path else None


def _split_target(target: str) -> tuple[str, str | None]:
    """``radiogen.a.b.f`` -> (module ``radiogen.a.b``, attribute ``f``)."""
    if _module_file(target):
        return target, None
    module, _, attr = target.rpartition(".")
    return module, attr


def function_imports(module: str, function: str) -> set[str]:
    """Third-party modules a call of ``module.function`` may import.

    Follows the module's import-time closure, imports inside the function, and
    calls to functions of radiogen modules (by name or module attribute).
    """
    found: set[str] = set()
    seen: set[tuple[str, str]] = set()
    todo = [(module, function)]
    while todo:
        mod_name, func_name = todo.pop()
        if (mod_name, func_name) in seen:
            continue
        seen.add((mod_name, func_name))
        mod = _parsed(mod_name)
        if mod is None:
            continue
        found |= third_party_imports([mod_name], top_level_only=True)
        node = mod.functions.get(func_name)
        if node is None:
            continue
        local = mod.import_aliases(ast.walk(node))
        for target in local.values():
            top = target.split(".")[0]
            if top == "radiogen":
                target_module, _ = _split_target(target)
                found |= third_party_imports([target_module], top_level_only=True)
            elif top not in sys.stdlib_module_names and top != "__future__":
                found.add(top)
        scope = {**mod.aliases, **local}
        for call in (n for n in ast.walk(node) if isinstance(n, ast.Call)):
            chain, func = [], call.func
            while isinstance(func, ast.Attribute):
                chain.insert(0, func.attr)
                func = func.value
            if not isinstance(func, ast.Name):
                continue
            if not chain and func.id in mod.functions:
                todo.append((mod_name, func.id))
                continue
            target = scope.get(func.id)
            if not target or not target.startswith("radiogen"):
                continue
            dotted = ".".join([target, *chain])
            target_module, attr = _split_target(dotted)
            if attr:
                todo.append((target_module, attr))
    return found


@lru_cache(maxsize=1)
def _installed_distributions() -> dict:
    return importlib.metadata.packages_distributions()


def module_packages(module: str) -> set[str]:
    if module in MODULE_PACKAGES:
        return MODULE_PACKAGES[module]
    dists = _installed_distributions().get(module, [module])
    return {d.lower().replace("_", "-") for d in dists}


def cli_import_time_modules() -> set[str]:
    """Third-party modules imported whenever `radiogen` builds its parser."""
    from radiogen.cli import COMMAND_MODULES

    roots = ["radiogen.cli"] + [f"radiogen.cli.{name}" for name in COMMAND_MODULES]
    return third_party_imports(roots, top_level_only=True)


RULE_RE = re.compile(r"^(?:rule|checkpoint)\s+(\w+)\s*:", re.MULTILINE)


def workflow_rules() -> list[dict]:
    """Rules of workflow/rules/*.smk with their conda env and radiogen subcommand words."""
    rules = []
    for smk in sorted((REPO / "workflow" / "rules").glob("*.smk")):
        text = smk.read_text()
        starts = [(m.start(), m.group(1)) for m in RULE_RE.finditer(text)]
        for i, (start, name) in enumerate(starts):
            end = starts[i + 1][0] if i + 1 < len(starts) else len(text)
            block = text[start:end]
            conda = re.search(r"^\s+conda:\s*\n\s+[\"']([^\"']+)[\"']", block, re.MULTILINE)
            conda = conda or re.search(r"^\s+conda:\s*[\"']([^\"']+)[\"']", block, re.MULTILINE)
            shell = re.search(r"^\s+shell:\s*\n(.*)", block, re.MULTILINE | re.DOTALL)
            words = []
            if shell:
                found = re.search(r"\bradiogen((?:\s+[a-z][\w-]*)+)", shell.group(1))
                if found:
                    words = found.group(1).split()
            rules.append(
                {
                    "name": name,
                    "file": smk,
                    "conda": conda.group(1) if conda else None,
                    "words": words,
                    "has_shell": bool(shell),
                }
            )
    return rules


@lru_cache(maxsize=1)
def _parser():
    from radiogen.cli import build_parser

    return build_parser()


def handler_module(words: list[str]) -> tuple[str, str] | None:
    """The radiogen.cli topic module and function handling `radiogen <words...>`."""
    parser = _parser()
    func = None
    for word in words:
        actions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not actions or word not in actions[0].choices:
            break
        parser = actions[0].choices[word]
        func = parser.get_default("func") or func
    if func is None or not hasattr(func, "__module__"):
        return None
    return func.__module__, func.__name__


def test_every_env_provides_what_the_cli_imports_at_start_up():
    needed = cli_import_time_modules()
    for name in ENV_NAMES:
        packages = env_packages(name)
        missing = sorted(m for m in needed if not module_packages(m) & packages)
        assert not missing, (
            f"envs/{name}.yaml lacks {missing}: `radiogen` imports them at start-up "
            "(module-level imports of radiogen.cli topic modules), so every rule needs them"
        )


def test_rules_name_an_env_and_their_env_provides_their_imports():
    rules = [r for r in workflow_rules() if r["words"]]
    if not rules:
        pytest.skip("no rule calls `radiogen` yet")
    problems = []
    for rule in rules:
        where = f"rule {rule['name']} ({rule['file'].name})"
        if rule["conda"] is None:
            problems.append(f"{where}: no conda: directive")
            continue
        env_path = (rule["file"].parent / rule["conda"]).resolve()
        if env_path.parent != ENVS or env_path.stem not in ENV_NAMES:
            problems.append(f"{where}: conda: {rule['conda']} is not one of envs/*.yaml")
            continue
        handler = handler_module(rule["words"])
        if handler is None:
            problems.append(f"{where}: `radiogen {' '.join(rule['words'])}` is no subcommand")
            continue
        module, function = handler
        needed = function_imports(module, function)
        packages = env_packages(env_path.stem)
        missing = sorted(m for m in needed if not module_packages(m) & packages)
        if missing:
            problems.append(
                f"{where}: `radiogen {' '.join(rule['words'])}` ({module}.{function}) "
                f"may import {missing}, not in envs/{env_path.stem}.yaml"
            )
    assert not problems, "\n".join(problems)


def test_import_scanner_sees_known_imports():
    """Guard against a scanner that silently finds nothing."""
    found = third_party_imports(["radiogen.io"], top_level_only=True)
    assert {"h5py", "numpy", "pandas"} <= found
    assert "os" not in found and "radiogen" not in found
