"""Which source files a module runs: the project modules it imports, transitively, found by reading the source
(`ast`, so imports inside functions count too; nothing is imported). Used for code fingerprints (pipeline/sources.py
per-source stages, training/train.py checkpoints) and by the test that every dvc.yaml stage lists them as deps.

A module name such as "pipeline.frames" maps to REPO_ROOT/pipeline/frames.py; only the packages named are followed
(the standard library and third-party imports are not the project's code)."""
from __future__ import annotations

import ast
import hashlib
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
PROJECT_PACKAGES = ("pipeline", "training")
# Plumbing: atomic writes, CLI parsing and status records, this module, and the per-source driver (which the CLI
# helpers import lazily). What a stage writes does not depend on their text, so closures neither list nor follow them.
PLUMBING = frozenset({"pipeline.atomic", "pipeline.cli", "pipeline.code_closure", "pipeline.sources"})


def module_path(module: str) -> Path:
    """The source file of a project module: "training.train" -> REPO_ROOT/training/train.py."""
    return REPO_ROOT.joinpath(*module.split(".")).with_suffix(".py")


def imported_modules(module: str, packages: tuple[str, ...] = PROJECT_PACKAGES,
                     skip: frozenset[str] = PLUMBING) -> set[str]:
    """`module` and every module of `packages` it imports, transitively, except those in `skip` (not followed
    either; `module` itself is always in). Package __init__ files are not followed: `from pipeline import x` counts
    as pipeline.x."""
    def ours(name: str | None) -> bool:
        return bool(name) and name.split(".", 1)[0] in packages and "." in name

    seen, todo = set(), [module]
    while todo:
        name = todo.pop()
        if name in seen or (name in skip and name != module):
            continue
        seen.add(name)
        for node in ast.walk(ast.parse(module_path(name).read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module in packages:
                todo.extend(f"{node.module}.{alias.name}" for alias in node.names)  # from pipeline import x
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and ours(node.module):
                todo.append(node.module)
            elif isinstance(node, ast.Import):
                todo.extend(alias.name for alias in node.names if ours(alias.name))
    return seen


def source_digest(modules, salt: bytes = b"") -> str:
    """sha256 hex over `salt` and each module's name and source text, in sorted order."""
    digest = hashlib.sha256(salt)
    for module in sorted(modules):
        digest.update(module.encode() + b"\0" + module_path(module).read_bytes() + b"\0")
    return digest.hexdigest()
