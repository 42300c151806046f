"""dvc.yaml must list every project module a stage runs, or DVC serves stale results when one changes."""

import ast

import yaml

from tests.conftest import ROOT


def import_closure(module_file, seen=None) -> set:
    """The project files `module_file` imports, transitively (relative imports and `stages.` imports), with the
    `__init__.py` of every package above each of them: Python runs those first."""
    seen = set() if seen is None else seen
    if module_file in seen or not module_file.is_file():
        return seen
    seen.add(module_file)
    for package in module_file.parents:
        if package == ROOT:
            break
        import_closure(package / "__init__.py", seen)
    for node in ast.walk(ast.parse(module_file.read_text())):
        if not isinstance(node, ast.ImportFrom):
            continue
        if node.level:
            base = module_file.parent
            for _ in range(node.level - 1):
                base = base.parent
        elif (node.module or "").startswith("stages"):
            base = ROOT
        else:
            continue
        module = base.joinpath(*(node.module or "").split(".")) if node.module else base
        for target in [module] + [module / alias.name for alias in node.names]:
            for candidate in (target.with_suffix(".py"), target / "__init__.py"):
                import_closure(candidate, seen)
    return seen


def runs_code(module_file) -> bool:
    """False for a package __init__ that holds only its docstring: changing it cannot change a result."""
    body = ast.parse(module_file.read_text()).body
    return not all(isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant) for n in body)


def interpolated(text: str) -> str:
    """dvc.yaml's `${paths.<key>}` as DVC fills them in from stages/paths.yaml."""
    for key, value in yaml.safe_load((ROOT / "stages" / "paths.yaml").read_text())["paths"].items():
        text = text.replace("${paths.%s}" % key, value)
    return text


def test_every_stage_depends_on_the_modules_it_imports():
    stages = yaml.safe_load(interpolated((ROOT / "dvc.yaml").read_text()))["stages"]
    missing = {}
    for name, stage in stages.items():
        stage = stage.get("do", stage)
        script = ROOT / "stages" / (stage["cmd"].split("stages.", 1)[1].split()[0] + ".py")
        deps = [ROOT / dep.replace("${item}", "mouth") for dep in stage["deps"]]
        needed = {f for f in import_closure(script) if runs_code(f)}
        lacking = sorted(str(f.relative_to(ROOT)) for f in needed if not any(f == d or d in f.parents for d in deps))
        if lacking:
            missing[name] = lacking
    assert not missing, f"dvc.yaml deps lack the modules these stages import: {missing}"


def test_every_artifact_is_an_output_of_a_stage():
    """dvc.yaml's artifacts name files the pipeline writes: a renamed output would leave an artifact pointing at
    nothing, which `dvc artifacts get` reports only when someone asks for it."""
    lock = yaml.safe_load((ROOT / "dvc.lock").read_text())["stages"]
    outs = {out["path"] for entry in lock.values() for out in entry.get("outs", [])}
    artifacts = yaml.safe_load((ROOT / "dvc.yaml").read_text())["artifacts"]
    assert {"eyes-generator", "mouth-generator", "face-generator", "curator"} <= set(artifacts)
    for name, artifact in artifacts.items():
        path = artifact["path"]
        assert any(path == out or path.startswith(out.rstrip("/") + "/") for out in outs), (name, path)
