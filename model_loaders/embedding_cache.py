"""A disk cache of text-encoder outputs, so a repeated prompt never loads the 20B Step-LLM again.

One safetensors file per cache entry, named by the SHA-256 of its key. A key is a JSON-able dict
(prompt text, lengths, dtypes and the identity of the encoder files, see :func:`files_identity`);
the key is also stored in the file's metadata and compared on read, so a hash collision or a file
from another format version is a miss, never a wrong answer. Unreadable or damaged files are misses
too (and are overwritten by the next store); a cache folder that cannot be written only logs a warning.
"""

import hashlib
import json
import logging
import os
import tempfile

from safetensors import safe_open
from safetensors.torch import save_file

log = logging.getLogger(__name__)

KEY_METADATA = "stepvideo_cache_key"
SUFFIX = ".safetensors"
DEFAULT_LIMIT_MB = 2048  # ~500 prompts of the real encoders (about 4 MB each)


def files_identity(paths):
    """[path, size, mtime_ns] of every file under ``paths`` (files or folders, None skipped), sorted.

    Identifies encoder weights and tokenizers by what the file system says about them, without reading
    them: a replaced or re-downloaded file changes its size or modification time. Hidden files and
    folders (download-tool bookkeeping such as ``.cache/``) are left out.
    """
    found = set()
    for path in paths:
        if path is None:
            continue
        path = os.path.abspath(os.fspath(path))
        if os.path.isdir(path):
            for root, folders, names in os.walk(path):
                folders[:] = [f for f in folders if not f.startswith(".")]
                found.update(os.path.join(root, name) for name in names if not name.startswith("."))
        elif os.path.exists(path):
            found.add(path)
    identity = []
    for file in sorted(found):
        stat = os.stat(file)
        identity.append([file, stat.st_size, stat.st_mtime_ns])
    return identity


class EmbeddingCache:
    """Tensors stored under JSON-able keys in ``folder`` (created on first store), at most ``limit_bytes``
    of files (least recently used entries evicted; None = no limit)."""

    def __init__(self, folder, limit_bytes=DEFAULT_LIMIT_MB * 1024 ** 2):
        self.folder = os.fspath(folder)
        self.limit_bytes = limit_bytes

    @staticmethod
    def _key_text(key):
        return json.dumps(key, sort_keys=True, ensure_ascii=False, separators=(",", ":"))

    def path_for(self, key):
        digest = hashlib.sha256(self._key_text(key).encode("utf-8")).hexdigest()
        return os.path.join(self.folder, digest + SUFFIX)

    def load(self, key, expected):
        """{name: tensor} stored under ``key`` (CPU), or None if absent, unreadable, or not holding exactly
        the tensors of ``expected`` ({name: (shape tuple, torch dtype)}) with those shapes and dtypes."""
        path = self.path_for(key)
        if not os.path.isfile(path):
            return None
        try:
            with safe_open(path, framework="pt", device="cpu") as f:
                stored_key = (f.metadata() or {}).get(KEY_METADATA)
                if stored_key != self._key_text(key):
                    return None
                tensors = {name: f.get_tensor(name) for name in expected if name in f.keys()}
                extra = set(f.keys()) - set(expected)
        except Exception as e:  # safetensors raises several types for damaged files
            log.warning("Step-Video: ignoring unreadable text-embedding cache file %s (%s)", path, e)
            return None
        problem = _layout_problem(tensors, extra, expected)
        if problem:
            log.warning("Step-Video: text-embedding cache file %s does not fit the encoders (%s); recomputing it",
                        path, problem)
            return None
        _touch(path)
        return tensors

    def store(self, key, tensors):
        """Write {name: tensor} under ``key`` atomically (a temporary file renamed into place)."""
        try:
            os.makedirs(self.folder, exist_ok=True)
            handle, temporary = tempfile.mkstemp(dir=self.folder, suffix=".tmp")
            os.close(handle)
            try:
                save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, temporary,
                          metadata={KEY_METADATA: self._key_text(key)})
                os.replace(temporary, self.path_for(key))
            finally:
                if os.path.exists(temporary):
                    os.remove(temporary)
            self.evict(keep=self.path_for(key))
        except OSError as e:
            log.warning("Step-Video: could not write the text-embedding cache in %s (%s); continuing without it",
                        self.folder, e)

    def evict(self, keep=None):
        """Delete the least recently used entries until the folder's entries fit ``limit_bytes`` (``keep``,
        the entry just written, stays even if it alone is larger). Returns the deleted paths."""
        if self.limit_bytes is None:
            return []
        entries = []
        for name in os.listdir(self.folder):
            if name.endswith(SUFFIX):
                path = os.path.join(self.folder, name)
                stat = os.stat(path)
                entries.append((stat.st_mtime_ns, stat.st_size, path))
        total = sum(size for _, size, _ in entries)
        deleted = []
        for _, size, path in sorted(entries):
            if total <= self.limit_bytes:
                break
            if path == keep:
                continue
            os.remove(path)
            total -= size
            deleted.append(path)
        if deleted:
            log.info("Step-Video: text-embedding cache over %d MB; deleted the %d least recently used entries",
                     self.limit_bytes // 1024 ** 2, len(deleted))
        return deleted


def _touch(path):
    """Mark a cache entry as just used (its modification time orders the evictions)."""
    try:
        os.utime(path)
    except OSError:
        pass


def _layout_problem(tensors, extra, expected):
    """What differs between the tensors read and ``expected`` ({name: (shape, dtype)}), or None."""
    problems = [f"no {name!r}" for name in expected if name not in tensors]
    problems += [f"an unexpected {name!r}" for name in sorted(extra)]
    for name, (shape, dtype) in expected.items():
        if name in tensors and (tuple(tensors[name].shape) != tuple(shape) or tensors[name].dtype != dtype):
            found = tensors[name]
            problems.append(f"{name} is {tuple(found.shape)} {found.dtype}, expected {tuple(shape)} {dtype}")
    return "; ".join(problems) or None
