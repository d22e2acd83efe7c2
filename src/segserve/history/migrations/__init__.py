"""Alembic migrations of the inspection history, shipped in the package so that every install (the bento too)
carries them; ``segserve.history.store.upgrade`` runs them. New revision: ``python -m segserve.history revision
-m "what changes"``."""
