"""A converted folder's names: what `elastic-nas data convert` writes and the readers
(``parquet``, ``stream``) read. Apart from both, so reading a folder never imports the converter
(PIL and all)."""

META_KEY = b"elastic_nas"  # each shard's schema metadata: class names, image size
SUMMARY_FILE = "_dataset.json"  # written last: a folder without it is a convert cut short
INDEX_FILE = "_index.parquet"  # each image's shard, row group and row: what streaming reads by
CORRUPT_FILE = "_corrupt.json"
OLD_METADATA = ("dataset.json", "corrupt.json")  # version 1's names: they made the folder unreadable as parquet
