"""docs/install.md's values reference matches charts/modeldeploy/values.schema.json and values.yaml."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).parents[2]
CHART = ROOT / "charts" / "modeldeploy"


def reference_rows() -> list[str]:
    schema = json.loads((CHART / "values.schema.json").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    rows: list[str] = []

    def walk(props: dict[str, Any], defaults: dict[str, Any], prefix: str) -> None:
        for key, prop in props.items():
            default = defaults.get(key)
            if prop.get("type") == "object" and "properties" in prop:
                walk(prop["properties"], default or {}, f"{prefix}{key}.")
                continue
            kind = prop.get("type", "object")
            if "enum" in prop:
                kind += " (" + " \\| ".join(map(str, prop["enum"])) + ")"
            shown = (
                json.dumps(default)
                if not isinstance(default, dict) or len(json.dumps(default)) < 40
                else "see values.yaml"
            )
            rows.append(f"| `{prefix}{key}` | {kind} | `{shown}` | {prop['description']} |")

    walk(schema["properties"], values, "")
    return rows


def test_install_doc_lists_every_value() -> None:
    doc = (ROOT / "docs" / "install.md").read_text()
    missing = [row for row in reference_rows() if row not in doc]
    assert not missing, "docs/install.md is out of date; expected rows:\n" + "\n".join(missing)


if __name__ == "__main__":
    print("\n".join(reference_rows()))
