#!/usr/bin/env bash
# One composed rlvr config inside a SLURM allocation, for users who prefer plain sbatch to
# `python -m rlvr.run -m hydra/launcher=slurm ...`. Edit the #SBATCH lines for your site, then:
#   sbatch launchers/sbatch_run.sh experiment=gsm8k_grpo hardware=h100x1
#   sbatch --ntasks-per-node=8 --gres=gpu:8 launchers/sbatch_run.sh hardware=h100x8 ...
# With several tasks, each srun task is one data-parallel rank (rlvr exports RANK/WORLD_SIZE/...).
# On SIGUSR2 (120 s before the time limit) rlvr saves a checkpoint and exits with 75; this script
# then requeues the job, and the requeued run resumes from that checkpoint in the same run dir.
# On SIGTERM (a plain `scancel`, a time limit reached) rlvr saves a checkpoint at the end of the
# step and exits with 143 within SLURM's KillWait; it is not requeued: `sbatch` again with the same
# RLVR_RUN_DIR continues it.
#SBATCH --job-name=rlvr
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=1
#SBATCH --cpus-per-task=8
#SBATCH --time=04:00:00
#SBATCH --signal=USR2@120
#SBATCH --requeue
#SBATCH --output=slurm-%j.out
set -uo pipefail
cd "${SLURM_SUBMIT_DIR:-.}"
[ -f .venv/bin/activate ] && source .venv/bin/activate
RUN_DIR=${RLVR_RUN_DIR:-outputs/sbatch/${SLURM_JOB_ID:-local}}
trap 'echo "rlvr: SIGTERM: waiting for the run to save its checkpoint"' TERM  # bash waits for srun, not dies
srun python -m rlvr.run "hydra.run.dir=$RUN_DIR" "$@"
rc=$?
if [ "$rc" -eq 75 ] && [ -n "${SLURM_JOB_ID:-}" ]; then
  echo "rlvr: checkpoint saved after SIGUSR2; requeueing job $SLURM_JOB_ID"
  scontrol requeue "$SLURM_JOB_ID"
  exit 0
fi
exit "$rc"
