"""The user-facing snippets, read from README.md so the tests run exactly what is documented."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"
SECTION = "## Use it with your own app"


def snippets(language: str) -> list[str]:
    """Every ```language block of the README's "Use it with your own app" section."""
    text = README.read_text()
    start = text.index(SECTION)
    end = text.find("\n## ", start + len(SECTION))
    section = text[start:end if end != -1 else None]
    return re.findall(rf"```{language}\n(.*?)```", section, flags=re.DOTALL)


def fastapi_snippet() -> str:
    (code,) = [block for block in snippets("python") if "poolwarden.fastapi" in block]
    return code


def flask_snippet() -> str:
    (code,) = [block for block in snippets("python") if "poolwarden.flask" in block]
    return code


def flask_gunicorn_conf() -> str:
    (code,) = [block for block in snippets("python") if "poolwarden.gunicorn" in block]
    return code


def flask_command() -> str:
    (command,) = [line for block in snippets("sh") for line in block.splitlines()
                  if line.startswith("gunicorn ")]
    return command


def install_command() -> str:
    (command,) = [line for block in snippets("sh") for line in block.splitlines()
                  if "poolwarden[fastapi]" in line]
    return command
