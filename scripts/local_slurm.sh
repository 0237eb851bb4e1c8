#!/usr/bin/env bash
# A single-node Slurm cluster on this machine, for the Slurm tests (tests/slurm/, `pytest -m slurm`).
#
#   scripts/local_slurm.sh start    # install Slurm + munge (+ slurmdbd, MariaDB) if missing, start the daemons
#   scripts/local_slurm.sh status   # which daemons run, sinfo
#   scripts/local_slurm.sh stop     # stop the daemons this script started (by their pid files)
#   scripts/local_slurm.sh env      # prints: export SLURM_CONF=...   (eval "$(scripts/local_slurm.sh env)")
#
# Everything lives under $IFEXP_SLURM_DIR (default: ${TMPDIR:-/tmp}/ifexp-slurm): slurm.conf,
# slurmdbd.conf, state, spool, logs, pid files, the accounting database. Nothing is written to
# /etc/slurm, so every Slurm command needs SLURM_CONF=$IFEXP_SLURM_DIR/slurm.conf (sbatch passes it
# on to the jobs). slurmctld, slurmd and slurmdbd run as root (SlurmUser=root): start needs root.
#
# Accounting: sacct (job states, which submitit polls, and step records) needs slurmdbd, and
# slurmdbd needs MySQL/MariaDB. Lighter options do not do: with accounting_storage/none plain sacct
# answers "Slurm accounting storage is disabled", and jobcomp/filetxt adds only whole-job records
# read by `sacct -c` (no steps). So start also runs a private MariaDB (socket + 127.0.0.1 under
# the folder). Measured on 2 cores: start takes ~35 s from nothing (~30 s of it apt-get), ~5 s
# once installed; the daemons hold ~150 MB (MariaDB ~125 MB of it).
#
# Exit status 4: no cluster can be started here (not root, no apt-get, apt-get failed).
# Idempotent: start on a running cluster only checks it is up; stop on a stopped one does nothing.
# A start without a running slurmctld makes a new cluster: whatever of an earlier one is still up is
# stopped, and its job state, spool and accounting database are wiped. An earlier cluster that was
# killed (a lost machine, a killed test session) left jobs in its saved state that slurmctld would
# recover as running on the node's CPUs or requeue, so the new cluster's jobs waited behind them
# (CI, 2026-12-06: a killed session's two jobs held both CPUs for 30 min).
# Ports: $IFEXP_SLURM_PORT (default 6817) = slurmctld, +1 slurmd, +2 slurmdbd, +3 MariaDB.
set -euo pipefail

DIR=${IFEXP_SLURM_DIR:-${TMPDIR:-/tmp}/ifexp-slurm}
PORT=${IFEXP_SLURM_PORT:-6817}
PARTITION=${IFEXP_SLURM_PARTITION_NAME:-local}
CLUSTER=ifexp
HOST=$(hostname -s)
CONF=$DIR/slurm.conf
export SLURM_CONF=$CONF

say() { echo "local_slurm: $*" >&2; }
die() {
	say "error: $*"
	exit 1
}
cannot_install() { # exit status 4: the tests skip instead of failing
	say "no local Slurm cluster here: $*"
	exit 4
}

alive() { # alive PIDFILE: the process named in PIDFILE runs
	[[ -s $1 ]] && kill -0 "$(cat "$1")" 2>/dev/null
}

