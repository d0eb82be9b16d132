"""Our TLS identity per connection: read once, read again only when its file changed."""

from __future__ import annotations

import os

from ped.tls.certs import IDENTITY_FILE, Identity, ensure_identity, load_identity

#: identity file -> (its stat key, the Identity read from it).
_IDENTITIES: dict[str, tuple[tuple[int, ...], Identity]] = {}


def current_identity(home_dir: os.PathLike[str] | str, common_name: str) -> Identity:
    """`ensure_identity`, but read again only when the file changed (`identity_of_file`).

    For a daemon that needs its identity per connection (pedserver dials a new spare
    for every peer link): parsing the key and checking it against the certificate each
    time costs more CPU than the rest of the dial around the TLS handshake.
    """
    path = os.path.join(os.fspath(home_dir), IDENTITY_FILE)
    if not os.path.exists(path):
        return ensure_identity(home_dir, common_name)
    return identity_of_file(path)


def identity_of_file(path: os.PathLike[str] | str) -> Identity:
    """`load_identity` of *path*'s folder, re-read only when the file changed.

    The key is the file's inode, size, times, mode and owner: an atomic replace
    (`certificate regen`), an edit or a chmod re-reads it, and with it re-runs every check
    `load_identity` makes (key matches certificate, not readable by others).
    """
    path = os.fspath(path)
    try:
        st = os.stat(path)
    except OSError:
        _IDENTITIES.pop(path, None)
        return load_identity(os.path.dirname(path))  # raises the clear error
    key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_mode, st.st_uid)
    hit = _IDENTITIES.get(path)
    if hit is not None and hit[0] == key:
        return hit[1]
    identity = load_identity(os.path.dirname(path))
    _IDENTITIES[path] = (key, identity)
    return identity
