"""Audio transcription: decode uploads, recognise speech with a pluggable engine, report progress.

The entry point is ``transcription.pipeline.transcribe_file``; ``transcription.audio.is_audio`` sniffs
uploads. Nothing in ``progress`` imports this package.
"""

from __future__ import annotations
