"""Downloads that check their checksum and resume where they stopped, on top of ``pooch``.

``pooch.retrieve`` keeps the cache (a file already there with the right hash is returned
without any request), streams to a temporary file, checks the hash and only then moves the
file into place. What it does not do is resume: a broken connection starts the file again.
:class:`ResumableDownloader` (a pooch downloader) keeps the bytes received in
``<file>.part`` next to the target and asks for the rest with an HTTP ``Range`` request, on
the next attempt and on the next call alike.
"""
import re
import warnings
from pathlib import Path
from typing import Optional

from ..errors import DatasetError

PART_SUFFIX = ".part"
CHUNK_BYTES = 1 << 16          # what a broken connection can lose of the last chunk


class ResumableDownloader:
    """A pooch downloader that resumes: bytes go to ``partial`` (kept when the connection
    breaks), later requests ask for ``bytes=<received>-``, and the finished file is handed
    to pooch (which checks the hash) by a rename.

    Example:
        >>> import pooch
        >>> pooch.retrieve(url, known_hash, fname="a.zip", path="cache",
        ...                downloader=ResumableDownloader("cache/a.zip.part"))
    """

    def __init__(self, partial, attempts: int = 3, progress: bool = False,
                 timeout: float = 60.0):
        self.partial = Path(partial)
        self.attempts = max(1, int(attempts))
        self.progress = progress
        self.timeout = timeout

    def __call__(self, url: str, output_file: str, pooch=None, check_only: bool = False):
        import requests

        if check_only:
            return requests.head(url, timeout=self.timeout, allow_redirects=True).ok
        error = None
        for _ in range(self.attempts):
            try:
                if self._request_rest(url):
                    Path(self.partial).replace(output_file)
                    return None
                error = None
            except requests.exceptions.RequestException as failure:
                error = failure
        received = self.partial.stat().st_size if self.partial.exists() else 0
        raise DatasetError(f"downloading {url} stopped after {self.attempts} attempt(s) "
                           f"({error or 'the server sent fewer bytes than announced'}); "
                           f"{received} bytes are kept in {self.partial}. Run the same fetch "
                           "again to resume from there.")

    def _request_rest(self, url: str) -> bool:
        """Ask for the bytes not yet in ``partial`` and append them; True when complete."""
        import requests

        received = self.partial.stat().st_size if self.partial.exists() else 0
        headers = {"Range": f"bytes={received}-"} if received else {}
        with requests.get(url, headers=headers, stream=True, timeout=self.timeout,
                          allow_redirects=True) as response:
            if response.status_code == 416:          # nothing left: the part is the file
                return received > 0
            if 400 <= response.status_code < 500 and response.status_code not in (408, 429):
                raise DatasetError(f"the server answered {response.status_code} "
                                   f"{response.reason} for {url}; check the address (url=..., "
                                   "$XRAYPROTOTYPE_DATA_URL) or try again later.")
            response.raise_for_status()
            resumed = received > 0 and response.status_code == 206
            if not resumed:
                received = 0                         # the server sends the whole file
            expected = _expected_size(response, received)
            self.partial.parent.mkdir(parents=True, exist_ok=True)
            with open(self.partial, "ab" if resumed else "wb") as sink, \
                    _progress_bar(self.progress, expected, received, url) as bar:
                for chunk in response.iter_content(chunk_size=CHUNK_BYTES):
                    sink.write(chunk)
                    bar.update(len(chunk))
        return expected is None or self.partial.stat().st_size >= expected


def _expected_size(response, received: int) -> Optional[int]:
    """The full file's size from Content-Range (a resumed answer) or Content-Length."""
    whole = re.search(r"/(\d+)\s*$", response.headers.get("Content-Range", ""))
    if whole:
        return int(whole.group(1))
    length = response.headers.get("Content-Length")
    return received + int(length) if length is not None else None


def _progress_bar(show: bool, total: Optional[int], initial: int, url: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, unit="B", unit_scale=True, unit_divisor=1024,
                desc=url.rsplit("/", 1)[-1][:40], disable=not show, leave=False)


def download(url: str, folder, file_name: str, known_hash: Optional[str],
             attempts: int = 3, progress: bool = False) -> Path:
    """``folder/file_name``, downloaded from ``url`` unless already there with ``known_hash``
    (``"sha256:..."``, ``"md5:..."``; None: not checked, with a warning naming the SHA-256
    to pin). A mismatch removes the download and raises :class:`DatasetError`.

    Example:
        >>> download("https://host/a.npz", "cache", "a.npz", "md5:28209eda...")
        PosixPath('cache/a.npz')
    """
    import pooch

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / file_name
    downloader = ResumableDownloader(folder / (file_name + PART_SUFFIX), attempts, progress)
    try:
        path = Path(pooch.retrieve(url, known_hash, fname=file_name, path=folder,
                                   downloader=downloader))
    except ValueError as mismatch:
        if isinstance(mismatch, DatasetError):
            raise
        got = re.search(r"but got (\w+)", str(mismatch))
        raise DatasetError(
            f"checksum mismatch for {file_name} downloaded from {url}: expected {known_hash}, "
            f"got {pooch.hashes.hash_algorithm(known_hash)}:{got.group(1) if got else '?'}. "
            f"The download was deleted; nothing was kept in {folder}. The server may have "
            "sent an error page or a changed file: try again later or from another mirror "
            "(url=... / $XRAYPROTOTYPE_DATA_URL); pass known_hash=... only if you have "
            "checked the new file yourself.") from None
    if known_hash is None:
        digest = pooch.file_hash(str(path), alg="sha256")
        warnings.warn(f"{target} was not checked against a published checksum; its SHA-256 "
                      f"is {digest}. Pass known_hash='sha256:{digest}' next time to make sure "
                      "the same file comes back.", stacklevel=3)
    return path
