"""Every public name explains itself: a docstring on each module, class, function and public
method of the package (what help() shows), and a stub for each native name."""

from __future__ import annotations

import inspect
from pathlib import Path

import tapedeck
import tapedeck.cache
import tapedeck.compat
import tapedeck.compat.alicatlib
import tapedeck.compat.dtollib
import tapedeck.errors

MODULES = [tapedeck, tapedeck.cache, tapedeck.compat.alicatlib, tapedeck.compat.dtollib, tapedeck.errors]


def test_every_public_name_has_a_docstring() -> None:
    missing = []
    for module in [*MODULES, tapedeck.compat]:
        if not (module.__doc__ or "").strip():
            missing.append(module.__name__)
    for module in MODULES:
        for name in module.__all__:
            obj = getattr(module, name)
            if inspect.ismodule(obj):
                continue
            if not (obj.__doc__ or "").strip():
                missing.append(f"{module.__name__}.{name}")
            if inspect.isclass(obj) and not issubclass(obj, BaseException):
                for attr, member in vars(obj).items():
                    if attr.startswith("_") or not (inspect.isfunction(member) or isinstance(member, property)):
                        continue
                    if not (member.__doc__ or "").strip():
                        missing.append(f"{module.__name__}.{name}.{attr}")
    assert missing == []


def test_the_stubs_name_every_native_class_and_function() -> None:
    stub = (Path(tapedeck.__file__).parent / "_tapedeck.pyi").read_text()
    native = [n for n in dir(tapedeck._tapedeck) if not n.startswith("_")]
    assert native
    missing = [n for n in native if f"class {n}" not in stub and f"def {n}(" not in stub]
    assert missing == []
    assert (Path(tapedeck.__file__).parent / "py.typed").exists()
