"""Device meshes and global batches: every process holds its part of the batch, jit sees one global array."""

from __future__ import annotations

import jax
import numpy as np
from absl import flags
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P


def _count(devices) -> int:
    return len(devices) if devices is not None else jax.device_count()


def data_mesh(devices=None) -> jax.sharding.Mesh:
    """All devices of all processes (or `devices`) on one `data` axis: eval.py's mesh.

    Args:
      devices: the devices to use, e.g. a TPU topology's for ahead-of-time compilation; None: every device.

    Returns:
      A one-axis mesh (`jax.make_mesh`).
    """
    n = _count(devices)
    return jax.make_mesh((n,), ("data",), axis_types=(AxisType.Auto,), devices=devices)


def train_mesh(fsdp: int = 1, devices=None) -> jax.sharding.Mesh:
    """Devices on (data, fsdp): the batch is split over both axes, parameters over `fsdp` when it is > 1.

    Args:
      fsdp: devices that share each large parameter (FSDP); it must divide the device count.
      devices: the devices to use; None: every device.

    Returns:
      A two-axis mesh (`jax.make_mesh`).

    Raises:
      ValueError: `fsdp` does not map onto the physical axes of a TPU v4/v5p slice.
    """
    n = _count(devices)
    try:
        return jax.make_mesh((n // fsdp, fsdp), ("data", "fsdp"), axis_types=(AxisType.Auto,) * 2, devices=devices)
    except NotImplementedError:  # TPU v4/v5p meshes follow the chips' torus: 4x4x4 takes fsdp 4 or 16, not 8
        raise ValueError(f"train.fsdp={fsdp} does not map onto the physical axes of these {n} TPU chips; use "
                         "a product of some of them (for 4x4x4: 4 or 16)") from None


def fsdp_shardings(tree, mesh: jax.sharding.Mesh, min_size: int = 2 ** 18):
    """The sharding of each array of a tree over the mesh's `fsdp` axis (big_vision's rule).

    An array's largest dimension that the axis divides is split over it; arrays under `min_size` elements, and all
    arrays when the axis has one device, are replicated.

    Args:
      tree: arrays or `jax.ShapeDtypeStruct`s (parameters, optimiser state).
      mesh: a `train_mesh`.
      min_size: the smallest array that is split.

    Returns:
      A tree of `NamedSharding`s shaped as `tree`.
    """
    n = mesh.shape.get("fsdp", 1)

    def rule(leaf):
        if n > 1 and leaf.size >= min_size:
            for dim in sorted(range(leaf.ndim), key=lambda d: -leaf.shape[d]):
                if leaf.shape[dim] % n == 0:
                    return NamedSharding(mesh, P(*[("fsdp" if d == dim else None) for d in range(leaf.ndim)]))
        return NamedSharding(mesh, P())

    return jax.tree.map(rule, tree)


def batch_sharding(mesh: jax.sharding.Mesh) -> NamedSharding:
    """The leading (batch) axis split over every mesh axis.

    Args:
      mesh: any mesh of this module.

    Returns:
      The `NamedSharding` of batches.
    """
    return NamedSharding(mesh, P(mesh.axis_names))


def global_batch(local: dict[str, np.ndarray], mesh: jax.sharding.Mesh) -> dict[str, jax.Array]:
    """This process's numeric arrays as the process-local rows of global arrays (strings stay on the host).

    Args:
      local: this process's batch, numpy arrays of equal leading size.
      mesh: the mesh the step runs on.

    Returns:
      The numeric entries as global `jax.Array`s sharded by `batch_sharding`.
    """
    sharding = batch_sharding(mesh)
    return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in local.items()
            if np.asarray(v).dtype.kind in "biuf"}


def replicated(mesh: jax.sharding.Mesh) -> NamedSharding:
    """A copy on every device.

    Args:
      mesh: any mesh of this module.

    Returns:
      The replicated `NamedSharding`.
    """
    return NamedSharding(mesh, P())


def define_distributed_flags() -> None:
    """The absl flags of a multi-process run; each entry point (eval.py, train.py) defines them once."""
    flags.DEFINE_bool("distributed", False, "start jax.distributed before anything else (one process per host); "
                      "TPU pods, SLURM, Open MPI and Kubernetes are detected, elsewhere set the three flags below")
    flags.DEFINE_string("coordinator_address", None, "host:port of process 0 (implies --distributed)")
    flags.DEFINE_integer("num_processes", None, "how many processes take part")
    flags.DEFINE_integer("process_id", None, "this process's index, 0..num_processes-1")


def initialise_distributed() -> None:
    """jax.distributed.initialize from the flags define_distributed_flags made, when asked for."""
    f = flags.FLAGS
    if f.distributed or f.coordinator_address:
        jax.distributed.initialize(f.coordinator_address, f.num_processes, f.process_id)
