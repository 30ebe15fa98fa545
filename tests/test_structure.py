"""The package's boundaries: small modules, and no module reaching into another public module's private names."""

import ast
import pathlib

import jxent

PACKAGE = pathlib.Path(jxent.__file__).parent
MODULES = sorted(PACKAGE.rglob("*.py"))


def _is_private_module(name: str) -> bool:
    return any(part.startswith("_") and part != "__init__" for part in name.split("."))


def test_no_module_is_longer_than_500_lines():
    long = {str(p.relative_to(PACKAGE)): n for p in MODULES if (n := len(p.read_text().splitlines())) > 500}
    assert not long, f"modules over 500 lines: {long}"


def _is_module(name: str) -> bool:
    """``jxent.a.b`` names a module or package of jxent (importing a private *module* is how modules share it)."""
    path = PACKAGE.joinpath(*name.split(".")[1:])
    return path.with_suffix(".py").exists() or (path / "__init__.py").exists()


def _offences(source: str, own: str) -> list[str]:
    """Uses in ``source`` (the module ``own``) of an underscore name of another public jxent module."""
    offences = []
    aliases = {}  # local name -> the public jxent module it stands for
    tree = ast.parse(source)
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("jxent"):
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                private_name = alias.name.startswith("_") and not _is_module(full)
                if private_name and not _is_private_module(node.module) and node.module != own:
                    offences.append(f"{own} imports {full}")
                if not _is_private_module(full):
                    aliases[alias.asname or alias.name] = full
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("jxent") and not _is_private_module(alias.name):
                    aliases[alias.asname or alias.name] = alias.name
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id in aliases
            and node.attr.startswith("_")
            and not node.attr.startswith("__")
            and aliases[node.value.id] != own
        ):
            offences.append(f"{own} uses {aliases[node.value.id]}.{node.attr}")
    return offences


def test_no_module_uses_another_public_modules_underscore_names():
    offences = []
    for path in MODULES:
        own = ".".join(("jxent", *path.relative_to(PACKAGE).with_suffix("").parts)).removesuffix(".__init__")
        offences += _offences(path.read_text(), own)
    assert not offences, "\n".join(offences)


def test_the_boundary_check_finds_offences():
    source = (
        "from jxent.cross_entropy import _integer_kernel\n"
        "from jxent import fused as f\n"
        "from jxent import _rowmath\n"
        "x = f._private + _rowmath.row_stats\n"
    )
    assert _offences(source, "jxent.focal") == [
        "jxent.focal imports jxent.cross_entropy._integer_kernel",
        "jxent.focal uses jxent.fused._private",
    ]


def test_the_package_is_marked_typed_for_type_checkers():
    """PEP 561: ``jxent/py.typed`` exists and the build ships it (package data in pyproject.toml)."""
    import tomllib

    assert (PACKAGE / "py.typed").is_file()
    pyproject = tomllib.loads((PACKAGE.parent / "pyproject.toml").read_text())
    assert "py.typed" in pyproject["tool"]["setuptools"]["package-data"]["jxent"]
