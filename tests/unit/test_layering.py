"""Design rule 1: the core never imports a chain SDK or relayers/; relayers never import the API
or CLI. Checked on the source (AST), so lazy imports inside functions count too."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CHAIN_SDKS = {"web3", "eth_account", "substrateinterface", "scalecodec", "pytoniq", "pytoniq_core", "pytvm", "tonpy"}
# the composition root: the only core modules allowed to wire chain families in
COMPOSITION_ROOT = {"bridge/node.py", "bridge/cli.py", "bridge/api/wiring.py",
                    "bridge/rotation_cli.py", "bridge/deploy_cli.py"}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
    return out


def _top(names: set[str]) -> set[str]:
    return {n.split(".")[0] for n in names}


def test_core_imports_no_chain_sdk():
    files = sorted((ROOT / "bridge").rglob("*.py"))
    assert len(files) > 10
    offenders = {}
    for f in files:
        bad = _top(_imports(f)) & CHAIN_SDKS
        if bad:
            offenders[str(f.relative_to(ROOT))] = sorted(bad)
    assert offenders == {}, f"core modules import chain SDKs: {offenders}"


def test_only_composition_root_imports_relayers():
    offenders = []
    for f in sorted((ROOT / "bridge").rglob("*.py")):
        rel = str(f.relative_to(ROOT))
        if "relayers" in _top(_imports(f)) and rel not in COMPOSITION_ROOT:
            offenders.append(rel)
    assert offenders == []


def test_relayers_do_not_import_api_or_cli():
    files = sorted((ROOT / "relayers").rglob("*.py"))
    assert files
    for f in files:
        mods = _imports(f)
        bad = [m for m in mods if m.startswith(("bridge.api", "bridge.cli", "bridge.node")) or _top({m}) == {"devnet"}]
        assert bad == [], f"{f.relative_to(ROOT)} imports {bad}"


def test_devnet_stand_ins_stay_out_of_the_runtime():
    """Issue 13: the local-chain stand-ins (anvil / chopsticks launchers, the TON local chain,
    liteserver, toncenter server, TVM emulator, the family dev plug-ins) live in ``devnet/``, not
    in ``relayers/``; only the CLI's ``devnet`` / ``pay`` commands reach them, lazily."""
    stand_ins = {"anvil.py", "chopsticks.py", "devchain.py", "localchain.py", "liteserver.py",
                 "toncenter_server.py", "emulator.py"}
    assert not [str(f.relative_to(ROOT)) for f in (ROOT / "relayers").rglob("*.py") if f.name in stand_ins]
    offenders = [str(f.relative_to(ROOT)) for f in sorted((ROOT / "bridge").rglob("*.py"))
                 if "devnet" in _top(_imports(f)) and str(f.relative_to(ROOT)) != "bridge/cli.py"]
    assert offenders == []


def test_checker_sees_a_violation(tmp_path):
    """The checker itself works: a lazy import inside a function is found."""
    p = tmp_path / "m.py"
    p.write_text("def f():\n    from web3 import AsyncWeb3\n    import pytoniq.liteclient\n")
    assert _top(_imports(p)) & CHAIN_SDKS == {"web3", "pytoniq"}
