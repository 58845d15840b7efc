"""Network fusion methods (``stage1``, ``sgdfuse``) registered into :mod:`.methods`.

Each registers a factory and an availability check (its shipped weights exist).
"""
