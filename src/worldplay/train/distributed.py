"""Joining a multi-process training run through ``jax.distributed``.

Each process is started with the same command and config; together they train one model, data parallel
over every device of every process. Each process reads its own shard of the training windows (Grain,
by ``jax.process_index()``), the global batch is ``train_<stage>.batch_size`` over all of them, and
checkpoints are written once, by Orbax's multi-host protocol (the coordinator writes the metadata and
each array once). Logs, TensorBoard and the world folder are written by process 0.

Two ways in:

- explicit: ``--coordinator HOST:PORT --num-processes N --process-id I`` on every process;
- a cluster launcher that ``jax.distributed.initialize()`` detects by itself: Slurm (``srun``),
  Open MPI (``mpirun``), or ``JAX_COORDINATOR_ADDRESS`` with ``JAX_NUM_PROCESSES`` and
  ``JAX_PROCESS_ID`` in the environment.
"""

from __future__ import annotations

import os

from worldplay.errors import ConfigError


def launcher_detected() -> str | None:
    """The cluster launcher this process runs under with more than one process, if any."""
    env = os.environ
    if "JAX_COORDINATOR_ADDRESS" in env:
        return "JAX_COORDINATOR_ADDRESS"
    if all(k in env for k in ("SLURM_JOB_ID", "SLURM_NTASKS", "SLURM_PROCID")) and int(env["SLURM_NTASKS"]) > 1:
        return "Slurm"
    if "OMPI_MCA_orte_hnp_uri" in env and int(env.get("OMPI_COMM_WORLD_SIZE", "1")) > 1:
        return "Open MPI"
    return None


def initialize(coordinator: str | None, num_processes: int | None, process_id: int | None) -> bool:
    """Join a multi-process run if asked (flags) or launched so (environment); return whether one was joined.

    Must run before anything touches a JAX device.
    """
    given = {"--coordinator": coordinator, "--num-processes": num_processes, "--process-id": process_id}
    if any(v is not None for v in given.values()):
        missing = [k for k, v in given.items() if v is None]
        if missing:
            raise ConfigError(
                f"{', '.join(missing)}: a multi-process run needs --coordinator HOST:PORT, --num-processes N "
                "and --process-id I on every process"
            )
        assert num_processes is not None and process_id is not None
        if not 0 <= process_id < num_processes:
            raise ConfigError(f"--process-id: {process_id} is not in [0, {num_processes})")
        if ":" not in str(coordinator):
            raise ConfigError(f"--coordinator: expected HOST:PORT (e.g. 10.0.0.1:1234), got {coordinator!r}")
        import jax

        jax.distributed.initialize(coordinator, num_processes=num_processes, process_id=process_id)
        return True
    if launcher_detected() is None:
        return False
    import jax

    jax.distributed.initialize()
    return True
