"""docs/architecture.md held to the code: every import follows its table of stages.

The table is the one whose first header cell is "stage": its "modules" cell
lists files and folders (code spans), its "imports from the project" cell the
stages those modules may import besides their own ("any": no rule). A module
belongs to the row naming it or its closest folder.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOC = (ROOT / "docs" / "architecture.md").read_text()
PROJECT = ("tracking", "maps", "tracker_site")


def stages() -> dict[str, tuple[list[str], set[str]]]:
    """``{stage: (modules, allowed stages)}`` from the doc's table."""
    lines = DOC.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| stage |"))
    found = {}
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        stage, modules, allowed = (cell.strip() for cell in line.strip("|").split("|"))
        found[stage] = (
            re.findall(r"`([^`]+)`", modules),
            {word.strip() for word in allowed.split(",")},
        )
    return found


STAGES = stages()


def project_modules() -> list[Path]:
    """Every module of the project but migrations and the top packages' markers."""
    return sorted(
        path.relative_to(ROOT)
        for top in PROJECT
        for path in (ROOT / top).rglob("*.py")
        if "migrations" not in path.parts and path != ROOT / top / "__init__.py"
    )


def stage_of(path: Path) -> str | None:
    """The stage whose module or folder names ``path`` most closely."""
    best, depth = None, -1
    for stage, (modules, _) in STAGES.items():
        for module in modules:
            named = Path(module.rstrip("/"))
            if (path == named or named in path.parents) and len(named.parts) > depth:
                best, depth = stage, len(named.parts)
    return best


def module_file(dotted: str) -> Path | None:
    base = Path(*dotted.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if (ROOT / candidate).is_file():
            return candidate
    return None


def project_imports(path: Path) -> set[Path]:
    """The project's modules that ``path`` imports, anywhere in it."""
    imported = set()
    for node in ast.walk(ast.parse((ROOT / path).read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names if alias.name not in PROJECT]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # "from tracking import views" imports a module; "from tracking.grid import Cell" a name.
            names = [f"{node.module}.{alias.name}" for alias in node.names] + [node.module]
            names = [name for name in names if name not in PROJECT]
        else:
            continue
        for name in names:
            if name.split(".")[0] in PROJECT and (file := module_file(name)) is not None:
                imported.add(file)
    return imported


def test_every_module_belongs_to_a_stage_of_the_doc() -> None:
    assert [path for path in project_modules() if stage_of(path) is None] == []


def test_every_import_follows_the_stages_of_the_doc() -> None:
    broken = []
    for path in project_modules():
        stage = stage_of(path)
        assert stage is not None
        allowed = STAGES[stage][1]
        if "any" in allowed:
            continue
        for target in project_imports(path):
            target_stage = stage_of(target)
            if target_stage != stage and target_stage not in allowed:
                broken.append(f"{path} ({stage}) imports {target} ({target_stage})")
    assert broken == []


def test_ingest_and_hub_never_import_each_other() -> None:
    assert "hub" not in STAGES["ingest"][1] and "ingest" not in STAGES["hub"][1]


def test_no_file_of_ours_holds_a_merge_conflict_left_unresolved() -> None:
    """A conflict marker at a line's start in the docs, code, templates or styles."""
    marker = re.compile(r"^(<{7}|>{7}) ", re.MULTILINE)
    ours = [ROOT / "README.md", ROOT / "BENCHMARKS.md"]
    for folder in ("docs", "tracking", "maps", "tracker_site", "templates", "tests", "bench"):
        ours += [
            path
            for path in (ROOT / folder).rglob("*")
            if path.suffix in {".md", ".py", ".js", ".css", ".html"}
        ]
    assert [str(p.relative_to(ROOT)) for p in ours if marker.search(p.read_text())] == []
