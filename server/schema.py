"""The schema's versions, as files: schema.sql (the newest, whole), migrations/NNNN_*.sql (each
takes version NNNN-1 to NNNN) and migrations/baseline/NNNN.sql (schema.sql as released at the
oldest version a database can be upgraded from). What any older version's schema is follows:
the baseline and the steps up to it, which the tests hold equal to each released schema.sql.

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
    """Every version this code knows: `head` (schema.sql), the baseline, the steps between."""

    head: int
    schema_text: str | None  # None in a view cut at an earlier head (up_to)
    steps: dict[int, Step]
    baseline: int
    baseline_text: str

    @classmethod
    def load(cls, migrations_dir: Path = MIGRATIONS_DIR, schema_path: Path = SCHEMA_PATH) -> SchemaFiles:
        schema_text = schema_path.read_text()
        head = version_of(schema_text)
        steps = {step.version: step for step in map(Step.parse, sorted(migrations_dir.glob("*.sql")))}
        baselines = sorted((migrations_dir / "baseline").glob("[0-9][0-9][0-9][0-9].sql"))
        if len(baselines) != 1:
            raise SchemaFilesError("migrations/baseline/ must hold exactly one NNNN.sql")
        baseline = int(baselines[0].stem)
        for version in range(baseline + 1, head + 1):
            if version not in steps:
                raise SchemaFilesError(
                    f"schema.sql is at version {head} but no migrations/{version:04d}_*.sql takes "
                    f"version {version - 1} to {version}"
                )
        if set(steps) - set(range(baseline + 1, head + 1)):
            raise SchemaFilesError(f"a step lies outside versions {baseline + 1} to {head}")
        return cls(head, schema_text, steps, baseline, baselines[0].read_text())

    @property
    def oldest(self) -> int:
        """The oldest version a database can be upgraded from."""
        return self.baseline

    def scripts_at(self, version: int) -> list[str]:
        """SQL that creates `version`'s schema in one transaction: schema.sql for the head, else
        the baseline and the steps up to `version` (a `transaction: off` step's CONCURRENTLY
        dropped: inside a transaction the same objects are built, only with stronger locks)."""
        if version == self.head and self.schema_text is not None:
            return [self.schema_text]
        return [self.baseline_text] + [
            step.text if step.transactional else _CONCURRENTLY.sub("", step.text)
            for step in self.steps_after(self.baseline, until=version)
        ]

    def steps_after(self, version: int, until: int | None = None) -> list[Step]:
        last = self.head if until is None else until
        return [self.steps[v] for v in range(version + 1, last + 1)]

    def up_to(self, version: int) -> SchemaFiles:
        """These files as a release at `version` saw them (to build a database at it)."""
        steps = {v: step for v, step in self.steps.items() if v <= version}
        return SchemaFiles(version, None, steps, self.baseline, self.baseline_text)


_CONCURRENTLY = re.compile(r"\bCONCURRENTLY\b", re.IGNORECASE)
