"""Every public verb of the three facades documents itself in the house style (Google style, as
``facade_settings.py``): an ``Args:`` section naming each parameter when it takes any, a
``Returns:`` section when it returns a value, and an ``Example:`` section with ``>>> `` lines.

A verb is a public method of ``prototype``, ``compare`` or ``ensemble`` (inherited ones
included) whose name starts with an upper-case letter or with ``update_``, ``optimizer_``,
``lr_``, ``loss_`` or ``apply_``. Nothing here trains or imports a framework.
"""
import ast
import inspect
import re
import textwrap

import pytest

from xrayprototype import compare, ensemble, prototype

FACADES = (prototype, compare, ensemble)
PREFIXES = ("update_", "optimizer_", "lr_", "loss_", "apply_")


def is_verb(name: str) -> bool:
    return name[:1].isupper() or name.startswith(PREFIXES)


def verbs(cls):
    return sorted(name for name, _ in inspect.getmembers(cls, inspect.isfunction)
                  if is_verb(name))


VERBS = [(cls, name) for cls in FACADES for name in verbs(cls)]


def section(doc: str, title: str) -> str:
    """The body of the Google-style section ``title:`` (its more indented lines), or ""."""
    lines = doc.splitlines()
    for start, line in enumerate(lines):
        if line.strip() == f"{title}:":
            indent = len(line) - len(line.lstrip())
            body = []
            for following in lines[start + 1:]:
                if following.strip() and len(following) - len(following.lstrip()) <= indent:
                    break
                body.append(following)
            return "\n".join(body).strip("\n")
    return ""


def function_node(function) -> ast.FunctionDef:
    node = ast.parse(textwrap.dedent(inspect.getsource(function))).body[0]
    assert isinstance(node, ast.FunctionDef)
    return node


def returns_a_value(node: ast.FunctionDef) -> bool:
    """A non-None return annotation, or ``return <value>`` in the body (not in nested
    functions, lambdas or classes)."""
    annotation = node.returns
    if annotation is not None and not (isinstance(annotation, ast.Constant)
                                       and annotation.value is None):
        return True
    pending = list(node.body)
    while pending:
        child = pending.pop()
        if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)):
            continue
        if isinstance(child, ast.Return) and child.value is not None:
            return True
        pending.extend(ast.iter_child_nodes(child))
    return False


def parameters(function):
    return [p for p in inspect.signature(function).parameters.values() if p.name != "self"]


def test_the_verbs_are_found():
    """The check below is not vacuous: the well-known verbs of each facade are collected."""
    found = {(cls.__name__, name) for cls, name in VERBS}
    for cls, name in [(prototype, "Prototype"), (prototype, "Train"),
                      (prototype, "Analyse_Learning_Rates"), (prototype, "update_batch_size"),
                      (prototype, "optimizer_adam"), (prototype, "lr_cosine"),
                      (prototype, "loss_focal"), (prototype, "apply_random_rotation"),
                      (compare, "Generate_Statistics"), (ensemble, "Tune_Weights"),
                      (ensemble, "update_weights")]:
        assert (cls.__name__, name) in found
    assert not any(name.startswith("_") for _, name in VERBS)


def test_the_section_reader_and_return_detection():
    doc = "Summary.\n\nArgs:\n    x: one.\n        more.\n\nReturns:\n    two.\n\nExample:\n" \
          "    >>> f(1)\nTrailing paragraph."
    assert section(doc, "Args") == "    x: one.\n        more."
    assert section(doc, "Returns") == "    two."
    assert section(doc, "Example") == "    >>> f(1)"
    assert section(doc, "Raises") == ""

    def nested_only(self, v) -> None:
        def inner():
            return 1
        return

    def annotated(self) -> dict:
        pass

    def plain(self):
        return {"a": 1}

    assert not returns_a_value(function_node(nested_only))
    assert returns_a_value(function_node(annotated))
    assert returns_a_value(function_node(plain))


@pytest.mark.parametrize("cls, name", VERBS, ids=[f"{c.__name__}.{n}" for c, n in VERBS])
def test_verb_docstring_has_args_returns_and_example(cls, name):
    function = getattr(cls, name)
    doc = inspect.getdoc(function) or ""
    problems = []

    example = section(doc, "Example")
    if not re.search(r"^\s*>>> \S", example, re.M):
        problems.append("no 'Example:' section with '>>> ' lines")

    params = parameters(function)
    if params:
        args = section(doc, "Args")
        if not args:
            problems.append("no 'Args:' section")
        for param in params:
            if not re.search(rf"^\s*\**{param.name}( \([^)]*\))?:", args, re.M):
                problems.append(f"parameter {param.name!r} not described under 'Args:'")

    if returns_a_value(function_node(function)) and not section(doc, "Returns"):
        problems.append("returns a value but has no 'Returns:' section")

    assert not problems, f"{cls.__name__}.{name}: " + "; ".join(problems)
