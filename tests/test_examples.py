"""The docstring examples and the README's synthetic quick start run as written."""

import doctest
import re
from pathlib import Path

import pytest

import diva_jax._derivative

README = Path(__file__).resolve().parents[1] / "README.md"


def test_docstring_examples():
    result = doctest.testmod(diva_jax._derivative, raise_on_error=False)
    assert result.attempted > 0 and result.failed == 0


def test_readme_python_snippets():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    if not blocks:
        pytest.fail("README has no python example")
    for block in blocks:
        if "# not run in tests" in block:
            continue
        exec(compile(block, str(README), "exec"), {})
