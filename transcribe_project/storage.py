"""Static files: hashed, compressed names once ``collectstatic`` has run; the plain names before it."""

from __future__ import annotations

from whitenoise.storage import CompressedManifestStaticFilesStorage  # type: ignore[import-untyped]


class StaticStorage(CompressedManifestStaticFilesStorage):  # type: ignore[misc]
    """WhiteNoise's manifest storage that falls back to unhashed names while there is no manifest.

    A checkout runs (and its tests pass) without ``collectstatic``; WhiteNoise then serves the apps' own
    files. A deployment runs ``manage.py collectstatic`` once per release and gets cache-forever names.
    """

    def stored_name(self, name: str) -> str:
        """The hashed name from the manifest; the name itself when nothing was collected."""
        if not self.hashed_files:
            return name
        return str(super().stored_name(name))
