"""Device meshes and global batches: every process holds its part of the batch, jit sees one global array."""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P


def data_mesh() -> jax.sharding.Mesh:
    """All devices of all processes on one `data` axis (automatic sharding)."""
    return jax.make_mesh((jax.device_count(),), ("data",), axis_types=(AxisType.Auto,))


def batch_sharding(mesh: jax.sharding.Mesh) -> NamedSharding:
    """The leading (batch) axis split over every mesh axis."""
    return NamedSharding(mesh, P(mesh.axis_names))


def global_batch(local: dict[str, np.ndarray], mesh: jax.sharding.Mesh) -> dict[str, jax.Array]:
    """This process's numeric arrays as the process-local rows of global arrays (strings stay on the host)."""
    sharding = batch_sharding(mesh)
    return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in local.items()
            if np.asarray(v).dtype.kind in "biuf"}


def replicated(mesh: jax.sharding.Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())
