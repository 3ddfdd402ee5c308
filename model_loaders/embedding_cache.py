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
    """Tensors stored under JSON-able keys in ``folder`` (created on first store)."""

    def __init__(self, folder):
        self.folder = os.fspath(folder)

    @staticmethod
    def _key_text(key):
        return json.dumps(key, sort_keys=True, ensure_ascii=False, separators=(",", ":"))

    def path_for(self, key):
        digest = hashlib.sha256(self._key_text(key).encode("utf-8")).hexdigest()
        return os.path.join(self.folder, digest + ".safetensors")

    def load(self, key, expected_names):
        """{name: tensor} stored under ``key`` (CPU), or None if absent, unreadable, or not holding exactly
        the tensors ``expected_names``."""
        path = self.path_for(key)
        if not os.path.isfile(path):
            return None
        try:
            with safe_open(path, framework="pt", device="cpu") as f:
                stored_key = (f.metadata() or {}).get(KEY_METADATA)
                if stored_key != self._key_text(key) or set(f.keys()) != set(expected_names):
                    return None
                return {name: f.get_tensor(name) for name in expected_names}
        except Exception as e:  # safetensors raises several types for damaged files
            log.warning("Step-Video: ignoring unreadable text-embedding cache file %s (%s)", path, e)
            return None

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
        except OSError as e:
            log.warning("Step-Video: could not write the text-embedding cache in %s (%s); continuing without it",
                        self.folder, e)
