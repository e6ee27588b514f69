#!/usr/bin/env bash
# rlvr: a real TWO-node SLURM on this one machine (Debian 12, root, no systemd): `make slurm-up NODES=2`.
# Two slurmd in SLURM's "multiple slurmd" mode on 127.0.0.1, each in its own UTS + mount namespace
# (hostnames n1 and n2, a private /etc/hosts each; no network devices), with their own controller,
# slurmdbd, MariaDB and munge: separate from the single-node cluster of slurm-up.sh and from any
# system SLURM (own config dir, ports 16817-16819 / 17001-17002 / 13306, munge socket and key).
# Adapted from the project's proven two-node recipe. Prints `export SLURM_CONF=...` on stdout (the
# partition is `two`); logs on stderr. Stopped, by the PIDs it records, by slurm-down.sh.
#   SLURM_2NODE_DIR=${TMPDIR:-/tmp}/local-slurm-2node
set -euo pipefail
D=${SLURM_2NODE_DIR:-${TMPDIR:-/tmp}/local-slurm-2node}
CLUSTER=twonodes
PART=two
DBPASS=slurm2local
T0=$(date +%s.%N)
log() { printf '[slurm-up-2node %6.1fs] %s\n' "$(echo "$(date +%s.%N) - $T0" | bc)" "$*" >&2; }
[ "$(id -u)" = 0 ] || { echo "must run as root" >&2; exit 1; }
mkdir -p "$D"/{etc,run,log,spool/ctld,spool/slurmd.n1,spool/slurmd.n2,munge,mysql}  # slurmd makes no spool parent
chmod 755 "$D" "$D/run" "$D/log"
export SLURM_CONF=$D/etc/slurm.conf

source "$(dirname "$0")/slurm-packages.sh"
install_packages "${TMPDIR:-/tmp}" munge slurmctld slurmd slurm-client slurmdbd mariadb-server bc || exit 1

# Each node gets half the machine's memory, and all its CPUs: both nodes share the same cores.
CPUS=$(nproc)
MEM=$(( $(awk '/MemTotal/ {print int($2 / 1024)}' /proc/meminfo) / 2 - 512 ))
NODE_HW="CPUs=$CPUS Boards=1 SocketsPerBoard=1 CoresPerSocket=$CPUS ThreadsPerCore=1 RealMemory=$MEM State=UNKNOWN"
cat > "$D/etc/slurm.conf" <<CONF
ClusterName=$CLUSTER
SlurmctldHost=$(hostname -s)(127.0.0.1)
SlurmctldPort=16817
SlurmdPort=16818
AuthType=auth/munge
AuthInfo=socket=$D/munge/munge.socket
CredType=cred/munge
SlurmUser=root
SlurmdUser=root
StateSaveLocation=$D/spool/ctld
SlurmdSpoolDir=$D/spool/slurmd.%n
SlurmctldPidFile=$D/run/slurmctld.pid
SlurmdPidFile=$D/run/slurmd.%n.pid
SlurmctldLogFile=$D/log/slurmctld.log
SlurmdLogFile=$D/log/slurmd.%n.log
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/linux
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=512
SchedulerType=sched/backfill
ReturnToService=2
# SLURM's default grace from SIGTERM (scancel, time limit) to SIGKILL: rlvr's checkpoint must fit in it
KillWait=30
MailProg=/bin/true
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort=16819
# The private munge socket, named again: connections to slurmdbd use this one (else sacct hangs)
AccountingStoragePass=$D/munge/munge.socket
NodeName=n1 NodeHostname=$(hostname -s) NodeAddr=127.0.0.1 Port=17001 $NODE_HW
NodeName=n2 NodeHostname=$(hostname -s) NodeAddr=127.0.0.1 Port=17002 $NODE_HW
PartitionName=$PART Nodes=n1,n2 Default=YES MaxTime=INFINITE State=UP
CONF
install -m 600 /dev/stdin "$D/etc/slurmdbd.conf" <<CONF
AuthType=auth/munge
AuthInfo=socket=$D/munge/munge.socket
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort=16819
SlurmUser=root
PidFile=$D/run/slurmdbd.pid
LogFile=$D/log/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=13306
StorageUser=slurm
StoragePass=$DBPASS
StorageLoc=twonodes_acct_db
CONF