install_packages() {
	local missing=()
	command -v slurmctld >/dev/null || missing+=(slurmctld)
	command -v slurmd >/dev/null || missing+=(slurmd)
	command -v sbatch >/dev/null || missing+=(slurm-client)
	command -v slurmdbd >/dev/null || missing+=(slurmdbd)
	command -v munged >/dev/null || missing+=(munge)
	command -v mariadbd >/dev/null || missing+=(mariadb-server)
	((${#missing[@]} == 0)) && return 0
	[[ $(id -u) == 0 ]] || cannot_install "missing ${missing[*]} and not root: cannot apt-get install them"
	command -v apt-get >/dev/null || cannot_install "missing ${missing[*]} and no apt-get to install them"
	say "installing ${missing[*]} from the Debian packages (about a minute)"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq >"$DIR/log/apt.log" 2>&1 </dev/null || cannot_install "apt-get update failed: see $DIR/log/apt.log"
	# the packages' own services (system slurmctld, MariaDB, ...) must not start: we start our own
	local policy=
	if [[ ! -e /usr/sbin/policy-rc.d ]]; then
		printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d && policy=1
	fi
	local status=0
	apt-get install -y -qq --no-install-recommends "${missing[@]}" >>"$DIR/log/apt.log" 2>&1 </dev/null || status=$?
	[[ -n $policy ]] && rm -f /usr/sbin/policy-rc.d
	((status == 0)) || cannot_install "apt-get install ${missing[*]} failed: see $DIR/log/apt.log"
}

write_config() {
	local cpus mem_kb
	cpus=$(nproc)
	# RealMemory: 80% of what is available now (slurmd refuses the node if it is above the real total)
	mem_kb=$(awk '/^MemAvailable:/ {print $2}' /proc/meminfo)
	REAL_MEMORY=$((mem_kb * 8 / 10 / 1024))
	cat >"$CONF" <<EOF
# Written by scripts/local_slurm.sh: a one-node cluster for ifexp's Slurm tests.
ClusterName=$CLUSTER
SlurmctldHost=$HOST
SlurmctldPort=$PORT
SlurmdPort=$((PORT + 1))
AuthType=auth/munge
CryptoType=crypto/munge
SlurmUser=root
SlurmdUser=root
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
ReturnToService=2
# a requeued or cancelled job's processes get SIGKILL 5 s after SIGTERM (default 30 s)
KillWait=5
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=30
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=$((PORT + 2))
NodeName=$HOST CPUs=$cpus RealMemory=$REAL_MEMORY State=UNKNOWN
PartitionName=$PARTITION Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
EOF
	cat >"$DIR/slurmdbd.conf" <<EOF
AuthType=auth/munge
DbdHost=localhost
DbdPort=$((PORT + 2))
SlurmUser=root
PidFile=$DIR/slurmdbd.pid
LogFile=$DIR/log/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$((PORT + 3))
StorageUser=slurm
StoragePass=slurm
StorageLoc=slurm_acct_db
EOF
	chmod 600 "$DIR/slurmdbd.conf"
}

wait_for() { # wait_for SECONDS DESCRIPTION COMMAND...: retry COMMAND every 0.5 s
	local seconds=$1 what=$2
	shift 2
	local deadline=$((SECONDS + seconds))
	until "$@" >/dev/null 2>&1; do
		((SECONDS < deadline)) || die "$what did not come up within ${seconds}s (logs: $DIR/log/)"
		sleep 0.5
	done
}

start_munge() {
	if pgrep -x munged >/dev/null; then # ours or the system's: either authenticates for us
		return 0
	fi
	if [[ ! -s /etc/munge/munge.key ]]; then
		mungekey -c -f -k /etc/munge/munge.key
		chown munge:munge /etc/munge/munge.key 2>/dev/null || true
		chmod 400 /etc/munge/munge.key
	fi
	mkdir -p /run/munge && chown munge:munge /run/munge 2>/dev/null || true
	munged --force --pid-file="$DIR/munged.pid" --log-file="$DIR/log/munged.log"
	wait_for 20 munged munge -n
}

mysql_client() { mariadb --no-defaults --socket="$DIR/mysql.sock" -u root "$@"; }

start_database() {
	alive "$DIR/mysqld.pid" && return 0
	if [[ ! -d $DIR/mysql/mysql ]]; then
		rm -rf "$DIR/mysql"
		mariadb-install-db --no-defaults --datadir="$DIR/mysql" --user=root --skip-test-db \
			--auth-root-authentication-method=socket >"$DIR/log/mariadb-install.log" 2>&1 ||
			die "mariadb-install-db failed: see $DIR/log/mariadb-install.log"
	fi
	# small and quiet: the accounting database of a test cluster holds a few hundred rows
	nohup mariadbd --no-defaults --user=root --datadir="$DIR/mysql" --socket="$DIR/mysql.sock" \
		--bind-address=127.0.0.1 --port=$((PORT + 3)) --pid-file="$DIR/mysqld.pid" \
		--log-error="$DIR/log/mariadb.log" --innodb-buffer-pool-size=64M --innodb-log-file-size=16M \
		--innodb-lock-wait-timeout=900 --performance-schema=OFF --skip-name-resolve \
		>/dev/null 2>&1 </dev/null &
	wait_for 60 MariaDB mysql_client -e "SELECT 1"
	mysql_client -e "CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY 'slurm';
		GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';"
}

start_daemons() {
	if ! alive "$DIR/slurmdbd.pid"; then
		slurmdbd # reads slurmdbd.conf beside $SLURM_CONF
		wait_for 60 slurmdbd sacctmgr -n list cluster
	fi
	if ! sacctmgr -n -P list cluster format=cluster | grep -qx "$CLUSTER"; then
		sacctmgr -i add cluster "$CLUSTER" >/dev/null
	fi
	alive "$DIR/slurmctld.pid" || slurmctld -f "$CONF"
	wait_for 30 slurmctld scontrol ping
	alive "$DIR/slurmd.pid" || slurmd -f "$CONF"
}

node_state() { sinfo -h -n "$HOST" -o %T 2>/dev/null || true; }

node_ready() { [[ $(node_state) =~ ^(idle|mixed|allocated|completing)$ ]]; }

cmd_start() {
	local started=$SECONDS
	mkdir -p "$DIR"/{state,spool,log}
	if alive "$DIR/slurmctld.pid" && alive "$DIR/slurmd.pid" && alive "$DIR/slurmdbd.pid" && node_ready; then
		say "already running"
	else
		[[ $(id -u) == 0 ]] || cannot_install "the daemons run as root (SlurmUser=root): run '$0 start' as root"
		install_packages
		local fresh=
		if ! alive "$DIR/slurmctld.pid"; then
			fresh=1
			cmd_stop
			rm -rf "${DIR:?}"/state/* "${DIR:?}"/spool/*
			write_config
		fi
		start_munge
		start_database
		# slurmdbd recreates its tables; without this, job ids restart at 1 and sacct -j finds the old jobs
		[[ -z $fresh ]] || mysql_client -e "DROP DATABASE IF EXISTS slurm_acct_db"
		start_daemons
		wait_for 60 "node $HOST (state: $(node_state))" node_ready
		# a node drained by an earlier unclean stop comes back
		[[ $(node_state) == idle ]] || scontrol update nodename="$HOST" state=resume >/dev/null 2>&1 || true
		say "started in $((SECONDS - started))s"
	fi
	say "config: $CONF (partition '$PARTITION', node $HOST, logs in $DIR/log)"
	echo "export SLURM_CONF=$CONF"
}

cmd_stop() {
	local name pidfile pid
	for name in slurmd slurmctld slurmdbd mysqld munged; do
		pidfile=$DIR/$name.pid
		alive "$pidfile" || continue
		pid=$(cat "$pidfile")
		kill "$pid" 2>/dev/null || true
		for _ in $(seq 1 60); do
			kill -0 "$pid" 2>/dev/null || break
			sleep 0.5
		done
		kill -0 "$pid" 2>/dev/null && kill -9 "$pid" 2>/dev/null || true
		say "stopped $name ($pid)"
	done
	rm -f "$DIR"/{slurmd,slurmctld,slurmdbd,mysqld,munged}.pid
}

cmd_status() {
	local name running=0
	for name in munged mysqld slurmdbd slurmctld slurmd; do
		if alive "$DIR/$name.pid"; then
			echo "$name: running ($(cat "$DIR/$name.pid"))"
			running=$((running + 1))
		elif [[ $name == munged ]] && pgrep -x munged >/dev/null; then
			echo "munged: running (not started by this script)"
		else
			echo "$name: stopped"
		fi
	done
	echo "SLURM_CONF=$CONF"
	if ((running >= 4)); then sinfo; else return 3; fi
}

case ${1:-} in
start) cmd_start ;;
stop) cmd_stop ;;
status) cmd_status ;;
env) echo "export SLURM_CONF=$CONF" ;;
*)
	echo "usage: $0 start|stop|status|env" >&2
	exit 2
	;;
esac
