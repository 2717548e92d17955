"""Password hashing (argon2id) and the password policy."""
from __future__ import annotations

import os
import threading
from contextlib import contextmanager
from typing import Iterator

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from zxcvbn import zxcvbn
from zxcvbn.matching import RANKED_DICTIONARIES

MIN_LENGTH = 8
MAX_LENGTH = 128
# zxcvbn's own cap; longer passwords are judged on their first 72 characters
_ZXCVBN_MAX = 72

# OWASP's argon2id parameters: 19 MiB, 2 passes, 1 lane (~19 ms a verify here,
# against ~120 ms for the library defaults).
hasher = PasswordHasher(memory_cost=19456, time_cost=2, parallelism=1)

# argon2 is memory-hard: more 19 MiB working sets in flight than there are cores only
# evict each other from the CPU caches, so hashes wait for one of a core's worth of
# slots. A process has its own slots until `share_hashing_slots` gives it the ones all of
# gunicorn's workers share (web/gunicorn_conf.py): then the limit holds however the
# client connections happen to spread over the workers.
CORES = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
_slots = threading.BoundedSemaphore(CORES)
# A worker killed mid-hash never gives its shared slot back; rather than let such a lost
# slot stall sign-ins, a hash that waited this long goes ahead without one.
_SLOT_WAIT_SECONDS = 2.0

# Verified when the email is unknown, so that answer takes as long as a wrong password.
_DUMMY_HASH = hasher.hash("not a real password, only spends the same time")


def share_hashing_slots(slots) -> None:
    """Take hashing slots shared with other processes (a semaphore of CORES)."""
    global _slots
    _slots = slots


@contextmanager
def _hashing_slot() -> Iterator[None]:
    acquired = _slots.acquire(timeout=_SLOT_WAIT_SECONDS)
    try:
        yield
    finally:
        if acquired:
            _slots.release()


def hash_password(password: str) -> str:
    with _hashing_slot():
        return hasher.hash(password)


def verify_password(stored_hash: str | None, password: str) -> bool:
    """True when `password` matches `stored_hash`; with no hash, spends the same time and fails."""
    try:
        with _hashing_slot():
            return hasher.verify(stored_hash or _DUMMY_HASH, password) and stored_hash is not None
    except (VerificationError, InvalidHashError):
        return False


def needs_rehash(stored_hash: str) -> bool:
    return hasher.check_needs_rehash(stored_hash)


def _is_common_word(password: str) -> str | None:
    """The name of the zxcvbn frequency list that has the whole password as an entry."""
    lowered = password.lower()
    for list_name, ranked in RANKED_DICTIONARIES.items():
        if lowered in ranked:
            return list_name.replace("_", " ")
    return None


def password_problem(password: str, user_inputs: list[str] | None = None) -> str | None:
    """Why `password` is not acceptable (ASVS 6.2.4), or None when it is."""
    if not MIN_LENGTH <= len(password) <= MAX_LENGTH:
        return f"Password must be {MIN_LENGTH} to {MAX_LENGTH} characters."
    common_list = _is_common_word(password)
    if common_list:
        return f"This password is too common (it appears in a list of {common_list}). Choose another."
    result = zxcvbn(password[:_ZXCVBN_MAX], user_inputs=[u for u in user_inputs or [] if u])
    if result["score"] == 0:
        warning = result["feedback"].get("warning") or "It would be guessed almost at once."
        return f"This password is too easy to guess: {warning.rstrip('.')}. Add another word or two."
    return None
