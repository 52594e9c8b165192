"""The mpicoll benchmark suite (installed as ``mpicoll.bench``; run ``python -m mpicoll.bench -h``)."""
