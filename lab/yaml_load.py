"""Loading user YAML safely: libyaml's safe loader when present, duplicate keys rejected, aliases bounded.

    data = load_yaml_text(text, source="experiments/x.yaml")     # -> plain Python objects or LabError

Why not yaml.safe_load: it silently keeps the last of two equal keys, takes minutes on a large file with
the pure-Python parser, and a 2 KB "billion laughs" file of nested aliases expands into more objects
than memory holds as soon as anything walks it. Here the document is composed into a node graph first,
its expanded size is counted (shared alias targets counted once per use, with memoisation, so the count
itself is cheap) and refused past a bound, and only then constructed.
"""
from __future__ import annotations

import yaml

from lab.errors import LabError

Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
# Expanded nodes allowed beyond the nodes written in the file: aliases may reuse anchors a few times, but a
# document that expands to far more than it spells out is refused.
ALIAS_EXPANSION_LIMIT = 100_000
MERGE_TAG = "tag:yaml.org,2002:merge"


def _where(node: yaml.Node) -> str:
    mark = node.start_mark
    return f"line {mark.line + 1}, column {mark.column + 1}" if mark else "somewhere"


def check_nodes(root: yaml.Node, source: str) -> None:
    """Reject duplicate mapping keys and documents whose aliases expand past the limit."""
    expanded: dict[int, int] = {}  # id(node) -> nodes it expands to, aliases followed
    distinct = 0
    # Iterative post-order walk: deep nesting must not hit Python's recursion limit.
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        if id(node) in expanded:
            continue
        if isinstance(node, yaml.ScalarNode):
            expanded[id(node)] = 1
            distinct += 1
            continue
        children = ([c for pair in node.value for c in pair] if isinstance(node, yaml.MappingNode)
                    else list(node.value))
        if not children_done:
            stack.append((node, True))
            stack.extend((c, False) for c in children if id(c) not in expanded)
            continue
        distinct += 1
        expanded[id(node)] = 1 + sum(expanded[id(c)] for c in children)
        if expanded[id(node)] > distinct * 10 + ALIAS_EXPANSION_LIMIT:
            raise LabError(f"{source}: YAML aliases expand to more than {expanded[id(node)]:,} values "
                           f"near {_where(node)}; write the values out instead")
        if isinstance(node, yaml.MappingNode):
            seen: dict[str, yaml.Node] = {}
            for key, _ in node.value:
                if not isinstance(key, yaml.ScalarNode) or key.tag == MERGE_TAG:
                    continue
                if key.value in seen:
                    raise LabError(f"{source}: duplicate key {key.value!r} at {_where(key)} "
                                   f"(first at {_where(seen[key.value])})")
                seen[key.value] = key


def load_yaml_text(text: str, source: str):
    """Parse one YAML document of `text` into Python objects; every failure is a LabError naming `source`."""
    loader = Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        check_nodes(node, source)
        return loader.construct_document(node)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None)
        raise LabError(f"{source}: malformed YAML{where}" + (f" ({problem})" if problem else "")) from None
    except RecursionError:
        raise LabError(f"{source}: YAML nested too deeply") from None
    finally:
        loader.dispose()


def load_yaml_bytes(raw: bytes, source: str):
    """Decode UTF-8 (a BOM allowed) and load; binary or non-UTF-8 input is a LabError, not a traceback."""
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise LabError(f"{source}: not a UTF-8 text file (byte {exc.start}); is it a YAML file?") from None
    if "\x00" in text:
        raise LabError(f"{source}: holds NUL bytes; is it a YAML file?")
    return load_yaml_text(text, source)


def missing_file_message(p, flag: str | None = "--file") -> str:
    """The error of a --file (or, flag None, of a file a field names) that is not a file: a directory says so
    (it read 'does not exist')."""
    head = f"{flag}: " if flag else ""
    return f"{head}{p} is a directory, a file is needed here" if p.is_dir() else f"{head}{p} does not exist"


def load_runs_list(path, what: str) -> list:
    """The `runs:` list of a data file (published kernel timings, sim/validation/*.yaml): LabError naming --file
    when it is missing, the file when it holds no non-empty `runs` list or an id twice."""
    from pathlib import Path

    p = Path(path)
    if not p.is_file():
        raise LabError(missing_file_message(p))
    data = load_yaml_bytes(p.read_bytes(), str(p))
    if not isinstance(data, dict) or not isinstance(data.get("runs"), list) or not data["runs"]:
        raise LabError(f"{p}: runs: a non-empty list of {what} expected")
    ids = [str(run["id"]) for run in data["runs"] if isinstance(run, dict) and "id" in run]
    repeated = sorted({x for x in ids if ids.count(x) > 1})  # a copied run counted twice in every fit and median
    if repeated:
        raise LabError(f"{p}: runs: repeated ids {repeated}")
    return data["runs"]
