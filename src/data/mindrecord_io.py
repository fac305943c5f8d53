"""MindRecord files of a LibriMix split: schema, writing with FileWriter, decoding rows.

One row per mixture (C = n_src, T = length in samples):
    mixture_id  string   the LibriMix mixture_ID (indexed)
    length      int64    T
    mixture     bytes    T samples
    sources     bytes    C x T samples, source 1 first
Samples are stored as int16 when every file of the split is 16-bit PCM at the target rate (the
LibriMix case): soundfile reads such a file as float32 = int16 / 32768, exactly, so decoding gives
bit-identical values at half the size of float32. Otherwise (24-bit or float WAVs, or resampled
audio) they are stored as the float32 that soundfile (and the resampler) returned.
"""
import contextlib
import errno
import os

import numpy as np

SCHEMA = {
    "mixture_id": {"type": "string"},
    "length": {"type": "int64"},
    "mixture": {"type": "bytes"},
    "sources": {"type": "bytes"},
}
COLUMNS = ["mixture_id", "mixture", "sources"]
ROWS_PER_WRITE = 64  # rows handed to FileWriter per call (FileWriter spreads each call over the shards)
_DTYPES = {"int16": np.int16, "float32": np.float32}


def mindrecord_file_names(name, shards):
    """Base names of the data files FileWriter makes for `name` with `shards` shards."""
    return [name] if shards == 1 else [f"{name}{i}" for i in range(shards)]


def page_and_header_size(max_row_bytes, total_bytes, shards):
    """FileWriter page and header sizes for rows of up to `max_row_bytes`.

    A row must fit in one page and each page is written whole, so pages are about 8 rows (at least
    1 MB; MindRecord's default of 32 MB would make a small split mostly padding). The header lists
    the pages: 1 kB per page is ample (measured: ~1500 pages need more than 64 kB).
    """
    def pow2(n):
        return 1 << int(np.ceil(np.log2(max(n, 1))))
    page = min(max(pow2(8 * max_row_bytes), 1 << 20), 1 << 28)
    pages = total_bytes / shards / page + 4
    header = min(max(pow2(64 * 1024 + 1024 * pages), 1 << 16), 1 << 27)
    return page, header


def pipeline_detail(err):
    """The message of a MindSpore data error without its banners and C++ stack: the text of its
    "[ERROR]" line (e.g. "No free disk to be used while writing mindrecord files, ...")."""
    for line in str(err).splitlines():
        if line.startswith("[ERROR]"):
            return line.replace("[ERROR]", "", 1).strip()
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return lines[0] if lines else type(err).__name__


@contextlib.contextmanager
def _writing(path):
    """MindSpore's MindRecord write errors as an OSError naming `path` (ENOSPC for a full disk)."""
    try:
        yield
    except RuntimeError as err:
        detail = pipeline_detail(err)
        code = errno.ENOSPC if "free disk" in detail else errno.EIO
        raise OSError(code, f"{os.strerror(code)} ({detail})", path) from None


class SplitWriter:
    """Writes the rows of one split into `<folder>/<name>` (+ shard suffixes) with FileWriter.

    Rows are buffered and written ROWS_PER_WRITE at a time, so memory stays bounded.
    Args:
        max_row_bytes, total_bytes: the largest row and the sum of all rows (samples only), to
            size the pages.
    """

    def __init__(self, folder, name, shards, encoding, max_row_bytes, total_bytes):
        from mindspore.mindrecord import FileWriter  # loaded only when MindRecord is written
        self.files = mindrecord_file_names(name, shards)
        self.encoding = encoding
        self.path = os.path.join(folder, name)
        self._writer = FileWriter(self.path, shard_num=shards, overwrite=True)
        page, header = page_and_header_size(max_row_bytes + 4096, total_bytes, shards)
        self._writer.set_page_size(page)
        self._writer.set_header_size(header)
        self._writer.add_schema(SCHEMA, "librimix mixture and its sources")
        self._writer.add_index(["mixture_id"])
        self._rows = []

    def add(self, mixture_id, mixture, sources):
        """mixture [T] and sources [C, T], int16 or float32 as `encoding` says."""
        dtype = _DTYPES[self.encoding]
        self._rows.append({
            "mixture_id": mixture_id,
            "length": int(mixture.shape[-1]),
            "mixture": np.ascontiguousarray(mixture, dtype).tobytes(),
            "sources": np.ascontiguousarray(sources, dtype).tobytes(),
        })
        if len(self._rows) >= ROWS_PER_WRITE:
            self._flush()

    def _flush(self):
        if self._rows:
            with _writing(self.path):
                self._writer.write_raw_data(self._rows)
            self._rows = []

    def commit(self):
        self._flush()
        with _writing(self.path):
            self._writer.commit()


def read_order(files, ids):
    """Position in `ids` of each row, in the order MindDataset reads `files` (sequentially).

    Reads only the id column. Raises ValueError when the rows are not exactly `ids`.
    """
    import mindspore.dataset as ds
    data = ds.MindDataset(files, columns_list=["mixture_id"], shuffle=False)
    position = {mid: i for i, mid in enumerate(ids)}
    order = [position.get(str(row[0]), -1)
             for row in data.create_tuple_iterator(output_numpy=True, num_epochs=1)]
    if sorted(order) != list(range(len(ids))):
        raise ValueError(f"{files[0]}: rows read back do not match the {len(ids)} mixtures written")
    return order


def decode(raw, encoding):
    """Samples of a `bytes` column (a numpy |S array or bytes) as float32 [n].

    int16 is scaled by 1/32768 (exact), which is how soundfile reads 16-bit PCM as float32.
    """
    values = np.frombuffer(raw, dtype=_DTYPES[encoding])
    if encoding == "int16":
        return values.astype(np.float32) * np.float32(1.0 / 32768.0)
    return values.copy()
