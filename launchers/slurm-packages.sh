# Sourced by slurm-up.sh and slurm-up-2node.sh: install_packages LOCKDIR PACKAGE... installs the
# Debian packages that are missing, one install at a time (two test processes may ask for a cluster
# at once: the second waits, then finds them installed). The lock's descriptor is closed before any
# daemon starts. Needs a `log` function.
install_packages() {
  local lockdir=$1; shift
  (
  flock 9
  missing=""
  for p in "$@"; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"; done
  if [ -n "$missing" ]; then
    log "installing:$missing"
    export DEBIAN_FRONTEND=noninteractive
    apt-get -o DPkg::Lock::Timeout=300 update -q >/dev/null
    apt-get -o DPkg::Lock::Timeout=300 install -y -q --no-install-recommends $missing >"$lockdir/apt.log" 2>&1 || { tail -20 "$lockdir/apt.log"; exit 1; }
    log "packages installed"
  fi
  ) 9>"$lockdir/install.lock"
}
