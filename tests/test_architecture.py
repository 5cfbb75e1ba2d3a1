"""The shape of the code, read from its imports (grimp): no circles, trackers that only take records in, and
commands that nothing below them imports."""

from __future__ import annotations

import grimp
import networkx as nx
import pytest

# What users run: only the command line (and the package that exports it) may import these.
COMMANDS = {
    "loraops.cli": {"loraops.__main__"},
    "loraops.train": {"loraops.cli"},
    "loraops.check": {"loraops.cli"},
    "loraops.eval.evaluate": {"loraops.cli"},
    "loraops.eval.compare": {"loraops.cli", "loraops.publish.gate"},  # the gate is compare's verdict
    "loraops.publish.local": {"loraops.publish"},
    "loraops.publish.hub": {"loraops.publish"},
    "loraops.report": {"loraops.cli"},
    "loraops.remote.actions": {"loraops.remote"},
    "loraops.serve.command": {"loraops.cli"},
    "loraops.chat": {"loraops.cli"},
    "loraops.export.command": {"loraops.cli"},
}
# What the trackers may read: the core records and folders, never a command, eval, publish or the reference.
TRACKING_MAY_IMPORT = {
    "loraops.atomic",
    "loraops.errors",
    "loraops.paths",
    "loraops.records",
    "loraops.runs",
    "loraops.secrets",
}


@pytest.fixture(scope="module")
def graph() -> grimp.ImportGraph:
    return grimp.build_graph("loraops")


def test_no_import_circles(graph: grimp.ImportGraph) -> None:
    edges = nx.DiGraph([(m, d) for m in graph.modules for d in graph.find_modules_directly_imported_by(m)])
    circles = [sorted(c) for c in nx.strongly_connected_components(edges) if len(c) > 1]
    assert circles == []


def test_tracking_is_a_sink(graph: grimp.ImportGraph) -> None:
    inside = graph.find_descendants("loraops.tracking") | {"loraops.tracking"}
    imported = {d for m in inside for d in graph.find_modules_directly_imported_by(m)} - inside
    assert imported <= TRACKING_MAY_IMPORT, imported - TRACKING_MAY_IMPORT
    for forbidden in ("loraops.eval", "loraops.publish", "loraops.reference"):
        assert not graph.chain_exists("loraops.tracking", forbidden, as_packages=True), forbidden


def test_only_the_command_line_imports_commands(graph: grimp.ImportGraph) -> None:
    for command, allowed in COMMANDS.items():
        assert graph.find_modules_that_directly_import(command) <= allowed, command


def test_training_chat_and_serving_share_the_generation_core(graph: grimp.ImportGraph) -> None:
    for user in ("loraops.trainer", "loraops.inference", "loraops.publish.verify"):
        assert not graph.chain_exists(user, "loraops.eval.evaluate"), user
    assert graph.direct_import_exists(importer="loraops.trainer", imported="loraops.eval.scoring")
    assert graph.direct_import_exists(importer="loraops.inference", imported="loraops.loading")
