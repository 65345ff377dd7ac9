"""Set-of-Mark datasets in object storage: source listing, shard marking, versioned manifests.

Layout under a destination URL:
    marks/<sha256>.jpg, marks/<sha256>.json   content-addressed outputs (same image, same key)
    manifests/<version>.parquet               one row per source image, every version whole
    manifests/_latest                         the name of the newest version (written last)
"""
