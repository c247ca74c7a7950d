"""Does a run directory still hold exactly the files its manifest lists? Pure: hashes files, talks to no registry.

A manifest (`llmforge.artifacts`) lists the sha256 of every file of its run except itself; the registry pins the
manifest by its own sha256, so one hash pins every file (the manifest is the Merkle root of the run).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from llmforge.artifacts import MANIFEST, sha256_file


@dataclass(frozen=True)
class Drift:
    """How a run directory differs from the file list it was registered with (paths relative to the run dir)."""

    changed: tuple[str, ...] = ()
    missing: tuple[str, ...] = ()
    added: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return not (self.changed or self.missing or self.added)

    def describe(self) -> str:
        """One line per problem, e.g. 'changed: model/model.safetensors'."""
        return "\n".join(f"  {what}: {path}" for what, paths in
                         (("changed", self.changed), ("missing", self.missing), ("added", self.added))
                         for path in paths)


def check_files(run_dir: Path, files: dict[str, str], manifest_sha256: str | None = None) -> Drift:
    """Re-hash every file under `run_dir` against `files` ({relative path: sha256}); `manifest_sha256`, when given,
    is what the manifest itself must hash to (a changed manifest is reported as a changed file)."""
    run_dir = Path(run_dir)
    on_disk = {p.relative_to(run_dir).as_posix(): p for p in sorted(run_dir.rglob("*")) if p.is_file()}
    expected = dict(files)
    if manifest_sha256 is not None:
        expected[MANIFEST] = manifest_sha256
    else:
        on_disk.pop(MANIFEST, None)
    changed = tuple(rel for rel, digest in expected.items() if rel in on_disk and sha256_file(on_disk[rel]) != digest)
    missing = tuple(rel for rel in expected if rel not in on_disk)
    added = tuple(rel for rel in on_disk if rel not in expected)
    return Drift(changed, missing, added)