alive() { local pid; pid=$(cat "$D/run/$1.mypid" 2>/dev/null) || return 1; [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; }
start() {  # NAME CMD...: own session, its PID recorded (the exec chain keeps it)
  local name=$1; shift
  alive "$name" && { log "$name already up"; return 0; }
  setsid "$@" </dev/null >>"$D/log/$name.out" 2>&1 &
  echo $! > "$D/run/$name.mypid"; sleep 0.2
  alive "$name" || { log "$name died:"; tail -20 "$D/log/$name.out" >&2; exit 1; }
  log "started $name pid $(cat "$D/run/$name.mypid")"
}
waitfor() {  # DESC TRIES CMD...: every wait is bounded (a misconfigured sacctmgr hangs)
  local d=$1 n=$2; shift 2
  for _ in $(seq "$n"); do timeout 5 "$@" >/dev/null 2>&1 && return 0; sleep 0.25; done
  log "timeout: $d"; return 1
}

# ---- munge: own key and socket ----
chown munge:munge "$D/munge"; chmod 700 "$D/munge"
[ -s "$D/munge/munge.key" ] || { mungekey --create --keyfile="$D/munge/munge.key"; chown munge:munge "$D/munge/munge.key"; chmod 400 "$D/munge/munge.key"; }
chmod 711 "$D/munge"
start munged setpriv --reuid=munge --regid=munge --init-groups /usr/sbin/munged -F --force \
  --socket="$D/munge/munge.socket" --key-file="$D/munge/munge.key" --pid-file="$D/munge/munged.pid" \
  --log-file="$D/munge/munged.log" --seed-file="$D/munge/munged.seed"
waitfor munged 80 sh -c "munge -S $D/munge/munge.socket -n | unmunge -S $D/munge/munge.socket"

# ---- MariaDB: own datadir (its temporary files too: $TMPDIR may be closed to mysql), 127.0.0.1:13306, own socket ----
chown mysql:mysql "$D/mysql"
MY="mariadb --no-defaults -S $D/mysql/mysqld.sock -uroot"
if [ ! -d "$D/mysql/mysql" ]; then
  mariadb-install-db --no-defaults --user=mysql --datadir="$D/mysql" --tmpdir="$D/mysql" --skip-test-db >"$D/log/mariadb-install.log" 2>&1
  log "mariadb datadir initialised"
fi
start mariadbd /usr/sbin/mariadbd --no-defaults --user=mysql --datadir="$D/mysql" --tmpdir="$D/mysql" --socket="$D/mysql/mysqld.sock" \
  --port=13306 --bind-address=127.0.0.1 --pid-file="$D/mysql/mariadbd.pid" --innodb-buffer-pool-size=32M \
  --log-error="$D/log/mariadb.err" --skip-name-resolve
waitfor mariadb 240 $MY -e 'select 1'
$MY -e "CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY '$DBPASS';
        GRANT ALL ON twonodes_acct_db.* TO 'slurm'@'127.0.0.1'; FLUSH PRIVILEGES;"

# ---- slurmdbd, slurmctld ----
start slurmdbd /usr/sbin/slurmdbd -D
waitfor slurmdbd 240 sacctmgr -n list cluster
start slurmctld /usr/sbin/slurmctld -D -i
waitfor slurmctld 240 scontrol ping

# ---- two slurmd: hostnames n1, n2 (submitit's MASTER_ADDR is the first node's name: it must resolve) ----
for i in 1 2; do
  printf '127.0.0.1 localhost %s n1 n2\n' "$(hostname -s)" > "$D/etc/hosts.n$i"
  start slurmd.n$i unshare --uts --mount sh -c \
    "hostname n$i && mount --bind $D/etc/hosts.n$i /etc/hosts && exec /usr/sbin/slurmd -D -N n$i"
done

st=""
for i in $(seq 240); do
  st=$(sinfo -h -p $PART -o '%T %D' | tr '\n' ' ')
  [ "$st" = "idle 2 " ] && break
  [ $((i % 8)) = 0 ] && scontrol update nodename=n1,n2 state=resume 2>/dev/null || true
  sleep 0.25
done
[ "$st" = "idle 2 " ] || { log "nodes not idle: $st"; tail -5 "$D/log/slurmctld.log" "$D"/log/slurmd.n*.log >&2; exit 1; }
waitfor "cluster registration" 120 sh -c "sacctmgr -n -P list cluster format=cluster | grep -qx $CLUSTER"
out=$(timeout 60 srun --quiet -p $PART -N2 -n2 --ntasks-per-node=1 -c1 --mem=100M -t 1 hostname | sort | tr '\n' ' ')
[ "$out" = "n1 n2 " ] || { log "smoke job on both nodes failed: '$out'"; exit 1; }
log "two nodes up; a job ran on: $out"
echo "export SLURM_CONF=$SLURM_CONF"
