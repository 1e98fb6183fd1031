"""
core/files.py: writes that nothing can leave half done. Readers see the old file (or directory) or the
new one, never half of one: a kill -9, a full disk or an exception mid-write leaves the previous
version whole. Every file the project writes goes through here (checkpoints, corpora, logs, outputs).
"""
import contextlib
import glob
import os
import shutil
import tempfile


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temp file name beside `path` (same extension, so savefig / np.save see the format);
    when the block has written it, it is renamed onto `path`. On an error it is deleted."""
    d, base = os.path.split(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=d, prefix=f'.{base}.tmp-', suffix=os.path.splitext(base)[1])
    os.close(fd)
    os.chmod(tmp, 0o644)  # mkstemp makes 0600 files; these are meant to be shared
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def atomic_write(path, data):
    """Write `data` (str: UTF-8 text, bytes: binary) to `path` atomically."""
    with atomic_path(path) as tmp:
        with open(tmp, 'wb') as f:
            f.write(data.encode('utf-8') if isinstance(data, str) else data)


@contextlib.contextmanager
def atomic_dir(path):
    """Yield a fresh temp directory beside `path`; when the block has filled it, it takes the place
    of `path`. The swap: the full temp dir is renamed to *.new-* (so a *.new-* is always whole), an
    existing `path` renamed aside to *.old-*, the new one renamed in, the old one deleted. A kill -9
    at any point leaves `path` whole, or no `path` and a whole *.new-* / *.old-* that recover_dir
    (called here first, and by train.py before a resume) puts back."""
    path = os.path.abspath(path)
    parent, name = os.path.split(path)
    os.makedirs(parent, exist_ok=True)
    recover_dir(path)
    tmp = tempfile.mkdtemp(prefix=f'{name}.tmp-', dir=parent)
    try:
        yield tmp
        suffix = os.path.basename(tmp)[len(name) + len('.tmp-'):]
        new = os.path.join(parent, f'{name}.new-{suffix}')
        os.rename(tmp, new)
        tmp = new
        old = None
        if os.path.exists(path):
            old = os.path.join(parent, f'{name}.old-{suffix}')
            os.rename(path, old)
        os.rename(tmp, path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def recover_dir(path):
    """Finish or undo an atomic_dir swap that was killed: a whole *.new-* replaces `path`, else a
    missing `path` gets its *.old-* back; partial *.tmp-* dirs and leftovers are deleted. Only the
    one writer of `path` may call this (it deletes temp dirs). Returns what it did, as a line, or None."""
    path = os.path.abspath(path)
    pre = glob.escape(path)
    news, olds = sorted(glob.glob(pre + '.new-*')), sorted(glob.glob(pre + '.old-*'))
    done = None
    if news or (olds and not os.path.exists(path)):  # a whole *.new-* is the newest version: finish the swap
        src = (news or olds)[0]
        if os.path.exists(path):
            shutil.rmtree(path)
        os.rename(src, path)
        done = f"recovered {path} from {os.path.basename(src)} (a write there was interrupted)"
    for d in glob.glob(pre + '.tmp-*') + glob.glob(pre + '.new-*') + glob.glob(pre + '.old-*'):
        shutil.rmtree(d, ignore_errors=True)
    return done
