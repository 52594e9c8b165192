"""Will compression pay here? A cost model of mpicoll's all-reduce paths.

- :mod:`.costs`: per path, the rounds, bytes per link class and local work of one call, as a
  function of the rank layout and the array's size (formulas beside each algorithm's name);
- :mod:`.machine`: a fitted :class:`Machine` (latency and bandwidth per link class, reduction and
  matrix speed, each codec's wire ratio and throughput) that turns counts into seconds;
- :mod:`.predict`: whole calls, the path ``auto`` takes, codec choice and break-even sizes;
- :mod:`.probe`: measures a :class:`Machine` under the job's own launcher (``mpicoll-bench probe``).

Everything but :mod:`.probe` is pure arithmetic: ``mpicoll-bench predict`` projects to rank
counts and networks this machine cannot host.
"""

from .costs import Cost, Layout
from .machine import CodecRates, Link, Machine
from .predict import Choice, best_uncompressed, break_even, choose_codec, compressed_seconds

__all__ = ["Choice", "CodecRates", "Cost", "Layout", "Link", "Machine", "best_uncompressed", "break_even",
           "choose_codec", "compressed_seconds"]
