"""Story Genius render worker: a pgqueuer consumer (see worker/main.py)."""
