"""The schema's versions, as files: schema.sql (the newest, whole), migrations/NNNN_*.sql (each
takes version NNNN-1 to NNNN) and migrations/released/NNNN.sql (each older version's schema.sql,
frozen as it was released, so a database at that version can be checked on its own server).

A step's header says how to run it and what it does to a live database:

    -- locks: ACCESS EXCLUSIVE on schema_version, milliseconds (catalog only)   (required)
    -- backward-compatible: yes    (required: the previous version's code still works after it)
    -- transaction: off            (optional: for CREATE INDEX CONCURRENTLY and the like)
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "MIGRATIONS_DIR",
    "SCHEMA_PATH",
    "SchemaFiles",
    "SchemaFilesError",
    "Step",
    "version_of",
]

ROOT = Path(__file__).resolve().parent.parent
SCHEMA_PATH = ROOT / "schema.sql"
MIGRATIONS_DIR = ROOT / "migrations"

_VERSION_LINE = re.compile(r"^-- schema-version: (\d+)$", re.MULTILINE)
_STEP_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")
_HEADER = re.compile(r"^-- ([a-z-]+): (.+)$")
_YES_NO = {"yes": True, "no": False}


class SchemaFilesError(Exception):
    """schema.sql, a step or a released schema is missing or malformed (a developer's mistake)."""


def version_of(schema_text: str) -> int:
    match = _VERSION_LINE.search(schema_text)
    if match is None:
        raise SchemaFilesError("a schema file has no '-- schema-version: N' line")
    return int(match.group(1))


@dataclass(frozen=True)
class Step:
    version: int
    name: str  # the file name without .sql: 0003_schema_version_history
    text: str
    transactional: bool
    backward_compatible: bool
    locks: str

    @classmethod
    def parse(cls, path: Path) -> Step:
        match = _STEP_NAME.match(path.name)
        if match is None:
            raise SchemaFilesError(f"{path.name}: a step is named NNNN_words.sql")
        text = path.read_text()
        header: dict[str, str] = {}
        key = None
        for line in text.splitlines():
            if not line.startswith("--"):
                break
            field = _HEADER.match(line)
            if field:
                key = field.group(1)
                header[key] = field.group(2).strip()
            elif key is not None and line.startswith("--   "):  # a field's continuation line
                header[key] += " " + line[2:].strip()
            else:
                key = None
        if "locks" not in header:
            raise SchemaFilesError(f"{path.name}: the header must say what the step locks ('-- locks: ...')")
        compatible = _YES_NO.get(header.get("backward-compatible", "").split(" ", 1)[0])
        if compatible is None:
            raise SchemaFilesError(f"{path.name}: the header must say '-- backward-compatible: yes' or 'no'")
        transaction = header.get("transaction", "on")
        if transaction not in ("on", "off"):
            raise SchemaFilesError(f"{path.name}: '-- transaction:' is 'on' or 'off'")
        return cls(
            version=int(match.group(1)),
            name=path.stem,
            text=text,
            transactional=transaction == "on",
            backward_compatible=compatible,
            locks=header["locks"],
        )


@dataclass(frozen=True)
class SchemaFiles:
    """Every version this code knows: `head` (schema.sql), the steps up to it, the released schemas."""

    head: int
    schema_text: str
    steps: dict[int, Step]
    released: dict[int, Path]

    @classmethod
    def load(cls, migrations_dir: Path = MIGRATIONS_DIR, schema_path: Path = SCHEMA_PATH) -> SchemaFiles:
        schema_text = schema_path.read_text()
        head = version_of(schema_text)
        steps = {step.version: step for step in map(Step.parse, sorted(migrations_dir.glob("*.sql")))}
        released = {int(p.stem): p for p in (migrations_dir / "released").glob("[0-9][0-9][0-9][0-9].sql")}
        oldest = min(released, default=head)
        for version in range(oldest + 1, head + 1):
            if version not in steps:
                raise SchemaFilesError(
                    f"schema.sql is at version {head} but no migrations/{version:04d}_*.sql takes "
                    f"version {version - 1} to {version}"
                )
        for version in range(oldest, head):
            if version not in released:
                raise SchemaFilesError(
                    f"migrations/released/{version:04d}.sql is missing: copy schema.sql as it was at "
                    f"version {version} there"
                )
        if max(steps, default=0) > head:
            raise SchemaFilesError(f"a step goes past schema.sql's version {head}")
        return cls(head, schema_text, steps, released)

    @property
    def oldest(self) -> int:
        """The oldest version a database can be upgraded from."""
        return min(self.released, default=self.head)

    def schema_at(self, version: int) -> str:
        """What schema.sql was at `version`."""
        if version == self.head:
            return self.schema_text
        return self.released[version].read_text()

    def steps_after(self, version: int) -> list[Step]:
        return [self.steps[v] for v in range(version + 1, self.head + 1)]
