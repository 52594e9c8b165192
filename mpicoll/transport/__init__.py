"""Transport: the communicator wrapper every collective runs on.

:class:`Comm` owns a private ``Dup()`` of an MPI communicator, the message tags of the
collectives running on it, and reusable scratch buffers.
"""

from .comm import Comm, as_comm, default_comm
from .scratch import ScratchPool

__all__ = ["Comm", "ScratchPool", "as_comm", "default_comm"]
