"""Every public function and class of ``qmp_envs`` and ``qmp_wrappers`` (what the packages
export and what the API reference, docs/api, renders) documents its arguments (``Args:``), what
it returns (``Returns:`` / ``Yields:``) and, where its own body raises, the errors
(``Raises:``), Google style.

What is checked, honestly: the sections' presence, from the signatures and the source; not
that their text is right. Errors raised only inside helpers are not seen by the Raises check.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import re
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import qmp_envs
import qmp_wrappers
import qmp_wrappers.vector

DOCS = Path(__file__).resolve().parents[2] / "docs"
sys.path[:0] = [str(DOCS), str(DOCS / "_ext")]

import qmp_docs  # noqa: E402

PACKAGES = ("qmp_envs", "qmp_wrappers")


def exported() -> Iterator[tuple[str, Any]]:
    """The exported names: ``__all__`` of both packages and the vector wrapper."""
    for package in (qmp_envs, qmp_wrappers):
        for name in package.__all__:
            obj = getattr(package, name)
            if inspect.isfunction(obj) or inspect.isclass(obj):
                yield f"{package.__name__}.{name}", obj
    yield "qmp_wrappers.vector.QMPBehaviorWrapper", qmp_wrappers.vector.QMPBehaviorWrapper


def rendered() -> Iterator[tuple[str, Any]]:
    """The public functions and classes defined in the modules that docs/api renders."""
    pages = "".join(page.read_text() for page in (DOCS / "api").glob("*.md"))
    for module_name in re.findall(r"automodule:: ((?:qmp_envs|qmp_wrappers)\.\w+)", pages):
        module = importlib.import_module(module_name)
        for name, obj in vars(module).items():
            defined_here = getattr(obj, "__module__", None) == module_name
            if not name.startswith("_") and defined_here:
                if inspect.isfunction(obj) or inspect.isclass(obj):
                    yield f"{module_name}.{name}", obj


def documented_callables() -> Iterator[tuple[str, Any]]:
    """The exported and rendered functions and classes, and the public methods the classes
    define or inherit from a class of our packages (reset and step included), each method
    named once, by the class that defines it."""
    for qualname, obj in [*exported(), *rendered()]:
        yield qualname, obj
        if not inspect.isclass(obj):
            continue
        for klass in obj.__mro__:
            if not klass.__module__.startswith(PACKAGES):
                continue
            for name, member in vars(klass).items():
                if not name.startswith("_") and inspect.isfunction(member):
                    yield f"{klass.__module__}.{klass.__qualname__}.{name}", member


def takes_arguments(obj: Any) -> bool:
    if inspect.isclass(obj) and getattr(obj, "_is_protocol", False):
        return False  # a protocol is not constructed
    try:
        parameters = inspect.signature(obj).parameters
    except ValueError:
        return False
    return any(name not in ("self", "cls") for name in parameters)


def returns_something(obj: Any) -> bool:
    if inspect.isclass(obj):
        return False
    annotation = inspect.signature(obj).return_annotation
    return annotation not in (None, "None", inspect.Signature.empty)


def fields_documented_one_by_one(obj: Any) -> bool:
    """A dataclass whose every field has a docstring of its own (autodoc renders them)."""
    if not dataclasses.is_dataclass(obj):
        return False
    docs = qmp_docs.attribute_docstrings(obj)
    return all(docs.get(field.name) for field in dataclasses.fields(obj))


def own_source(obj: Any) -> str:
    """The body of a function, or a class's own source without its methods' bodies (a
    class's ``Raises:`` is about constructing it: ``__init__`` and ``__post_init__``)."""
    if not inspect.isclass(obj):
        return textwrap.dedent(inspect.getsource(obj))
    methods = [vars(obj)[name] for name in ("__init__", "__post_init__") if name in vars(obj)]
    # Written in the class body, not put there by a library (typing's for a protocol).
    ours = [f for f in methods if f.__qualname__.startswith(obj.__qualname__ + ".")]
    return "".join(source_or_nothing(f) for f in ours)


def source_or_nothing(function: Any) -> str:
    try:
        return textwrap.dedent(inspect.getsource(function))
    except OSError:  # generated code (a dataclass's __init__) has no source
        return ""


def missing_sections(obj: Any) -> list[str]:
    # Its own docstring: the API reference does not inherit docstrings (docs/conf.py).
    doc = inspect.cleandoc(obj.__doc__ or "")
    missing = []
    if not doc:
        return ["a docstring"]
    if (
        takes_arguments(obj)
        and not re.search(r"^(Args|Attributes):$", doc, re.M)
        and not fields_documented_one_by_one(obj)
    ):
        missing.append("Args:")
    if returns_something(obj) and not re.search(r"^(Returns|Yields):$", doc, re.M):
        missing.append("Returns:")
    code = own_source(obj)
    body = code.split('"""', 2)[-1] if code.count('"""') >= 2 else code
    if re.search(r"^\s*raise \w", body, re.M) and not re.search(r"^Raises:$", doc, re.M):
        missing.append("Raises:")
    return missing


CALLABLES = dict(documented_callables())


def test_the_check_sees_the_exports():
    assert "qmp_envs.evaluate_policy" in CALLABLES
    assert "qmp_wrappers.QMPBehaviorWrapper" in CALLABLES
    assert "qmp_wrappers.switch.QSwitchControls.selection_matrix" in CALLABLES  # inherited
    assert "qmp_envs.multitask.MultiTaskEnv.step" in CALLABLES
    assert "qmp_wrappers.switch.SwitchOptions" in CALLABLES  # rendered, not exported
    assert "qmp_envs.validation.integer" in CALLABLES
    assert len(CALLABLES) > 100


def test_the_check_finds_a_missing_section():
    def undocumented(env: Any, steps: int) -> int:
        """Steps ``env``."""
        if steps < 0:
            raise ValueError("negative")
        return steps

    assert missing_sections(undocumented) == ["Args:", "Returns:", "Raises:"]


@pytest.mark.parametrize("qualname", sorted(CALLABLES))
def test_public_api_documents_args_returns_and_raises(qualname):
    missing = missing_sections(CALLABLES[qualname])
    assert not missing, f"{qualname}'s docstring lacks {', '.join(missing)}"
