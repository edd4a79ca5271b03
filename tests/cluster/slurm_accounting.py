"""Accounting for the one-node cluster: a private MariaDB and slurmdbd, so that `sacct` answers.

Why: submitit polls `sacct` for job states; with `AccountingStorageType=accounting_storage/none`
sacct only says "Slurm accounting storage is disabled", submitit reads every state as UNKNOWN and
waits forever for a job that was cancelled or killed. slurmdbd (Slurm 22.05) stores only in
MySQL/MariaDB, so a throwaway MariaDB is created under `workdir/mariadb` (about 2 s, ~115 MB),
listening on 127.0.0.1 only, with a user and password made up for this one cluster; its data
folder is deleted when the cluster stops (the logs stay).
"""

from __future__ import annotations

import secrets
import subprocess
from pathlib import Path

from tests.cluster.daemons import Daemon, port_accepts, run_checked, start_daemon, wait_until

ACCOUNTING_BINARIES = ("mariadb-install-db", "mariadbd", "mariadb", "slurmdbd", "sacct", "sacctmgr")
DATABASE = "slurm_acct_db"
DB_USER = "slurm"


def start_mariadb(workdir: Path, env: dict[str, str], port: int, password: str) -> Daemon:
    """A fresh MariaDB under `workdir/mariadb` with database DATABASE and user DB_USER@127.0.0.1."""
    db_dir = workdir / "mariadb"
    data_dir = db_dir / "data"
    sock = db_dir / "mysqld.sock"
    log = workdir / "log"
    log.mkdir(parents=True, exist_ok=True)
    if not (data_dir / "mysql").exists():
        db_dir.mkdir(parents=True, exist_ok=True)
        # --no-defaults: never read /etc/mysql (the system server's port, socket and datadir).
        with open(log / "mariadb-install-db.stdout", "wb") as out:
            subprocess.run(
                ["mariadb-install-db", "--no-defaults", f"--datadir={data_dir}", "--user=root",
                 "--auth-root-authentication-method=socket", "--skip-test-db"],
                stdout=out, stderr=subprocess.STDOUT, env=env, timeout=120, check=True,
            )  # fmt: skip
    own_log = log / "mariadbd.err"
    argv = [
        "mariadbd", "--no-defaults", f"--datadir={data_dir}", "--user=root", f"--socket={sock}",
        f"--port={port}", "--bind-address=127.0.0.1", "--skip-name-resolve", f"--pid-file={db_dir / 'mariadbd.pid'}",
        f"--log-error={own_log}", "--innodb-buffer-pool-size=64M", "--innodb-log-file-size=16M",
        "--innodb-lock-wait-timeout=900",  # what slurmdbd asks for, else it logs a warning
    ]  # fmt: skip
    daemon = start_daemon("mariadbd", argv, log, env, own_log)
    daemon.remove_on_stop.append(data_dir)  # ~115 MB; pytest keeps its last three tmp folders
    as_root = ["mariadb", "--no-defaults", f"--socket={sock}", "--user=root"]

    def answers() -> bool:
        return subprocess.run(as_root + ["-e", "SELECT 1"], capture_output=True, env=env, timeout=10).returncode == 0

    wait_until(answers, "mariadbd to answer on its socket", 60, [daemon])
    sql = (
        f"CREATE DATABASE IF NOT EXISTS {DATABASE}; "
        f"CREATE OR REPLACE USER '{DB_USER}'@'127.0.0.1' IDENTIFIED BY '{password}'; "
        f"GRANT ALL ON {DATABASE}.* TO '{DB_USER}'@'127.0.0.1'; FLUSH PRIVILEGES;"
    )
    run_checked(as_root + ["-e", sql], env)
    return daemon


def write_slurmdbd_conf(workdir: Path, munge_socket: Path, db_port: int, dbd_port: int, password: str) -> Path:
    """slurmdbd reads slurmdbd.conf from the folder of SLURM_CONF, so it sits beside slurm.conf."""
    conf = workdir / "slurmdbd.conf"
    conf.write_text(
        f"""\
# Written by tests/cluster/slurm_accounting.py for one test.
AuthType=auth/munge
AuthInfo=socket={munge_socket}
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort={dbd_port}
SlurmUser=root
LogFile={workdir / "log" / "slurmdbd.log"}
PidFile={workdir / "run" / "slurmdbd.pid"}
DebugLevel=info
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort={db_port}
StorageUser={DB_USER}
StoragePass={password}
StorageLoc={DATABASE}
"""
    )
    conf.chmod(0o600)  # slurmdbd refuses a config with a password that others can read
    return conf


def start_accounting(
    workdir: Path, env: dict[str, str], munge_socket: Path, db_port: int, dbd_port: int
) -> tuple[list[Daemon], str]:
    """Start mariadbd and slurmdbd; return them and the slurm.conf lines that point slurmctld at slurmdbd."""
    password = secrets.token_hex(16)
    mariadb = start_mariadb(workdir, env, db_port, password)
    daemons = [mariadb]
    try:
        write_slurmdbd_conf(workdir, munge_socket, db_port, dbd_port, password)
        log = workdir / "log"
        slurmdbd = start_daemon("slurmdbd", ["slurmdbd", "-D"], log, env, log / "slurmdbd.log")
        daemons.append(slurmdbd)
        # slurmdbd creates its tables before it listens, so an open port means it is ready.
        wait_until(lambda: port_accepts(dbd_port), f"slurmdbd to listen on 127.0.0.1:{dbd_port}", 60, daemons)
    except BaseException:
        for daemon in reversed(daemons):
            daemon.stop()
        raise
    lines = (
        "AccountingStorageType=accounting_storage/slurmdbd\n"
        "AccountingStorageHost=127.0.0.1\n"
        f"AccountingStoragePort={dbd_port}\n"
        # For auth/munge this "password" is the munge socket of the slurmctld -> slurmdbd connection;
        # AuthInfo covers every other connection but not this one (else it tries /run/munge/munge.socket.2).
        f"AccountingStoragePass={munge_socket}\n"
        "JobCompType=jobcomp/none"
    )
    return daemons, lines
