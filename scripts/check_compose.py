"""`make check-compose`: compose.yaml against the Compose specification's JSON schema, every
variable it gives a Carebase process a setting that process reads, every secret it takes from
the env file named in compose.env.example, and the Dockerfile's base pinned by digest.

The schema is the one dclint bundles (tools/compose, pinned in its lock): there is no
container engine here to run `docker compose config`.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft7Validator

from carebase.config import Settings

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = ROOT / "tools" / "compose" / "node_modules" / "dclint" / "schemas" / "compose.schema.json"
IMAGE = "carebase:"
# Read by the OpenTelemetry SDK itself, not by Settings.
SDK_PREFIXES = ("OTEL_",)
# `${NAME}`, `${NAME:?message}`, `${NAME?message}` have no default; `${NAME:-x}` has one.
REFERENCE = re.compile(r"\$\{([A-Z0-9_]+)(:?[-?+])?[^}]*\}")
DIGEST = re.compile(r"@sha256:[0-9a-f]{64}\b")


def schema_problems(compose: dict[str, Any]) -> list[str]:
    validator = Draft7Validator(json.loads(SCHEMA.read_text()))
    return [
        f"compose.yaml {'/'.join(map(str, error.absolute_path)) or '(root)'}: {error.message}"
        for error in sorted(validator.iter_errors(compose), key=lambda e: list(e.absolute_path))
    ]


def settings_problems(compose: dict[str, Any]) -> list[str]:
    known = {name.upper() for name in Settings.model_fields}
    problems = []
    for name, service in compose.get("services", {}).items():
        if not str(service.get("image", "")).startswith(IMAGE):
            continue
        environment = service.get("environment") or {}
        names = (
            environment
            if isinstance(environment, dict)
            else [entry.split("=", 1)[0] for entry in environment]
        )
        problems += [
            f"compose.yaml services/{name}/environment: {variable} is not a Carebase setting"
            for variable in names
            if variable not in known and not variable.startswith(SDK_PREFIXES)
        ]
    return problems


def env_file_problems(text: str, example: str) -> list[str]:
    named = set(re.findall(r"^#?\s*([A-Z0-9_]+)=", example, flags=re.MULTILINE))
    required = {m.group(1) for m in REFERENCE.finditer(text) if m.group(2) in (None, ":?", "?")}
    return [
        f"compose.yaml takes ${{{variable}}} without a default: compose.env.example must name it"
        for variable in sorted(required - named)
    ]


def dockerfile_problems(text: str) -> list[str]:
    problems = []
    arguments = dict(re.findall(r"^ARG\s+([A-Z_]+)=(\S+)", text, flags=re.MULTILINE))
    for line in re.findall(r"^FROM\s+(\S+)", text, flags=re.MULTILINE):
        image = re.sub(r"\$\{?([A-Z_]+)\}?", lambda m: arguments.get(m.group(1), m.group(0)), line)
        if not DIGEST.search(image):
            problems.append(f"Dockerfile: FROM {line} is not pinned by digest")
    return problems


def main() -> int:
    if not SCHEMA.exists():
        print(f"check-compose: {SCHEMA} is missing (run `make check-compose`)", file=sys.stderr)
        return 2
    text = (ROOT / "compose.yaml").read_text()
    compose = yaml.safe_load(text)  # merge keys (`<<: *carebase`) resolve here
    problems = [
        *schema_problems(compose),
        *settings_problems(compose),
        *env_file_problems(text, (ROOT / "compose.env.example").read_text()),
        *dockerfile_problems((ROOT / "Dockerfile").read_text()),
    ]
    for problem in problems:
        print(problem, file=sys.stderr)
    if problems:
        return 1
    services = ", ".join(compose["services"])
    print(f"check-compose: compose.yaml is valid ({services}); the Dockerfile's base is pinned")
    return 0


if __name__ == "__main__":
    sys.exit(main())
