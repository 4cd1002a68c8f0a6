"""Create or rotate the cluster key file on the controller; never print a key.

usage: make_key.py PATH [rotate]
Without rotate: create PATH (32 random bytes as hex, mode 0600) unless it exists; prints
"created" or "exists". With rotate: the new key becomes the first line and the old first line
the second (previous key); prints "rotated". Refuses a file that others may read or write.
"""

import os
import stat
import sys


def main() -> int:
    path, rotate = sys.argv[1], sys.argv[2:] == ["rotate"]
    os.makedirs(os.path.dirname(path) or ".", mode=0o700, exist_ok=True)
    old = None
    try:
        info = os.stat(path)
    except FileNotFoundError:
        info = None
    if info is not None:
        if stat.S_IMODE(info.st_mode) & 0o037:
            print(f"{path}: others may read or write it (chmod 0600 {path})", file=sys.stderr)
            return 1
        if not rotate:
            print("exists")
            return 0
        with open(path, encoding="ascii") as handle:
            lines = [line.strip() for line in handle if line.strip() and not line.startswith("#")]
        old = lines[0] if lines else None
    text = os.urandom(32).hex() + "\n" + (old + "\n" if old else "")
    temp = f"{path}.new"
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temp, path)
    print("rotated" if rotate and info is not None else "created")
    return 0


if __name__ == "__main__":
    sys.exit(main())
